"""Applying static deltas (OSTree's format) during a pull.

The superblock is fetched and checked against the checksum the summary
lists; each part is fetched, checked against the checksum the superblock
lists, decompressed and executed: every object an opcode produces is
verified against the checksum the part names before it is written.
Fallback objects are fetched as loose objects.  Everything is staged in the
pull's transaction.  The commit object itself is handed back to
:mod:`store.replication.pull`, which walks what the delta changed afterwards, so any
object a delta did not provide is fetched the ordinary way.
"""

from __future__ import annotations

import hashlib
import stat
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

import bsdiff4

from store.errors import CorruptObject
from store.objects import FileMeta, ObjectType, checksum_bytes
from store.replication.delta_format import (
    PartMeta,
    PartPayload,
    Superblock,
    delta_dir,
    delta_name,
    read_varuint,
)
from store.replication.http import METADATA_CAP, FileSink
from store.treecheck import check_file_meta, check_metadata_bytes

PART_MAX = 128 << 20  # a part (compressed, or its payload) larger than this is refused

if TYPE_CHECKING:
    from store.replication.pull import PullState
    from store.replication.summary import Summary
    from store.repo import Repo
    from store.txn import Transaction


def find_delta(summary: Summary, from_csum: str | None, to_csum: str) -> str | None:
    """The name of a delta the summary offers for this update, or None."""
    name = delta_name(from_csum, to_csum)
    return name if name in summary.deltas else None


def try_delta(st: PullState, txn: Transaction, summary: Summary, local: str,
              csum: str) -> tuple[bytes, bytes | None] | None:
    """Apply a delta to ``csum`` if the summary offers one from what ``local`` points at,
    else from another complete commit a local ref points at (a host rebasing onto an image
    holds the image's base), else from scratch.

    Returns (commit bytes, commitmeta bytes or None) when a delta was applied,
    None when no delta applies.  Raises on a corrupt or unreachable delta.
    """
    repo: Repo = st.repo
    found = _delta_from(repo, summary, local, csum)
    if found is None:
        return None
    name, from_csum = found
    base = delta_dir(name)
    sb_bytes = st.fetcher.get(f"{base}/superblock", limit=METADATA_CAP)
    if hashlib.sha256(sb_bytes).hexdigest() != summary.deltas[name]:
        raise CorruptObject(f"static delta superblock {st.fetcher.url_for(base + '/superblock')} "
                            f"does not match the summary")
    sb = Superblock.from_bytes(sb_bytes, where=st.fetcher.url_for(f"{base}/superblock"))
    if sb.to_csum != csum or sb.from_csum != from_csum or checksum_bytes(sb.commit_bytes) != csum:
        raise CorruptObject(f"static delta {name} does not lead to commit {csum}")
    return sb.commit_bytes, _apply(st, txn, sb, base)


def _delta_from(repo: Repo, summary: Summary, local: str,
                csum: str) -> tuple[str, str | None] | None:
    """The delta to ``csum`` to apply and the complete local commit it starts from."""
    from store.replication.pull import is_complete

    current = repo.read_ref(local)
    others = sorted(set(repo.list_refs().values()) - {current, csum})
    for from_csum in (current, *others):
        if from_csum is not None and find_delta(summary, from_csum, csum) is not None \
                and is_complete(repo, from_csum):
            return delta_name(from_csum, csum), from_csum
    if current is not None and is_complete(repo, current):
        return None  # loose objects: only what the current commit lacks
    name = find_delta(summary, None, csum)
    return None if name is None else (name, None)


def _apply(st: PullState, txn: Transaction, sb: Superblock, base: str) -> bytes | None:
    """Fetch and execute the parts, fetch the fallbacks; return the commit's detached metadata."""
    from store.replication.pull import fetch_loose, mark_partial

    repo: Repo = st.repo
    mark_partial(repo, sb.to_csum)
    meta = st.fetcher.get_optional(f"objects/{sb.to_csum[:2]}/{sb.to_csum[2:]}.commitmeta")
    st.verify_commit_signature(sb.to_csum, sb.commit_bytes, meta)
    todo = [(i, p) for i, p in enumerate(sb.parts)
            if not all(repo.has(c, t) for t, c in p.objects)]
    st.want(sum(len(p.objects) for _i, p in todo), "delta")  # fallbacks: counted by fetch_loose
    paths: list[Path] = []
    # one thread decompresses the next part while this one runs the current one: at most
    # two parts are in memory, and xz (which lets go of the GIL) overlaps the writing
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="unxz") as unxz:
        running: tuple[int, PartMeta, Future[PartPayload]] | None = None
        try:
            for i, part, path in st.fetcher.map_unordered(
                    lambda item: (*item, _fetch_part(st, txn, base, *item)), todo):
                paths.append(path)
                loading = (i, part, unxz.submit(_load_part, st, base, i, part, path))
                if running is not None:
                    _run_part(st, txn, base, *running)
                running = loading
            if running is not None:
                _run_part(st, txn, base, *running)
        finally:
            if running is not None:
                running[2].cancel()
            for path in paths:
                path.unlink(missing_ok=True)
    fallbacks = [(f.csum, f.objtype) for f in sb.fallbacks if not repo.has(f.csum, f.objtype)]
    fetch_loose(st, txn, fallbacks)
    return meta


