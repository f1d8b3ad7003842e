"""Merging package trees into a base tree at the object level, with OSTree's conventions.

- Package files under ``etc/`` land in ``usr/etc/`` (the image's defaults).
- ``var/`` content stays in the image's ``var/`` (copied into a fresh
  stateroot); :mod:`layering.vartmpfiles` describes it in tmpfiles.d once the
  scripts have run, because a deployment's ``/var`` is shared and not replaced
  by new images.
- Directory symlinks of the base (``lib -> usr/lib``) are followed, as dpkg does.
- A file at a path another package (or the admin) diverted lands at the
  diversion's target (:mod:`layering.diversions`), as dpkg unpacks it.
- A path delivered by two packages, or by a package over a base file, must
  be identical, owned by a package being removed, or covered by ``Replaces``;
  otherwise :class:`FileConflictError` names both owners and the path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from importers.model import DepKind, FileEntry, PackageMeta, PackageType
from importers.versions import satisfies
from layering.diversions import Diversion
from layering.errors import FileConflictError
from layering.rpmconfig import Fate, modified, upgrade_fate
from store.mtree import MutableTree
from store.objects import FileMeta
from store.repo import Repo

BASE_OWNER = "the base image"
MAX_LINK_HOPS = 20


def runtime_path(path: str) -> str:
    """Where a package path lives in an OSTree-layout tree (``etc/x`` -> ``usr/etc/x``)."""
    path = path.strip("/")
    return f"usr/{path}" if path == "etc" or path.startswith("etc/") else path


@dataclass
class Assembler:
    """Edits one MutableTree: removes packages, merges package trees, tracks owners."""

    repo: Repo
    tree: MutableTree
    kind: PackageType
    installed: list[PackageMeta]
    file_lists: Callable[[], list[PackageMeta]] | None = None
    added_owners: dict[str, str] = field(default_factory=dict)
    grafts: dict[str, str] = field(default_factory=dict)
    taken_over: dict[str, set[str]] = field(default_factory=dict)
    diversions: dict[str, Diversion] = field(default_factory=dict)  # by package path /x/y
    warnings: list[str] = field(default_factory=list)  # rpm's, e.g. "/x created as /x.rpmnew"
    _meta_cache: dict[str, FileMeta] = field(default_factory=dict)
    _dir_cache: dict[str, str] = field(default_factory=dict)
    _by_path: dict[int, tuple[PackageMeta, dict[str, FileEntry]]] = field(
        default_factory=dict)  # id(record) -> (the record, kept alive, its index)

    _base_owners: dict[str, str] | None = None

    @property
    def owners(self) -> dict[str, str]:
        """Runtime path -> owning package: the base's (file lists read on first need)
        overlaid with what this assembly placed."""
        if self._base_owners is None:
            pkgs = self.file_lists() if self.file_lists is not None else self.installed
            self._base_owners = {}
            for pkg in pkgs:
                for f in pkg.files:
                    self._base_owners.setdefault(runtime_path(f.path), pkg.name)
                    self._base_owners.setdefault(self.real_path(f.path), pkg.name)
            self._base_owners.update(self.added_owners)
            self.added_owners = self._base_owners
        return self._base_owners

    # ---- lookups ----------------------------------------------------------------------

    def file_meta(self, csum: str) -> FileMeta:
        meta = self._meta_cache.get(csum)
        if meta is None:
            meta, stream = self.repo.open_file(csum)
            if stream is not None:
                stream.close()
            self._meta_cache[csum] = meta
        return meta

    def resolve_dir(self, path: str) -> str:
        """``path`` with directory symlinks of the tree followed (the real directory path)."""
        found = self._dir_cache.get(path)
        if found is None:
            found = self._dir_cache[path] = self._resolve_dir(path)
        return found

    def _resolve_dir(self, path: str) -> str:
        parts = [p for p in path.split("/") if p]
        done: list[str] = []
        hops = 0
        while parts:
            name = parts.pop(0)
            node = self.tree.lookup("/".join(done)) if done else self.tree
            if not isinstance(node, MutableTree):
                break
            csum = node.files.get(name)
            if csum is not None and self.file_meta(csum).is_symlink and hops < MAX_LINK_HOPS:
                hops += 1
                target = self.file_meta(csum).symlink
                base = [] if target.startswith("/") else done
                resolved: list[str] = list(base)
                for t in target.split("/"):
                    if t in ("", "."):
                        continue
                    if t == "..":
                        resolved = resolved[:-1]
                    else:
                        resolved.append(t)
                parts = resolved + parts
                done = []
                continue
            done.append(name)
        return "/".join(done)

    # ---- removal ----------------------------------------------------------------------

    def real_path(self, path: str) -> str:
        """A package path as it lies in the tree: ``etc/`` moved to ``usr/etc/`` and the
        directory symlinks of its parent followed (``bin/nano`` -> ``usr/bin/nano`` under
        merged /usr), as dpkg follows them."""
        path = runtime_path(path)
        parent, _, name = path.rpartition("/")
        return f"{self.resolve_dir(parent)}/{name}".lstrip("/") if parent else path

    def _kept_owner(self, pkg: PackageMeta, paths: tuple[str, ...],
                    keep_owned_by: set[str]) -> bool:
        for p in paths:
            owner = self.owners.get(p)
            if owner is not None and owner != pkg.name and owner in keep_owned_by:
                return True
        return False

    def remove_package(self, pkg: PackageMeta, keep_owned_by: set[str]) -> None:
        """Delete the files of an installed package that no kept package also owns (under
        either name of a path, the listed one or the one behind directory symlinks)."""
        dirs = []
        for f in pkg.files:
            listed = runtime_path(f.path)
            path = self.real_path(f.path)
            node = self.tree.lookup(path)
            if isinstance(node, MutableTree):
                dirs.append(path)
                continue
            if self._kept_owner(pkg, (listed, path), keep_owned_by):
                continue
            if (self.kind is PackageType.RPM and isinstance(node, str)
                    and modified(self.repo, f, node)):
                self.tree.set_file(f"{path}.rpmsave", node)  # as rpm -e keeps it
                self.warnings.append(f"/{f.path} saved as /{f.path}.rpmsave")
            self.tree.remove(path)
            self.owners.pop(path, None)
            self.owners.pop(listed, None)
        for path in sorted(dirs, key=len, reverse=True):
            node = self.tree.lookup(path)
            if isinstance(node, MutableTree) and not node.files and not node.dirs:
                self.tree.remove(path)

    # ---- merging ----------------------------------------------------------------------

    def add_package(self, pkg: PackageMeta, commit: str, removed: set[str]) -> None:
        """Merge a package's cache commit into the tree, enforcing the file rules."""
        src = MutableTree.from_commit(self.repo, commit)
        self._dir_cache.clear()  # a package may add directory symlinks
        self._merge_dir(pkg, src, "", removed)

    def _merge_dir(self, pkg: PackageMeta, src: MutableTree, rel: str,
                   removed: set[str]) -> None:
        for name in sorted(src.dirs):
            child = src.dirs[name]
            prel = f"{rel}/{name}" if rel else name
            if self._graft(pkg, prel, child):
                continue
            self._ensure_dir(pkg, prel, child)
            self._merge_dir(pkg, child, prel, removed)
        if not src.files:
            return
        dest_dir = self.resolve_dir(runtime_path(rel)) if rel else ""
        node = self.tree.subdir_for_update(dest_dir)
        for name in sorted(src.files):
            prel = f"{rel}/{name}" if rel else name
            diverted = self.diversions.get(f"/{prel}")
            if diverted is not None and diverted.applies(pkg.name):
                dest = self.real_path(diverted.to)
                parent, _, leaf = dest.rpartition("/")
                self.tree.ensure_dir(parent)
                self._place_file(pkg, prel, dest, self.tree.subdir_for_update(parent), leaf,
                                 src.files[name], removed)
                continue
            dest = f"{dest_dir}/{name}" if dest_dir else name
            self._place_file(pkg, prel, dest, node, name, src.files[name], removed)

    def _graft(self, pkg: PackageMeta, prel: str, child: MutableTree) -> bool:
        """Place a package directory absent from the tree whole, by its stored checksums."""
        if prel in ("etc", "var") or prel.startswith("var/"):
            return False
        if any(d.startswith(f"/{prel}/") for d in self.diversions):
            return False  # a file below may be diverted
        dest = self.resolve_dir(runtime_path(prel))
        parent = dest.rpartition("/")[0]
        if self.tree.lookup(dest) is not None or (parent and not isinstance(
                self.tree.lookup(parent), MutableTree)):
            return False
        self.tree.set_dir(dest, child)
        self.grafts[dest] = pkg.name
        return True

    def owner_of(self, path: str) -> str:
        """The package that placed or owns ``path`` (the base image when none does)."""
        owner = self.owners.get(path)
        if owner is not None:
            return owner
        for prefix, name in self.grafts.items():
            if path.startswith(prefix + "/"):
                return name
        return BASE_OWNER

    def _ensure_dir(self, pkg: PackageMeta, prel: str, src: MutableTree) -> None:
        """Make the package directory ``prel`` exist (with its mode and owner, read only then)."""
        dest = self.resolve_dir(runtime_path(prel))
        node = self.tree.lookup(dest)
        if isinstance(node, str):
            raise FileConflictError(
                f"file conflict at /{prel}: {pkg.name} ships a directory where "
                f"{self.owner_of(dest)} has a file")
        if node is None:
            meta = src.meta
            self.tree.ensure_dir(dest, meta)

    def _place_file(self, pkg: PackageMeta, prel: str, dest: str, parent: MutableTree,
                    name: str, csum: str, removed: set[str]) -> None:
        if name in parent.dirs:
            raise FileConflictError(
                f"file conflict at /{prel}: {pkg.name} ships a file where "
                f"{self.owner_of(dest)} has a directory")
        existing = parent.files.get(name)
        if existing is not None and existing != csum:
            if self.kind is PackageType.RPM and self.owner_of(dest) == BASE_OWNER:
                name = self._rpm_over_unowned(pkg, prel, parent, name, existing)
            else:
                self._check_overwrite(pkg, prel, dest, removed)
                if self.kind is PackageType.RPM and self.owner_of(dest) == pkg.name:
                    name = self._rpm_upgrade(pkg, prel, parent, name, existing)
        if name:
            parent.set_file(name, csum)
        self.added_owners[dest] = pkg.name

    def _rpm_upgrade(self, pkg: PackageMeta, prel: str, parent: MutableTree, name: str,
                     existing: str) -> str:
        """Where ``rpm -U`` puts a file of ``pkg`` over the installed version's
        (:func:`layering.rpmconfig.upgrade_fate`): the name to place it at, "" for none."""
        pkgs = self.file_lists() if self.file_lists is not None else self.installed
        old = next((found for p in pkgs if p.name == pkg.name and p is not pkg
                    if (found := self._file_entry(p, prel)) is not None), None)
        new = self._file_entry(pkg, prel)
        if old is None or new is None:
            return name
        fate = upgrade_fate(self.repo, old, new, existing)
        if fate in (Fate.RPMSAVE, Fate.RPMNEW):
            verb, aside = ("saved", "rpmsave") if fate is Fate.RPMSAVE else ("created", "rpmnew")
            self.warnings.append(f"/{prel} {verb} as /{prel}.{aside}")
        if fate is Fate.RPMSAVE:
            self._set_aside(pkg, prel, parent, f"{name}.rpmsave", existing)
        if fate is Fate.RPMNEW and f"{name}.rpmnew" in parent.dirs:
            raise FileConflictError(f"file conflict at /{prel}.rpmnew: {pkg.name} saves a "
                                    "config file where the image has a directory")
        return {Fate.KEEP: "", Fate.RPMNEW: f"{name}.rpmnew"}.get(fate, name)

    def _file_entry(self, pkg: PackageMeta, path: str) -> FileEntry | None:
        """``pkg``'s entry for ``path``, from an index built once per record (an upgrade
        looks up every file of the package in both versions' lists)."""
        held = self._by_path.get(id(pkg))
        if held is None:  # reversed: the first entry of a path wins, as a scan would find
            held = self._by_path[id(pkg)] = (pkg, {f.path: f for f in reversed(pkg.files)})
        return held[1].get(path)

    def _set_aside(self, pkg: PackageMeta, prel: str, parent: MutableTree, aside: str,
                   csum: str) -> None:
        if aside in parent.dirs:
            raise FileConflictError(f"file conflict at /{prel}.{aside.rpartition('.')[2]}: "
                                    f"{pkg.name} saves a config file where the image has "
                                    "a directory")
        parent.set_file(aside, csum)

    def _rpm_over_unowned(self, pkg: PackageMeta, prel: str, parent: MutableTree, name: str,
                          existing: str) -> str:
        """Where ``rpm -i`` puts a package file over a different one no package owns: in its
        place (a %config one moved aside to NAME.rpmorig), or, for %config(noreplace), at
        NAME.rpmnew beside the file it leaves alone.  Returns the name to place it at."""
        entry = next((f for f in pkg.files if f.path == prel), None)
        if entry is None or not entry.config:
            return name
        aside = f"{name}.rpmnew" if entry.noreplace else f"{name}.rpmorig"
        if aside in parent.dirs:
            raise FileConflictError(f"file conflict at /{prel}.{aside.rpartition('.')[2]}: "
                                    f"{pkg.name} saves a config file where the image has "
                                    "a directory")
        if entry.noreplace:
            return aside
        parent.set_file(aside, existing)
        return name

    def _check_overwrite(self, pkg: PackageMeta, prel: str, dest: str, removed: set[str]) -> None:
        owner = self.owner_of(dest)
        if owner in removed:
            return
        if owner != BASE_OWNER and self._replaces(pkg, owner):
            self.taken_over.setdefault(owner, set()).add(prel)
            return
        raise FileConflictError(
            f"file conflict at /{prel}: delivered by {pkg.name} and by {owner} "
            "with different content")

    def _replaces(self, pkg: PackageMeta, owner: str) -> bool:
        version = next((p.evr for p in self.installed if p.name == owner), None)
        for group in pkg.relations(DepKind.REPLACES):
            for rel in group:
                if rel.name == owner and (version is None or satisfies(self.kind, rel, version)):
                    return True
        return False


def package_owned_paths(pkgs: Iterable[PackageMeta]) -> set[str]:
    """Every runtime path the given packages list."""
    return {runtime_path(f.path) for p in pkgs for f in p.files}
