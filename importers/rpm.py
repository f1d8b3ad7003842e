"""Reading ``.rpm`` files: header to :class:`PackageMeta`, cpio payload streamed via libarchive.

The header is authoritative for each file's mode, owner names, flags (%config,
%ghost), capabilities, symlink target and hardlink group; the cpio payload only
supplies content and must agree with the header (a payload member the header
does not list is refused).
"""

from __future__ import annotations

import hashlib
import io
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from importers.deb import SubFile
from importers.errors import PackageFormatError
from importers.model import (
    CNF,
    DepKind,
    FileEntry,
    FileKind,
    Op,
    Origin,
    PackageMeta,
    PackageType,
    Relation,
    Script,
)
from importers.payload import (
    DEFAULT_CAP,
    ContentReader,
    Member,
    Where,
    declared_limit,
    iter_payload,
)
from importers.rpmheader import Header, Tag, read_package_header

RPMFILE_CONFIG = 1 << 0
RPMFILE_NOREPLACE = 1 << 4
RPMFILE_GHOST = 1 << 6
SENSE_LESS, SENSE_GREATER, SENSE_EQUAL = 2, 4, 8
_DEP_TAGS = {
    DepKind.DEPENDS: (Tag.REQUIRENAME, Tag.REQUIREFLAGS, Tag.REQUIREVERSION),
    DepKind.PROVIDES: (Tag.PROVIDENAME, Tag.PROVIDEFLAGS, Tag.PROVIDEVERSION),
    DepKind.CONFLICTS: (Tag.CONFLICTNAME, Tag.CONFLICTFLAGS, Tag.CONFLICTVERSION),
    DepKind.OBSOLETES: (Tag.OBSOLETENAME, Tag.OBSOLETEFLAGS, Tag.OBSOLETEVERSION),
    DepKind.RECOMMENDS: (Tag.RECOMMENDNAME, Tag.RECOMMENDFLAGS, Tag.RECOMMENDVERSION),
    DepKind.SUGGESTS: (Tag.SUGGESTNAME, Tag.SUGGESTFLAGS, Tag.SUGGESTVERSION),
    DepKind.SUPPLEMENTS: (Tag.SUPPLEMENTNAME, Tag.SUPPLEMENTFLAGS, Tag.SUPPLEMENTVERSION),
    DepKind.ENHANCES: (Tag.ENHANCENAME, Tag.ENHANCEFLAGS, Tag.ENHANCEVERSION),
    DepKind.ORDER: (Tag.ORDERNAME, Tag.ORDERFLAGS, Tag.ORDERVERSION),
}
_SCRIPTS = (
    ("pretrans", Tag.PRETRANS, Tag.PRETRANSPROG), ("prein", Tag.PREIN, Tag.PREINPROG),
    ("postin", Tag.POSTIN, Tag.POSTINPROG), ("preun", Tag.PREUN, Tag.PREUNPROG),
    ("postun", Tag.POSTUN, Tag.POSTUNPROG), ("posttrans", Tag.POSTTRANS, Tag.POSTTRANSPROG),
)
# file trigger kind -> (scripts, interpreters, prefixes, script index, flags, priorities) tags
_FILE_TRIGGERS = {
    "filetrigger": (Tag.FILETRIGGERSCRIPTS, Tag.FILETRIGGERSCRIPTPROG, Tag.FILETRIGGERNAME,
                    Tag.FILETRIGGERINDEX, Tag.FILETRIGGERFLAGS, Tag.FILETRIGGERPRIORITIES),
    "transfiletrigger": (Tag.TRANSFILETRIGGERSCRIPTS, Tag.TRANSFILETRIGGERSCRIPTPROG,
                         Tag.TRANSFILETRIGGERNAME, Tag.TRANSFILETRIGGERINDEX,
                         Tag.TRANSFILETRIGGERFLAGS, Tag.TRANSFILETRIGGERPRIORITIES),
}
# rpm's trigger senses (rpmds.h): fired by installing, by erasing, after erasing, before installing
_TRIGGER_SENSES = ((1 << 16, "in"), (1 << 17, "un"), (1 << 18, "postun"), (1 << 25, "prein"))
TRIGGER_PRIORITY = 1000000  # rpm's default file trigger priority
_DIGEST_ALGOS = {1: "md5", 2: "sha1", 8: "sha256", 9: "sha384", 10: "sha512"}