def _run_part(st: PullState, txn: Transaction, base: str, index: int, part: PartMeta,
              payload: Future[PartPayload]) -> None:
    """Execute a part once it is decompressed (re-raising a failure to load it)."""
    where = st.fetcher.url_for(f"{base}/{index}")
    st.tick(PartExecutor(st.repo, txn, part, payload.result(), where).run())


def _fetch_part(st: PullState, txn: Transaction, base: str, index: int,
                part: PartMeta) -> Path:
    """Fetch a part (at most the size the superblock declares) into a file in the
    transaction's directory and check its checksum; return the file."""
    url = f"{base}/{index}"
    if part.size > PART_MAX:
        raise CorruptObject(f"static delta part {st.fetcher.url_for(url)} declares "
                            f"{part.size} bytes, more than {PART_MAX}")
    f = tempfile.NamedTemporaryFile(dir=txn.dir, prefix="part-", delete=False)
    sink = _HashingFile(f)
    try:
        with f:
            st.fetcher.get_into(url, sink, limit=part.size)
        if sink.h.hexdigest() != part.checksum:
            raise CorruptObject(f"static delta part {st.fetcher.url_for(url)} "
                                f"does not match its checksum")
    except BaseException:
        Path(f.name).unlink(missing_ok=True)
        raise
    return Path(f.name)


def _load_part(st: PullState, base: str, index: int, part: PartMeta, path: Path) -> PartPayload:
    """Decompress and parse a fetched part, never beyond what the superblock declares."""
    try:
        data = path.read_bytes()
    finally:
        path.unlink(missing_ok=True)
    try:
        return PartPayload.from_bytes(data, max_size=min(part.max_payload, PART_MAX))
    except CorruptObject as e:
        where = f"static delta part {st.fetcher.url_for(f'{base}/{index}')}"
        raise CorruptObject(str(e).replace("static delta part", where, 1)) from e


class _HashingFile(FileSink):
    """A file sink that also hashes what it writes (sha256)."""

    def __init__(self, f: IO[bytes]) -> None:
        super().__init__(f)
        self.h = hashlib.sha256()

    def write(self, data: bytes, /) -> object:
        self.h.update(data)
        return super().write(data)

    def reset(self) -> None:
        super().reset()
        self.h = hashlib.sha256()


