"""OSTree object types, their GVariant records, and how they are checksummed.

Metadata objects are GVariant in normal form with uid/gid/mode/timestamps
stored big-endian (OSTree byte-swaps them before serializing).  A file
object's checksum is SHA-256 over its header (``u32be len``, four NULs, the
``(uuuusa(ayay))`` variant) followed by the content.
"""

from __future__ import annotations

import hashlib
import stat
import struct
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any

from store.errors import CorruptObject
from store.gvariant import Variant, _frame, decode, encode

Xattrs = tuple[tuple[bytes, bytes], ...]

DIRTREE_SIG = "(a(say)a(sayay))"
DIRMETA_SIG = "(uuua(ayay))"
COMMIT_SIG = "(a{sv}aya(say)sstayay)"
FILE_HEADER_SIG = "(uuuusa(ayay))"
ARCHIVE_HEADER_SIG = "(tuuuusa(ayay))"
METADATA_SIG = "a{sv}"


class ObjectType(StrEnum):
    """The kinds of loose object, named by their file extension."""

    FILE = "file"
    DIR_TREE = "dirtree"
    DIR_META = "dirmeta"
    COMMIT = "commit"
    TOMBSTONE_COMMIT = "tombstone-commit"
    COMMIT_META = "commitmeta"

    @property
    def is_meta(self) -> bool:
        return self is not ObjectType.FILE

    @property
    def number(self) -> int:
        """OSTree's numeric OstreeObjectType."""
        return _NUMBERS[self]

    @classmethod
    def from_number(cls, n: int) -> ObjectType:
        for k, v in _NUMBERS.items():
            if v == n:
                return k
        raise CorruptObject(f"unknown object type number {n}")


_NUMBERS = {ObjectType.FILE: 1, ObjectType.DIR_TREE: 2, ObjectType.DIR_META: 3,
            ObjectType.COMMIT: 4, ObjectType.TOMBSTONE_COMMIT: 5, ObjectType.COMMIT_META: 6}


def bswap32(n: int) -> int:
    """Swap the byte order of a 32-bit value (OSTree stores these big-endian)."""
    return struct.unpack("<I", struct.pack(">I", n & 0xFFFFFFFF))[0]


def bswap64(n: int) -> int:
    """Swap the byte order of a 64-bit value."""
    return struct.unpack("<Q", struct.pack(">Q", n & 0xFFFFFFFFFFFFFFFF))[0]


def sort_xattrs(xattrs: Xattrs | list[tuple[bytes, bytes]]) -> Xattrs:
    """Xattrs in OSTree's canonical order (by name)."""
    return tuple(sorted(((bytes(k), bytes(v)) for k, v in xattrs), key=lambda kv: kv[0]))


def _xattrs_from_gv(items: list[tuple[bytes, bytes]]) -> Xattrs:
    """Decoded ``a(ayay)``: names keep OSTree's trailing NUL stripped."""
    return tuple((k[:-1] if k.endswith(b"\0") else k, v) for k, v in items)


def _xattrs_to_gv(xattrs: Xattrs) -> list[tuple[bytes, bytes]]:
    return [(k + b"\0", v) for k, v in xattrs]


@dataclass(frozen=True)
class FileMeta:
    """Metadata of a content object: owner, full ``st_mode``, symlink target, xattrs."""

    uid: int
    gid: int
    mode: int
    symlink: str = ""
    xattrs: Xattrs = ()

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)

    def header_variant(self) -> bytes:
        """The ``(uuuusa(ayay))`` variant of this metadata."""
        return encode(FILE_HEADER_SIG, (bswap32(self.uid), bswap32(self.gid), bswap32(self.mode),
                                        0, self.symlink, _xattrs_to_gv(self.xattrs)))


@lru_cache(maxsize=4096)
def file_header(meta: FileMeta) -> bytes:
    """The length-prefixed header that starts a file object's checksum input."""
    v = meta.header_variant()
    return struct.pack(">I", len(v)) + b"\0\0\0\0" + v


