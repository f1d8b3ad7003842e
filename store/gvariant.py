"""GVariant serialization in normal form, for exactly the types OSTree uses.

Python values: ``s``/``o``/``g`` -> str, ``ay`` -> bytes, ``b`` -> bool,
integer types -> int (GVariant little-endian; OSTree's big-endian fields are
byte-swapped by :mod:`store.objects`), ``d`` -> float, arrays -> list (``ay``
-> bytes), tuples and dict entries -> tuple, ``a{..}`` -> dict, ``v`` ->
:class:`Variant`, ``mT`` -> value or None.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from store.errors import CorruptObject

_FIXED = {"y": (1, "<B"), "b": (1, "<?"), "n": (2, "<h"), "q": (2, "<H"), "i": (4, "<i"),
          "u": (4, "<I"), "h": (4, "<i"), "x": (8, "<q"), "t": (8, "<Q"), "d": (8, "<d")}
_STRINGS = frozenset("sog")


@dataclass(frozen=True)
class Variant:
    """A value with its type, as held in ``v`` and ``a{sv}`` metadata."""

    sig: str
    value: Any


@dataclass(frozen=True)
class TypeInfo:
    sig: str
    kind: str  # basic letter, 's', 'v', 'a', 'm', '(' or '{'
    align: int
    fixed: int | None  # fixed size in bytes, None when variable
    children: tuple[TypeInfo, ...]


def _split(sig: str, i: int) -> int:
    """Return the index just past the single complete type starting at ``sig[i]``."""
    c = sig[i]
    if c in "am":
        return _split(sig, i + 1)
    if c in "({":
        close = ")" if c == "(" else "}"
        i += 1
        while sig[i] != close:
            i = _split(sig, i)
        return i + 1
    return i + 1


def _members(inner: str) -> tuple[TypeInfo, ...]:
    out, i = [], 0
    while i < len(inner):
        j = _split(inner, i)
        out.append(type_info(inner[i:j]))
        i = j
    return tuple(out)


def _align_up(n: int, a: int) -> int:
    return (n + a - 1) & ~(a - 1)


@lru_cache(maxsize=256)
def type_info(sig: str) -> TypeInfo:
    """Parse one complete GVariant type string into alignment/size information."""
    if not sig or _split(sig, 0) != len(sig):
        raise ValueError(f"invalid GVariant type {sig!r}")
    c = sig[0]
    if c in _FIXED:
        size = _FIXED[c][0]
        return TypeInfo(sig, c, size, size, ())
    if c in _STRINGS:
        return TypeInfo(sig, "s", 1, None, ())
    if c == "v":
        return TypeInfo(sig, "v", 8, None, ())
    if c in "am":
        elem = type_info(sig[1:])
        return TypeInfo(sig, c, elem.align, None, (elem,))
    members = _members(sig[1:-1])
    align = max((m.align for m in members), default=1)
    fixed: int | None = 0
    for m in members:
        if m.fixed is None:
            fixed = None
            break
        fixed = _align_up(fixed, m.align) + m.fixed
    if fixed is not None:
        fixed = _align_up(fixed, align) if members else 1
    return TypeInfo(sig, c, align, fixed, members)


def _offset_size(size: int) -> int:
    if size == 0:
        return 0
    if size <= 0xFF:
        return 1
    if size <= 0xFFFF:
        return 2
    if size <= 0xFFFFFFFF:
        return 4
    return 8


def _frame(body: bytearray, offsets: list[int]) -> bytes:
    """Append framing offsets to ``body`` using the smallest offset size that fits."""
    if not offsets:
        return bytes(body)
    for osize, limit in ((1, 0xFF), (2, 0xFFFF), (4, 0xFFFFFFFF), (8, 1 << 64)):
        if len(body) + len(offsets) * osize <= limit:
            break
    fmt = {1: "B", 2: "H", 4: "I", 8: "Q"}[osize]
    return bytes(body) + struct.pack(f"<{len(offsets)}{fmt}", *offsets)


def encode(sig: str, value: Any) -> bytes:
    """Serialize ``value`` as GVariant type ``sig`` in normal form."""
    return _enc(type_info(sig), value)


def _enc(t: TypeInfo, v: Any) -> bytes:
    k = t.kind
    if k in _FIXED:
        return struct.pack(_FIXED[k][1], v)
    if k == "s":
        b = v.encode() if isinstance(v, str) else bytes(v)
        return b + b"\0"
    if k == "v":
        return _enc(type_info(v.sig), v.value) + b"\0" + v.sig.encode()
    if k == "m":
        return _enc_maybe(t.children[0], v)
    if k == "a":
        return _enc_array(t.children[0], v)
    return _enc_tuple(t.children, v)


def _enc_maybe(elem: TypeInfo, v: Any) -> bytes:
    if v is None:
        return b""
    data = _enc(elem, v)
    return data if elem.fixed is not None else data + b"\0"


def _enc_array(elem: TypeInfo, v: Any) -> bytes:
    if elem.kind == "y":
        return bytes(v)
    items = list(v.items()) if isinstance(v, dict) else v
    body = bytearray()
    if elem.fixed is not None:
        for item in items:
            body += _enc(elem, item)
        return bytes(body)
    offsets = []
    for item in items:
        body += b"\0" * (_align_up(len(body), elem.align) - len(body))
        body += _enc(elem, item)
        offsets.append(len(body))
    return _frame(body, offsets)


def _enc_tuple(members: tuple[TypeInfo, ...], v: Any) -> bytes:
    if not members:
        return b"\0"
    body = bytearray()
    offsets = []
    for i, (m, item) in enumerate(zip(members, v, strict=True)):
        body += b"\0" * (_align_up(len(body), m.align) - len(body))
        body += _enc(m, item)
        if m.fixed is None and i != len(members) - 1:
            offsets.append(len(body))
    align = max(m.align for m in members)
    if all(m.fixed is not None for m in members):
        body += b"\0" * (_align_up(len(body), align) - len(body))
    return _frame(body, offsets[::-1])


def decode(sig: str, data: bytes) -> Any:
    """Deserialize ``data`` as GVariant type ``sig``; raise CorruptObject on malformed input."""
    try:
        return _dec(type_info(sig), memoryview(data))
    except (struct.error, IndexError, ValueError, UnicodeDecodeError) as e:
        raise CorruptObject(f"malformed GVariant of type {sig}: {e}") from e


def _read_offset(buf: memoryview, pos: int, osize: int) -> int:
    return int.from_bytes(buf[pos : pos + osize], "little")


def _dec(t: TypeInfo, buf: memoryview) -> Any:
    k = t.kind
    if k in _FIXED:
        if len(buf) != t.fixed:
            raise ValueError(f"{k} needs {t.fixed} bytes, got {len(buf)}")
        return struct.unpack(_FIXED[k][1], buf)[0]
    if k == "s":
        if not buf or buf[-1] != 0:
            raise ValueError("string not NUL-terminated")
        return bytes(buf[:-1]).decode()
    if k == "v":
        raw = bytes(buf)
        sep = raw.rindex(b"\0")
        sig = raw[sep + 1 :].decode()
        return Variant(sig, _dec(type_info(sig), buf[:sep]))
    if k == "m":
        return _dec_maybe(t.children[0], buf)
    if k == "a":
        return _dec_array(t, buf)
    return _dec_tuple(t.children, buf)


def _dec_maybe(elem: TypeInfo, buf: memoryview) -> Any:
    if not buf:
        return None
    return _dec(elem, buf if elem.fixed is not None else buf[:-1])


def _dec_array(t: TypeInfo, buf: memoryview) -> Any:
    elem = t.children[0]
    if elem.kind == "y":
        return bytes(buf)
    items: list[Any] = []
    if elem.fixed is not None:
        if len(buf) % elem.fixed:
            raise ValueError("array size not a multiple of its element size")
        items = [_dec(elem, buf[i : i + elem.fixed]) for i in range(0, len(buf), elem.fixed)]
    elif buf:
        osize = _offset_size(len(buf))
        table = _read_offset(buf, len(buf) - osize, osize)
        n, rem = divmod(len(buf) - table, osize)
        if rem or table > len(buf):
            raise ValueError("bad array framing")
        start = 0
        for i in range(n):
            end = _read_offset(buf, table + i * osize, osize)
            start = _align_up(start, elem.align)
            if not start <= end <= table:
                raise ValueError("bad array element offset")
            items.append(_dec(elem, buf[start:end]))
            start = end
    return dict(items) if elem.kind == "{" else items


def _dec_tuple(members: tuple[TypeInfo, ...], buf: memoryview) -> tuple[Any, ...]:
    osize = _offset_size(len(buf))
    out = []
    start = 0
    tail = len(buf)
    for i, m in enumerate(members):
        start = _align_up(start, m.align)
        if m.fixed is not None:
            end = start + m.fixed
        elif i == len(members) - 1:
            end = tail
        else:
            tail -= osize
            end = _read_offset(buf, tail, osize)
        if not start <= end <= len(buf):
            raise ValueError("bad tuple member offset")
        out.append(_dec(m, buf[start:end]))
        start = end
    return tuple(out)
