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
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from boot.errors import EtcMergeError
from boot.hostfiles import USER_DB, identity_files, is_host_file, merge_user_db
from store.fsutil import rmtree


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


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _same_content(a: Path, b: Path, sa: os.stat_result, sb: os.stat_result) -> bool:
    if stat.S_ISLNK(sa.st_mode):
        return os.readlink(a) == os.readlink(b)
    if sa.st_size != sb.st_size:
        return False
    if (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino):
        return True
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            ca, cb = fa.read(1 << 16), fb.read(1 << 16)
            if ca != cb:
                return False
            if not ca:
                return True


def same_entry(a: Path, b: Path) -> bool:
    """Both absent, or the same type, mode, owner and content (xattrs ignored; dirs by metadata)."""
    sa, sb = _lstat(a), _lstat(b)
    if sa is None or sb is None:
        return sa is None and sb is None
    if (sa.st_mode, sa.st_uid, sa.st_gid) != (sb.st_mode, sb.st_uid, sb.st_gid):
        return False
    return stat.S_ISDIR(sa.st_mode) or _same_content(a, b, sa, sb)


def _names(d: Path) -> set[str]:
    return set(os.listdir(d)) if d.is_dir() and not d.is_symlink() else set()


def diff_dirs(orig: Path, new: Path) -> EtcDiff:
    """Differences from ``orig`` to ``new``; an added or removed directory is one path."""
    modified: list[str] = []
    removed: list[str] = []
    added: list[str] = []

    def walk(rel: str) -> None:
        a, b = orig / rel if rel else orig, new / rel if rel else new
        an, bn = _names(a), _names(b)
        for name in sorted(an | bn):
            p = f"{rel}/{name}" if rel else name
            sa, sb = _lstat(orig / p), _lstat(new / p)
            if sb is None:
                removed.append(p)
            elif sa is None:
                added.append(p)
            elif stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode):
                modified.append(p)
            elif stat.S_ISDIR(sa.st_mode):
                if not same_entry(orig / p, new / p):
                    modified.append(p)
                walk(p)
            elif not same_entry(orig / p, new / p):
                modified.append(p)

    walk("")
    return EtcDiff(tuple(modified), tuple(removed), tuple(added))


def _copy_xattrs(src: Path, dst: Path) -> None:
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        return
    for name in names:
        with contextlib.suppress(OSError):
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False),
                        follow_symlinks=False)


def _copy_file(src: Path, dst: Path, st: os.stat_result) -> None:
    fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
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
        finally:
            os.close(fout)
    finally:
        os.close(fin)


def copy_entry(src: Path, dst: Path) -> None:
    """Copy one file, symlink or (empty) directory with mode, owner, mtime and xattrs."""
    st = os.lstat(src)
    if stat.S_ISREG(st.st_mode):
        _copy_file(src, dst, st)
    elif stat.S_ISDIR(st.st_mode):
        dst.mkdir()
        os.chown(dst, st.st_uid, st.st_gid)
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    elif stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
        os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    else:
        raise EtcMergeError(f"unsupported file type (not a file, symlink or directory): {src}")
    _copy_xattrs(src, dst)


def copy_tree(src: Path, dst: Path) -> None:
    """Recursive copy of ``src`` to the absent ``dst``, keeping metadata as :func:`copy_entry`."""
    copy_entry(src, dst)
    if stat.S_ISDIR(os.lstat(src).st_mode):
        for entry in os.scandir(src):
            copy_tree(Path(entry.path), dst / entry.name)
        st = os.lstat(src)
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def _ensure_parents(old_etc: Path, new_etc: Path, rel: str) -> None:
    parts = Path(rel).parts[:-1]
    for i in range(1, len(parts) + 1):
        sub = Path(*parts[:i])
        target = new_etc / sub
        st = _lstat(target)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            raise EtcMergeError(f"cannot carry /etc/{rel}: /etc/{sub} is no longer a directory "
                                "in the new image")
        if st is None:
            copy_entry(old_etc / sub, target)


def _carry(old_etc: Path, new_etc: Path, rel: str, *, added: bool) -> None:
    src, dst = old_etc / rel, new_etc / rel
    _ensure_parents(old_etc, new_etc, rel)
    s, d = os.lstat(src), _lstat(dst)
    if stat.S_ISDIR(s.st_mode):
        if d is not None and not stat.S_ISDIR(d.st_mode):
            rmtree(dst)
            d = None
        if d is None:
            copy_tree(src, dst)
        elif added:
            for entry in os.scandir(src):
                _carry(old_etc, new_etc, f"{rel}/{entry.name}", added=True)
        else:
            os.chown(dst, s.st_uid, s.st_gid)
            os.chmod(dst, stat.S_IMODE(s.st_mode))
        return
    if d is not None and stat.S_ISDIR(d.st_mode):
        raise EtcMergeError(f"modified config file /etc/{rel} newly defaults to a directory "
                            "in the new image, cannot merge")
    if d is not None:
        os.unlink(dst)
    copy_entry(src, dst)


def merge_etc(old_usr_etc: Path, old_etc: Path, new_etc: Path, *,
              changes: EtcDiff | None = None) -> EtcDiff:
    """Apply the user's changes (old usr/etc → old etc) onto ``new_etc`` in place.

    ``new_etc`` must be a fresh copy of the new image's ``usr/etc``; ``changes``
    a diff already computed for these trees.  Returns the changes carried.
    """
    if changes is None:
        changes = diff_dirs(old_usr_etc, old_etc)
    for rel in changes.removed:
        rmtree(new_etc / rel)
    for rel in sorted((*changes.modified, *changes.added), key=lambda p: p.count("/")):
        if rel not in USER_DB:
            _carry(old_etc, new_etc, rel, added=rel in changes.added)
    merge_user_db(old_usr_etc, old_etc, new_etc)  # host state, see boot.hostfiles
    for rel in identity_files(old_etc):
        if not same_entry(old_etc / rel, new_etc / rel):
            _carry(old_etc, new_etc, rel, added=False)
    return changes


def _blocked(old_etc: Path, new_usr_etc: Path, rel: str) -> bool:
    s, d = _lstat(old_etc / rel), _lstat(new_usr_etc / rel)
    return (s is not None and not stat.S_ISDIR(s.st_mode)
            and d is not None and stat.S_ISDIR(d.st_mode))


def preview_merge(old_usr_etc: Path, old_etc: Path, new_usr_etc: Path) -> EtcMergePlan:
    """The merge :func:`merge_etc` would do, without writing anything.

    ``conflicts`` are user-changed paths that differ between the old and new
    image defaults (the user's version will win); ``blocked`` are the ones the
    merge will refuse (a user's file where the new image has a directory).
    """
    changes = diff_dirs(old_usr_etc, old_etc)
    paths = sorted({*changes.modified, *changes.removed, *changes.added})
    conflicts = tuple(p for p in paths if not is_host_file(p)
                      and not same_entry(old_usr_etc / p, new_usr_etc / p))
    blocked = tuple(p for p in (*changes.modified, *changes.added)
                    if _blocked(old_etc, new_usr_etc, p))
    return EtcMergePlan(changes, conflicts, tuple(sorted(blocked)))