def sense_op(flags: int) -> Op | None:
    """rpm's LESS/GREATER/EQUAL sense bits as an operator."""
    return {SENSE_LESS: Op.LT, SENSE_LESS | SENSE_EQUAL: Op.LE, SENSE_EQUAL: Op.EQ,
            SENSE_GREATER | SENSE_EQUAL: Op.GE, SENSE_GREATER: Op.GT}.get(flags & 14)


def header_deps(h: Header) -> dict[DepKind, CNF]:
    """Every relation field of a header, one singleton group per rpm dependency."""
    out: dict[DepKind, CNF] = {}
    for kind, (name_tag, flag_tag, ver_tag) in _DEP_TAGS.items():
        names, flags, vers = h.texts(name_tag), h.ints(flag_tag), h.texts(ver_tag)
        groups = tuple((Relation(n, sense_op(flags[i] if i < len(flags) else 0),
                                 vers[i] if i < len(vers) else "",
                                 flags=flags[i] if i < len(flags) else 0),)
                       for i, n in enumerate(names))
        if groups:
            out[kind] = groups
    return out


def header_paths(h: Header) -> list[str]:
    """File paths (without leading /) in header order."""
    if h.get(Tag.BASENAMES) is not None:
        dirs, bases, idx = h.texts(Tag.DIRNAMES), h.texts(Tag.BASENAMES), h.ints(Tag.DIRINDEXES)
        if len(idx) != len(bases) or any(i >= len(dirs) for i in idx):
            raise PackageFormatError(f"inconsistent file list in header of {h.text(Tag.NAME)}")
        return [(dirs[i] + b).lstrip("/") for i, b in zip(idx, bases, strict=True)]
    return [p.lstrip("/") for p in h.texts(Tag.OLDFILENAMES)]


def header_files(h: Header) -> tuple[FileEntry, ...]:
    """Every file the header lists, with mode, owners, flags, caps, link target and digest."""
    paths = header_paths(h)
    n = len(paths)
    sizes = h.ints(Tag.LONGFILESIZES) or h.ints(Tag.FILESIZES)
    modes, flags = h.ints(Tag.FILEMODES), h.ints(Tag.FILEFLAGS)
    users, groups = h.texts(Tag.FILEUSERNAME), h.texts(Tag.FILEGROUPNAME)
    if any(len(c) != n for c in (sizes, modes, users, groups, flags)):
        raise PackageFormatError(f"inconsistent file arrays in header of {h.text(Tag.NAME)}")
    links, digests, caps = h.texts(Tag.FILELINKTOS), h.texts(Tag.FILEDIGESTS), h.texts(Tag.FILECAPS)
    algo = _DIGEST_ALGOS.get(h.number(Tag.FILEDIGESTALGO, 1), "md5")
    out = []
    for i, path in enumerate(paths):
        mode = modes[i]
        kind = FileKind.DIR if stat.S_ISDIR(mode) else (
            FileKind.SYMLINK if stat.S_ISLNK(mode) else FileKind.FILE)
        digest = digests[i] if i < len(digests) else ""
        out.append(FileEntry(
            path=path, kind=kind, mode=mode, size=sizes[i], user=users[i], group=groups[i],
            link=links[i] if i < len(links) else "", digest=f"{algo}:{digest}" if digest else "",
            config=bool(flags[i] & RPMFILE_CONFIG), ghost=bool(flags[i] & RPMFILE_GHOST),
            caps=caps[i] if i < len(caps) else "",
            noreplace=bool(flags[i] & RPMFILE_NOREPLACE)))
    return tuple(out)


