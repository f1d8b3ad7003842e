"""An in-memory, lazily loaded directory tree for building commits.

A :class:`MutableTree` starts empty or from a stored dirtree; subtrees are
only parsed when touched, and an untouched subtree is written back by its
existing checksums, so editing a few paths of a large image costs a few
objects.
"""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING

from store.errors import InputError
from store.objects import DirMeta, DirTree, ObjectType

if TYPE_CHECKING:
    from store.repo import Repo
    from store.txn import Transaction

DEFAULT_DIR_META = DirMeta(0, 0, stat.S_IFDIR | 0o755)


def _parts(path: str) -> list[str]:
    parts = [p for p in path.strip("/").split("/") if p and p != "."]
    if any(p == ".." for p in parts):
        raise InputError(f"path '{path}' leaves the tree")
    return parts


class MutableTree:
    """A directory: files (name -> checksum), subdirectories and its DirMeta."""

    def __init__(self, meta: DirMeta = DEFAULT_DIR_META) -> None:
        self._meta: DirMeta | None = meta
        self._files: dict[str, str] = {}
        self._dirs: dict[str, MutableTree] = {}
        self._repo: Repo | None = None
        self._stored: tuple[str, str] | None = None
        self._loaded = True

    @classmethod
    def from_dirtree(cls, repo: Repo, tree_csum: str, meta_csum: str) -> MutableTree:
        """A tree backed by stored objects, parsed on first access."""
        t = cls(DEFAULT_DIR_META)
        t._repo = repo
        t._stored = (tree_csum, meta_csum)
        t._loaded = False
        t._meta = None
        return t

    @classmethod
    def from_commit(cls, repo: Repo, rev: str) -> MutableTree:
        """The root tree of a commit (``rev`` is resolved)."""
        commit = repo.load_commit(repo.resolve(rev))
        return cls.from_dirtree(repo, commit.root_tree, commit.root_meta)

    # ---- lazy loading ---------------------------------------------------------------

    def _load(self) -> None:
        if self._loaded:
            return
        assert self._repo is not None and self._stored is not None
        tree = self._repo.load_dirtree(self._stored[0])
        self._files = dict(tree.files)
        self._dirs = {n: MutableTree.from_dirtree(self._repo, t, m) for n, t, m in tree.dirs}
        self._loaded = True

    @property
    def meta(self) -> DirMeta:
        if self._meta is None:
            assert self._repo is not None and self._stored is not None
            self._meta = self._repo.load_dirmeta(self._stored[1])
        return self._meta

    @meta.setter
    def meta(self, value: DirMeta) -> None:
        self._dirty()
        self._meta = value

    def _dirty(self) -> None:
        self._load()
        self._meta = self.meta
        self._stored = None

    @property
    def files(self) -> dict[str, str]:
        """Files of this directory (name -> checksum); read-only view by convention."""
        self._load()
        return self._files

    @property
    def dirs(self) -> dict[str, MutableTree]:
        """Subdirectories of this directory."""
        self._load()
        return self._dirs

    @property
    def stored(self) -> tuple[str, str] | None:
        """(tree, meta) checksums when this tree is unchanged since it was loaded or written."""
        return self._stored

    # ---- editing --------------------------------------------------------------------

    def lookup(self, path: str) -> MutableTree | str | None:
        """The subtree or file checksum at ``path``, or None."""
        node: MutableTree = self
        parts = _parts(path)
        for i, p in enumerate(parts):
            if p in node.dirs:
                node = node.dirs[p]
            elif p in node.files and i == len(parts) - 1:
                return node.files[p]
            else:
                return None
        return node

    def ensure_dir(self, path: str, meta: DirMeta = DEFAULT_DIR_META) -> MutableTree:
        """The subtree at ``path``, creating missing directories with ``meta`` (and
        marking every ancestor of a created one changed, so that :meth:`write` keeps it)."""
        node: MutableTree = self
        created = False
        for p in _parts(path):
            if p in node.files:
                raise InputError(f"'{path}': '{p}' is a file, not a directory")
            child = node.dirs.get(p)
            if child is None:
                node._dirty()
                child = MutableTree(meta)
                node._dirs[p] = child
                created = True
            node = child
        if created:
            self._mark_path_dirty(path)
        return node

    def subdir_for_update(self, path: str) -> MutableTree:
        """The existing subtree at ``path``, it and its ancestors marked changed, so that
        entries can be set on it directly (``set_file(name, ...)``)."""
        node: MutableTree = self
        node._dirty()
        for p in _parts(path):
            child = node.dirs.get(p)
            if child is None:
                raise InputError(f"'{path}': no directory '{p}'")
            node = child
            node._dirty()
        return node

    def _parent_for_write(self, path: str) -> tuple[MutableTree, str]:
        parts = _parts(path)
        if not parts:
            raise InputError("empty path")
        parent = self
        for p in parts[:-1]:
            nxt = parent.dirs.get(p)
            if nxt is None:
                raise InputError(f"'{path}': no directory '{p}'")
            parent = nxt
        return parent, parts[-1]

    def set_file(self, path: str, csum: str) -> None:
        """Put a file object at ``path``; its parent must exist and ``path`` not be a dir."""
        parent, name = self._parent_for_write(path)
        if name in parent.dirs:
            raise InputError(f"'{path}' is a directory")
        parent._dirty()
        parent._files[name] = csum
        self._mark_path_dirty(path)

    def set_dir(self, path: str, tree: MutableTree) -> None:
        """Put (or replace) a whole subtree at ``path``."""
        parent, name = self._parent_for_write(path)
        if name in parent.files:
            raise InputError(f"'{path}' is a file")
        parent._dirty()
        parent._dirs[name] = tree
        self._mark_path_dirty(path)

    def remove(self, path: str) -> bool:
        """Remove a file or subtree; return whether anything was there."""
        try:
            parent, name = self._parent_for_write(path)
        except InputError:
            return False
        if name in parent.files:
            parent._dirty()
            del parent._files[name]
        elif name in parent.dirs:
            parent._dirty()
            del parent._dirs[name]
        else:
            return False
        self._mark_path_dirty(path)
        return True

    def _mark_path_dirty(self, path: str) -> None:
        node: MutableTree = self
        node._dirty()
        for p in _parts(path)[:-1]:
            node = node._dirs[p]
            node._dirty()

    # ---- writing --------------------------------------------------------------------

    def write(self, txn: Transaction) -> tuple[str, str]:
        """Write this tree's changed dirtree/dirmeta objects; return (tree, meta) checksums."""
        if self._stored is not None:
            return self._stored
        dirs = tuple((n, *d.write(txn)) for n, d in self._dirs.items())
        tree = DirTree(tuple(self._files.items()), dirs)
        tree_csum = txn.write_metadata(ObjectType.DIR_TREE, tree.to_bytes())
        txn.repo.remember_written(tree_csum, tree)
        meta_csum = txn.write_metadata(ObjectType.DIR_META, self.meta.to_bytes())
        self._stored = (tree_csum, meta_csum)
        return self._stored

    def walk(self, prefix: str = "") -> list[tuple[str, str | MutableTree]]:
        """Every entry below this tree as (path, checksum-or-subtree), depth first, sorted."""
        out: list[tuple[str, str | MutableTree]] = []
        names = sorted(set(self.files) | set(self.dirs), key=lambda n: n.encode())
        for n in names:
            p = f"{prefix}/{n}" if prefix else n
            if n in self.dirs:
                out.append((p, self.dirs[n]))
                out.extend(self.dirs[n].walk(p))
            else:
                out.append((p, self.files[n]))
        return out
