"""Commit -> directory.

Files are hardlinked from the object store where the mode allows it (a
``bare`` repository without ``user_mode``, or ``bare-user`` with it), as
``ostree checkout`` does; otherwise content is copied and metadata applied.
Regular files get mtime 0, OSTree's fixed timestamp.

Every write goes through directory fds: each directory is made with
``mkdir`` at its parent's fd and opened with ``O_NOFOLLOW``, each file made
with ``link``/``symlink``/``open(O_EXCL | O_NOFOLLOW)`` at that fd.  Trees
are checked when loaded (:mod:`store.treecheck`), so no name holds a ``/``
or is ``..``; and a symlink already in the destination (a kept checkout
someone changed) makes the write fail instead of leading it elsewhere.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from store import beneath
from store.errors import CorruptObject, InputError, ObjectNotFound
from store.objects import DirMeta, FileMeta, ObjectType, decode_dirmeta_variant
from store.repo import OSTREEMETA_XATTR, Repo, RepoMode
from store.treecheck import MAX_DEPTH, check_file_meta

_DIR = os.O_RDONLY | os.O_DIRECTORY
_NOFOLLOW_DIR = beneath.DIR_FLAGS


@dataclass(frozen=True)
class _Options:
    link: bool
    user_mode: bool


def find_subpath(repo: Repo, root_tree: str, root_meta: str, subpath: str
                 ) -> tuple[str, str] | tuple[str, None]:
    """Locate ``subpath`` in a tree: (tree, meta) for a directory, (file csum, None) for a file."""
    tree, meta = root_tree, root_meta
    parts = [p for p in subpath.strip("/").split("/") if p and p != "."]
    for i, name in enumerate(parts):
        dt = repo.load_dirtree(tree)
        sub = next((d for d in dt.dirs if d[0] == name), None)
        if sub is not None:
            tree, meta = sub[1], sub[2]
            continue
        f = next((c for n, c in dt.files if n == name), None)
        if f is not None and i == len(parts) - 1:
            return f, None
        raise ObjectNotFound(f"no such path '{subpath}' in commit")
    return tree, meta


def checkout(repo: Repo, rev: str, dest: str | os.PathLike[str], *, subpath: str | None = None,
             user_mode: bool = False, copy: bool = False) -> None:
    """Materialize commit ``rev`` (or ``subpath`` of it) at ``dest``.

    ``dest`` must be absent or an empty directory.  On failure nothing is left
    at ``dest`` that this call created.
    """
    commit = repo.load_commit(repo.resolve(rev))
    obj, meta = commit.root_tree, commit.root_meta
    if subpath:
        obj, meta = find_subpath(repo, obj, meta, subpath)  # type: ignore[assignment]
    checkout_tree(repo, obj, meta, dest, user_mode=user_mode, copy=copy)


def checkout_tree(repo: Repo, obj: str, meta: str | None, dest: str | os.PathLike[str], *,
                  user_mode: bool = False, copy: bool = False) -> None:
    """Materialize a dirtree (``meta`` given) or a single file object at ``dest``.

    Objects staged in the repository's open transaction can be checked out too.
    Everything is written through directory fds opened without following
    symlinks, below ``dest``'s parent: no name in the tree and no symlink met
    in the destination can lead a write elsewhere.
    """
    dest = Path(os.path.abspath(dest))  # "." and "x/.." name their directory
    link = not copy and ((repo.mode is RepoMode.BARE and not user_mode)
                         or (repo.mode is RepoMode.BARE_USER and user_mode))
    opts = _Options(link=link, user_mode=user_mode)
    parent = _open_parent(dest)
    try:
        existed = _check_dest(parent, dest)
        try:
            if meta is None:
                _file(repo, obj, parent, dest.name, opts)
            else:
                objfd = os.open(repo.objects_dir, _DIR | os.O_CLOEXEC)
                try:
                    _Writer(repo, opts, objfd).directory(obj, repo.load_dirmeta(meta), parent,
                                                         dest.name, exists=existed)
                finally:
                    os.close(objfd)
        except BaseException:
            _undo(parent, dest.name, keep_dir=existed)
            raise
    finally:
        os.close(parent)


def _open_parent(dest: Path) -> int:
    """The directory ``dest`` is made in (a path the caller chose: it may hold symlinks)."""
    if not dest.name or dest.name in (".", ".."):
        raise InputError(f"invalid checkout destination: {dest}")
    try:
        return os.open(dest.parent, _DIR | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(f"parent of checkout destination does not exist: {dest.parent}") from None


def _check_dest(parent: int, dest: Path) -> bool:
    """True when ``dest`` is an empty directory (not a symlink to one), False when absent."""
    try:
        st = os.stat(dest.name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"checkout destination exists and is not a directory: {dest}")
    fd = os.open(dest.name, _NOFOLLOW_DIR, dir_fd=parent)
    try:
        if os.listdir(fd):
            raise InputError(f"checkout destination is not empty: {dest}")
    finally:
        os.close(fd)
    return True


def _undo(parent: int, name: str, *, keep_dir: bool) -> None:
    if not keep_dir:
        beneath.remove_at(parent, name)
        return
    fd = os.open(name, _NOFOLLOW_DIR, dir_fd=parent)
    try:
        for child in os.listdir(fd):
            beneath.remove_at(fd, child)
    finally:
        os.close(fd)


def _apply_dir_meta(fd: int, meta: DirMeta, opts: _Options) -> None:
    if opts.user_mode:
        os.fchmod(fd, stat.S_IMODE(meta.mode) & ~(stat.S_ISUID | stat.S_ISGID) | stat.S_IRWXU)
        return
    os.fchown(fd, meta.uid, meta.gid)
    os.fchmod(fd, stat.S_IMODE(meta.mode))
    for k, v in meta.xattrs:
        os.setxattr(fd, k, v)


class _Writer:
    """One checkout: directory fds, objects linked relative to objects/ (dirmetas are kept by
    the repository)."""

    def __init__(self, repo: Repo, opts: _Options, objfd: int) -> None:
        self.repo = repo
        self.opts = opts
        self.objfd = objfd
        self.ext = ".filez" if repo.is_archive else ".file"
        self.bare_user = repo.mode is RepoMode.BARE_USER

    def directory(self, tree_csum: str, meta: DirMeta, parent: int, name: str, *,
                  exists: bool, depth: int = 0) -> None:
        """Make directory ``name`` in ``parent`` (unless it ``exists``) holding the tree."""
        if depth > MAX_DEPTH:
            raise CorruptObject(f"dirtree object {tree_csum} is nested deeper than {MAX_DEPTH} "
                                "directories")
        tree = self.repo.load_dirtree(tree_csum)
        if not exists:
            os.mkdir(name, 0o700, dir_fd=parent)
        fd = os.open(name, _NOFOLLOW_DIR, dir_fd=parent)
        try:
            for fname, csum in tree.files:
                if not (self.opts.link and self.link(csum, fname, fd)):
                    _file(self.repo, csum, fd, fname, self.opts)
            for dname, sub_tree, sub_meta in tree.dirs:
                self.directory(sub_tree, self.repo.load_dirmeta(sub_meta), fd, dname,
                               exists=False, depth=depth + 1)
            _apply_dir_meta(fd, meta, self.opts)
        finally:
            os.close(fd)

    def link(self, csum: str, name: str, fd: int) -> bool:
        """Hardlink the object as ``name``; False when it must be copied instead."""
        rel = f"{csum[:2]}/{csum[2:]}{self.ext}"
        if self.bare_user and _bare_user_symlink(self.repo.objects_dir / rel):
            return False
        try:
            os.link(rel, name, src_dir_fd=self.objfd, dst_dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            os.link(self.repo._find(csum, ObjectType.FILE), name, dst_dir_fd=fd,
                    follow_symlinks=False)
        return True


def _file(repo: Repo, csum: str, dir_fd: int, name: str, opts: _Options) -> None:
    """Write file object ``csum`` as ``name`` in directory ``dir_fd`` (never following ``name``)."""
    if opts.link:
        obj = repo._find(csum, ObjectType.FILE)
        if repo.mode is not RepoMode.BARE_USER or not _bare_user_symlink(obj):
            os.link(obj, name, dst_dir_fd=dir_fd, follow_symlinks=False)
            return
    meta, stream = repo.open_file(csum)
    if stream is None:
        check_file_meta(meta, csum)
        os.symlink(meta.symlink, name, dir_fd=dir_fd)
        if not opts.user_mode:
            os.chown(name, meta.uid, meta.gid, dir_fd=dir_fd, follow_symlinks=False)
            for k, v in meta.xattrs:
                os.setxattr(beneath.fd_path(dir_fd, name), k, v, follow_symlinks=False)
        return
    with stream:
        check_file_meta(meta, csum)
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dir_fd)
        with open(fd, "wb") as out:
            shutil.copyfileobj(stream, out, 1 << 20)
            out.flush()
            _apply_file_meta(out.fileno(), meta, opts)


def _bare_user_symlink(obj: Path) -> bool:
    """bare-user stores symlinks as regular files; their real mode is in user.ostreemeta."""
    raw = os.getxattr(obj, OSTREEMETA_XATTR)
    return stat.S_ISLNK(decode_dirmeta_variant(raw)[2])


def _apply_file_meta(fd: int, meta: FileMeta, opts: _Options) -> None:
    mode = stat.S_IMODE(meta.mode)
    if opts.user_mode:
        os.fchmod(fd, mode & ~(stat.S_ISUID | stat.S_ISGID))
    else:
        os.fchown(fd, meta.uid, meta.gid)
        os.fchmod(fd, mode)
        for k, v in meta.xattrs:
            os.setxattr(fd, k, v)
    os.utime(fd, (0, 0))


def sync_checkout(repo: Repo, dest: Path, old: tuple[str, str], new: tuple[str, str]) -> None:
    """Turn a hardlink checkout of tree ``old`` at ``dest`` into one of ``new``.

    Only entries that differ are touched: a subtree whose dirtree and dirmeta
    checksums are equal is skipped without being read.  ``dest`` must be an
    unmodified checkout of ``old`` in a bare repository; if it was modified, this
    fails (OSError) rather than write anywhere else: it works through directory
    fds and follows no symlink.
    """
    if repo.mode is not RepoMode.BARE:
        raise InputError("incremental checkouts need a bare repository")
    objfd = os.open(repo.objects_dir, _DIR | os.O_CLOEXEC)
    try:
        fd = os.open(dest, _NOFOLLOW_DIR)
        try:
            _sync_dir(_Writer(repo, _Options(link=True, user_mode=False), objfd), old, new, fd)
        finally:
            os.close(fd)
    finally:
        os.close(objfd)


def _sync_dir(w: _Writer, old: tuple[str, str], new: tuple[str, str], fd: int,
              depth: int = 0) -> None:
    if old == new:
        return
    if depth > MAX_DEPTH:
        raise CorruptObject(f"dirtree object {new[0]} is nested deeper than {MAX_DEPTH} "
                            "directories")
    if old[0] != new[0]:
        ot, nt = w.repo.load_dirtree(old[0]), w.repo.load_dirtree(new[0])
        ofiles, nfiles = dict(ot.files), dict(nt.files)
        odirs = {n: (t, m) for n, t, m in ot.dirs}
        ndirs = {n: (t, m) for n, t, m in nt.dirs}
        for name, csum in ofiles.items():
            if nfiles.get(name) != csum:
                os.unlink(name, dir_fd=fd)
        for name in odirs.keys() - ndirs.keys():
            beneath.remove_at(fd, name)
        for name, csum in nfiles.items():
            if ofiles.get(name) != csum:
                if name in odirs:
                    beneath.remove_at(fd, name)
                w.link(csum, name, fd)
        for name, sub in ndirs.items():
            if name in odirs:
                sub_fd = os.open(name, _NOFOLLOW_DIR, dir_fd=fd)
                try:
                    _sync_dir(w, odirs[name], sub, sub_fd, depth + 1)
                finally:
                    os.close(sub_fd)
            else:
                w.directory(sub[0], w.repo.load_dirmeta(sub[1]), fd, name, exists=False,
                            depth=depth + 1)
    meta = w.repo.load_dirmeta(new[1])
    if old[1] != new[1]:
        keep = {k for k, _v in meta.xattrs}
        for k in os.listxattr(fd):
            if os.fsencode(k) not in keep:
                os.removexattr(fd, k)
    _apply_dir_meta(fd, meta, w.opts)
