"""Structural checks of trees from elsewhere, as ``ostree_validate_structureof_*``.

A dirtree's names become paths when it is written out, so each must be one
path component: non-empty, no ``/``, no NUL, not ``.`` or ``..`` (ostree's
``ot_util_filename_validate``).  strata also wants each list sorted by bytes
with no name twice, files and directories together, which is how every
writer produces them: a repeated name would let a later entry replace what an
earlier one wrote.  A dirmeta's mode must be a directory's and a content
object's a regular file's or a symlink's, with no bits beyond the permission
bits (``validate_stat_mode_perms``); xattr names non-empty, sorted, unique.

Every check is one pass over the entries; the functions raise
:class:`CorruptObject` naming the object, or return the problem text for
:mod:`store.fsck`.
"""

from __future__ import annotations

import stat

from store.errors import CorruptObject
from store.objects import DirMeta, DirTree, FileMeta, ObjectType, Xattrs

MAX_DEPTH = 256  # directories below a root, as OSTREE_MAX_RECURSION
_PERM_BITS = 0o7777
_TYPE_BITS = 0o170000
_DOTS = frozenset((".", ".."))


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a dirtree entry (ostree's wording), or None when it can."""
    if not name:
        return "Invalid empty filename"
    if name == ".":
        return "Invalid self-referential filename '.'"
    if name == "..":
        return "Invalid path uplink filename '..'"
    if "/" in name:
        return f"Invalid / in filename {name!r}"
    if "\0" in name:
        return f"Invalid NUL in filename {name!r}"
    return None


def _names_problem(names: list[str], *, ordered: bool) -> str | None:
    """Each name valid, and strictly increasing (str order is UTF-8 byte order: strcmp's);
    unless ``ordered`` is false, then only unique."""
    if _names_fine(names, ordered=ordered):
        return None
    prev = None
    for name in names:
        if not name or name in _DOTS or "/" in name or "\0" in name:
            return name_problem(name)
        if ordered and prev is not None and name <= prev:
            return (f"Duplicate filename {name!r}" if name == prev
                    else f"Incorrectly sorted filename {name!r}")
        prev = name
    if not ordered and len(set(names)) != len(names):
        return "Duplicate filename"
    return None


def _names_fine(names: list[str], *, ordered: bool) -> bool:
    """The common case of :func:`_names_problem` at C speed (a compose checks thousands of
    dirtrees): True only when that finds nothing; else it looks entry by entry."""
    if not names:
        return True
    unique = set(names)
    if len(unique) != len(names) or "" in unique or not _DOTS.isdisjoint(unique):
        return False
    joined = "/".join(names)
    if "\0" in joined or joined.count("/") != len(names) - 1:
        return False
    return not ordered or names == sorted(unique)


def dirtree_problem(tree: DirTree, *, ordered: bool = True) -> str | None:
    """The first reason ``tree`` is not a valid dirtree, or None.  ``ordered=False`` is for a
    tree built in memory, whose entries are sorted only when it is serialized."""
    files = [n for n, _c in tree.files]
    dirs = [n for n, _t, _m in tree.dirs]
    problem = (_names_problem(files, ordered=ordered)
               or _names_problem(dirs, ordered=ordered))
    if problem is None and files and dirs and not set(files).isdisjoint(dirs):
        dup = min(set(files) & set(dirs))
        problem = f"Duplicate filename {dup!r} (a file and a directory)"
    return problem


def _mode_bits_problem(mode: int) -> str | None:
    if mode & ~(_TYPE_BITS | _PERM_BITS):
        return f"Invalid mode {mode:o}; invalid bits in mode"
    return None


def _xattrs_problem(xattrs: Xattrs) -> str | None:
    prev: bytes | None = None
    for k, _v in xattrs:
        if not k or b"\0" in k:
            return "Invalid xattr name (empty or holding a NUL)"
        if prev is not None and k <= prev:
            return f"{'Duplicate' if k == prev else 'Incorrectly sorted'} xattr name {k!r}"
        prev = k
    return None


def dirmeta_problem(meta: DirMeta) -> str | None:
    """The first reason ``meta`` is not a valid dirmeta, or None."""
    if not stat.S_ISDIR(meta.mode):
        return f"Invalid directory metadata mode {meta.mode:o}; not a directory"
    return _mode_bits_problem(meta.mode) or _xattrs_problem(meta.xattrs)


def file_mode_problem(meta: FileMeta) -> str | None:
    """The first reason a content object with ``meta`` is invalid (type, mode bits), or None."""
    if not (stat.S_ISREG(meta.mode) or stat.S_ISLNK(meta.mode)):
        return f"Invalid file metadata mode {meta.mode:o}; not a valid file type"
    if stat.S_ISLNK(meta.mode) and (not meta.symlink or "\0" in meta.symlink):
        return "Invalid symlink target (empty or holding a NUL)"
    return _mode_bits_problem(meta.mode)


def check_dirtree(tree: DirTree, csum: str, *, ordered: bool = True) -> DirTree:
    """Return ``tree`` if valid; raise CorruptObject naming dirtree ``csum`` otherwise."""
    problem = dirtree_problem(tree, ordered=ordered)
    if problem is not None:
        raise CorruptObject(f"dirtree object {csum} is invalid: {problem}")
    return tree


def check_dirmeta(meta: DirMeta, csum: str) -> DirMeta:
    """Return ``meta`` if valid; raise CorruptObject naming dirmeta ``csum`` otherwise."""
    problem = dirmeta_problem(meta)
    if problem is not None:
        raise CorruptObject(f"dirmeta object {csum} is invalid: {problem}")
    return meta


def check_file_meta(meta: FileMeta, csum: str) -> FileMeta:
    """Return ``meta`` if valid; raise CorruptObject naming file object ``csum`` otherwise."""
    problem = file_mode_problem(meta)
    if problem is not None:
        raise CorruptObject(f"file object {csum} is invalid: {problem}")
    return meta


def check_metadata_bytes(objtype: ObjectType, data: bytes, csum: str) -> None:
    """Parse and check a dirtree or dirmeta object as it arrives (other types pass)."""
    if objtype is ObjectType.DIR_TREE:
        check_dirtree(_parsed(DirTree.from_bytes, data, objtype, csum), csum)
    elif objtype is ObjectType.DIR_META:
        check_dirmeta(_parsed(DirMeta.from_bytes, data, objtype, csum), csum)


def _parsed(fn, data: bytes, objtype: ObjectType, csum: str):  # type: ignore[no-untyped-def]
    try:
        return fn(data)
    except (CorruptObject, ValueError, IndexError) as e:
        raise CorruptObject(f"{objtype.value} object {csum} is corrupt: {e}") from None
