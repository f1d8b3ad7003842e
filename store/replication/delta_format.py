"""Static delta on-disk format (OSTree's): names, paths, superblock and part records.

::

    deltas/<mb64(from)[:2]>/<mb64(from)[2:]>-<mb64(to)>/
          (from scratch: deltas/<mb64(to)[:2]>/<mb64(to)[2:]>/)
      superblock   (a{sv}tayay<commit>aya(uayttay)a(yaytt))
      0, 1, ...    parts: 1 compression byte (0 or 'x') + (a(uuu)aa(ayay)ayay)

mb64 is unpadded base64 of the raw checksum with ``/`` -> ``_``.  A delta's
name (in the summary) is ``FROM-TO`` or ``TO`` in hex.  Integers in the
superblock: the timestamp is big-endian; part and fallback sizes are in the
writer's byte order, named by the ``ostree.endianness`` metadata (``l``/``B``).
"""

from __future__ import annotations

import base64
import lzma
from dataclasses import dataclass, field

from store.errors import CorruptObject
from store.gvariant import Variant, decode, encode
from store.objects import (
    COMMIT_SIG,
    Commit,
    ObjectType,
    bswap32,
    bswap64,
    check_meta_types,
    is_checksum,
)

SUPERBLOCK_SIG = "(a{sv}tayay" + COMMIT_SIG + "aya(uayttay)a(yaytt))"
PART_SIG = "(a(uuu)aa(ayay)ayay)"
COMPRESSION_NONE = 0
COMPRESSION_XZ = ord("x")


def mb64(csum: str) -> str:
    """OSTree's "modified base64" of a hex checksum."""
    return base64.b64encode(bytes.fromhex(csum)).decode().rstrip("=").replace("/", "_")


def from_mb64(text: str) -> str:
    """Inverse of :func:`mb64`; raises ValueError on bad input."""
    raw = base64.b64decode(text.replace("_", "/") + "=", validate=True)
    if len(raw) != 32:
        raise ValueError(text)
    return raw.hex()


def delta_name(from_csum: str | None, to_csum: str) -> str:
    """The summary name of a delta: ``FROM-TO`` or ``TO``."""
    return f"{from_csum}-{to_csum}" if from_csum else to_csum


def split_name(name: str) -> tuple[str | None, str]:
    """``FROM-TO`` -> (from, to); ``TO`` -> (None, to)."""
    parts = name.split("-")
    if len(parts) == 1 and is_checksum(parts[0]):
        return None, parts[0]
    if len(parts) == 2 and all(map(is_checksum, parts)):
        return parts[0], parts[1]
    raise CorruptObject(f"invalid static delta name {name}")


def delta_dir(name: str) -> str:
    """The delta's directory relative to the repository."""
    from_csum, to_csum = split_name(name)
    if from_csum is None:
        t = mb64(to_csum)
        return f"deltas/{t[:2]}/{t[2:]}"
    f = mb64(from_csum)
    return f"deltas/{f[:2]}/{f[2:]}-{mb64(to_csum)}"


def delta_name_from_dir(prefix: str, rest: str) -> str | None:
    """The delta name of ``deltas/PREFIX/REST``, or None when it is not a delta directory."""
    try:
        if "-" in rest:
            f, t = rest.split("-", 1)
            return delta_name(from_mb64(prefix + f), from_mb64(t))
        return delta_name(None, from_mb64(prefix + rest))
    except ValueError:
        return None


@dataclass(frozen=True)
class PartMeta:
    """A superblock's description of one part: its checksum, sizes and the objects it makes."""

    version: int
    checksum: str
    size: int
    usize: int
    objects: tuple[tuple[ObjectType, str], ...]

    @property
    def max_payload(self) -> int:
        """The most bytes this part's payload may decompress to: its objects' declared size
        plus room for the opcodes, modes and xattrs of each object."""
        return self.usize + PART_OVERHEAD_PER_OBJECT * len(self.objects) + (1 << 20)


@dataclass(frozen=True)
class Fallback:
    """An object the client fetches as a plain loose object."""

    objtype: ObjectType
    csum: str
    size: int
    usize: int


@dataclass(frozen=True)
class Superblock:
    """A parsed superblock."""

    from_csum: str | None
    to_csum: str
    timestamp: int
    commit_bytes: bytes
    parts: tuple[PartMeta, ...]
    fallbacks: tuple[Fallback, ...]
    metadata: dict[str, Variant] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """The superblock GVariant."""
        commit = decode(COMMIT_SIG, self.commit_bytes)
        parts = [(p.version, bytes.fromhex(p.checksum), p.size, p.usize,
                  pack_objects(p.objects)) for p in self.parts]
        fallbacks = [(f.objtype.number, bytes.fromhex(f.csum), f.size, f.usize)
                     for f in self.fallbacks]
        return encode(SUPERBLOCK_SIG, (
            self.metadata, bswap64(self.timestamp),
            bytes.fromhex(self.from_csum) if self.from_csum else b"",
            bytes.fromhex(self.to_csum), commit, b"", parts, fallbacks))

    @classmethod
    def from_bytes(cls, data: bytes, *, where: str = "") -> Superblock:
        """Parse the superblock found at ``where``; CorruptObject unless it is one in normal
        form with 32-byte checksums, known object types, version-0 parts and part sizes
        within :data:`MAX_PART_SIZE`."""
        try:
            meta, ts, frm, to, commit, _rec, parts, fallbacks = decode(SUPERBLOCK_SIG, data)
            check_meta_types(meta, {"ostree.endianness": "y"}, "metadata")
            endian = meta.get("ostree.endianness")
            sw = bswap64 if endian is not None and endian.value == ord("B") else (lambda n: n)
            if len(frm) not in (0, 32) or len(to) != 32:
                raise CorruptObject("its from/to checksums are not 32 bytes")
            commit_bytes = encode(COMMIT_SIG, commit)
            Commit.from_bytes(commit_bytes)
            return cls(
                from_csum=frm.hex() if frm else None, to_csum=to.hex(),
                timestamp=bswap64(ts), commit_bytes=commit_bytes,
                parts=tuple(_part_meta(v, c, sw(s), sw(u), objs) for v, c, s, u, objs in parts),
                fallbacks=tuple(_fallback(t, c, sw(s), sw(u)) for t, c, s, u in fallbacks),
                metadata=meta)
        except CorruptObject as e:
            at = f" {where}" if where else ""
            raise CorruptObject(f"static delta superblock{at} is corrupt: {e}") from None


