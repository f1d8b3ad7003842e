"""Commit -> directory.

Files are hardlinked from the object store where the mode allows it (a
``bare`` repository without ``user_mode``, or ``bare-user`` with it), as
``ostree checkout`` does; otherwise content is copied and metadata applied.
Regular files get mtime 0, OSTree's fixed timestamp.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from store.errors import InputError, ObjectNotFound
from store.fsutil import rmtree
from store.objects import DirMeta, FileMeta, ObjectType, decode_dirmeta_variant
from store.repo import OSTREEMETA_XATTR, Repo, RepoMode


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
    """
    dest = Path(dest)
    existed = _check_dest(dest)
    link = not copy and ((repo.mode is RepoMode.BARE and not user_mode)
                         or (repo.mode is RepoMode.BARE_USER and user_mode))
    opts = _Options(link=link, user_mode=user_mode)
    try:
        if meta is None:
            _file(repo, obj, str(dest), opts)
        else:
            _dir(repo, obj, repo.load_dirmeta(meta), str(dest), opts, exists=existed)
    except BaseException:
        if existed:
            for child in dest.iterdir():
                rmtree(child)
        else:
            rmtree(dest)
        raise


def _check_dest(dest: Path) -> bool:
    if os.path.lexists(dest):
        if not dest.is_dir() or dest.is_symlink():
            raise InputError(f"checkout destination exists and is not a directory: {dest}")
        if any(dest.iterdir()):
            raise InputError(f"checkout destination is not empty: {dest}")
        return True
    if not dest.parent.is_dir():
        raise InputError(f"parent of checkout destination does not exist: {dest.parent}")
    return False


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

    def __init__(self, repo: Repo, opts: _Options) -> None:
        self.repo = repo
        self.opts = opts
        self.ext = ".filez" if repo.is_archive else ".file"
        self.bare_user = repo.mode is RepoMode.BARE_USER

    def directory(self, tree_csum: str, meta: DirMeta, path: str, *, exists: bool,
                  objfd: int) -> None:
        if not exists:
            os.mkdir(path, 0o700)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            tree = self.repo.load_dirtree(tree_csum)
            for name, csum in tree.files:
                if not (self.opts.link and self.link(csum, name, fd, objfd)):
                    _file(self.repo, csum, f"{path}/{name}", self.opts)
            for name, sub_tree, sub_meta in tree.dirs:
                self.directory(sub_tree, self.repo.load_dirmeta(sub_meta), f"{path}/{name}",
                               exists=False, objfd=objfd)
            _apply_dir_meta(fd, meta, self.opts)
        finally:
            os.close(fd)

    def link(self, csum: str, name: str, fd: int, objfd: int) -> bool:
        """Hardlink the object as ``name``; False when it must be copied instead."""
        rel = f"{csum[:2]}/{csum[2:]}{self.ext}"
        if self.bare_user and _bare_user_symlink(self.repo.objects_dir / rel):
            return False
        try:
            os.link(rel, name, src_dir_fd=objfd, dst_dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            os.link(self.repo._find(csum, ObjectType.FILE), name, dst_dir_fd=fd,
                    follow_symlinks=False)
        return True


def _dir(repo: Repo, tree_csum: str, meta: DirMeta, path: str, opts: _Options,
         *, exists: bool = False) -> None:
    objfd = os.open(repo.objects_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _Writer(repo, opts).directory(tree_csum, meta, path, exists=exists, objfd=objfd)
    finally:
        os.close(objfd)


def _file(repo: Repo, csum: str, path: str, opts: _Options) -> None:
    if opts.link:
        obj = repo._find(csum, ObjectType.FILE)
        if repo.mode is not RepoMode.BARE_USER or not _bare_user_symlink(obj):
            os.link(obj, path, follow_symlinks=False)
            return
    meta, stream = repo.open_file(csum)
    if stream is None:
        os.symlink(meta.symlink, path)
        if not opts.user_mode:
            os.lchown(path, meta.uid, meta.gid)
            _set_xattrs(path, meta, follow=False)
        return
    with stream, open(path, "xb") as out:
        shutil.copyfileobj(stream, out, 1 << 20)
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


def _set_xattrs(path: str, meta: FileMeta, *, follow: bool) -> None:
    for k, v in meta.xattrs:
        os.setxattr(path, k, v, follow_symlinks=follow)


def sync_checkout(repo: Repo, dest: Path, old: tuple[str, str], new: tuple[str, str]) -> None:
    """Turn a hardlink checkout of tree ``old`` at ``dest`` into one of ``new``.

    Only entries that differ are touched: a subtree whose dirtree and dirmeta
    checksums are equal is skipped without being read.  ``dest`` must be an
    unmodified checkout of ``old`` in a bare repository.
    """
    if repo.mode is not RepoMode.BARE:
        raise InputError("incremental checkouts need a bare repository")
    objfd = os.open(repo.objects_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        w = _Writer(repo, _Options(link=True, user_mode=False))
        _sync_dir(w, old, new, str(dest), objfd)
    finally:
        os.close(objfd)


def _sync_dir(w: _Writer, old: tuple[str, str], new: tuple[str, str], path: str,
              objfd: int) -> None:
    if old == new:
        return
    if old[0] != new[0]:
        ot, nt = w.repo.load_dirtree(old[0]), w.repo.load_dirtree(new[0])
        ofiles, nfiles = dict(ot.files), dict(nt.files)
        odirs = {n: (t, m) for n, t, m in ot.dirs}
        ndirs = {n: (t, m) for n, t, m in nt.dirs}
        for name, csum in ofiles.items():
            if nfiles.get(name) != csum:
                os.unlink(f"{path}/{name}")
        for name in odirs.keys() - ndirs.keys():
            rmtree(f"{path}/{name}")
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for name, csum in nfiles.items():
                if ofiles.get(name) != csum:
                    if name in odirs:
                        rmtree(f"{path}/{name}")
                    w.link(csum, name, fd, objfd)
        finally:
            os.close(fd)
        for name, sub in ndirs.items():
            if name in odirs:
                _sync_dir(w, odirs[name], sub, f"{path}/{name}", objfd)
            else:
                w.directory(sub[0], w.repo.load_dirmeta(sub[1]), f"{path}/{name}", exists=False,
                            objfd=objfd)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        meta = w.repo.load_dirmeta(new[1])
        if old[1] != new[1]:
            keep = {k for k, _v in meta.xattrs}
            for k in os.listxattr(fd):
                if os.fsencode(k) not in keep:
                    os.removexattr(fd, k)
        _apply_dir_meta(fd, meta, w.opts)
    finally:
        os.close(fd)
