"""The rpm header structure, shared by ``.rpm`` files and rpmdb blobs.

A header blob (rpm's ``headerExport`` form, what rpmdb.sqlite stores)::

    u32be il, u32be dl | il x (u32be tag, type, offset, count) | dl bytes of data

In a package file the blob follows an 8-byte magic (8e ad e8 01 + 4 reserved),
and the file is ``lead(96) | signature header (padded to 8) | main header | payload``.
Every offset and count is checked against the data store before use, and the
sizes against rpm's own limits, so a hostile header cannot make us read or
allocate more than the blob it came in.
"""

from __future__ import annotations

import enum
import hashlib
import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

from importers.errors import PackageFormatError

LEAD_SIZE = 96
LEAD_MAGIC = b"\xed\xab\xee\xdb"
HEADER_MAGIC = b"\x8e\xad\xe8\x01"
TAGS_MAX = 0xFFFF
DATA_MAX = 0x0FFFFFFF
SIG_TAGS_MAX = 32
SIG_DATA_MAX = 64 << 20


class Tag(enum.IntEnum):
    """The header tags strata reads (numbers from rpm's rpmtag.h)."""

    NAME = 1000
    VERSION = 1001
    RELEASE = 1002
    EPOCH = 1003
    SUMMARY = 1004
    BUILDTIME = 1006
    SIZE = 1009
    ARCH = 1022
    PREIN = 1023
    POSTIN = 1024
    PREUN = 1025
    POSTUN = 1026
    OLDFILENAMES = 1027
    FILESIZES = 1028
    FILEMODES = 1030
    FILERDEVS = 1033
    FILEDIGESTS = 1035
    FILELINKTOS = 1036
    FILEFLAGS = 1037
    FILEUSERNAME = 1039
    FILEGROUPNAME = 1040
    SOURCERPM = 1044
    PROVIDENAME = 1047
    REQUIREFLAGS = 1048
    REQUIRENAME = 1049
    REQUIREVERSION = 1050
    CONFLICTFLAGS = 1053
    CONFLICTNAME = 1054
    CONFLICTVERSION = 1055
    TRIGGERSCRIPTS = 1065
    TRIGGERNAME = 1066
    TRIGGERVERSION = 1067
    TRIGGERFLAGS = 1068
    TRIGGERINDEX = 1069
    PREINPROG = 1085
    POSTINPROG = 1086
    PREUNPROG = 1087
    POSTUNPROG = 1088
    OBSOLETENAME = 1090
    TRIGGERSCRIPTPROG = 1092
    FILEDEVICES = 1095
    FILEINODES = 1096
    PROVIDEFLAGS = 1112
    PROVIDEVERSION = 1113
    OBSOLETEFLAGS = 1114
    OBSOLETEVERSION = 1115
    DIRINDEXES = 1116
    BASENAMES = 1117
    DIRNAMES = 1118
    SIG_SHA256 = 273
    PAYLOADFORMAT = 1124
    PAYLOADCOMPRESSOR = 1125
    PRETRANS = 1151
    POSTTRANS = 1152
    PRETRANSPROG = 1153
    POSTTRANSPROG = 1154
    LONGFILESIZES = 5008
    LONGSIZE = 5009
    FILECAPS = 5010
    FILEDIGESTALGO = 5011
    ORDERNAME = 5035
    ORDERVERSION = 5036
    ORDERFLAGS = 5037
    RECOMMENDNAME = 5046
    RECOMMENDVERSION = 5047
    RECOMMENDFLAGS = 5048
    SUGGESTNAME = 5049
    SUGGESTVERSION = 5050
    SUGGESTFLAGS = 5051
    SUPPLEMENTNAME = 5052
    SUPPLEMENTVERSION = 5053
    SUPPLEMENTFLAGS = 5054
    ENHANCENAME = 5055
    ENHANCEVERSION = 5056
    ENHANCEFLAGS = 5057
    FILETRIGGERSCRIPTS = 5066
    FILETRIGGERSCRIPTPROG = 5067
    FILETRIGGERNAME = 5069
    FILETRIGGERINDEX = 5070
    FILETRIGGERFLAGS = 5072
    TRANSFILETRIGGERSCRIPTS = 5076
    TRANSFILETRIGGERSCRIPTPROG = 5077
    TRANSFILETRIGGERNAME = 5079
    TRANSFILETRIGGERINDEX = 5080
    TRANSFILETRIGGERFLAGS = 5082
    FILETRIGGERPRIORITIES = 5084
    TRANSFILETRIGGERPRIORITIES = 5085
    PAYLOADDIGEST = 5092
    PAYLOADDIGESTALGO = 5093


_INT_TYPES = {2: ("B", 1), 3: ("H", 2), 4: ("I", 4), 5: ("Q", 8)}
_STRING, _BIN, _STRING_ARRAY, _I18N = 6, 7, 8, 9
Value = tuple[int, ...] | str | tuple[str, ...] | bytes


@dataclass(frozen=True)
class Header:
    """A parsed header: tag -> value (ints as tuples, strings, string tuples, bytes)."""

    tags: dict[int, Value]
    blob: bytes

    def get(self, tag: int, default: Value | None = None) -> Value | None:
        return self.tags.get(tag, default)

    def text(self, tag: int) -> str:
        v = self.tags.get(tag, "")
        return v if isinstance(v, str) else (v[0] if isinstance(v, tuple) and v and
                                             isinstance(v[0], str) else "")

    def texts(self, tag: int) -> tuple[str, ...]:
        v = self.tags.get(tag, ())
        return (v,) if isinstance(v, str) else tuple(x for x in v if isinstance(x, str)) \
            if isinstance(v, tuple) else ()

    def ints(self, tag: int) -> tuple[int, ...]:
        v = self.tags.get(tag, ())
        return tuple(x for x in v if isinstance(x, int)) if isinstance(v, tuple) else ()

    def number(self, tag: int, default: int = 0) -> int:
        v = self.ints(tag)
        return v[0] if v else default


