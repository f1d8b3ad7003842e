"""Reading ``.deb`` files: the ar container, control.tar and a streaming view of data.tar.

Layout (deb(5))::

    !<arch>\\n
    debian-binary      "2.0\\n"
    control.tar[.gz|.xz|.zst]   control, conffiles, md5sums, maintainer scripts
    data.tar[.gz|.xz|.zst|.bz2|.lzma]   the files, ./usr/bin/... (streamed, never loaded)

Control fields are parsed by python-debian; the tar members by libarchive
through :mod:`importers.payload`, so the same safety checks apply to both.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from importers.debcontrol import meta_from_control
from importers.errors import PackageFormatError
from importers.model import (
    FileEntry,
    FileKind,
    Origin,
    PackageMeta,
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

AR_MAGIC = b"!<arch>\n"
CONTROL_CAP = 64 << 20
# Control members dpkg keeps in its info directory, byte for byte (templates feed debconf).
SCRIPT_NAMES = ("preinst", "postinst", "prerm", "postrm", "config", "triggers", "templates",
                "shlibs", "symbols", "md5sums")
_COMPRESSIONS = ("", ".gz", ".xz", ".zst", ".bz2", ".lzma")


@dataclass(frozen=True)
class ArMember:
    """One member of an ar archive: name and the byte range of its data."""

    name: str
    offset: int
    size: int


class SubFile(io.RawIOBase):
    """A read-only, non-seekable window ``[offset, offset+size)`` of an open file."""

    def __init__(self, f: BinaryIO, offset: int, size: int) -> None:
        self._f = f
        self._pos = offset
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(b).cast("B")
        n = min(view.nbytes, self._left)
        if n <= 0:
            return 0
        got = os.preadv(self._f.fileno(), [view[:n]], self._pos)
        self._pos += got
        self._left -= got
        return got


def read_ar_index(f: BinaryIO, label: str) -> list[ArMember]:
    """The members of an ar archive; sizes beyond the end of the file raise."""
    total = os.fstat(f.fileno()).st_size
    if os.pread(f.fileno(), 8, 0) != AR_MAGIC:
        raise PackageFormatError(f"not a Debian package (no ar magic): {label}")
    members, pos = [], 8
    while pos < total:
        hdr = os.pread(f.fileno(), 60, pos)
        if len(hdr) < 60 or hdr[58:60] != b"`\n":
            raise PackageFormatError(f"truncated or corrupt ar header at byte {pos} of {label}")
        name = hdr[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(hdr[48:58].decode("ascii").strip())
        except ValueError as e:
            raise PackageFormatError(f"bad size of ar member '{name}' in {label}") from e
        if size < 0 or pos + 60 + size > total:
            raise PackageFormatError(
                f"ar member '{name}' ({size} bytes) larger than the file {label}")
        members.append(ArMember(name, pos + 60, size))
        pos += 60 + size + (size & 1)
    return members


def _pick(members: list[ArMember], stem: str, label: str) -> ArMember:
    for m in members:
        if m.name.startswith(stem) and m.name[len(stem):] in _COMPRESSIONS:
            return m
    raise PackageFormatError(f"no {stem} member in {label}")


@dataclass(frozen=True)
class DebPackage:
    """An opened .deb: where its members are and what its control data says."""

    path: Path
    data: ArMember
    meta: PackageMeta

    @property
    def label(self) -> str:
        """The package file name, for messages."""
        return self.path.name

    def data_limit(self, cap: int = DEFAULT_CAP) -> int:
        """Decompressed bytes data.tar may produce: Installed-Size plus a margin, else ``cap``."""
        declared = self.meta.installed_size * 1024
        return declared_limit(declared) if declared else cap

    @contextmanager
    def open_data(self, *, cap: int = DEFAULT_CAP) -> Iterator[
            Iterator[tuple[Member, ContentReader | None]]]:
        """Stream data.tar's members through the payload safety checks."""
        with open(self.path, "rb") as f:
            sub = SubFile(f, self.data.offset, self.data.size)
            where = Where(self.label, self.data.name)
            yield iter_payload(sub, where=where, fmt="tar", limit=self.data_limit(cap))


def open_deb(path: Path, *, checksum: str = "") -> DebPackage:
    """Parse a .deb's container and control archive (the data archive is not read)."""
    label = path.name
    with open(path, "rb") as f:
        members = read_ar_index(f, label)
        if not members or members[0].name != "debian-binary":
            raise PackageFormatError(f"first ar member is not debian-binary in {label}")
        ver = os.pread(f.fileno(), min(members[0].size, 16), members[0].offset)
        if not ver.startswith(b"2.") or not ver.endswith(b"\n"):
            raise PackageFormatError(f"unsupported debian-binary {ver!r} in {label}")
        control = _pick(members, "control.tar", label)
        data = _pick(members, "data.tar", label)
        files = _read_control_tar(SubFile(f, control.offset, control.size),
                                  Where(label, control.name))
    if "control" not in files:
        raise PackageFormatError(f"no control file in {control.name} of {label}")
    meta = meta_from_control(files["control"].decode("utf-8", "replace"), origin=Origin.FILE)
    meta = _with_control_files(meta, files, checksum, os.stat(path).st_size)
    return DebPackage(path=path, data=data, meta=meta)


def _read_control_tar(stream: BinaryIO | io.RawIOBase, where: Where) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for member, reader in iter_payload(stream, where=where, fmt="tar", limit=CONTROL_CAP,
                                       block=16384):
        if member.kind == FileKind.FILE and "/" not in member.path:
            out[member.path] = bytes(reader.read_small()) if reader is not None else b""
    return out


def _with_control_files(meta: PackageMeta, files: dict[str, bytes], checksum: str,
                        size: int) -> PackageMeta:
    scripts = tuple(Script(n, body.decode("utf-8", "surrogateescape"), _interpreter(body))
                    for n in SCRIPT_NAMES if (body := files.get(n)) is not None)
    conffiles = tuple(line.strip().lstrip("/") for line in
                      files.get("conffiles", b"").decode("utf-8", "replace").splitlines()
                      if line.strip() and not line.startswith("remove-on-upgrade"))
    md5 = parse_md5sums(files.get("md5sums", b""))
    entries = tuple(FileEntry(path=p, digest=f"md5:{d}", config=p in conffiles)
                    for p, d in sorted(md5.items()))
    return meta.with_origin(Origin.FILE, scripts=scripts, conffiles=conffiles, files=entries,
                            checksum=checksum, size=size)


def parse_md5sums(data: bytes) -> dict[str, str]:
    """``md5  path`` lines to {path: md5}."""
    out = {}
    for line in data.decode("utf-8", "replace").splitlines():
        digest, _, path = line.partition(" ")
        if path:
            out[path.strip().lstrip("/")] = digest
    return out


def _interpreter(body: bytes) -> str:
    if body.startswith(b"#!"):
        return body[2:].split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    return ""
