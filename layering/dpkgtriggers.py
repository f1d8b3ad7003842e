"""dpkg's triggers for layered Debian packages: interests recorded, activations processed.

A package's ``triggers`` control file says ``interest[-await|-noawait] NAME``
(an explicit trigger) or ``interest... /path`` (a file trigger), and
``activate[-await|-noawait] NAME``.  As dpkg does when it unpacks a package,
:func:`update_interests` records the added packages' interests in the
database's ``triggers/File`` (``/path package[/noawait]`` lines, new ones
last) and ``triggers/NAME`` (``package[/noawait]`` lines) and drops those of
removed packages, in dpkg's own format (``lib/dpkg/triglib.c``).  It returns
the activations dpkg makes while unpacking: a file trigger of a kept package
whose path is (or is above) a path an added package ships or a removed one
shipped, and each added package's ``activate`` lines.  :func:`trigger_run` is the last script of a
compose: it hands those activations to the image's own ``dpkg-trigger`` and
runs the image's ``dpkg --triggers-only --pending``, so that the image's dpkg
incorporates them with those the maintainer scripts made (``triggers/Unincorp``)
and runs each interested package's ``postinst triggered``, exactly as dpkg
would, leaving no ``Triggers-Pending`` or ``Triggers-Awaited`` behind.
Interests of the added packages themselves are not activated by their files:
dpkg would discard those pending triggers when it configures the package.
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass
from enum import StrEnum

from importers.model import PackageMeta
from layering.dpkgdb import info_name, read_tree_file
from layering.errors import ComposeError
from layering.scripts import ScriptRun
from store.mtree import MutableTree
from store.objects import FileMeta
from store.repo import Repo
from store.txn import Transaction

EXPLICIT = re.compile(r"[A-Za-z0-9][A-Za-z0-9+.-]*")  # dpkg: a package name without '_'
FILE = re.compile(r"(/[!-.0-~]+)+")  # dpkg: absolute, no empty component, printable
RESERVED = ("File", "Unincorp", "Lock")  # dpkg's own files in triggers/
MAX_DIRECTIVES = 10000


class Directive(StrEnum):
    """What a line of a ``triggers`` control file does."""

    INTEREST = "interest"
    ACTIVATE = "activate"


@dataclass(frozen=True)
class TriggerLine:
    """One directive of a package's ``triggers`` control file."""

    directive: Directive
    name: str
    noawait: bool

    @property
    def is_file(self) -> bool:
        return self.name.startswith("/")

    @property
    def suffix(self) -> str:
        return "/noawait" if self.noawait else ""


@dataclass(frozen=True)
class Activation:
    """A trigger ``name`` activated by package ``by`` (its awaiter unless ``noawait``)."""

    name: str
    by: str
    noawait: bool


def parse_triggers(pkg: PackageMeta) -> list[TriggerLine]:
    """The directives of ``pkg``'s ``triggers`` control file, checked as dpkg checks them;
    raises ComposeError naming the package on a directive or name dpkg would refuse."""
    body = next((s.body for s in pkg.scripts if s.name == "triggers"), "")
    out: list[TriggerLine] = []
    for line in body.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        cmd, _, name = line.partition(" ")
        name = name.strip()
        kind, _, mode = cmd.partition("-")
        if kind not in ("interest", "activate") or mode not in ("", "await", "noawait"):
            raise ComposeError(f"unknown triggers directive {cmd[:40]!r} in package {pkg.name}")
        if not (FILE.fullmatch(name) or (EXPLICIT.fullmatch(name) and name not in RESERVED)):
            raise ComposeError(f"invalid trigger name {name[:80]!r} in package {pkg.name}")
        out.append(TriggerLine(Directive(kind), name, mode == "noawait"))
        if len(out) > MAX_DIRECTIVES:
            raise ComposeError(f"more than {MAX_DIRECTIVES} triggers directives in package "
                               f"{pkg.name}")
    return out


def _read(repo: Repo, tree: MutableTree, path: str) -> str | None:
    data = read_tree_file(repo, tree, path)
    return None if data is None else data.decode("utf-8", "replace")


def _write(txn: Transaction, tree: MutableTree, path: str, lines: list[str]) -> None:
    if not lines:
        tree.remove(path)
        return
    tree.ensure_dir(path.rpartition("/")[0])
    data = "".join(f"{line}\n" for line in lines).encode()
    tree.set_file(path, txn.write_file(FileMeta(0, 0, stat.S_IFREG | 0o644), data))


def _owner(entry: str) -> str:
    """The package name (without ``:arch`` and ``/noawait``) of an interest entry."""
    return entry.partition("/")[0].partition(":")[0]


