"""Write transactions: objects are staged in ``tmp/staging-*``, synced, then published.

Publishing links each staged object into ``objects/`` without replacing an
existing one (an existing name is a deduplication hit), syncs the
filesystem, and only then writes refs, each atomically.  A transaction that
is killed leaves at most a staging directory (removed by the next
:meth:`Repo.open`) and unreferenced complete objects, never a ref pointing
at a missing object.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import itertools
import os
import stat
import tempfile
import threading
import zlib
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from store import refs as refs_mod
from store.errors import CorruptObject, RepoError
from store.faults import fail_point
from store.fsutil import link_noreplace, rmtree
from store.objects import (
    FileMeta,
    ObjectType,
    archive_header,
    checksum_bytes,
    encode_dirmeta_variant,
    file_header,
    loose_path,
    parse_header,
)

if TYPE_CHECKING:
    from store.repo import Repo

CHUNK = 1 << 20
SMALL_FILE = 4 << 20


class Readable(Protocol):
    """What a content stream must offer: ``read(n)`` returning b"" at its end."""

    def read(self, n: int = -1, /) -> bytes: ...


@functools.cache
def _libc() -> Any:
    """libc through ctypes, loaded on first use (a cache hit never needs it)."""
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _write_new(path: str, data: bytes) -> None:
    """Create ``path`` with ``data``; an existing name (same content, by checksum) is kept."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        return
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def rename_noreplace(src: str, dst: str) -> bool:
    """Move ``src`` to ``dst`` unless ``dst`` exists (then ``src`` stays); True when moved."""
    rc = _libc().renameat2(_AT_FDCWD, src.encode(), _AT_FDCWD, dst.encode(), _RENAME_NOREPLACE)
    if rc == 0:
        return True
    import ctypes

    err = ctypes.get_errno()
    if err == errno.EEXIST:
        return False
    if err in (errno.EINVAL, errno.ENOSYS):
        return link_noreplace(src, dst)
    raise OSError(err, os.strerror(err), dst)


