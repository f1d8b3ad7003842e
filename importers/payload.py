"""Safe, streaming reading of a package payload (tar or cpio, any compression) via libarchive.

:func:`iter_payload` yields one :class:`Member` at a time with a reader for its
content; nothing is extracted to disk and only one block is held in memory.
It refuses, naming the package and the member:

- absolute names and names with ``..`` components;
- a member whose path goes through a symlink the payload created earlier
  (``link -> /tmp`` then ``link/x``), or that replaces one;
- a hardlink to anything that is not a regular file earlier in the payload;
- device nodes, fifos and sockets;
- more decompressed bytes than ``limit`` (decompression bombs: counted on the
  decompressed stream, headers included, while reading);
- truncated or corrupt streams.
"""

from __future__ import annotations

import ctypes
import io
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import libarchive
from libarchive import ffi
from libarchive.exception import ArchiveError

from importers.errors import PackageFormatError, UnsafePayloadError
from importers.model import FileKind

BLOCK = 256 * 1024
DEFAULT_CAP = 1 << 30


def declared_limit(declared: int) -> int:
    """How many decompressed bytes a payload that declares ``declared`` may produce:
    that plus an eighth plus 1 MiB."""
    return declared + declared // 8 + (1 << 20)
DEFAULT_MAX_ENTRIES = 1_000_000


@dataclass(frozen=True)
class Member:
    """One payload entry; ``path`` is normalized (no ``./``, no leading ``/``; "" is the root)."""

    path: str
    kind: FileKind
    mode: int
    uid: int
    gid: int
    uname: str
    gname: str
    size: int
    link: str = ""


@dataclass(frozen=True)
class Where:
    """Names used in error messages: the package file and the archive inside it."""

    package: str
    archive: str

    def __str__(self) -> str:
        return f"{self.archive} of {self.package}" if self.archive else self.package


