"""Bringing a new commit's changed ``/var`` files into an existing stateroot ``/var``.

The stateroot's ``/var`` is the host's and outlives deployments: deploy copies
an image's ``/var`` only into an empty one.  Files that package tools keep
there and change on every install (debconf's ``config.dat`` and
``templates.dat``, ``/var/lib/pam/*`` of pam-auth-update, ucf's state) would
stay as the first image had them, while ``apt`` changes them in place.  So a
layering deploy makes a three-way merge of regular files, as the ``/etc``
merge does::

    old = the merge deployment's commit /var   (what the host started from)
    new = the new commit's /var                (what the scripts left)
    host = the stateroot's /var

For each regular file of ``new`` whose object differs from ``old``'s (found by
walking both commits' dirtrees, skipping every subtree whose checksum is the
same, so the cost follows the change, not the size of ``/var``): the host's
copy is replaced by ``new``'s (owner, mode and xattrs as in the commit) when
it is byte for byte ``old``'s or absent; otherwise the host changed it and it
is kept (reported).  Nothing is ever deleted.  Every path is reached through
directory fds without following symlinks (:mod:`store.beneath`): a symlink or
a non-directory on the way is "changed by the host", never followed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from boot.errors import DeploymentError
from store import beneath
from store.fsutil import atomic_file
from store.objects import DirMeta, FileMeta
from store.repo import Repo

MAX_VISITED = 200_000  # dirtree entries looked at in one diff
MAX_CHANGED = 10_000  # files carried or kept in one deploy
CHUNK = 1 << 16


@dataclass(frozen=True)
class VarCarry:
    """What a deploy did to the stateroot's ``/var``: files written, host copies kept (the
    host changed them, or something not a directory is on their way), whether the diff
    stopped at its bounds, and why the carry failed (empty if it did not)."""

    carried: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    truncated: bool = False
    failed: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"carried": list(self.carried), "kept": list(self.kept),
                "truncated": self.truncated, "failed": self.failed}

    def warnings(self) -> list[str]:
        """One line per thing the user should know (host copies kept, bounds, failure)."""
        out = [f"{p} changed on this host and in the new image; the host's copy is kept"
               for p in self.kept]
        if self.truncated:
            out.append(f"/var: more than {MAX_CHANGED} changed files in the new image; "
                       "the rest were not brought into this host's /var")
        if self.failed:
            out.append(f"/var: the new image's changed files were not brought in: {self.failed}")
        return out


@dataclass(frozen=True)
class Changed:
    """A regular file of the new commit's ``/var`` that the old commit lacks or holds
    differently: its path (``var/...``), both file objects, and the new commit's directory
    metadata from ``var`` down to its parent (for parents the host lacks)."""

    rel: str
    new: str
    old: str | None
    parents: tuple[DirMeta, ...]


def _var_dir(repo: Repo, commit: str) -> tuple[str, str] | None:
    """(dirtree, dirmeta) of the commit's ``/var``, None if it has none."""
    c = repo.load_commit(commit)
    return next(((t, m) for n, t, m in repo.load_dirtree(c.root_tree).dirs if n == "var"), None)


def changed_files(repo: Repo, old: str, new: str) -> tuple[list[Changed], bool]:
    """Regular-file candidates of ``new``'s ``/var`` that differ from ``old``'s (symlinks
    are left to the image's tmpfiles lines), and whether a bound cut the walk short."""
    out: list[Changed] = []
    budget = [MAX_VISITED]
    nvar, ovar = _var_dir(repo, new), _var_dir(repo, old)
    if nvar is None:
        return out, False

    def walk(otree: str | None, ntree: str, rel: str, parents: tuple[DirMeta, ...]) -> bool:
        if otree == ntree:
            return True
        o = repo.load_dirtree(otree) if otree is not None else None
        n = repo.load_dirtree(ntree)
        budget[0] -= len(n.files) + len(n.dirs)
        if budget[0] < 0:
            return False
        ofiles = dict(o.files) if o is not None else {}
        for name, csum in sorted(n.files):
            if ofiles.get(name) != csum:
                if len(out) >= MAX_CHANGED:
                    return False
                out.append(Changed(f"{rel}/{name}", csum, ofiles.get(name), parents))
        odirs = {d: t for d, t, _m in o.dirs} if o is not None else {}
        for name, tree, meta in sorted(n.dirs):
            if not walk(odirs.get(name), tree, f"{rel}/{name}",
                        (*parents, repo.load_dirmeta(meta))):
                return False
        return True

    complete = walk(ovar[0] if ovar else None, nvar[0], "var", (repo.load_dirmeta(nvar[1]),))
    return out, not complete


