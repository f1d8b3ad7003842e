"""Generating static deltas in OSTree's format (``static-delta generate``).

The delta holds every object reachable from TO and not from FROM: metadata
objects as open-splice-close (``S``) ops, new files likewise, modified files
of a similar name as a bsdiff (``o r B R c``) against the old object when that
is smaller, and files above ``min_fallback_size`` as fallbacks the client
fetches as loose objects.  Parts are cut at ``max_chunk_size`` of payload
and xz-compressed.  The delta is built in ``tmp/`` and renamed into
``deltas/`` whole.
"""

from __future__ import annotations

import hashlib
import os
import time
import zlib
from dataclasses import dataclass, field

from store.errors import InputError
from store.fsutil import atomic_write, rmtree
from store.gvariant import Variant
from store.objects import FileMeta, ObjectType
from store.progress import ProgressFn, Stage
from store.replication.delta_format import (
    COMPRESSION_XZ,
    Fallback,
    PartMeta,
    PartPayload,
    Superblock,
    delta_dir,
    delta_name,
    write_varuint,
)
from store.repo import Repo

MIN_FALLBACK_SIZE = 4 << 20
MAX_CHUNK_SIZE = 32 << 20
MAX_BSDIFF_SIZE = 32 << 20
MIN_BSDIFF_SIZE = 4096


@dataclass(frozen=True)
class DeltaInfo:
    """A generated delta: its name, number of parts, bytes on disk and fallback count."""

    name: str
    parts: int
    size: int
    fallbacks: int


@dataclass
class _Reach:
    meta: dict[tuple[str, ObjectType], None] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # csum -> first path


def reachable(repo: Repo, commit: str) -> _Reach:
    """Every dirtree/dirmeta and file (with one path) of a commit's tree."""
    out = _Reach()
    c = repo.load_commit(commit)
    stack = [("", c.root_tree, c.root_meta)]
    seen: set[str] = set()
    while stack:
        path, tree, meta = stack.pop()
        out.meta[(meta, ObjectType.DIR_META)] = None
        if tree in seen:
            continue
        seen.add(tree)
        out.meta[(tree, ObjectType.DIR_TREE)] = None
        dt = repo.load_dirtree(tree)
        for name, csum in dt.files:
            out.files.setdefault(csum, f"{path}/{name}")
        stack.extend((f"{path}/{name}", t, m) for name, t, m in reversed(dt.dirs))
    return out


@dataclass
class _PartBuilder:
    modes: dict[tuple[int, int, int], int] = field(default_factory=dict)
    xattrs: dict[tuple[tuple[bytes, bytes], ...], int] = field(default_factory=dict)
    blob: bytearray = field(default_factory=bytearray)
    ops: bytearray = field(default_factory=bytearray)
    objects: list[tuple[ObjectType, str]] = field(default_factory=list)
    usize: int = 0

    def _put(self, data: bytes) -> int:
        off = len(self.blob)
        self.blob += data
        return off

    def _meta_ops(self, meta: FileMeta) -> bytes:
        m = self.modes.setdefault((meta.uid, meta.gid, meta.mode), len(self.modes))
        x = self.xattrs.setdefault(meta.xattrs, len(self.xattrs))
        return write_varuint(m) + write_varuint(x)

    def add_meta(self, objtype: ObjectType, csum: str, data: bytes) -> None:
        off = self._put(data)
        self.ops += b"S" + write_varuint(len(data)) + write_varuint(off)
        self.objects.append((objtype, csum))
        self.usize += len(data)

    def add_file(self, csum: str, meta: FileMeta, content: bytes) -> None:
        data = meta.symlink.encode(errors="surrogateescape") if meta.is_symlink else content
        head = self._meta_ops(meta)
        off = self._put(data)
        self.ops += b"S" + head + write_varuint(len(data)) + write_varuint(off)
        self.objects.append((ObjectType.FILE, csum))
        self.usize += len(data)

    def add_bsdiff(self, csum: str, meta: FileMeta, size: int, source: str, patch: bytes) -> None:
        head = self._meta_ops(meta)
        src_off = self._put(bytes.fromhex(source))
        patch_off = self._put(patch)
        self.ops += (b"o" + head + write_varuint(size) + b"r" + write_varuint(src_off)
                     + b"B" + write_varuint(patch_off) + write_varuint(len(patch)) + b"R" + b"c")
        self.objects.append((ObjectType.FILE, csum))
        self.usize += size

    def finish(self) -> tuple[bytes, PartMeta]:
        xattrs = [[(k + b"\0", v) for k, v in x] for x in self.xattrs]
        payload = PartPayload(list(self.modes), xattrs, bytes(self.blob), bytes(self.ops))
        data = payload.to_bytes(compression=COMPRESSION_XZ)
        return data, PartMeta(0, hashlib.sha256(data).hexdigest(), len(data), self.usize,
                              tuple(self.objects))