def normalize(name: str, where: Where) -> str:
    """The member name relative to the package root; unsafe names raise."""
    if name.startswith("/"):
        raise UnsafePayloadError(f"unsafe path '{name}' (absolute) in {where}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafePayloadError(f"unsafe path '{name}' in {where}")
    return "/".join(parts)


class _Guard:
    """Tracks what the payload created so far, to refuse traversal and foreign hardlinks."""

    def __init__(self, where: Where) -> None:
        self.where = where
        self.symlinks: set[str] = set()
        self.files: set[str] = set()
        self.dirs: set[str] = {""}

    def check(self, raw: str, path: str, kind: FileKind, link: str) -> None:
        parts = path.split("/") if path else []
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix in self.symlinks:
                raise UnsafePayloadError(
                    f"unsafe path '{raw}' through symlink '{prefix}' in {self.where}")
            if prefix in self.files:
                raise UnsafePayloadError(
                    f"unsafe path '{raw}' below file '{prefix}' in {self.where}")
        if path in self.symlinks or (kind != FileKind.DIR and path in self.dirs) or (
                kind == FileKind.DIR and path in self.files):
            raise UnsafePayloadError(f"member '{raw}' replaces an earlier entry in {self.where}")
        if kind == FileKind.HARDLINK and link not in self.files:
            raise UnsafePayloadError(
                f"hardlink '{raw}' to '{link}' outside the package in {self.where}")
        {FileKind.SYMLINK: self.symlinks, FileKind.DIR: self.dirs}.get(kind, self.files).add(path)


class _Budget:
    """Decompressed-byte accounting: member data against ``limit``, the whole stream
    (headers, padding, pax records) against ``limit`` plus a per-entry allowance."""

    def __init__(self, archive_p: object, limit: int, max_entries: int, where: Where) -> None:
        self.archive_p = archive_p
        self.limit = limit
        self.max_entries = max_entries
        self.where = where
        self.data = 0
        self.entries = 0

    def check(self, member: str, extra: int = 0) -> None:
        self.data += extra
        stream_cap = self.limit + (16 << 20) + 8192 * self.entries
        if self.data > self.limit or ffi.filter_bytes(self.archive_p, 0) > stream_cap:
            raise UnsafePayloadError(
                f"payload expands beyond {self.limit} bytes at '{member}' in {self.where} "
                "(decompression bomb?)")

    def count(self, member: str) -> None:
        self.entries += 1
        if self.entries > self.max_entries:
            raise UnsafePayloadError(
                f"more than {self.max_entries} members at '{member}' in {self.where}")
        self.check(member)


class ContentReader(io.RawIOBase):
    """A file-like view of one member's data, read by libarchive straight into the
    caller's buffer and counted against the budget."""

    def __init__(self, archive_p: object, budget: _Budget, raw: str, size: int) -> None:
        self._p = archive_p
        self._budget = budget
        self._raw = raw
        self._left = size
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = memoryview(b).nbytes
        if n == 0 or self._eof:
            return 0
        target = (ctypes.c_char * n).from_buffer(b)
        try:
            got = ffi.read_data(self._p, target, n)
        except ArchiveError as e:
            raise PackageFormatError(
                f"corrupt or truncated data at '{self._raw}' in {self._budget.where}: "
                f"{libarchive_msg(e)}") from e
        if got < 0:
            raise PackageFormatError(f"unreadable member '{self._raw}' in {self._budget.where}")
        self._account(got)
        return got

    def _account(self, got: int) -> None:
        self._left -= got
        self._budget.check(self._raw, got)
        if self._left < 0:
            raise PackageFormatError(
                f"member '{self._raw}' longer than declared in {self._budget.where}")
        if got == 0:
            self._eof = True
            if self._left > 0:
                raise PackageFormatError(f"truncated member '{self._raw}' in {self._budget.where}")

    def read_small(self) -> bytearray:
        """The whole content of a member known to be small."""
        buf = bytearray(max(self._left, 0))
        view = memoryview(buf)
        pos = 0
        while pos < len(buf):
            got = self.readinto(view[pos:])
            if got == 0:
                break
            pos += got
        self.drain()
        return buf

    def drain(self) -> None:
        """Read (and account for) whatever the consumer left unread."""
        scratch = bytearray(BLOCK)
        while not self._eof:
            self.readinto(scratch)


def _kind(entry: libarchive.ArchiveEntry, raw: str, where: Where) -> FileKind:
    if entry.islnk:
        return FileKind.HARDLINK
    if entry.issym:
        return FileKind.SYMLINK
    if entry.isdir:
        return FileKind.DIR
    if entry.isreg:
        return FileKind.FILE
    what = "device node" if entry.isblk or entry.ischr else "special file"
    raise UnsafePayloadError(f"{what} '{raw}' not allowed in {where}")


def _member(entry: libarchive.ArchiveEntry, where: Where, guard: _Guard) -> Member:
    raw = entry.pathname or ""
    path = normalize(raw, where)
    kind = _kind(entry, raw, where)
    link = entry.linkpath or "" if kind in (FileKind.SYMLINK, FileKind.HARDLINK) else ""
    if kind == FileKind.HARDLINK:
        link = normalize(link, where)
    guard.check(raw, path, kind, link)
    ftype = {FileKind.DIR: stat.S_IFDIR, FileKind.SYMLINK: stat.S_IFLNK}.get(kind, stat.S_IFREG)
    return Member(path=path, kind=kind, mode=ftype | stat.S_IMODE(entry.mode),
                  uid=entry.uid, gid=entry.gid, uname=entry.uname or "",
                  gname=entry.gname or "", size=max(entry.size or 0, 0), link=link)


def iter_payload(stream: BinaryIO | io.RawIOBase, *, where: Where, fmt: str = "tar",
                 limit: int = DEFAULT_CAP, max_entries: int = DEFAULT_MAX_ENTRIES,
                 block: int = BLOCK) -> Iterator[tuple[Member, ContentReader | None]]:
    """Yield each member and, for members with data, a reader valid until the next member.

    Guarantees: every yielded path is normalized and safe under the checks in the
    module docstring; at most ``limit`` decompressed bytes are ever produced; any
    libarchive failure becomes :class:`PackageFormatError` naming ``where``.
    """
    guard = _Guard(where)
    raw = ""
    try:
        with libarchive.stream_reader(stream, format_name=fmt, filter_name="all",
                                      block_size=block) as archive:
            budget = _Budget(archive._pointer, limit, max_entries, where)
            for entry in archive:
                raw = entry.pathname or ""
                budget.count(raw)
                member = _member(entry, where, guard)
                reader = None
                if member.kind in (FileKind.FILE, FileKind.HARDLINK) and member.size > 0:
                    reader = ContentReader(archive._pointer, budget, raw, member.size)
                yield member, reader
                if reader is not None:
                    reader.drain()
    except ArchiveError as e:
        at = f" after member '{raw}'" if raw else ""
        raise PackageFormatError(f"corrupt or truncated {where}{at}: {libarchive_msg(e)}") from e


def libarchive_msg(e: ArchiveError) -> str:
    """libarchive's message without the errno/retcode/pointer suffix."""
    return str(getattr(e, "msg", "") or e).split(" (errno=")[0].strip()