MAX_PART_SIZE = 256 << 20
"""The largest uncompressed part a superblock may declare.  ostree's compiler
cuts parts at 32 MB (max-chunk-size) and sends files over 4 MB as fallbacks
unless bsdiff'ed (max-bsdiff-size 128 MB), so real parts stay far below it."""
PART_OVERHEAD_PER_OBJECT = 1024
XZ_MEMLIMIT = 128 << 20  # xz -9 needs 65 MiB to decompress; a bigger dictionary is hostile


def _part_meta(version: int, csum: bytes, size: int, usize: int, objs: bytes) -> PartMeta:
    if version != 0:
        raise CorruptObject(f"part version {version} is not 0")
    if len(csum) != 32:
        raise CorruptObject("a part checksum is not 32 bytes")
    if usize > MAX_PART_SIZE:
        raise CorruptObject(f"a part claims {usize} uncompressed bytes (at most {MAX_PART_SIZE})")
    return PartMeta(version, csum.hex(), size, usize, unpack_objects(objs))


def _fallback(objtype: int, csum: bytes, size: int, usize: int) -> Fallback:
    if len(csum) != 32:
        raise CorruptObject("a fallback checksum is not 32 bytes")
    return Fallback(ObjectType.from_number(objtype), csum.hex(), size, usize)


def pack_objects(objects: tuple[tuple[ObjectType, str], ...]) -> bytes:
    """A part's object list: objtype byte + 32-byte checksum each."""
    return b"".join(bytes([t.number]) + bytes.fromhex(c) for t, c in objects)


def unpack_objects(data: bytes) -> tuple[tuple[ObjectType, str], ...]:
    """Inverse of :func:`pack_objects`; CorruptObject on a bad length or object type."""
    if len(data) % 33:
        raise CorruptObject("static delta part object list has a bad length")
    return tuple((ObjectType.from_number(data[i]), data[i + 1:i + 33].hex())
                 for i in range(0, len(data), 33))


@dataclass(frozen=True)
class PartPayload:
    """A decoded part: modes (uid, gid, mode), xattr sets, the raw data blob and the opcodes."""

    modes: list[tuple[int, int, int]]
    xattrs: list[list[tuple[bytes, bytes]]]
    blob: bytes
    ops: bytes

    def to_bytes(self, *, compression: int = COMPRESSION_XZ) -> bytes:
        """The part file: compression byte + (possibly xz-compressed) payload."""
        modes = [(bswap32(u), bswap32(g), bswap32(m)) for u, g, m in self.modes]
        payload = encode(PART_SIG, (modes, self.xattrs, self.blob, self.ops))
        if compression == COMPRESSION_XZ:
            return b"x" + lzma.compress(payload, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64)
        return b"\0" + payload

    @classmethod
    def from_bytes(cls, data: bytes, *, max_size: int = MAX_PART_SIZE) -> PartPayload:
        """Parse a part file; CorruptObject unless it is one, uncompressed or xz, whose
        payload (at most ``max_size`` bytes, never decompressed further) is normal form."""
        if not data:
            raise CorruptObject("static delta part is empty")
        kind, body = data[0], data[1:]
        if kind == COMPRESSION_XZ:
            body = _unxz(body, max_size)
        elif kind != COMPRESSION_NONE:
            raise CorruptObject(f"static delta part has unknown compression {kind!r}")
        elif len(body) > max_size:
            raise CorruptObject(f"static delta part is larger than the {max_size} bytes declared")
        try:
            modes, xattrs, blob, ops = decode(PART_SIG, body)
        except CorruptObject as e:
            raise CorruptObject(f"static delta part is corrupt: {e}") from None
        return cls([(bswap32(u), bswap32(g), bswap32(m)) for u, g, m in modes],
                   [list(x) for x in xattrs], bytes(blob), bytes(ops))


def _unxz(body: bytes, max_size: int) -> bytes:
    """One xz stream decompressed to at most ``max_size`` bytes, with bounded memory."""
    z = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=XZ_MEMLIMIT)
    try:
        out = z.decompress(body, max_length=max_size + 1)
    except lzma.LZMAError as e:
        raise CorruptObject(f"static delta part is corrupt: {e}") from None
    if len(out) > max_size:
        raise CorruptObject(f"static delta part decompresses past the {max_size} bytes declared")
    if not z.eof or z.unused_data:
        raise CorruptObject("static delta part is truncated or has data after its xz stream")
    return out


def read_varuint(buf: bytes, pos: int) -> tuple[int, int]:
    """A varuint64 (LEB128, as GLib's ``_ostree_read_varuint64``); returns (value, new pos)."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CorruptObject("static delta opcode stream ends inside a number")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CorruptObject("static delta varuint too long")


def write_varuint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)
