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
    depth: int  # containers nested in this type (0 for a basic type)
    n_offsets: int = 0  # framing offsets of a tuple: one per variable member but the last


MAX_DEPTH = 128
"""GLib's G_VARIANT_MAX_RECURSION_DEPTH (gvariant-internal.h): the deepest nesting of
containers, counted through ``v`` values too, that a type or a value may have."""

_BASIC = "ybnqiuxthdsog"


class _Malformed(ValueError):
    """Internal: the bytes are not a GVariant of the expected type in normal form."""


def _type_end(sig: str, i: int, depth: int) -> int:
    """Index just past the complete type starting at ``sig[i]``; ``_Malformed`` when the
    type is invalid or nests containers deeper than :data:`MAX_DEPTH`."""
    if depth > MAX_DEPTH:
        raise _Malformed(f"type nested deeper than {MAX_DEPTH} levels")
    if i >= len(sig):
        raise _Malformed(f"incomplete type {sig[:40]!r}")
    c = sig[i]
    if c in "am":
        return _type_end(sig, i + 1, depth + 1)
    if c == "(":
        i += 1
        while i < len(sig) and sig[i] != ")":
            i = _type_end(sig, i, depth + 1)
        if i >= len(sig):
            raise _Malformed(f"unclosed tuple in type {sig[:40]!r}")
        return i + 1
    if c == "{":
        if i + 1 >= len(sig) or sig[i + 1] not in _BASIC:
            raise _Malformed(f"dict entry without a basic key in type {sig[:40]!r}")
        j = _type_end(sig, i + 2, depth + 1)
        if j >= len(sig) or sig[j] != "}":
            raise _Malformed(f"dict entry with other than two members in type {sig[:40]!r}")
        return j + 1
    if c in _BASIC or c == "v":
        return i + 1
    raise _Malformed(f"invalid character {c!r} in type {sig[:40]!r}")


def _members(inner: str) -> tuple[TypeInfo, ...]:
    out, i = [], 0
    while i < len(inner):
        j = _type_end(inner, i, 1)
        out.append(type_info(inner[i:j]))
        i = j
    return tuple(out)


def _align_up(n: int, a: int) -> int:
    return (n + a - 1) & ~(a - 1)


@lru_cache(maxsize=256)
def type_info(sig: str) -> TypeInfo:
    """Parse one complete GVariant type string into alignment/size information.

    Raises ValueError for anything but one valid type nested at most
    :data:`MAX_DEPTH` containers deep.
    """
    if not sig or _type_end(sig, 0, 0) != len(sig):
        raise _Malformed(f"invalid GVariant type {sig[:40]!r}")
    c = sig[0]
    if c in _FIXED:
        size = _FIXED[c][0]
        return TypeInfo(sig, c, size, size, (), 0)
    if c in _STRINGS:
        return TypeInfo(sig, "s", 1, None, (), 0)
    if c == "v":
        return TypeInfo(sig, "v", 8, None, (), 1)
    if c in "am":
        elem = type_info(sig[1:])
        return TypeInfo(sig, c, elem.align, None, (elem,), elem.depth + 1)
    members = _members(sig[1:-1])
    align = max((m.align for m in members), default=1)
    fixed: int | None = None
    end = 0
    for m in members:
        if m.fixed is None:
            break
        end = _align_up(end, m.align) + m.fixed
    else:
        fixed = _align_up(end, align) if members else 1
    return TypeInfo(sig, c, align, fixed, members, 1 + max((m.depth for m in members), default=0),
                    sum(1 for m in members[:-1] if m.fixed is None))


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
    """Deserialize ``data`` as GVariant type ``sig``.

    Total and bounded: any bytes give either the value or CorruptObject naming
    what is wrong.  Only normal form is accepted (exact sizes, zero padding,
    framing offsets where normal form puts them, strings NUL-terminated UTF-8
    without inner NULs, booleans 0 or 1), nesting stops at :data:`MAX_DEPTH`,
    and the work and the values built are proportional to ``len(data)``: every
    count comes from the data's length, never from a number inside it.
    """
    buf = bytes(data)
    try:
        return _dec(type_info(sig), buf, 0, len(buf), 0)
    except (_Malformed, UnicodeDecodeError) as e:
        raise CorruptObject(f"malformed GVariant of type {sig}: {e}") from None
    except RecursionError:  # only when called from an already deep stack
        raise CorruptObject(f"malformed GVariant of type {sig}: nested too deep") from None


_STRUCTS = {k: struct.Struct(fmt) for k, (_n, fmt) in _FIXED.items()}
_OFFSET_FORMATS = {1: "B", 2: "H", 4: "I", 8: "Q"}


def _dec(t: TypeInfo, buf: bytes, s: int, e: int, depth: int) -> Any:
    """Decode ``buf[s:e]`` as ``t``; ``depth`` counts the containers around it."""
    k = t.kind
    if k in _FIXED:
        if e - s != t.fixed:
            raise _Malformed(f"{k} needs {t.fixed} bytes, got {e - s}")
        if k == "b" and buf[s] > 1:
            raise _Malformed(f"boolean byte {buf[s]}")
        return _STRUCTS[k].unpack_from(buf, s)[0]
    if k == "s":
        return _dec_string(t.sig, buf, s, e)
    if depth >= MAX_DEPTH:
        raise _Malformed(f"values nested deeper than {MAX_DEPTH} levels")
    if k == "v":
        return _dec_variant(buf, s, e, depth + 1)
    if k == "m":
        return _dec_maybe(t.children[0], buf, s, e, depth + 1)
    if k == "a":
        return _dec_array(t.children[0], buf, s, e, depth + 1)
    return _dec_tuple(t, buf, s, e, depth + 1)