def update_interests(repo: Repo, txn: Transaction, tree: MutableTree, db: str, *,
                     add: list[PackageMeta], remove: list[PackageMeta]) -> list[Activation]:
    """Record the interests of ``add`` and drop those of ``remove`` (and of the added
    packages' replaced versions) under ``db/triggers``; return the activations dpkg makes
    while unpacking ``add`` and taking out the files of ``remove`` (for a package
    ``add`` upgrades, ``remove`` holds only the paths the new version drops, which
    dpkg's pkg_remove_old_files activates; see the module docstring)."""
    parsed = {p.name: parse_triggers(p) for p in add}
    gone = {p.name for p in remove} | set(parsed)
    file_lines = (_read(repo, tree, f"{db}/triggers/File") or "").splitlines()
    kept = [line for line in file_lines if line.startswith("/") and " " in line
            and _owner(line.split(" ", 1)[1]) not in gone]
    activations = _file_activations(add, kept)
    activations += _file_activations(remove, kept, True)
    new = [f"{t.name} {info_name(p)}{t.suffix}" for p in add for t in parsed[p.name]
           if t.directive is Directive.INTEREST and t.is_file]
    if kept + new != file_lines:
        _write(txn, tree, f"{db}/triggers/File", kept + new)
    explicit: dict[str, list[str]] = {}
    for p in add:
        for t in parsed[p.name]:
            if t.directive is Directive.INTEREST and not t.is_file:
                explicit.setdefault(t.name, []).append(f"{info_name(p)}{t.suffix}")
    _update_explicit(repo, txn, tree, f"{db}/triggers", gone, explicit)
    activations += [Activation(t.name, info_name(p), t.noawait) for p in add
                    for t in parsed[p.name] if t.directive is Directive.ACTIVATE]
    return activations


def _update_explicit(repo: Repo, txn: Transaction, tree: MutableTree, tdir: str,
                     gone: set[str], explicit: dict[str, list[str]]) -> None:
    """Rewrite each ``triggers/NAME`` that names a gone package or gains an interest."""
    node = tree.lookup(tdir)
    names = set(explicit)
    if isinstance(node, MutableTree):
        names |= {n for n in node.files if n not in RESERVED and EXPLICIT.fullmatch(n)}
    for name in sorted(names):
        old = (_read(repo, tree, f"{tdir}/{name}") or "").splitlines()
        lines = [e for e in old if e.strip() and _owner(e) not in gone] + explicit.get(name, [])
        if lines != old:
            _write(txn, tree, f"{tdir}/{name}", lines)


def _file_activations(pkgs: list[PackageMeta], interests: list[str],
                      noawait: bool = False) -> list[Activation]:
    """File triggers of ``interests`` (``/path package`` lines) that ``pkgs``' paths hit:
    a path is the interest's or below it (dpkg activates every unpacked or removed path
    and, for the tar's directory entries, each directory above a file); a removed
    package awaits nothing."""
    paths = {line.split(" ", 1)[0] for line in interests}
    out: list[Activation] = []
    for pkg in pkgs:
        hit: set[str] = set()
        for f in pkg.files:
            path = "/" + f.path.strip("/")
            while path and path not in hit:
                if path in paths:
                    hit.add(path)
                path = path.rpartition("/")[0]
        out += [Activation(p, info_name(pkg), noawait) for p in sorted(hit)]
    return out


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def needed_activations(activations: list[Activation]) -> list[Activation]:
    """``activations`` without those that would leave ``triggers/Unincorp`` as it is.

    ``dpkg-trigger`` writes the trigger's line as ``NAME AWAITER OTHERS...``: the
    awaiter (``-`` for ``--no-await``, whatever ``--by-package`` says) first, the
    others after it in their order (``src/trigger/main.c``).  A call whose awaiter is
    already first on its trigger's line changes nothing, so it is left out: 24
    libraries activating ``ldconfig`` with ``--no-await`` make one call, not 24."""
    first: dict[str, str] = {}
    out: list[Activation] = []
    for a in activations:
        awaiter = "-" if a.noawait else a.by
        if first.get(a.name) != awaiter:
            first[a.name] = awaiter
            out.append(a)
    return out


def trigger_run(db: str, activations: list[Activation]) -> ScriptRun:
    """The script that activates ``activations`` with the image's ``dpkg-trigger`` and lets
    the image's dpkg process every pending trigger (``postinst triggered``), when any."""
    lines = ["#!/bin/sh", "set -e", "command -v dpkg >/dev/null 2>&1 || exit 0"]
    for a in needed_activations(activations):
        lines.append(f"dpkg-trigger --by-package={_quote(a.by)}"
                     f"{' --no-await' if a.noawait else ''} {_quote(a.name)}")
    lines += [f"[ -s /{db}/triggers/Unincorp ] || grep -q '^Triggers-Pending:' /{db}/status "
              "|| exit 0", "exec dpkg --triggers-only --pending"]
    return ScriptRun("dpkg", "triggers", "\n".join(lines) + "\n",
                     env=(("DEBIAN_FRONTEND", "noninteractive"),))