def _similar(new_path: str, size: int, old_by_path: dict[str, str],
             old_by_base: dict[str, list[tuple[str, int]]]) -> str | None:
    """An old file object to bsdiff against: same path, else same basename and similar size."""
    if new_path in old_by_path:
        return old_by_path[new_path]
    for csum, old_size in old_by_base.get(os.path.basename(new_path), ()):
        if min(size, old_size) * 2 >= max(size, old_size):
            return csum
    return None


def _worth_patch(patch: bytes, content: bytes) -> bool:
    return len(zlib.compress(patch, 1)) < len(zlib.compress(content, 1)) * 0.8


def _file_size(repo: Repo, csum: str) -> tuple[int, int]:
    """(on-disk size as a loose archive object, content size) of a file object."""
    path = repo.object_path(csum, ObjectType.FILE)
    meta, stream = repo.open_file(csum)
    if stream is None:
        return 0, 0
    with stream:
        if repo.is_archive:
            from store.objects import parse_header

            with open(path, "rb") as f:
                _m, size, _h = parse_header(f.read(65536), archive=True)
            return path.stat().st_size, size
        size = os.fstat(stream.fileno()).st_size
        return size, size


class _Parts:
    """The finished parts and the one being filled, cut at ``max_chunk`` bytes of payload."""

    def __init__(self, max_chunk: int) -> None:
        self.done: list[tuple[bytes, PartMeta]] = []
        self.cur = _PartBuilder()
        self.max_chunk = max_chunk

    def cut_if_full(self) -> None:
        if len(self.cur.blob) >= self.max_chunk:
            self.done.append(self.cur.finish())
            self.cur = _PartBuilder()

    def finish(self) -> list[tuple[bytes, PartMeta]]:
        if self.cur.objects or not self.done:
            self.done.append(self.cur.finish())
        return self.done


def generate_delta(repo: Repo, from_csum: str | None, to_csum: str, *,
                   min_fallback_size: int = MIN_FALLBACK_SIZE,
                   max_chunk_size: int = MAX_CHUNK_SIZE,
                   progress: ProgressFn | None = None) -> DeltaInfo:
    """Write the static delta FROM -> TO (from scratch when ``from_csum`` is None).

    The delta directory appears whole or not at all; an existing delta of the
    same name is replaced.  ``progress`` hears stage ``delta-objects`` (new
    objects encoded, content bytes read) then ``delta-write`` (parts written).
    """
    parts, fallbacks = build_parts(repo, from_csum, to_csum, min_fallback_size=min_fallback_size,
                                   max_chunk_size=max_chunk_size, progress=progress)
    return _write(repo, delta_name(from_csum, to_csum), from_csum, to_csum, parts, fallbacks,
                  progress)