def hardlink_groups(h: Header) -> dict[str, tuple[str, ...]]:
    """path -> all paths sharing its (device, inode), for regular files linked together."""
    paths, inodes, devs = header_paths(h), h.ints(Tag.FILEINODES), h.ints(Tag.FILEDEVICES)
    modes = h.ints(Tag.FILEMODES)
    if len(inodes) != len(paths) or len(devs) != len(paths):
        return {}
    groups: dict[tuple[int, int], list[str]] = {}
    for p, ino, dev, mode in zip(paths, inodes, devs, modes, strict=False):
        if stat.S_ISREG(mode):
            groups.setdefault((dev, ino), []).append(p)
    return {p: tuple(g) for g in groups.values() if len(g) > 1 for p in g}


def header_scripts(h: Header) -> tuple[Script, ...]:
    """Scriptlets (pretrans ... posttrans) with their interpreters (``<lua>`` kept as is)."""
    out = []
    for name, body_tag, prog_tag in _SCRIPTS:
        prog = " ".join(h.texts(prog_tag))
        body = h.text(body_tag)
        if body or prog:
            out.append(Script(name, body, prog))
    return tuple(out) + package_triggers(h) + file_triggers(h)


def package_triggers(h: Header) -> tuple[Script, ...]:
    """The ``%triggerin`` / ``%triggerun`` / ``%triggerpostun`` scripts (named e.g.
    ``triggerun``) in index order, each with the packages that fire it (``NAME`` or
    ``NAME OP VERSION``); a script no name points at (rpmbuild merges some) is left out."""
    bodies, progs = h.texts(Tag.TRIGGERSCRIPTS), h.texts(Tag.TRIGGERSCRIPTPROG)
    names, vers = h.texts(Tag.TRIGGERNAME), h.texts(Tag.TRIGGERVERSION)
    flags, index = h.ints(Tag.TRIGGERFLAGS), h.ints(Tag.TRIGGERINDEX)
    groups = _by_index(index, min(len(names), len(flags), len(index)))
    out = []
    for i, body in enumerate(bodies):
        if not (picked := groups.get(i)):
            continue
        sense = next((s for bit, s in _TRIGGER_SENSES if flags[picked[0]] & bit), "in")
        targets = tuple(f"{names[j]} {op} {vers[j]}" if (op := sense_op(flags[j])) and
                        j < len(vers) and vers[j] else names[j] for j in picked)
        out.append(Script(f"trigger{sense}", body, progs[i] if i < len(progs) else "",
                          targets=targets))
    return tuple(out)


def _by_index(index: tuple[int, ...], n: int) -> dict[int, list[int]]:
    """script index -> the positions of the first ``n`` entries naming it, in order (one
    pass: a header with many scripts and names stays linear)."""
    out: dict[int, list[int]] = {}
    for j in range(n):
        out.setdefault(index[j], []).append(j)
    return out


def file_triggers(h: Header) -> tuple[Script, ...]:
    """The ``%filetrigger*`` and ``%transfiletrigger*`` scripts (named e.g.
    ``filetriggerin``), each with its path prefixes and priority."""
    out = []
    for kind, (body_t, prog_t, name_t, index_t, flags_t, prio_t) in _FILE_TRIGGERS.items():
        bodies, progs, prios = h.texts(body_t), h.texts(prog_t), h.ints(prio_t)
        names, index, flags = h.texts(name_t), h.ints(index_t), h.ints(flags_t)
        groups = _by_index(index, min(len(names), len(index), len(flags)))
        for i, body in enumerate(bodies):
            if not (picked := groups.get(i)):
                continue
            sense = next((s for bit, s in _TRIGGER_SENSES if flags[picked[0]] & bit), "in")
            out.append(Script(f"{kind}{sense}", body, progs[i] if i < len(progs) else "",
                              tuple(names[j] for j in picked),
                              prios[i] if i < len(prios) else TRIGGER_PRIORITY))
    return tuple(out)


