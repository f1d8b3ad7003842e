"""Reading an inline static delta (:mod:`store.replication.bundle_delta`) from its file
without holding its parts in memory.

The superblock is a GVariant tuple whose first member, the metadata ``a{sv}``, holds
every part as ``(yay)``: the compression byte followed by the part's bytes, which is
exactly the part file whose sha256 the superblock lists.  This reader follows the
framing offsets with positional reads: it decodes the metadata's small values
(endianness, the commit's detached metadata) and the members after the metadata
(commit, part and fallback headers), re-encodes them as a superblock without parts
and parses that with :meth:`Superblock.from_bytes` (normal form and every check of a
pull); of each part it keeps only where it lies in the file.  Every offset is checked
against its container's bounds before it is used, and every read is bounded: a key
(1 KiB), a small value (16 MiB), the members after the metadata (64 MiB), a part
(:data:`MAX_PART_SIZE` + 1).  The parts are checked against their checksums by the
caller, one at a time.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from store.errors import CorruptObject
from store.gvariant import TypeInfo, Variant, decode, encode, type_info
from store.replication.delta_format import (
    MAX_PART_SIZE,
    SUPERBLOCK_SIG,
    Superblock,
    delta_dir,
    delta_name,
)

MAX_KEY = 1024
MAX_SMALL = 16 << 20
MAX_REST = 64 << 20
MAX_ENTRIES = 1 << 16
_OFFSET_FORMATS = {1: "B", 2: "H", 4: "I", 8: "Q"}


@dataclass(frozen=True)
class InlineFile:
    """An inline delta on disk: its superblock (metadata without the parts) and the file
    range (start, end) of each part."""

    path: Path
    superblock: Superblock
    parts: tuple[tuple[int, int], ...]

    def read_part(self, i: int) -> bytes:
        """Part ``i`` as its part file would be (compression byte, then the body)."""
        start, end = self.parts[i]
        with open(self.path, "rb") as f:
            return _pread(f, start, end, MAX_PART_SIZE + 1, f"part {i}")


class _Bad(Exception):
    pass


def open_inline(path: Path, where: str) -> InlineFile:
    """The inline delta in ``path``; CorruptObject unless its superblock parses (see the
    module docstring), has no fallbacks and carries every part it lists."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            t = type_info(SUPERBLOCK_SIG)
            ranges = _tuple_ranges(f, 0, size, t)
            small, at = _metadata(f, *ranges[0])
            rest = [decode(m.sig, _pread(f, s, e, MAX_REST, "superblock"))
                    for m, (s, e) in zip(t.children[1:], ranges[1:], strict=True)]
    except (_Bad, CorruptObject) as e:
        raise CorruptObject(f"static delta superblock {where} is corrupt: {e}") from None
    sb = Superblock.from_bytes(encode(SUPERBLOCK_SIG, (small, *rest)), where=where)
    if sb.fallbacks:
        raise CorruptObject(f"static delta {where} has fallback objects (not an inline delta)")
    base = delta_dir(delta_name(sb.from_csum, sb.to_csum))
    missing = [i for i in range(len(sb.parts)) if f"{base}/{i}" not in at]
    if missing:
        raise CorruptObject(f"static delta {where} does not carry part {missing[0]} inline")
    return InlineFile(path, sb, tuple(at[f"{base}/{i}"] for i in range(len(sb.parts))))


def _pread(f: BinaryIO, start: int, end: int, limit: int, what: str) -> bytes:
    if end - start > limit:
        raise _Bad(f"{what} is larger than {limit} bytes")
    f.seek(start)
    data = f.read(end - start)
    if len(data) != end - start:
        raise _Bad(f"{what} is truncated")
    return data


def _offset(f: BinaryIO, at: int, osz: int) -> int:
    return int.from_bytes(_pread(f, at, at + osz, 8, "a framing offset"), "little")