def _dec_string(letter: str, buf: bytes, s: int, e: int) -> str:
    if e <= s or buf[e - 1] != 0:
        raise _Malformed("string not NUL-terminated")
    if buf.find(b"\0", s, e - 1) != -1:
        raise _Malformed("string with an embedded NUL")
    text = buf[s : e - 1].decode()
    if letter == "o" and not _is_object_path(text):
        raise _Malformed(f"invalid object path {text[:40]!r}")
    if letter == "g":
        i = 0
        while i < len(text):
            i = _type_end(text, i, 0)
    return text


def _is_object_path(text: str) -> bool:
    if text == "/":
        return True
    parts = text.split("/")
    return parts[0] == "" and all(p and all(c.isascii() and (c.isalnum() or c == "_") for c in p)
                                  for p in parts[1:])


def _dec_variant(buf: bytes, s: int, e: int, depth: int) -> Variant:
    sep = buf.rfind(b"\0", s, e)
    if sep < 0:
        raise _Malformed("variant without a type string")
    sig = buf[sep + 1 : e].decode("ascii")
    try:
        t = type_info(sig)
    except _Malformed as err:
        raise _Malformed(f"variant: {err}") from None
    if depth + t.depth > MAX_DEPTH:
        raise _Malformed(f"values nested deeper than {MAX_DEPTH} levels")
    return Variant(sig, _dec(t, buf, s, sep, depth))


def _dec_maybe(elem: TypeInfo, buf: bytes, s: int, e: int, depth: int) -> Any:
    if s == e:
        return None
    if elem.fixed is not None:
        return _dec(elem, buf, s, e, depth)
    if buf[e - 1] != 0:
        raise _Malformed("maybe value without its trailing NUL")
    return _dec(elem, buf, s, e - 1, depth)


def _dec_array(elem: TypeInfo, buf: bytes, s: int, e: int, depth: int) -> Any:
    if elem.kind == "y":
        return buf[s:e]
    if elem.fixed is not None:
        items = _dec_fixed_array(elem, buf, s, e, depth)
    else:
        items = _dec_variable_array(elem, buf, s, e, depth)
    return dict(items) if elem.kind == "{" else items


def _dec_fixed_array(elem: TypeInfo, buf: bytes, s: int, e: int, depth: int) -> list[Any]:
    size = elem.fixed
    assert size is not None
    n, rem = divmod(e - s, size)
    if rem:
        raise _Malformed(f"array of {elem.sig} is {e - s} bytes, not a multiple of {size}")
    if elem.kind in _FIXED and elem.kind != "b":
        return list(struct.unpack_from(f"<{n}{_FIXED[elem.kind][1][1]}", buf, s))
    return [_dec(elem, buf, i, i + size, depth) for i in range(s, e, size)]


def _dec_variable_array(elem: TypeInfo, buf: bytes, s: int, e: int, depth: int) -> list[Any]:
    size = e - s
    if size == 0:
        return []
    osz = _offset_size(size)
    table = int.from_bytes(buf[e - osz : e], "little")
    if table > size - osz or (size - table) % osz:
        raise _Malformed(f"array of {elem.sig}: framing offsets start at {table} of {size}")
    n = (size - table) // osz
    ends = struct.unpack_from(f"<{n}{_OFFSET_FORMATS[osz]}", buf, s + table)
    items = []
    start = 0
    for end in ends:
        aligned = _align_up(start, elem.align)
        if not aligned <= end <= table:
            raise _Malformed(f"array of {elem.sig}: element ends at {end}, outside "
                             f"{aligned}..{table}")
        _check_padding(buf, s + start, s + aligned)
        items.append(_dec(elem, buf, s + aligned, s + end, depth))
        start = end
    if start != table:
        raise _Malformed(f"array of {elem.sig}: {table - start} bytes after its last element")
    return items


def _check_padding(buf: bytes, s: int, e: int) -> None:
    if buf.count(0, s, e) != e - s:
        raise _Malformed("non-zero padding")


def _dec_tuple(t: TypeInfo, buf: bytes, s: int, e: int, depth: int) -> tuple[Any, ...]:
    size = e - s
    if t.fixed is not None and size != t.fixed:
        raise _Malformed(f"{t.sig} needs {t.fixed} bytes, got {size}")
    members = t.children
    if not members:
        if buf[s] != 0:
            raise _Malformed("unit value is not a NUL byte")
        return ()
    osz = _offset_size(size)
    tail = size - t.n_offsets * osz  # where the framing offsets begin
    if tail < 0:
        raise _Malformed(f"{t.sig}: {size} bytes cannot hold its framing offsets")
    out = []
    start, off_pos = 0, size
    for i, m in enumerate(members):
        aligned = _align_up(start, m.align)
        if m.fixed is not None:
            end = aligned + m.fixed
        elif i == len(members) - 1:
            end = tail
        else:
            off_pos -= osz
            end = int.from_bytes(buf[s + off_pos : s + off_pos + osz], "little")
        if not aligned <= end <= tail:
            raise _Malformed(f"{t.sig}: member {i} ends at {end}, outside {aligned}..{tail}")
        _check_padding(buf, s + start, s + aligned)
        out.append(_dec(m, buf, s + aligned, s + end, depth))
        start = end
    if t.fixed is not None:
        _check_padding(buf, s + start, e)
    elif start != tail:
        raise _Malformed(f"{t.sig}: {tail - start} bytes after its last member")
    return tuple(out)