def archive_header(meta: FileMeta, size: int) -> bytes:
    """The length-prefixed header of an archive-mode ``.filez`` object."""
    v = encode(ARCHIVE_HEADER_SIG, (bswap64(size), bswap32(meta.uid), bswap32(meta.gid),
                                    bswap32(meta.mode), 0, meta.symlink,
                                    _xattrs_to_gv(meta.xattrs)))
    return struct.pack(">I", len(v)) + b"\0\0\0\0" + v


def parse_header(data: bytes, *, archive: bool) -> tuple[FileMeta, int, int]:
    """Parse a file/filez header; return (meta, content size or -1, header length)."""
    if len(data) < 8:
        raise CorruptObject("file header too short")
    (n,) = struct.unpack(">I", data[:4])
    if len(data) < 8 + n:
        raise CorruptObject("file header truncated")
    body = data[8 : 8 + n]
    if archive:
        size, uid, gid, mode, _rdev, target, xattrs = decode(ARCHIVE_HEADER_SIG, body)
        size = bswap64(size)
    else:
        uid, gid, mode, _rdev, target, xattrs = decode(FILE_HEADER_SIG, body)
        size = -1
    meta = FileMeta(bswap32(uid), bswap32(gid), bswap32(mode), target, _xattrs_from_gv(xattrs))
    return meta, size, 8 + n


@lru_cache(maxsize=1024)
def encode_dirmeta_variant(uid: int, gid: int, mode: int, xattrs: Xattrs) -> bytes:
    """The ``(uuua(ayay))`` variant used by dirmeta objects and ``user.ostreemeta``."""
    return encode(DIRMETA_SIG, (bswap32(uid), bswap32(gid), bswap32(mode),
                                _xattrs_to_gv(xattrs)))


@lru_cache(maxsize=1024)
def decode_dirmeta_variant(data: bytes) -> tuple[int, int, int, Xattrs]:
    """Inverse of :func:`encode_dirmeta_variant`."""
    uid, gid, mode, xattrs = decode(DIRMETA_SIG, data)
    return bswap32(uid), bswap32(gid), bswap32(mode), _xattrs_from_gv(xattrs)


@dataclass(frozen=True)
class DirMeta:
    """A directory's owner, full ``st_mode`` and xattrs."""

    uid: int
    gid: int
    mode: int
    xattrs: Xattrs = ()

    def to_bytes(self) -> bytes:
        return encode_dirmeta_variant(self.uid, self.gid, self.mode, self.xattrs)

    @classmethod
    def from_bytes(cls, data: bytes) -> DirMeta:
        """Parse a dirmeta object; CorruptObject unless it is ``(uuua(ayay))`` in normal form
        whose mode is a directory's with no bits besides the permissions (as ostree checks)."""
        meta = cls(*decode_dirmeta_variant(data))
        if not stat.S_ISDIR(meta.mode) or meta.mode & ~(stat.S_IFMT(meta.mode) | 0o7777):
            raise CorruptObject(f"dirmeta with mode {meta.mode:o}, not a directory's")
        return meta


def _strcmp_key(name: str) -> bytes:
    return name.encode()


def _entry(name: str, sums: bytes, split: int | None = None) -> bytes:
    """A ``(say)`` or ``(sayay)`` element: name, checksum(s), framing offsets reversed."""
    nb = name.encode() + b"\0"
    offsets = [len(nb)] if split is None else [len(nb) + split, len(nb)]
    return _frame(bytearray(nb + sums), offsets)


def _file_entry(name: str, csum: str) -> bytes:
    """:func:`_entry` of a dirtree's file, written at once when its framing offset is one
    byte (names up to 221 bytes; a compose serializes thousands of entries)."""
    nb = name.encode() + b"\0"
    if len(nb) + 33 > 0xFF:
        return _entry(name, bytes.fromhex(csum))
    return nb + bytes.fromhex(csum) + bytes((len(nb),))


