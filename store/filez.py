"""Verifying fetched archive-mode content objects (``.filez``) within the size they declare.

A ``.filez`` object is a length-prefixed header, which declares the content's
size, then the raw-deflated content.  Nothing here inflates beyond that size:
a body longer than the size allows (:func:`filez_cap`) is refused while it
downloads, and inflation stops one byte past the declared size (a body that
inflates further is corrupt).  Small objects are checked in memory; big ones
(or ones fetched into a file) are inflated piece by piece straight into the
transaction.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

from store.errors import CorruptObject
from store.objects import FileMeta, file_header, parse_header
from store.treecheck import check_file_meta
from store.txn import Transaction

INFLATE_IN_MEMORY = 8 << 20  # declared sizes up to this are inflated in one piece
PIECE = 1 << 20
MAX_HEADER = 1 << 20


def filez_cap(head: bytes) -> int:
    """The most bytes a ``.filez`` body whose first bytes are ``head`` may have: its header
    plus zlib's worst-case deflate size of the content size the header declares."""
    if len(head) < 16:
        return 1 << 62  # too short to tell; verification refuses it
    (n,) = struct.unpack(">I", head[:4])
    size = int.from_bytes(head[8:16], "big")  # the header variant starts with the size
    return 8 + n + size + (size >> 10) + 1024


def verify_filez(data: bytes, csum: str, where: str) -> tuple[FileMeta, bytes]:
    """Decompress a ``.filez`` object and check it hashes to ``csum``; return meta and content.

    Inflation stops one byte past the size the header declares.
    """
    try:
        meta, size, hlen = parse_header(data, archive=True)
        z = zlib.decompressobj(-15)
        content = z.decompress(data[hlen:], size + 1) if len(data) > hlen else b""
    except (CorruptObject, ValueError, IndexError, zlib.error) as e:
        raise CorruptObject(f"file object {csum} from {where} is corrupt: {e}") from e
    if len(content) > size:
        raise CorruptObject(f"file object {csum} from {where} inflates beyond the {size} bytes "
                            f"its header declares")
    if len(content) != size:
        raise CorruptObject(f"file object {csum} from {where} is truncated "
                            f"({len(content)} of {size} bytes)")
    h = hashlib.sha256(file_header(meta))
    h.update(content)
    if h.hexdigest() != csum:
        raise CorruptObject(f"file object {csum} from {where} does not match its checksum")
    return check_file_meta(meta, csum), content


def store_filez(txn: Transaction, csum: str, body: bytes | Path, where: str) -> None:
    """Verify a fetched ``.filez`` body (bytes, or a file holding it) and stage it in ``txn``.

    Raises CorruptObject, naming ``where``, unless it inflates to exactly the
    size its header declares and hashes to ``csum``; memory stays bounded by
    INFLATE_IN_MEMORY whatever the body.
    """
    if isinstance(body, bytes) and _declared_size(body) <= INFLATE_IN_MEMORY:
        meta, content = verify_filez(body, csum, where)  # hashed once, here
        txn.write_checked_file(csum, meta, content, archived=body)
        return
    with open(body, "rb") if isinstance(body, Path) else io.BytesIO(body) as f:
        _store_stream(txn, f, csum, where)


def _declared_size(body: bytes) -> int:
    return int.from_bytes(body[8:16], "big") if len(body) >= 16 else 0


def _store_stream(txn: Transaction, f: BinaryIO, csum: str, where: str) -> None:
    """Inflate the object piece by piece into the transaction, hashing as it goes; a body
    that does not hash to ``csum`` is removed again and refused (CorruptObject)."""
    what = f"file object {csum} from {where}"
    try:
        start = f.read(8)
        n = struct.unpack(">I", start[:4])[0] if len(start) == 8 else 0
        if n > MAX_HEADER:
            raise CorruptObject(f"header of {n} bytes")
        meta, size, hlen = parse_header(start + f.read(n), archive=True)
    except (CorruptObject, ValueError, IndexError, struct.error) as e:
        raise CorruptObject(f"{what} is corrupt: {e}") from e
    check_file_meta(meta, csum)  # a device, fifo or odd mode is never stored
    if meta.is_symlink:
        if txn.write_file(meta, None) != csum:
            raise CorruptObject(f"{what} does not match its checksum")
        return
    f.seek(hlen)
    if not txn.write_checked_stream(csum, meta, _Inflater(f, size, what)):
        raise CorruptObject(f"{what} does not match its checksum")


class _Inflater:
    """A reader of the inflated content that refuses to go past ``size`` or to stop short."""

    def __init__(self, f: BinaryIO, size: int, what: str) -> None:
        self.f, self.left, self.size, self.what = f, size, size, what
        self.z = zlib.decompressobj(-15)

    def read(self, n: int = -1) -> bytes:
        want = PIECE if n is None or n < 0 else max(1, n)
        try:
            while not self.z.eof:
                src = self.z.unconsumed_tail or self.f.read(PIECE)
                if not src:
                    break
                out = self.z.decompress(src, min(want, self.left + 1))
                if len(out) > self.left:
                    raise CorruptObject(f"{self.what} inflates beyond the {self.size} bytes "
                                        f"its header declares")
                self.left -= len(out)
                if out:
                    return out
        except zlib.error as e:
            raise CorruptObject(f"{self.what} is corrupt: {e}") from e
        if self.left or not self.z.eof:
            raise CorruptObject(f"{self.what} is truncated")
        return b""
