"""Filesystem primitives with crash-safe semantics.

``atomic_write`` is the one way strata replaces a file that matters: a
temporary file in the same directory, fsync, ``os.replace``, fsync of the
directory.  ``link_noreplace`` publishes an object, treating an existing
name as a deduplication hit.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def read_xattrs(path: str | os.PathLike[str]) -> tuple[tuple[bytes, bytes], ...]:
    """A file's (not a symlink target's) extended attributes, sorted by name; empty when the
    filesystem has none or does not support them."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    out = []
    for n in names:
        with contextlib.suppress(OSError):
            out.append((n.encode(), os.getxattr(path, n, follow_symlinks=False)))
    return tuple(sorted(out))


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a directory's entries to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: str | os.PathLike[str], data: bytes, *, sync: bool = True, mode: int = 0o644
) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never a mix.

    With ``sync`` the data and the directory entry are on disk when this returns.
    """
    with atomic_file(path, sync=sync, mode=mode) as f:
        f.write(data)


@contextlib.contextmanager
def atomic_file(
    path: str | os.PathLike[str], *, sync: bool = True, mode: int = 0o644
) -> Iterator[BinaryIO]:
    """A file to write (streaming) that replaces ``path`` when the block ends without an
    exception; on any exception (Ctrl-C too) ``path`` is unchanged and no temporary file is
    left.  With ``sync`` the data and the directory entry are on disk afterwards."""
    import tempfile

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync:
        fsync_dir(path.parent)


def atomic_symlink(target: str, path: str | os.PathLike[str]) -> None:
    """Point the symlink ``path`` at ``target``, replacing any previous link atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def link_noreplace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> bool:
    """Hardlink ``src`` to ``dst``; return False when ``dst`` already exists."""
    try:
        os.link(src, dst, follow_symlinks=False)
    except FileExistsError:
        return False
    return True


def rmtree(path: str | os.PathLike[str]) -> None:
    """Remove a tree, also when it holds read-only directories; an absent path is fine."""
    import shutil

    def onerror(func: object, p: str, exc_info: tuple[type, BaseException, object]) -> None:
        if isinstance(exc_info[1], FileNotFoundError):
            return
        os.chmod(os.path.dirname(p), stat.S_IRWXU)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, onerror=onerror)
        else:
            os.unlink(p)

    if os.path.lexists(path):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, onerror=onerror)
        else:
            os.unlink(path)


def writable(path: str | os.PathLike[str]) -> bool:
    """True when this process may create files in ``path`` (or, when it does not exist,
    in the nearest existing directory above it)."""
    p = Path(path)
    while not p.exists() and p.parent != p:
        p = p.parent
    return os.access(p, os.W_OK, effective_ids=True)


@contextlib.contextmanager
def scratch_dir(parent: str | os.PathLike[str] | None, prefix: str) -> Iterator[Path]:
    """A temporary directory under ``parent`` (None: ``$TMPDIR``) that is removed on exit,
    whatever happens."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield d
    finally:
        rmtree(d)