def parse_blob(blob: bytes, label: str, *, tags_max: int = TAGS_MAX,
               data_max: int = DATA_MAX) -> Header:
    """Parse a header blob (``il dl index data``); any inconsistency raises PackageFormatError."""
    if len(blob) < 8:
        raise PackageFormatError(f"truncated rpm header in {label}")
    il, dl = struct.unpack_from(">II", blob)
    _check_sizes(il, dl, label, tags_max, data_max)
    if len(blob) < 8 + 16 * il + dl:
        raise PackageFormatError(f"truncated rpm header in {label}")
    store = blob[8 + 16 * il: 8 + 16 * il + dl]
    tags: dict[int, Value] = {}
    budget = 2 * len(store) + 16 * il  # entries share no data in rpm's headers; work stays O(size)
    for i in range(il):
        tag, typ, off, count = struct.unpack_from(">IIiI", blob, 8 + 16 * i)
        tags[tag] = _value(typ, off, count, store, tag, label)
        budget -= _span(typ, count, tags[tag])
        if budget < 0:
            raise PackageFormatError(f"rpm header entries overlap in {label}")
    return Header(tags=tags, blob=bytes(blob[: 8 + 16 * il + dl]))


def _check_sizes(il: int, dl: int, label: str, tags_max: int, data_max: int) -> None:
    if il == 0 or il > tags_max or dl > data_max:
        raise PackageFormatError(
            f"rpm header claims absurd sizes ({il} entries, {dl} bytes) in {label}")


def _value(typ: int, off: int, count: int, store: bytes, tag: int, label: str) -> Value:
    if off < 0 or off > len(store) or count > len(store) + 1:
        raise PackageFormatError(f"rpm header tag {tag} points outside the header in {label}")
    if typ in _INT_TYPES:
        code, size = _INT_TYPES[typ]
        if off + size * count > len(store):
            raise PackageFormatError(f"rpm header tag {tag} overruns the header in {label}")
        return struct.unpack_from(f">{count}{code}", store, off)
    if typ == _BIN:
        if off + count > len(store):
            raise PackageFormatError(f"rpm header tag {tag} overruns the header in {label}")
        return store[off: off + count]
    if typ in (_STRING, _STRING_ARRAY, _I18N):
        n = 1 if typ == _STRING else count
        items = _strings(store, off, n, tag, label)
        return items[0] if typ == _STRING else tuple(items)
    return ()


def _span(typ: int, count: int, value: Value) -> int:
    """About how many bytes of the data store an entry's value was read from."""
    if typ in _INT_TYPES:
        return _INT_TYPES[typ][1] * count
    if isinstance(value, str):
        return len(value) + 1
    if isinstance(value, tuple):
        return sum(len(x) + 1 for x in value if isinstance(x, str))
    return len(value) if isinstance(value, bytes) else 0


def _strings(store: bytes, off: int, n: int, tag: int, label: str) -> list[str]:
    out = []
    for _ in range(n):
        end = store.find(b"\0", off)
        if end < 0:
            raise PackageFormatError(f"rpm header tag {tag} has an unterminated string in {label}")
        out.append(store[off:end].decode("utf-8", "replace"))
        off = end + 1
    return out


def _read_exact(f: BinaryIO, pos: int, n: int, label: str, what: str) -> bytes:
    data = os.pread(f.fileno(), n, pos)
    if len(data) != n:
        raise PackageFormatError(f"truncated {what} in {label}")
    return data


def _read_header_at(f: BinaryIO, pos: int, label: str, what: str, *, tags_max: int,
                    data_max: int) -> tuple[Header, int]:
    intro = _read_exact(f, pos, 16, label, what)
    if intro[:4] != HEADER_MAGIC:
        raise PackageFormatError(f"bad {what} magic in {label}")
    il, dl = struct.unpack_from(">II", intro, 8)
    _check_sizes(il, dl, f"{what} of {label}", tags_max, data_max)
    blob = intro[8:] + _read_exact(f, pos + 16, 16 * il + dl, label, what)
    return parse_blob(blob, label, tags_max=tags_max, data_max=data_max), pos + 8 + len(blob)


def read_package_header(f: BinaryIO, label: str) -> tuple[Header, Header, int]:
    """Signature header, main header and the payload's offset of an open .rpm file."""
    lead = _read_exact(f, 0, LEAD_SIZE, label, "rpm lead")
    if lead[:4] != LEAD_MAGIC:
        raise PackageFormatError(f"not an rpm package (bad lead magic): {label}")
    sig, end = _read_header_at(f, LEAD_SIZE, label, "signature header",
                               tags_max=SIG_TAGS_MAX, data_max=SIG_DATA_MAX)
    end += (8 - end % 8) % 8
    main, payload = _read_header_at(f, end, label, "header", tags_max=TAGS_MAX,
                                    data_max=DATA_MAX)
    want = sig.text(Tag.SIG_SHA256)
    if want and hashlib.sha256(HEADER_MAGIC + bytes(4) + main.blob).hexdigest() != want:
        raise PackageFormatError(f"header digest mismatch (corrupt header) in {label}")
    return sig, main, payload