@contextlib.contextmanager
def _object(repo: Repo, csum: str | None) -> Iterator[tuple[FileMeta, BinaryIO] | None]:
    """A regular file object's metadata and content stream; None for a symlink or none."""
    if csum is None:
        yield None
        return
    meta, stream = repo.open_file(csum)
    if stream is None or not stat.S_ISREG(meta.mode):
        yield None
        return
    with stream:
        yield meta, stream


def _same_bytes(a: BinaryIO, b: BinaryIO) -> bool:
    while True:
        x, y = a.read(CHUNK), b.read(CHUNK)
        if x != y:
            return False
        if not x:
            return True


def _host_matches(repo: Repo, vfd: int, rel: str, csum: str | None) -> bool:
    """Whether the host's regular file ``rel`` (below ``var``) has exactly the bytes of the
    regular file object ``csum``."""
    with _object(repo, csum) as obj:
        if obj is None:
            return False
        try:
            fd = beneath.open_file(vfd, rel)
        except OSError:
            return False
        with open(fd, "rb") as host:
            return _same_bytes(host, obj[1])


def _open_parent(vfd: int, parts: list[str], parents: tuple[DirMeta, ...]) -> int:
    """An fd of the host directory holding ``parts[-1]``, making absent directories with
    the new commit's metadata; OSError (ELOOP, ENOTDIR) when a symlink or a file is in the
    way."""
    fd = os.dup(vfd)
    try:
        for part, meta in zip(parts[:-1], parents[1:], strict=True):
            try:
                sub = os.open(part, beneath.DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(part, 0o700, dir_fd=fd)
                sub = os.open(part, beneath.DIR_FLAGS, dir_fd=fd)
                os.fchown(sub, meta.uid, meta.gid)
                os.fchmod(sub, stat.S_IMODE(meta.mode))
            os.close(fd)
            fd = sub
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write(repo: Repo, vfd: int, change: Changed) -> bool:
    """Replace (atomically) the host's ``change.rel`` with the new object; False if the new
    object is not a regular file."""
    parts = change.rel.split("/")[1:]
    with _object(repo, change.new) as new:
        if new is None:
            return False
        meta, stream = new
        pfd = _open_parent(vfd, parts, change.parents)
        try:
            st = beneath.lstat(pfd, parts[-1])
            if st is not None and not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EEXIST, "not a regular file")
            with atomic_file(beneath.fd_path(pfd, parts[-1]),
                             mode=stat.S_IMODE(meta.mode)) as f:
                shutil.copyfileobj(stream, f, CHUNK)
                os.fchown(f.fileno(), meta.uid, meta.gid)
                for key, value in meta.xattrs:
                    os.setxattr(f.fileno(), key, value)
        finally:
            os.close(pfd)
    return True


def _carry_one(repo: Repo, vfd: int, change: Changed) -> bool | None:
    """True if written, False if the host's copy is kept, None if nothing was to do (the
    host has the new content, or the new entry is not a regular file)."""
    rel = change.rel.removeprefix("var/")
    with _object(repo, change.new) as new:
        if new is None:
            return None
    if _host_matches(repo, vfd, rel, change.new):
        return None
    try:
        st = beneath.lstat(vfd, rel)
    except OSError:
        return False
    if st is not None and not _host_matches(repo, vfd, rel, change.old):
        return False
    try:
        return _write(repo, vfd, change)
    except OSError:
        return False


def carry_var(repo: Repo, var: Path, old: str, new: str) -> VarCarry:
    """Bring the files ``new``'s ``/var`` changed against ``old``'s into the host's ``var``
    when the host left them as ``old`` had them (see the module docstring).  A file that
    cannot be written is reported as kept; the running deployment's tree is not read or
    written, only ``var``."""
    changes, truncated = changed_files(repo, old, new)
    carried: list[str] = []
    kept: list[str] = []
    try:
        vfd = beneath.open_root(var)
    except OSError as e:
        raise DeploymentError(f"stateroot /var {var}: {e.strerror}") from None
    try:
        for change in changes:
            done = _carry_one(repo, vfd, change)
            if done is not None:
                (carried if done else kept).append(f"/{change.rel}")
    finally:
        os.close(vfd)
    return VarCarry(tuple(carried), tuple(kept), truncated)