def _offset_size(size: int) -> int:
    if size == 0:
        return 0
    return next((n for n in (1, 2, 4) if size < 1 << (8 * n)), 8)


def _align(n: int, a: int) -> int:
    return (n + a - 1) & ~(a - 1)


def _tuple_ranges(f: BinaryIO, s: int, e: int, t: TypeInfo) -> list[tuple[int, int]]:
    """The file range of each member of the tuple ``t`` stored at ``s..e``."""
    size = e - s
    osz = _offset_size(size)
    tail = size - t.n_offsets * osz
    if tail < 0:
        raise _Bad(f"{size} bytes cannot hold the framing offsets of {t.sig}")
    out = []
    start, off_pos = 0, size
    for i, m in enumerate(t.children):
        aligned = _align(start, m.align)
        if m.fixed is not None:
            end = aligned + m.fixed
        elif i == len(t.children) - 1:
            end = tail
        else:
            off_pos -= osz
            end = _offset(f, s + off_pos, osz)
        if not aligned <= end <= tail:
            raise _Bad(f"member {i} ends at {end}, outside {aligned}..{tail}")
        out.append((s + aligned, s + end))
        start = end
    return out


def _metadata(f: BinaryIO, s: int, e: int
              ) -> tuple[dict[str, Variant], dict[str, tuple[int, int]]]:
    """The ``a{sv}`` at ``s..e``: its small values, and the range of each ``(yay)`` value."""
    small: dict[str, Variant] = {}
    parts: dict[str, tuple[int, int]] = {}
    size = e - s
    if size == 0:
        return small, parts
    osz = _offset_size(size)
    table = _offset(f, e - osz, osz)
    if table > size - osz or (size - table) % osz or (size - table) // osz > MAX_ENTRIES:
        raise _Bad(f"metadata framing offsets start at {table} of {size}")
    n = (size - table) // osz
    ends = struct.unpack(f"<{n}{_OFFSET_FORMATS[osz]}",
                         _pread(f, s + table, e, n * osz, "metadata offsets"))
    start = 0
    for end in ends:
        aligned = _align(start, 8)
        if not aligned <= end <= table:
            raise _Bad(f"metadata entry ends at {end}, outside {aligned}..{table}")
        key, (vs, ve) = _entry(f, s + aligned, s + end)
        sep = _signature_start(f, vs, ve)
        if _pread(f, sep, ve, 64, "a signature") == b"\0(yay)":
            parts[key] = (vs, sep)
        else:
            small[key] = decode("v", _pread(f, vs, ve, MAX_SMALL, f"metadata {key!r}"))
        start = end
    return small, parts


def _entry(f: BinaryIO, s: int, e: int) -> tuple[str, tuple[int, int]]:
    """A ``{sv}`` at ``s..e``: its key and the range of its variant."""
    size = e - s
    osz = _offset_size(size)
    tail = size - osz
    kend = _offset(f, e - osz, osz) if osz else 0
    if not 0 < kend <= tail:
        raise _Bad(f"metadata key ends at {kend}, outside 1..{tail}")
    raw = _pread(f, s, s + kend, MAX_KEY, "a metadata key")
    if raw[-1] != 0 or 0 in raw[:-1]:
        raise _Bad("metadata key is not a NUL-terminated string")
    try:
        key = raw[:-1].decode()
    except UnicodeDecodeError:
        raise _Bad("metadata key is not UTF-8") from None
    vs = _align(kend, 8)
    if vs > tail:
        raise _Bad(f"metadata value of {key!r} starts after its entry")
    return key, (s + vs, s + tail)


def _signature_start(f: BinaryIO, s: int, e: int) -> int:
    """Where the NUL before a variant's type string is (the type string is short)."""
    tail = _pread(f, max(s, e - 64), e, 64, "a variant")
    sep = tail.rfind(b"\0")
    if sep < 0:
        raise _Bad("variant without a type string")
    return e - len(tail) + sep
