"""The three-way /etc merge of a new deployment, as OSTree's ``merge_configuration_from``.

Inputs: the merge (previous) deployment's ``usr/etc`` (image defaults) and
``etc`` (what the user has), and the new image's ``usr/etc``.

* The user's changes are ``diff(old usr/etc, old etc)``, ignoring xattrs:
  modified, removed and added paths.
* The new ``etc`` starts as a copy of the new ``usr/etc``; removed paths are
  deleted, modified and added ones copied over from the old ``etc``.  The
  user's version always wins; there is no in-file merge, except for the user
  database, merged by entry, and host identity files, always carried
  (:mod:`boot.hostfiles`).
* :func:`preview_merge` reports the same plan without writing, plus the
  conflicts: user-changed paths that the new image changed too.

Every tree is reached through directory fds that follow no symlink (see
:mod:`store.beneath`): a symlink in an image (``usr/etc/ssl -> /etc/ssl``) is
content, compared and copied as a symlink, and a path under it counts as
absent; nothing here reads or writes where a symlink points.  The three roots
themselves must be real directories.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from boot.errors import EtcMergeError
from boot.hostfiles import USER_DB, identity_files, is_host_file, merge_user_db
from store import beneath


@dataclass(frozen=True)
class EtcDiff:
    """Relative paths (``a/b``) that differ between two /etc trees."""

    modified: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    added: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, list[str]]:
        return {"modified": list(self.modified), "removed": list(self.removed),
                "added": list(self.added)}


@dataclass(frozen=True)
class EtcMergePlan:
    """What a merge carries over, and where the image changed what the user changed."""

    carried: EtcDiff
    conflicts: tuple[str, ...]
    blocked: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {"carried": self.carried.to_dict(), "conflicts": list(self.conflicts),
                "blocked": list(self.blocked)}


@contextlib.contextmanager
def _root(path: Path) -> Iterator[int]:
    """An fd of ``path``, which must be a real directory (EtcMergeError when it is not)."""
    try:
        fd = beneath.open_root(path)
    except OSError as e:
        raise EtcMergeError(f"{path} is not a directory (a symlink is not followed): "
                            f"{e.strerror}") from None
    try:
        yield fd
    finally:
        os.close(fd)


def _same_content(a: tuple[int, str], b: tuple[int, str], sa: os.stat_result,
                  sb: os.stat_result) -> bool:
    """Entries given as (directory fd, name), never followed."""
    if stat.S_ISLNK(sa.st_mode):
        return os.readlink(a[1], dir_fd=a[0]) == os.readlink(b[1], dir_fd=b[0])
    if sa.st_size != sb.st_size:
        return False
    if (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino):
        return True
    with open(os.open(a[1], beneath.FILE_FLAGS, dir_fd=a[0]), "rb") as fa, \
            open(os.open(b[1], beneath.FILE_FLAGS, dir_fd=b[0]), "rb") as fb:
        while True:
            ca, cb = fa.read(1 << 16), fb.read(1 << 16)
            if ca != cb:
                return False
            if not ca:
                return True


def _same(a: tuple[int, str], b: tuple[int, str], sa: os.stat_result | None,
          sb: os.stat_result | None, owners: bool = True) -> bool:
    if sa is None or sb is None:
        return sa is None and sb is None
    if sa.st_mode != sb.st_mode or (owners and (sa.st_uid, sa.st_gid) != (sb.st_uid, sb.st_gid)):
        return False
    return stat.S_ISDIR(sa.st_mode) or _same_content(a, b, sa, sb)


def _same_at(ra: int, rb: int, rel: str, owners: bool = True) -> bool:
    """``rel`` below roots ``ra`` and ``rb`` is the same (absent if reached through a symlink)."""
    sa, sb = beneath.lstat(ra, rel), beneath.lstat(rb, rel)
    if sa is None or sb is None:
        return sa is None and sb is None
    with beneath.parent_of(ra, rel) as a, beneath.parent_of(rb, rel) as b:
        return _same(a, b, sa, sb, owners)


def _names(root: int, rel: str) -> set[str]:
    try:
        fd = beneath.open_dir(root, rel)
    except OSError as e:
        if e.errno in beneath.ABSENT:
            return set()
        raise
    try:
        return set(os.listdir(fd))
    finally:
        os.close(fd)


def diff_dirs(orig: Path, new: Path) -> EtcDiff:
    """Differences from ``orig`` to ``new``; an added or removed directory is one path."""
    with _root(orig) as ro, _root(new) as rn:
        return _diff(ro, rn)


def _lstat_at(fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _diff(ro: int, rn: int) -> EtcDiff:
    """Walk both trees at once through directory fds (entered only where both are real
    directories)."""
    modified: list[str] = []
    removed: list[str] = []
    added: list[str] = []

    def walk(fo: int, fn: int, rel: str) -> None:
        for name in sorted(set(os.listdir(fo)) | set(os.listdir(fn))):
            p = f"{rel}/{name}" if rel else name
            sa, sb = _lstat_at(fo, name), _lstat_at(fn, name)
            if sb is None:
                removed.append(p)
            elif sa is None:
                added.append(p)
            elif stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode):
                modified.append(p)
            else:
                if not _same((fo, name), (fn, name), sa, sb):
                    modified.append(p)
                if stat.S_ISDIR(sa.st_mode):
                    so = os.open(name, beneath.DIR_FLAGS, dir_fd=fo)
                    try:
                        sn = os.open(name, beneath.DIR_FLAGS, dir_fd=fn)
                        try:
                            walk(so, sn, p)
                        finally:
                            os.close(sn)
                    finally:
                        os.close(so)

    walk(ro, rn, "")
    return EtcDiff(tuple(modified), tuple(removed), tuple(added))


def _copy_xattrs(src: int | str, dst: int | str) -> None:
    """From fd ``src`` to fd ``dst``, or between paths whose last component is not followed."""
    follow = {} if isinstance(src, int) else {"follow_symlinks": False}
    try:
        names = os.listxattr(src, **follow)
    except OSError:
        return
    for name in names:
        with contextlib.suppress(OSError):
            os.setxattr(dst, name, os.getxattr(src, name, **follow), **follow)


def _copy_file(sfd: int, sname: str, dfd: int, dname: str, st: os.stat_result) -> None:
    fin = os.open(sname, beneath.FILE_FLAGS, dir_fd=sfd)
    try:
        fout = os.open(dname, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                       0o600, dir_fd=dfd)
        try:
            left = st.st_size
            while left > 0:
                n = os.copy_file_range(fin, fout, left)
                if n == 0:
                    break
                left -= n
            os.fchown(fout, st.st_uid, st.st_gid)
            os.fchmod(fout, stat.S_IMODE(st.st_mode))
            os.utime(fout, ns=(st.st_atime_ns, st.st_mtime_ns))
            _copy_xattrs(fin, fout)
        finally:
            os.close(fout)
    finally:
        os.close(fin)


def copy_at(sfd: int, sname: str, dfd: int, dname: str, *, recursive: bool = True) -> None:
    """Copy entry ``sname`` of directory ``sfd`` to the absent ``dname`` of ``dfd``, with mode,
    owner, mtime and xattrs; a directory with its contents unless not ``recursive``.

    Symlinks are copied as symlinks; nothing is followed on either side.
    """
    st = os.stat(sname, dir_fd=sfd, follow_symlinks=False)
    if stat.S_ISREG(st.st_mode):
        _copy_file(sfd, sname, dfd, dname, st)
    elif stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(sname, dir_fd=sfd), dname, dir_fd=dfd)
        os.chown(dname, st.st_uid, st.st_gid, dir_fd=dfd, follow_symlinks=False)
        _copy_xattrs(beneath.fd_path(sfd, sname), beneath.fd_path(dfd, dname))
    elif stat.S_ISDIR(st.st_mode):
        os.mkdir(dname, 0o700, dir_fd=dfd)
        src, dst = (os.open(sname, beneath.DIR_FLAGS, dir_fd=sfd),
                    os.open(dname, beneath.DIR_FLAGS, dir_fd=dfd))
        try:
            _copy_xattrs(src, dst)
            for child in sorted(os.listdir(src)) if recursive else ():
                copy_at(src, child, dst, child)
            os.fchown(dst, st.st_uid, st.st_gid)
            os.fchmod(dst, stat.S_IMODE(st.st_mode))
            if recursive:
                os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(src)
            os.close(dst)
    else:
        raise EtcMergeError(f"unsupported file type (not a file, symlink or directory): {sname}")


def copy_tree(src: Path, dst: Path) -> None:
    """Recursive copy of ``src`` to the absent ``dst``, keeping metadata as :func:`copy_at`.

    The parents of both are the caller's; ``src`` itself may be a symlink (copied as one).
    """
    sfd = os.open(src.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        dfd = os.open(dst.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            copy_at(sfd, src.name, dfd, dst.name)
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


def _ensure_parents(old: int, new: int, rel: str) -> None:
    parts = rel.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        st = beneath.lstat(new, sub)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            raise EtcMergeError(f"cannot carry /etc/{rel}: /etc/{sub} is no longer a directory "
                                "in the new image")
        if st is None:
            with beneath.parent_of(old, sub) as (sfd, name), \
                    beneath.parent_of(new, sub) as (dfd, _n):
                copy_at(sfd, name, dfd, name, recursive=False)


def _carry(old: int, new: int, rel: str, *, added: bool) -> None:
    _ensure_parents(old, new, rel)
    s, d = beneath.lstat(old, rel), beneath.lstat(new, rel)
    if s is None:
        raise EtcMergeError(f"cannot carry /etc/{rel}: it is not in the current /etc")
    with beneath.parent_of(old, rel) as (sfd, name), beneath.parent_of(new, rel) as (dfd, _n):
        if stat.S_ISDIR(s.st_mode):
            if d is not None and not stat.S_ISDIR(d.st_mode):
                beneath.remove_at(dfd, name)
                d = None
            if d is None:
                copy_at(sfd, name, dfd, name)
            elif added:
                for child in sorted(_names(old, rel)):
                    _carry(old, new, f"{rel}/{child}", added=True)
            else:
                fd = os.open(name, beneath.DIR_FLAGS, dir_fd=dfd)
                try:
                    os.fchown(fd, s.st_uid, s.st_gid)
                    os.fchmod(fd, stat.S_IMODE(s.st_mode))
                finally:
                    os.close(fd)
            return
        if d is not None and stat.S_ISDIR(d.st_mode):
            raise EtcMergeError(f"modified config file /etc/{rel} newly defaults to a directory "
                                "in the new image, cannot merge")
        if d is not None:
            os.unlink(name, dir_fd=dfd)
        copy_at(sfd, name, dfd, name)


def _remove(new: int, rel: str) -> None:
    try:
        with beneath.parent_of(new, rel) as (fd, name):
            beneath.remove_at(fd, name)
    except OSError as e:
        if e.errno not in beneath.ABSENT:
            raise


def merge_etc(old_usr_etc: Path, old_etc: Path, new_etc: Path, *,
              changes: EtcDiff | None = None) -> EtcDiff:
    """Apply the user's changes (old usr/etc → old etc) onto ``new_etc`` in place.

    ``new_etc`` must be a fresh copy of the new image's ``usr/etc``; ``changes``
    a diff already computed for these trees.  Returns the changes carried.
    Writes only below ``new_etc``, through fds that follow no symlink.
    """
    if changes is None:
        changes = diff_dirs(old_usr_etc, old_etc)
    with _root(old_etc) as old, _root(new_etc) as new:
        for rel in changes.removed:
            _remove(new, rel)
        for rel in sorted((*changes.modified, *changes.added), key=lambda p: p.count("/")):
            if rel not in USER_DB:
                _carry(old, new, rel, added=rel in changes.added)
        for rel in identity_files(old_etc):
            if not _same_at(old, new, rel):
                _carry(old, new, rel, added=False)
    merge_user_db(old_usr_etc, old_etc, new_etc)  # host state, see boot.hostfiles
    return changes


def _blocked(old: int, new_usr: int, rel: str) -> bool:
    s, d = beneath.lstat(old, rel), beneath.lstat(new_usr, rel)
    return (s is not None and not stat.S_ISDIR(s.st_mode)
            and d is not None and stat.S_ISDIR(d.st_mode))


def preview_merge(old_usr_etc: Path, old_etc: Path, new_usr_etc: Path, *,
                  owners: bool = True) -> EtcMergePlan:
    """The merge :func:`merge_etc` would do, without writing anything.

    ``conflicts`` are user-changed paths that differ between the old and new
    image defaults (the user's version will win); ``blocked`` are the ones the
    merge will refuse (a user's file where the new image has a directory).
    ``owners=False`` (``new_usr_etc`` checked out by a user who cannot give files their
    owners) compares modes and contents only.
    """
    with _root(old_usr_etc) as ou, _root(old_etc) as oe, _root(new_usr_etc) as nu:
        changes = _diff(ou, oe)
        paths = sorted({*changes.modified, *changes.removed, *changes.added})
        conflicts = tuple(p for p in paths if not is_host_file(p)
                          and not _same_at(ou, nu, p, owners))
        blocked = tuple(p for p in (*changes.modified, *changes.added) if _blocked(oe, nu, p))
    return EtcMergePlan(changes, conflicts, tuple(sorted(blocked)))