def syncfs(path: Path) -> None:
    """Flush every dirty page of the filesystem holding ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc().syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


class Transaction:
    """Stage objects and refs; publish them all on successful exit, nothing on failure."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self._staged: dict[tuple[str, ObjectType], str] = {}
        self._refs: dict[str, str | None] = {}
        self._lock_cm: contextlib.AbstractContextManager[None] | None = None
        self._lockfd = -1
        self.dir = Path()
        self.written = 0
        self._counter = itertools.count()
        self._tmp_prefix = "tmp-"
        self._flushing: threading.Thread | None = None

    def __enter__(self) -> Transaction:
        if self.repo._txn is not None:
            raise RepoError("a transaction is already open on this repository")
        self._lock_cm = self.repo.lock()
        self._lock_cm.__enter__()
        starting = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.repo.tmp_dir))
        self._lockfd = os.open(starting / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lockfd, fcntl.LOCK_EX)
        self.dir = starting.with_name(starting.name[1:])
        os.rename(starting, self.dir)
        self.repo._txn = self
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        failed = et is not None
        try:
            self._wait_flush()
            if not failed:
                self._publish()
        except BaseException:
            failed = True
            raise
        finally:
            if failed:  # its dirtrees were never published
                self.repo.forget_written()
            self.repo._txn = None
            rmtree(self.dir)
            os.close(self._lockfd)
            assert self._lock_cm is not None
            self._lock_cm.__exit__(et, ev, tb)

    # ---- lookups -------------------------------------------------------------------

    def has_staged(self, csum: str, objtype: ObjectType) -> bool:
        return (csum, objtype) in self._staged

    def staged_path(self, csum: str, objtype: ObjectType) -> Path | None:
        staged = self._staged.get((csum, objtype))
        return Path(staged) if staged is not None else None

    # ---- writing -------------------------------------------------------------------

    def set_ref(self, refspec: str, csum: str | None) -> None:
        """Move ``refspec`` to ``csum`` (None deletes it) when the transaction commits."""
        refs_mod.ref_path(self.repo.path, refspec)
        self._refs[refspec] = csum

    def write_metadata(self, objtype: ObjectType, data: bytes) -> str:
        """Store a metadata object; return its checksum."""
        csum = checksum_bytes(data)
        if not self.repo.has(csum, objtype):
            self._stage_bytes(data, csum, objtype)
        return csum

    def write_file(self, meta: FileMeta, content: bytes | Readable | None,
                   size: int | None = None) -> str:
        """Store a content object from bytes or a stream (None: symlink); return its checksum."""
        header = file_header(meta)
        if meta.is_symlink or content is None:
            content = b""
        if isinstance(content, bytes | bytearray | memoryview):
            content = bytes(content)
            h = hashlib.sha256(header)
            h.update(content)
            csum = h.hexdigest()
            if not self.repo.has(csum, ObjectType.FILE):
                self._store_new_file(meta, content, csum)
            return csum
        return self._write_stream(meta, header, content)

    def write_file_from_path(self, path: str | os.PathLike[str], meta: FileMeta) -> str:
        """Store the content of the regular file ``path`` with ``meta``; return its checksum."""
        if meta.is_symlink:
            return self.write_file(meta, None)
        with open(path, "rb") as f:
            return self.write_file_from_file(f, meta)

    def write_file_from_file(self, f: BinaryIO, meta: FileMeta) -> str:
        """Store the content of the open regular file ``f`` with ``meta``; return its checksum."""
        if os.fstat(f.fileno()).st_size <= SMALL_FILE:
            return self.write_file(meta, f.read())
        return self._write_stream(meta, file_header(meta), f)

    def write_checked_file(self, csum: str, meta: FileMeta, content: bytes,
                           archived: bytes | None = None) -> None:
        """Store a content object the caller has just hashed to ``csum`` (header of ``meta``
        plus ``content``) without hashing it again; ``archived`` is its ``.filez`` form,
        kept as is in an archive repository.  An object already stored is left alone."""
        if self.repo.has(csum, ObjectType.FILE):
            return
        if archived is not None and self.repo.is_archive:
            self._stage_bytes(archived, csum, ObjectType.FILE)
        else:
            self._store_new_file(meta, b"" if meta.is_symlink else content, csum)

    def write_checked_stream(self, csum: str, meta: FileMeta, stream: Readable) -> bool:
        """Store a regular file's content from ``stream`` as object ``csum``, hashing it while
        it is written; False when it does not hash to ``csum``: then the written copy is
        removed again, so nothing that does not match is ever staged."""
        return self._write_stream(meta, file_header(meta), stream, expect=csum) == csum

    def write_raw_object(self, csum: str, objtype: ObjectType, data: bytes) -> None:
        """Store an object received from elsewhere (archive ``.filez`` bytes for files).

        The object is verified against ``csum`` first (a commitmeta, named by its commit,
        must parse); a mismatch raises CorruptObject.
        """
        if objtype is ObjectType.COMMIT_META:  # named by its commit, not by its own hash
            from store.gvariant import decode
            from store.objects import METADATA_SIG

            decode(METADATA_SIG, data)
            self._stage_bytes(data, csum, objtype)
            return
        if objtype is not ObjectType.FILE:
            if checksum_bytes(data) != csum:
                raise CorruptObject(f"{objtype.value} object {csum} does not match its checksum")
            if not self.repo.has(csum, objtype):
                self._stage_bytes(data, csum, objtype)
            return
        meta, size, hlen = parse_header(data, archive=True)
        content = b"" if meta.is_symlink else _inflate_exact(data[hlen:], size, csum)
        actual = hashlib.sha256(file_header(meta) + content).hexdigest()
        if actual != csum:
            raise CorruptObject(f"file object {csum} does not match its checksum (got {actual})")
        if self.repo.has(csum, ObjectType.FILE):
            return
        if self.repo.is_archive:
            self._stage_bytes(data, csum, objtype)
        else:
            self._store_new_file(meta, content, csum)

    # ---- internals -----------------------------------------------------------------

    def _tmpfile(self) -> Path:
        return self.dir / f"{self._tmp_prefix}{next(self._counter)}"

    def _stage_bytes(self, data: bytes, csum: str, objtype: ObjectType) -> None:
        path = self._staging_path(csum, objtype)
        _write_new(path, data)
        self._record(csum, objtype, path)

    def _staging_path(self, csum: str, objtype: ObjectType) -> str:
        """Staged objects lie flat in the staging directory: no subdirectory to make or remove."""
        return f"{self.dir}/{csum}.{objtype.value}"

    def _record(self, csum: str, objtype: ObjectType, path: str) -> None:
        self._staged[(csum, objtype)] = path
        self.written += 1

    def _stage(self, tmp: Path, csum: str, objtype: ObjectType) -> None:
        dest = self._staging_path(csum, objtype)
        os.replace(tmp, dest)
        self._record(csum, objtype, dest)

    def _store_new_file(self, meta: FileMeta, content: bytes, csum: str) -> None:
        """Write a file object in this repository's on-disk form straight to its staging name."""
        path = self._staging_path(csum, ObjectType.FILE)
        mode = self.repo.mode.value
        if mode == "archive-z2":
            body = b""
            if not meta.is_symlink:
                z = zlib.compressobj(6, zlib.DEFLATED, -15)
                body = z.compress(content) + z.flush()
            _write_new(path, archive_header(meta, len(content)) + body)
        elif meta.is_symlink and mode == "bare":
            try:
                os.symlink(meta.symlink, path)
            except FileExistsError:
                return
            os.lchown(path, meta.uid, meta.gid)
            for k, v in meta.xattrs:
                os.setxattr(path, k, v, follow_symlinks=False)
        else:
            data = meta.symlink.encode() + b"\0" if meta.is_symlink else content
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                return  # another thread of this transaction is writing the same object
            try:
                _write_all(fd, data)
                self._apply_meta(fd, meta)
            finally:
                os.close(fd)
        self._record(csum, ObjectType.FILE, path)

    def _apply_meta(self, fd: int, meta: FileMeta) -> None:
        """Give a flushed object file its on-disk metadata and OSTree's mtime of 0."""
        if self.repo.mode.value == "bare":
            os.fchown(fd, meta.uid, meta.gid)
            os.fchmod(fd, stat.S_IMODE(meta.mode))
            for k, v in meta.xattrs:
                os.setxattr(fd, k, v)
        else:
            os.setxattr(fd, "user.ostreemeta",
                        encode_dirmeta_variant(meta.uid, meta.gid, meta.mode, meta.xattrs))
            if stat.S_ISREG(meta.mode):
                os.fchmod(fd, (meta.mode & 0o775) | stat.S_IRUSR)
            else:
                os.fchmod(fd, 0o644)
        os.utime(fd, (0, 0))

    def _write_stream(self, meta: FileMeta, header: bytes, stream: Readable,
                      expect: str | None = None) -> str:
        h = hashlib.sha256(header)
        tmp = self._tmpfile()
        try:
            self._copy_stream(tmp, meta, stream, h)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        csum = h.hexdigest()
        if (expect is not None and csum != expect) or self.repo.has(csum, ObjectType.FILE):
            tmp.unlink()
        else:
            self._stage(tmp, csum, ObjectType.FILE)
        return csum

    def _copy_stream(self, tmp: Path, meta: FileMeta, stream: Readable,
                     h: hashlib._Hash) -> None:
        """Write ``stream`` to ``tmp`` in this repository's on-disk form, hashing it."""
        archive = self.repo.is_archive
        z = zlib.compressobj(6, zlib.DEFLATED, -15)
        size = 0
        with open(tmp, "wb") as out:
            if archive:
                out.write(archive_header(meta, 0))
            while chunk := stream.read(CHUNK):
                h.update(chunk)
                size += len(chunk)
                out.write(z.compress(chunk) if archive else chunk)
            if archive:
                out.write(z.flush())
                out.seek(0)
                out.write(archive_header(meta, size))
            else:
                out.flush()
                self._apply_meta(out.fileno(), meta)

    def in_forked_child(self) -> set[tuple[str, ObjectType]]:
        """Call first in a process forked while this transaction is open, before it stages
        anything: its temporary names get its pid.  Returns what was staged before the fork,
        for :meth:`staged_since`."""
        self._tmp_prefix = f"tmp-{os.getpid()}-"
        self._flushing = None
        return set(self._staged)

    def staged_since(self, before: set[tuple[str, ObjectType]]) -> list[tuple[str, str, str]]:
        """(checksum, object type, staged path) of each object staged since ``before``."""
        return [(c, t.value, p) for (c, t), p in self._staged.items() if (c, t) not in before]

    def adopt(self, entries: list[tuple[str, str, str]]) -> None:
        """Take in objects a forked child staged in this transaction's directory."""
        for csum, objtype, path in entries:
            if not path.startswith(f"{self.dir}/"):
                raise RepoError(f"staged object {csum} outside the transaction: {path}")
            if (csum, ObjectType(objtype)) not in self._staged:
                self._record(csum, ObjectType(objtype), path)

    def flush_soon(self) -> None:
        """Start writing what is staged so far to disk in the background (a ``syncfs``).

        The publish still syncs; this only lets the disk work overlap with whatever
        the caller does next (a pull checking a tree after a delta).
        """
        if self._flushing is None:
            flushing = threading.Thread(target=syncfs, args=(self.repo.path,), name="flush",
                                        daemon=True)
            flushing.start()  # kept only once started: a Ctrl-C may land inside start()
            self._flushing = flushing

    def _wait_flush(self) -> None:
        if self._flushing is not None:
            self._flushing.join()
            self._flushing = None

    def checkpoint(self) -> int:
        """Publish the objects staged so far, refs excepted, and keep the transaction open.

        For long operations (a pull): what is published survives the process being
        killed, so a retry skips it.  Objects other threads stage meanwhile wait for
        the next checkpoint or the end.  Returns how many objects were published.
        """
        staged = list(self._staged.items())
        self._publish_objects(staged)
        for key, _path in staged:
            del self._staged[key]
        return len(staged)

    def _publish(self) -> None:
        fail_point("before-publish")
        self._publish_objects(list(self._staged.items()))
        fail_point("before-refs")
        for refspec, csum in self._refs.items():
            refs_mod.write_ref(self.repo.path, refspec, csum, sync=False)
        if self._refs:
            syncfs(self.repo.path)

    def _publish_objects(self, staged: list[tuple[tuple[str, ObjectType], str]]) -> None:
        if not staged:
            return
        objects = self.repo.objects_dir
        syncfs(self.repo.path)
        made: set[str] = set()
        for (csum, objtype), path in staged:
            sub = csum[:2]
            if sub not in made:
                (objects / sub).mkdir(exist_ok=True)
                made.add(sub)
            final = f"{objects}/{loose_path(csum, objtype, archive=self.repo.is_archive)}"
            if objtype is ObjectType.COMMIT_META:
                os.replace(path, final)
            else:
                rename_noreplace(path, final)
        syncfs(self.repo.path)


def _inflate_exact(data: bytes, size: int, csum: str) -> bytes:
    z = zlib.decompressobj(-15)
    try:
        out = z.decompress(data, size + 1)
    except zlib.error as e:
        raise CorruptObject(f"file object {csum} has a corrupt compressed stream: {e}") from None
    if len(out) != size or not z.eof:
        raise CorruptObject(f"file object {csum} is truncated or has trailing data")
    return out


__all__ = ["Transaction", "syncfs"]
