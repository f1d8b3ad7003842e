"""Paths inside a tree that came from elsewhere, reached without following symlinks.

A tree checked out from an image may hold symlinks anywhere (``usr/etc ->
/etc``, ``var -> /home``); they are content of the image, never a way out of
it.  These helpers walk a relative path one component at a time from a
directory fd with ``O_NOFOLLOW | O_DIRECTORY`` (what ``openat2`` calls
``RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH``), so a symlink or a ``..`` in the
path is an error, never a detour.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
# what "this path is not there as a real path" looks like
ABSENT = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)


def _parts(rel: str) -> list[str]:
    parts = [p for p in rel.split("/") if p and p != "."]
    if ".." in parts:
        raise OSError(errno.EXDEV, f"'..' in a path inside a tree: {rel}")
    return parts


def open_root(path: str | os.PathLike[str]) -> int:
    """A directory fd for ``path``, whose last component must not be a symlink."""
    return os.open(path, DIR_FLAGS)


def open_dir(root: int, rel: str) -> int:
    """A new fd for the directory ``rel`` below ``root``; OSError (ELOOP, ENOTDIR, ENOENT)
    when any component is a symlink, not a directory, or absent."""
    fd = os.dup(root)
    try:
        for part in _parts(rel):
            sub = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = sub
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def parent_of(root: int, rel: str) -> Iterator[tuple[int, str]]:
    """(fd of the directory holding ``rel``, last component); closed on exit."""
    parts = _parts(rel)
    if not parts:
        raise OSError(errno.EINVAL, "empty path inside a tree")
    fd = open_dir(root, "/".join(parts[:-1]))
    try:
        yield fd, parts[-1]
    finally:
        os.close(fd)


def lstat(root: int, rel: str) -> os.stat_result | None:
    """``lstat`` of ``rel`` below ``root``; None when it is not there as a real path."""
    try:
        with parent_of(root, rel) as (fd, name):
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except OSError as e:
        if e.errno in ABSENT:
            return None
        raise


def is_real_dir(root: Path, rel: str) -> bool:
    """Whether ``rel`` below the directory ``root`` is a directory reached without any
    symlink (``root`` itself included)."""
    fd = open_root(root)
    try:
        st = lstat(fd, rel)
    finally:
        os.close(fd)
    return st is not None and stat.S_ISDIR(st.st_mode)


def open_file(root: int, rel: str) -> int:
    """A read-only fd of the regular file ``rel`` below ``root`` (a symlink is refused)."""
    with parent_of(root, rel) as (fd, name):
        out = os.open(name, FILE_FLAGS | os.O_NONBLOCK, dir_fd=fd)  # a FIFO must not block
    if not stat.S_ISREG(os.fstat(out).st_mode):
        os.close(out)
        raise OSError(errno.EINVAL, f"not a regular file: {rel}")
    os.set_blocking(out, True)
    return out


def fd_path(dir_fd: int, name: str) -> str:
    """A path naming ``name`` in the directory open as ``dir_fd``, for calls that take no
    ``dir_fd`` (xattrs); use them without following the last component."""
    return f"/proc/self/fd/{dir_fd}/{name}"


def remove_at(dir_fd: int, name: str) -> None:
    """Remove ``name`` (a tree, a file or a symlink, never followed) from ``dir_fd``; absent
    is fine."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def read_file(root: Path | int, rel: str, limit: int) -> bytes | None:
    """Up to ``limit`` bytes of the regular file ``rel`` below ``root``; None when it is not
    there as a regular file reached without symlinks."""
    try:
        rfd = open_root(root) if isinstance(root, Path) else os.dup(root)
    except OSError:
        return None
    try:
        fd = open_file(rfd, rel)
    except OSError:
        return None
    finally:
        os.close(rfd)
    with open(fd, "rb") as f:
        return f.read(limit)