def build_parts(repo: Repo, from_csum: str | None, to_csum: str, *,
                min_fallback_size: int = MIN_FALLBACK_SIZE,
                max_chunk_size: int = MAX_CHUNK_SIZE, progress: ProgressFn | None = None
                ) -> tuple[list[tuple[bytes, PartMeta]], list[Fallback]]:
    """The parts (file bytes, description) and fallbacks of the delta FROM -> TO; files of
    ``min_fallback_size`` bytes or more that bsdiff does not shrink become fallbacks."""
    if from_csum == to_csum:
        raise InputError(f"static delta from {to_csum} to itself")
    new = reachable(repo, to_csum)
    old = reachable(repo, from_csum) if from_csum else _Reach()
    parts = _Parts(max_chunk_size)
    metas = [key for key in new.meta if key not in old.meta]
    files = [c for c in new.files if c not in old.files]
    counted = Stage(progress, "delta-objects", len(metas) + len(files))
    for key in metas:
        parts.cur.add_meta(key[1], key[0], repo.read_metadata_bytes(*key))
        parts.cut_if_full()
        counted.advance()
    fallbacks = _add_files(repo, parts, new, old, min_fallback_size, counted)
    counted.finish()
    return parts.finish(), fallbacks


def _add_files(repo: Repo, parts: _Parts, new: _Reach, old: _Reach,
               min_fallback_size: int, counted: Stage) -> list[Fallback]:
    old_by_path = {p: c for c, p in old.files.items()}
    old_sizes = {c: _file_size(repo, c)[1] for c in old.files}
    old_by_base: dict[str, list[tuple[str, int]]] = {}
    for c, p in old.files.items():
        old_by_base.setdefault(os.path.basename(p), []).append((c, old_sizes[c]))
    def order(c: str) -> tuple[str, str, str]:
        path = new.files[c]
        return os.path.splitext(path)[1], os.path.basename(path), c

    todo = sorted((c for c in new.files if c not in old.files), key=order)
    fallbacks = []
    for csum in todo:
        path = new.files[csum]
        disk, size = _file_size(repo, csum)
        counted.advance(1, size)
        source = _similar(path, size, old_by_path, old_by_base)
        if source is None and size >= min_fallback_size:
            fallbacks.append(Fallback(ObjectType.FILE, csum, disk, size))
            continue
        meta, content = repo.load_file(csum)
        if source is not None and MIN_BSDIFF_SIZE <= size <= MAX_BSDIFF_SIZE:
            from store.replication.delta_pull import make_endsley_patch

            patch = make_endsley_patch(repo.load_file(source)[1], content)
            if _worth_patch(patch, content):
                parts.cur.add_bsdiff(csum, meta, size, source, patch)
                parts.cut_if_full()
                continue
        if size >= min_fallback_size:
            fallbacks.append(Fallback(ObjectType.FILE, csum, disk, size))
            continue
        parts.cur.add_file(csum, meta, content)
        parts.cut_if_full()
    return fallbacks


def _write(repo: Repo, name: str, from_csum: str | None, to_csum: str,
           parts: list[tuple[bytes, PartMeta]], fallbacks: list[Fallback],
           progress: ProgressFn | None) -> DeltaInfo:
    base = delta_dir(name)
    metadata: dict[str, Variant] = {"ostree.endianness": Variant("y", ord("l"))}
    detached = repo.load_detached_metadata(to_csum)
    if detached:
        metadata[f"{base}/commitmeta"] = Variant("a{sv}", detached)
    sb = Superblock(from_csum, to_csum, int(time.time()),
                    repo.read_metadata_bytes(to_csum, ObjectType.COMMIT),
                    tuple(p for _d, p in parts), tuple(fallbacks), metadata)
    tmp = repo.tmp_dir / f"delta-{os.getpid()}-{to_csum[:12]}"
    rmtree(tmp)
    tmp.mkdir()
    written = Stage(progress, "delta-write", len(parts))
    try:
        for i, (data, _p) in enumerate(parts):
            atomic_write(tmp / str(i), data, sync=False)
            written.advance(1, len(data))
        atomic_write(tmp / "superblock", sb.to_bytes())
        final = repo.path / base
        final.parent.mkdir(parents=True, exist_ok=True)
        rmtree(final)
        os.rename(tmp, final)
        written.finish()
    finally:
        rmtree(tmp)
    total = sum(len(d) for d, _p in parts) + len(sb.to_bytes())
    return DeltaInfo(name, len(parts), total, len(fallbacks))