def meta_from_header(h: Header, *, origin: Origin, checksum: str = "", size: int = 0,
                     with_files: bool = True) -> PackageMeta:
    """A record from an rpm header (a package file's or an rpmdb blob)."""
    name = h.text(Tag.NAME)
    if not name or not h.text(Tag.VERSION):
        raise PackageFormatError("rpm header lacks name or version")
    return PackageMeta(
        type=PackageType.RPM, name=name, version=h.text(Tag.VERSION),
        release=h.text(Tag.RELEASE), epoch=h.number(Tag.EPOCH), arch=h.text(Tag.ARCH) or "noarch",
        origin=origin, deps=header_deps(h), files=header_files(h) if with_files else (),
        scripts=header_scripts(h), checksum=checksum, size=size,
        installed_size=h.number(Tag.LONGSIZE) or h.number(Tag.SIZE),
        source=h.text(Tag.SOURCERPM), summary=h.text(Tag.SUMMARY),
        conffiles=tuple(e.path for e in (header_files(h) if with_files else ()) if e.config))


class HashingReader(io.RawIOBase):
    """Passes reads through while hashing them (sha256); :meth:`finish` hashes the rest."""

    def __init__(self, inner: SubFile) -> None:
        self._inner = inner
        self._h = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = self._inner.readinto(b)
        self._h.update(memoryview(b).cast("B")[:n])
        return n

    def finish(self) -> str:
        buf = bytearray(1 << 20)
        while n := self._inner.readinto(buf):
            self._h.update(memoryview(buf)[:n])
        return self._h.hexdigest()


@dataclass(frozen=True)
class RpmPackage:
    """An opened .rpm: its header and where the payload starts."""

    path: Path
    header: Header
    payload_offset: int
    meta: PackageMeta

    @property
    def label(self) -> str:
        """The package file name, for messages."""
        return self.path.name

    def data_limit(self, cap: int = DEFAULT_CAP) -> int:
        """Decompressed bytes the payload may produce: the header's file sizes plus a margin."""
        declared = sum(e.size for e in self.meta.files if e.kind == FileKind.FILE)
        return declared_limit(declared) if self.meta.files else cap

    @contextmanager
    def open_payload(self, *, cap: int = DEFAULT_CAP) -> Iterator[
            Iterator[tuple[Member, ContentReader | None]]]:
        """Stream the cpio members through the payload safety checks."""
        with open(self.path, "rb") as f:
            size = f.seek(0, 2) - self.payload_offset
            sub = HashingReader(SubFile(f, self.payload_offset, size))
            yield iter_payload(sub, where=Where(self.label, "payload"), fmt="cpio",
                               limit=self.data_limit(cap),
                               max_entries=len(self.meta.files) + 16)
            self._check_payload_digest(sub)

    def _check_payload_digest(self, sub: HashingReader) -> None:
        want = self.header.texts(Tag.PAYLOADDIGEST)
        if not want or self.header.number(Tag.PAYLOADDIGESTALGO, 8) != 8:
            return
        if sub.finish() != want[0]:
            raise PackageFormatError(f"payload digest mismatch (corrupt payload) in {self.label}")


def open_rpm(path: Path, *, checksum: str = "") -> RpmPackage:
    """Parse an .rpm's lead and headers (the payload is not read)."""
    with open(path, "rb") as f:
        _sig, header, offset = read_package_header(f, path.name)
        size = f.seek(0, 2)
    try:
        meta = meta_from_header(header, origin=Origin.FILE, checksum=checksum, size=size)
    except PackageFormatError as e:
        raise PackageFormatError(f"{e} in {path.name}") from e
    fmt = header.text(Tag.PAYLOADFORMAT) or "cpio"
    if fmt != "cpio":
        raise PackageFormatError(f"unsupported payload format '{fmt}' in {path.name}")
    return RpmPackage(path=path, header=header, payload_offset=offset, meta=meta)
