"""Reading the script sandbox's overlay upper layer back, without following anything.

The upper layer is written by hostile scripts running as root.  Everything here
goes through directory file descriptors: :func:`os.fwalk` never follows a
symlink, files are opened with ``O_NOFOLLOW | O_NONBLOCK`` beside their
directory's descriptor and checked to be the regular file that was listed, and
FIFOs, sockets and devices are never opened (they are skipped: a commit cannot
hold them).  :func:`replaced_system_dir` refuses an upper layer in which a
system directory (``/usr``, ``/usr/etc``, ``/etc``, ``/var``, ...) stopped being
a directory, since host-side code later works inside those directories.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from layering.errors import ScriptError
from store.fsutil import read_xattrs
from store.mtree import MutableTree
from store.objects import DirMeta, FileMeta
from store.txn import Transaction

SANDBOX_DIRS = ("dev", "proc", "tmp", "run", "sys", "etc")
SYSTEM_DIRS = ("usr", "usr/etc", "etc", "var", "var/lib", "boot", "usr/lib", "usr/lib/modules",
               "usr/bin", "usr/sbin", "usr/share")
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def printable(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters, control characters shown as ``?``."""
    cut = text[:limit] + ("..." if len(text) > limit else "")
    return "".join(c if c.isprintable() else "?" for c in cut)


def replaced_system_dir(upper: Path) -> str | None:
    """How the upper layer replaced a system directory ("/usr/etc is now a symlink to
    /x"), or None when every one that the layer touches is still a directory."""
    top = os.open(upper, DIR_FLAGS)
    try:
        for path in SYSTEM_DIRS:
            what = _replaced(top, path)
            if what:
                return f"/{path} {what}"
    finally:
        os.close(top)
    return None


def _replaced(top: int, path: str) -> str:
    parent, _, name = path.rpartition("/")
    try:
        fd = os.open(parent, DIR_FLAGS, dir_fd=top) if parent else os.dup(top)
    except (FileNotFoundError, NotADirectoryError, OSError):
        return ""  # an absent parent: untouched; a non-directory parent is reported itself
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            return ""
        if stat.S_ISLNK(st.st_mode):
            return f"is now a symlink to {printable(os.readlink(name, dir_fd=fd), 100)}"
        return "was removed" if _is_whiteout(st) else "is no longer a directory"
    except FileNotFoundError:
        return ""
    finally:
        os.close(fd)


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _xattrs(dirfd: int, name: str) -> tuple[tuple[bytes, bytes], ...]:
    """The entry's own xattrs (never a symlink target's), without overlayfs's own."""
    kvs = read_xattrs(f"/proc/self/fd/{dirfd}/{name}")
    return tuple(kv for kv in kvs if not kv[0].startswith(b"trusted.overlay."))


def apply_upper(txn: Transaction, tree: MutableTree, upper: Path) -> list[str]:
    """Fold an overlayfs upper layer into ``tree``: changed files, new files, deletions.

    Returns the paths skipped because a commit cannot hold them (FIFOs, sockets,
    devices).  Nothing in ``upper`` may change meanwhile (the sandbox is gone).
    """
    skipped: list[str] = []
    for dirpath, dirnames, filenames, dirfd in os.fwalk(upper, follow_symlinks=False):
        rel_dir = os.path.relpath(dirpath, upper)
        rel_dir = "" if rel_dir == "." else rel_dir
        for name in sorted(dirnames + filenames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            if _is_whiteout(st):
                tree.remove(rel)
            elif stat.S_ISDIR(st.st_mode):
                _apply_dir(tree, rel, dirfd, name, st)
            elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                _apply_file(txn, tree, rel, dirfd, name, st)
            else:
                skipped.append(rel)
    return skipped


def _apply_file(txn: Transaction, tree: MutableTree, rel: str, dirfd: int, name: str,
                st: os.stat_result) -> None:
    if isinstance(tree.lookup(rel), MutableTree):
        tree.remove(rel)
    target = os.readlink(name, dir_fd=dirfd) if stat.S_ISLNK(st.st_mode) else ""
    meta = FileMeta(st.st_uid, st.st_gid, st.st_mode, target, _xattrs(dirfd, name))
    if target:
        tree.set_file(rel, txn.write_file(meta, None))
        return
    fd = os.open(name, OPEN_FLAGS, dir_fd=dirfd)
    with open(fd, "rb") as f:
        now = os.fstat(fd)
        if (now.st_ino, now.st_dev) != (st.st_ino, st.st_dev) or not stat.S_ISREG(now.st_mode):
            raise ScriptError(f"/{printable(rel)} changed in the script sandbox's upper layer "
                              "while it was read")
        tree.set_file(rel, txn.write_file_from_file(f, meta))


def _apply_dir(tree: MutableTree, rel: str, dirfd: int, name: str, st: os.stat_result) -> None:
    xattrs = read_xattrs(f"/proc/self/fd/{dirfd}/{name}")
    meta = DirMeta(st.st_uid, st.st_gid, st.st_mode,
                   tuple(kv for kv in xattrs if not kv[0].startswith(b"trusted.overlay.")))
    existing = tree.lookup(rel)
    if rel in SANDBOX_DIRS and existing is None and _empty(dirfd, name):
        return
    opaque = b"trusted.overlay.opaque" in dict(xattrs)
    if isinstance(existing, str) or (opaque and existing is not None):
        tree.remove(rel)
        existing = None
    if existing is None:
        tree.ensure_dir(rel, meta)
    elif existing.meta != meta:
        tree.subdir_for_update(rel).meta = meta  # its ancestors change too


def _empty(dirfd: int, name: str) -> bool:
    fd = os.open(name, DIR_FLAGS, dir_fd=dirfd)
    with contextlib.closing(os.scandir(fd)) as it:
        empty = next(it, None) is None
    os.close(fd)
    return empty