@dataclass
class PartExecutor:
    """Runs one part's opcode stream, writing each object it produces into ``txn``."""

    repo: Repo
    txn: Transaction
    part: PartMeta
    payload: PartPayload
    where: str
    pos: int = 0
    index: int = 0
    source: bytes | None = None
    out: list[bytes] = field(default_factory=list)
    meta: FileMeta | None = None
    size: int = 0

    def run(self) -> int:
        """Execute every opcode; return the number of objects produced."""
        ops = self.payload.ops
        handlers = {ord("S"): self._splice, ord("o"): self._open, ord("w"): self._write,
                    ord("r"): self._set_source, ord("R"): self._unset_source,
                    ord("c"): self._close, ord("B"): self._bspatch}
        while self.pos < len(ops):
            op = ops[self.pos]
            self.pos += 1
            handler = handlers.get(op)
            if handler is None:
                raise CorruptObject(f"static delta part {self.where}: unknown opcode {op}")
            handler()
        if self.index != len(self.part.objects):
            raise CorruptObject(f"static delta part {self.where} made {self.index} of "
                                f"{len(self.part.objects)} objects")
        return self.index

    def _num(self) -> int:
        value, self.pos = read_varuint(self.payload.ops, self.pos)
        return value

    def _blob(self, offset: int, length: int) -> bytes:
        if offset + length > len(self.payload.blob):
            raise CorruptObject(f"static delta part {self.where}: offset out of range")
        return self.payload.blob[offset:offset + length]

    def _target(self) -> tuple[ObjectType, str]:
        if self.index >= len(self.part.objects):
            raise CorruptObject(f"static delta part {self.where} writes more objects than it lists")
        return self.part.objects[self.index]

    def _file_meta(self) -> None:
        mode_i, xattr_i = self._num(), self._num()
        try:
            uid, gid, mode = self.payload.modes[mode_i]
            xattrs = tuple((bytes(k).rstrip(b"\0"), bytes(v))
                           for k, v in self.payload.xattrs[xattr_i])
        except IndexError:
            raise CorruptObject(f"static delta part {self.where}: bad mode/xattr index") from None
        self.meta = FileMeta(uid, gid, mode, "", xattrs)

    def _splice(self) -> None:
        objtype, csum = self._target()
        if objtype.is_meta:
            length, offset = self._num(), self._num()
            data = self._blob(offset, length)
            if checksum_bytes(data) != csum:
                raise CorruptObject(f"{objtype.value} object {csum} in static delta part "
                                    f"{self.where} does not match its checksum")
            check_metadata_bytes(objtype, data, csum)
            self.txn.write_metadata(objtype, data)
            self.index += 1
            return
        self._file_meta()
        self.size, offset = self._num(), self._num()
        self.out = [self._blob(offset, self.size)]
        self._close()

    def _open(self) -> None:
        self._target()
        self._file_meta()
        self.size = self._num()
        self.out = []

    def _write(self) -> None:
        length, offset = self._num(), self._num()
        if self.source is not None:
            if offset + length > len(self.source):
                raise CorruptObject(f"static delta part {self.where}: read past source object")
            self.out.append(self.source[offset:offset + length])
        else:
            self.out.append(self._blob(offset, length))

    def _set_source(self) -> None:
        csum = self._blob(self._num(), 32).hex()
        self.source = self.repo.load_file(csum)[1]

    def _unset_source(self) -> None:
        self.source = None

    def _bspatch(self) -> None:
        offset, length = self._num(), self._num()
        if self.source is None:
            raise CorruptObject(f"static delta part {self.where}: bspatch without a source")
        self.out.append(apply_endsley_patch(self.source, self._blob(offset, length), self.size))

    def _close(self) -> None:
        if self.meta is not None:
            objtype, csum = self._target()
            content = b"".join(self.out)
            meta = self.meta
            if stat.S_ISLNK(meta.mode):
                target = content.decode(errors="surrogateescape")
                meta = FileMeta(meta.uid, meta.gid, meta.mode, target, meta.xattrs)
                content = b""
            check_file_meta(meta, csum)
            got = self.txn.write_file(meta, None if meta.is_symlink else content)
            if got != csum or objtype is not ObjectType.FILE:
                raise CorruptObject(f"file object {csum} in static delta part {self.where} "
                                    f"does not match its checksum")
            self.index += 1
        self.meta, self.out, self.source = None, [], None


def _offtin(b: bytes) -> int:
    v = int.from_bytes(b[:7] + bytes([b[7] & 0x7F]), "little")
    return -v if b[7] & 0x80 else v


def apply_endsley_patch(old: bytes, patch: bytes, new_size: int) -> bytes:
    """Apply a bsdiff patch in the headerless interleaved (Endsley) stream OSTree stores."""
    control, diff, extra = bytearray(), bytearray(), bytearray()
    pos = total = 0
    while total < new_size:
        if pos + 24 > len(patch):
            raise CorruptObject("bsdiff patch ends early")
        x, y = _offtin(patch[pos:pos + 8]), _offtin(patch[pos + 8:pos + 16])
        control += patch[pos:pos + 24]
        pos += 24
        if x < 0 or y < 0 or pos + x + y > len(patch):
            raise CorruptObject("bsdiff patch is corrupt")
        diff += patch[pos:pos + x]
        extra += patch[pos + x:pos + x + y]
        pos += x + y
        total += x + y
    try:
        return bsdiff4.core.patch(old, new_size, bytes(control), bytes(diff), bytes(extra))
    except Exception as e:  # bsdiff4 raises plain ValueError/MemoryError on bad input
        raise CorruptObject(f"bsdiff patch does not apply: {e}") from e


def make_endsley_patch(old: bytes, new: bytes) -> bytes:
    """A bsdiff patch in OSTree's headerless interleaved form."""
    control, diff, extra = bsdiff4.core.diff(old, new)
    out = bytearray()
    dpos = epos = 0
    for i in range(0, len(control), 24):
        x, y = _offtin(control[i:i + 8]), _offtin(control[i + 8:i + 16])
        out += control[i:i + 24] + diff[dpos:dpos + x] + extra[epos:epos + y]
        dpos += x
        epos += y
    return bytes(out)