def _dir_entry(name: str, tree: str, meta: str) -> bytes:
    """:func:`_entry` of a dirtree's subdirectory (two framing offsets, reversed)."""
    nb = name.encode() + b"\0"
    if len(nb) + 66 > 0xFF:
        return _entry(name, bytes.fromhex(tree) + bytes.fromhex(meta), 32)
    return nb + bytes.fromhex(tree) + bytes.fromhex(meta) + bytes((len(nb) + 32, len(nb)))


def _frame_array(items: list[bytes]) -> bytes:
    body = bytearray()
    ends = []
    for it in items:
        body += it
        ends.append(len(body))
    return _frame(body, ends)


def _osize(n: int) -> int:
    return 0 if n == 0 else 1 if n <= 0xFF else 2 if n <= 0xFFFF else 4 if n <= 0xFFFFFFFF else 8


def _off(buf: bytes, pos: int, size: int) -> int:
    return int.from_bytes(buf[pos : pos + size], "little")


def _split_pair(data: bytes) -> tuple[bytes, bytes]:
    """The two arrays of a dirtree ``(a(say)a(sayay))``; ValueError unless normal form
    (GLib calls the empty string the normal form of two empty arrays too)."""
    osz = _osize(len(data))
    mid = _off(data, len(data) - osz, osz)
    if mid > len(data) - osz:
        raise ValueError(f"tuple offset {mid} past the end")
    return data[:mid], data[mid : len(data) - osz]


_OFFSET_FORMATS = {1: "B", 2: "H", 4: "I", 8: "Q"}


def _read_entries(arr: bytes, n_offsets: int) -> list[tuple[str, bytes]]:
    """Elements of ``a(say)`` (one offset) or ``a(sayay)`` (two offsets), in normal form
    (ValueError otherwise); the count comes from the data's length."""
    if not arr:
        return []
    size = len(arr)
    osz = _osize(size)
    table = _off(arr, size - osz, osz)
    if table > size - osz or (size - table) % osz:
        raise ValueError("bad array framing")
    out = []
    start = 0
    for end in struct.unpack_from(f"<{(size - table) // osz}{_OFFSET_FORMATS[osz]}", arr, table):
        if not start < end <= table:
            raise ValueError("bad element offset")
        out.append(_read_entry(arr, start, end, n_offsets))
        start = end
    if start != table:
        raise ValueError("bytes between the last element and the framing offsets")
    return out


def _read_entry(arr: bytes, start: int, end: int, n_offsets: int) -> tuple[str, bytes]:
    """One ``(say)``/``(sayay)`` element at ``arr[start:end]``: its name and 32 or 64 bytes."""
    eo = _osize(end - start)
    name_end = start + _off(arr, end - eo, eo)
    sums_end = end - n_offsets * eo
    if n_offsets == 2 and start + _off(arr, end - 2 * eo, eo) != name_end + 32:
        raise ValueError("bad checksum offset")
    if not start < name_end <= sums_end or arr[name_end - 1] != 0:
        raise ValueError("bad entry name")
    if sums_end - name_end != 32 * n_offsets:
        raise ValueError("bad checksum length")
    if arr.find(b"\0", start, name_end - 1) != -1:
        raise ValueError("entry name with an embedded NUL")
    return arr[start : name_end - 1].decode(), arr[name_end:sums_end]


@dataclass(frozen=True)
class DirTree:
    """A directory listing: files as (name, checksum), subdirs as (name, tree, meta)."""

    files: tuple[tuple[str, str], ...] = ()
    dirs: tuple[tuple[str, str, str], ...] = ()

    def to_bytes(self) -> bytes:
        files = sorted(self.files, key=lambda e: _strcmp_key(e[0]))
        dirs = sorted(self.dirs, key=lambda e: _strcmp_key(e[0]))
        fa = _frame_array([_file_entry(n, c) for n, c in files])
        da = _frame_array([_dir_entry(n, t, m) for n, t, m in dirs])
        return _frame(bytearray(fa + da), [len(fa)])

    @classmethod
    def from_bytes(cls, data: bytes) -> DirTree:
        try:
            files, dirs = _split_pair(data)
            return cls(tuple((n, c.hex()) for n, c in _read_entries(files, 1)),
                       tuple((n, c[:32].hex(), c[32:].hex()) for n, c in _read_entries(dirs, 2)))
        except (ValueError, IndexError, UnicodeDecodeError) as e:
            raise CorruptObject(f"malformed dirtree: {e}") from None


