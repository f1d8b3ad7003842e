"""The one package record: a package file, a catalogue entry and an installed package alike.

Dependencies are kept in conjunctive normal form: a tuple of alternatives
groups, each group a tuple of :class:`Relation` of which one must hold
(``a | b (>= 1), c`` is ``((a, b>=1), (c,))``).  Records round-trip through
``to_dict``/``from_dict`` (JSON-safe) so they can live in commit metadata.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields, replace
from typing import Any


class PackageType(enum.StrEnum):
    """Package ecosystems."""

    DEB = "deb"
    RPM = "rpm"


class Origin(enum.StrEnum):
    """Where a record came from."""

    FILE = "file"
    CATALOGUE = "catalogue"
    INSTALLED = "installed"


class Op(enum.StrEnum):
    """Version constraint operators (dpkg's << and >> are < and >)."""

    LT = "<"
    LE = "<="
    EQ = "="
    GE = ">="
    GT = ">"


DEB_OPS = {"<<": Op.LT, "<=": Op.LE, "=": Op.EQ, ">=": Op.GE, ">>": Op.GT, "<": Op.LE, ">": Op.GE}


class FileKind(enum.StrEnum):
    """Kinds of package members strata stores."""

    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"


class DepKind(enum.StrEnum):
    """Relation fields, named after dpkg's fields; rpm tags map onto them."""

    PRE_DEPENDS = "pre-depends"
    DEPENDS = "depends"
    RECOMMENDS = "recommends"
    SUGGESTS = "suggests"
    ENHANCES = "enhances"
    SUPPLEMENTS = "supplements"
    CONFLICTS = "conflicts"
    BREAKS = "breaks"
    PROVIDES = "provides"
    REPLACES = "replaces"
    OBSOLETES = "obsoletes"
    ORDER = "order"  # rpm's OrderWithRequires: orders an install, never resolved


@dataclass(frozen=True)
class Relation:
    """One dependency atom: ``name [:arch] [op version]``; ``flags`` keeps rpm's sense bits."""

    name: str
    op: Op | None = None
    version: str = ""
    arch: str = ""
    flags: int = 0

    def __str__(self) -> str:
        arch = f":{self.arch}" if self.arch else ""
        return f"{self.name}{arch} ({self.op} {self.version})" if self.op else f"{self.name}{arch}"


CNF = tuple[tuple[Relation, ...], ...]


@dataclass(frozen=True)
class FileEntry:
    """One path a package owns, as its header/archive declares it (path without leading /)."""

    path: str
    kind: FileKind = FileKind.FILE
    mode: int = 0
    size: int = 0
    user: str = "root"
    group: str = "root"
    link: str = ""
    digest: str = ""
    config: bool = False
    ghost: bool = False
    caps: str = ""
    noreplace: bool = False  # rpm's %config(noreplace)


@dataclass(frozen=True)
class Script:
    """A maintainer script / scriptlet: name (preinst, %post...), interpreter and body.

    An rpm file trigger (``filetriggerin``, ``transfiletriggerin``) also has the path
    prefixes that fire it and its priority (higher runs first); an rpm package trigger
    (``triggerin``, ``triggerun``, ``triggerpostun``) the packages that fire it, each
    ``NAME`` or ``NAME OP VERSION`` (``targets``)."""

    name: str
    body: str
    interpreter: str = ""
    prefixes: tuple[str, ...] = ()
    priority: int = 0
    targets: tuple[str, ...] = ()

    def to_list(self) -> list[Any]:
        """A JSON-safe list (the trigger fields only when set)."""
        head: list[Any] = [self.name, self.body, self.interpreter]
        if self.targets:
            return head + [list(self.prefixes), self.priority, list(self.targets)]
        return head + [list(self.prefixes), self.priority] if self.prefixes else head

    @classmethod
    def from_list(cls, v: list[Any]) -> Script:
        """Inverse of :meth:`to_list`."""
        if len(v) > 5:
            return cls(v[0], v[1], v[2], tuple(v[3]), int(v[4]), tuple(v[5]))
        if len(v) > 3:
            return cls(v[0], v[1], v[2], tuple(v[3]), int(v[4]))
        return cls(*v)

    def data(self) -> bytes:
        """The script's exact bytes: a body read from a package is decoded with
        ``surrogateescape``, so bytes that are not UTF-8 (a latin-1 comment) come back as
        they were (dpkg copies control members byte for byte)."""
        return self.body.encode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class PackageMeta:
    """Everything the resolver and the layering engine need to know about one package."""

    type: PackageType
    name: str
    version: str
    arch: str
    epoch: int = 0
    release: str = ""
    origin: Origin = Origin.FILE
    deps: dict[DepKind, CNF] = field(default_factory=dict)
    files: tuple[FileEntry, ...] = ()
    scripts: tuple[Script, ...] = ()
    conffiles: tuple[str, ...] = ()
    checksum: str = ""
    checksum_type: str = "sha256"
    size: int = 0
    installed_size: int = 0
    location: str = ""
    source: str = ""
    summary: str = ""
    essential: bool = False
    multi_arch: str = ""
    control: str = ""

    @property
    def evr(self) -> str:
        """Epoch:version[-release] as the ecosystem writes it (epoch omitted when 0)."""
        ev = f"{self.epoch}:{self.version}" if self.epoch else self.version
        return f"{ev}-{self.release}" if self.release else ev

    @property
    def nevra(self) -> str:
        """name-[epoch:]version[-release].arch, for messages."""
        return f"{self.name}-{self.evr}.{self.arch}"

    def relations(self, kind: DepKind) -> CNF:
        """The CNF for one relation field (empty when absent)."""
        return self.deps.get(kind, ())

    def with_origin(self, origin: Origin, **changes: Any) -> PackageMeta:
        """A copy marked with another origin (and other fields changed)."""
        return replace(self, origin=origin, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; :meth:`from_dict` inverts it exactly."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "deps":
                value = {str(k): [[_rel_to_list(r) for r in g] for g in cnf]
                         for k, cnf in sorted(value.items())}
            elif f.name == "files":
                value = [_entry_to_dict(e) for e in value]
            elif f.name == "scripts":
                value = [s.to_list() for s in value]
            elif f.name == "conffiles":
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PackageMeta:
        """Rebuild a record; unknown keys raise ValueError."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown package record keys: {', '.join(sorted(unknown))}")
        kw = dict(d)
        kw["type"] = PackageType(kw["type"])
        kw["origin"] = Origin(kw.get("origin", Origin.FILE))
        kw["deps"] = {DepKind(k): tuple(tuple(_rel_from_list(r) for r in g) for g in cnf)
                      for k, cnf in kw.get("deps", {}).items()}
        kw["files"] = tuple(_entry_from_dict(e) for e in kw.get("files", ()))
        kw["scripts"] = tuple(Script.from_list(s) for s in kw.get("scripts", ()))
        kw["conffiles"] = tuple(kw.get("conffiles", ()))
        return cls(**kw)


def _rel_to_list(r: Relation) -> list[Any]:
    return [r.name, str(r.op) if r.op else "", r.version, r.arch, r.flags]


def _rel_from_list(v: list[Any]) -> Relation:
    name, op, version, arch, flags = v
    return Relation(name, Op(op) if op else None, version, arch, flags)


_ENTRY_DEFAULTS = FileEntry("")


def _entry_to_dict(e: FileEntry) -> dict[str, Any]:
    return {f.name: getattr(e, f.name) for f in fields(e)
            if f.name == "path" or getattr(e, f.name) != getattr(_ENTRY_DEFAULTS, f.name)}


def _entry_from_dict(d: dict[str, Any]) -> FileEntry:
    kw = dict(d)
    if "kind" in kw:
        kw["kind"] = FileKind(kw["kind"])
    return FileEntry(**kw)


def parse_deb_relations(text: str) -> CNF:
    """Parse a dpkg relation field (``a (>= 1) | b, c:any``) into CNF via python-debian."""
    from debian.deb822 import PkgRelation

    groups = []
    for group in PkgRelation.parse_relations(text or ""):
        alts = []
        for atom in group:
            if not atom.get("name"):
                continue
            ver = atom.get("version")
            op, version = (DEB_OPS[ver[0]], ver[1]) if ver else (None, "")
            alts.append(Relation(atom["name"], op, version, atom.get("archqual") or ""))
        if alts:
            groups.append(tuple(alts))
    return tuple(groups)