COMMIT_META_TYPES = {"ostree.ref-binding": "as", "ostree.collection-binding": "s",
                     "version": "s", "ostree.endoflife": "s", "ostree.endoflife-rebase": "s",
                     "ostree.sizes": "aay"}


def check_meta_types(meta: dict[str, Variant], types: dict[str, str], what: str) -> None:
    """Raise CorruptObject when a key of ``types`` is in ``meta`` with another type."""
    for key, sig in types.items():
        v = meta.get(key)
        if v is not None and v.sig != sig:
            raise CorruptObject(f"{what}: {key} has type {v.sig[:40]}, expected {sig}")


@dataclass(frozen=True)
class Commit:
    """A commit object: metadata, parent, subject, body, timestamp, root tree and meta."""

    root_tree: str
    root_meta: str
    timestamp: int
    subject: str = ""
    body: str = ""
    parent: str | None = None
    metadata: dict[str, Variant] = field(default_factory=dict)
    related: tuple[tuple[str, str], ...] = ()

    def to_bytes(self) -> bytes:
        return encode(COMMIT_SIG, (
            self.metadata,
            bytes.fromhex(self.parent) if self.parent else b"",
            [(n, bytes.fromhex(c)) for n, c in self.related],
            self.subject,
            self.body,
            bswap64(self.timestamp),
            bytes.fromhex(self.root_tree),
            bytes.fromhex(self.root_meta),
        ))

    @classmethod
    def from_bytes(cls, data: bytes) -> Commit:
        """Parse a commit object; CorruptObject for anything but a commit in normal form whose
        checksums are 32 bytes and whose well-known metadata keys have ostree's types."""
        meta, parent, related, subject, body, ts, tree, dmeta = decode(COMMIT_SIG, data)
        if len(tree) != 32 or len(dmeta) != 32 or len(parent) not in (0, 32) or \
                any(len(c) != 32 for _n, c in related):
            raise CorruptObject("commit with a bad checksum length")
        check_meta_types(meta, COMMIT_META_TYPES, "commit metadata")
        return cls(root_tree=tree.hex(), root_meta=dmeta.hex(), timestamp=bswap64(ts),
                   subject=subject, body=body, parent=parent.hex() if parent else None,
                   metadata=meta, related=tuple((n, c.hex()) for n, c in related))

    def meta_value(self, key: str, default: Any = None) -> Any:
        """The plain value of a metadata key, or ``default``."""
        v = self.metadata.get(key)
        return default if v is None else v.value


def checksum_bytes(data: bytes) -> str:
    """SHA-256 hex of ``data`` (the checksum of a metadata object)."""
    return hashlib.sha256(data).hexdigest()


def checksum_file_bytes(meta: FileMeta, content: bytes) -> str:
    """The checksum of a file object with this metadata and content."""
    h = hashlib.sha256(file_header(meta))
    h.update(content)
    return h.hexdigest()


def loose_path(csum: str, objtype: ObjectType, *, archive: bool = False) -> str:
    """Relative path of a loose object under ``objects/``."""
    ext = "filez" if archive and objtype is ObjectType.FILE else objtype.value
    return f"{csum[:2]}/{csum[2:]}.{ext}"


def is_checksum(s: str) -> bool:
    """True when ``s`` is 64 lowercase hex digits."""
    return len(s) == 64 and all(c in "0123456789abcdef" for c in s)
