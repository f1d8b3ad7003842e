"""Debian base packages that a compose replaces by another version, upgraded as dpkg does.

dpkg 1.21.22 unpacks a package over its installed version OLD (``process_archive`` in
src/main/unpack.c) and configures it later (``deferred_configure`` in configure.c):

1. old ``prerm upgrade NEW`` (``maintscript_fallback``), over the old files;
2. new ``preinst upgrade OLD NEW`` (``maintscript_new``), over the old files still;
3. the new files are unpacked over the old ones (``tar_deferred_extract``), but a new
   conffile waits beside the old one as ``.dpkg-new`` until the configure step;
4. old ``postrm upgrade NEW`` (``maintscript_fallback``), the old-only files still
   there and the conffiles as the old version left them (:class:`Unpacking`);
5. ``pkg_remove_old_files``: the files only OLD had go, but a conffile only OLD had
   stays as *obsolete*: still on disk and in ``info/NAME.list``, and in ``Conffiles``
   with its old hash and the word ``obsolete`` (``pkg_update_fields``); one already
   gone from the disk is dropped;
6. new ``postinst configure OLD`` in the configure order (:mod:`layering.dpkgorder`).

A downgrade runs the same steps.  The script runs are planned in
:mod:`layering.scriptplan`, run by :mod:`layering.composescripts`; this module says
which packages are upgraded and what of the old version leaves or stays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from debian.deb822 import Deb822

from importers.model import PackageMeta, PackageType
from layering.assemble import runtime_path
from layering.scripts import ScriptRun
from store.mtree import MutableTree


@dataclass(frozen=True)
class Upgrade:
    """A base package (``old``, with its file list) replaced by ``new``."""

    old: PackageMeta
    new: PackageMeta


@dataclass(frozen=True)
class Unpacking:
    """What the old ``postrm upgrade`` runs need once the new files are placed: the runs,
    and (tree path, file checksum or None) of each new conffile as the base had it."""

    postrm: tuple[ScriptRun, ...] = ()
    conffiles: tuple[tuple[str, str | None], ...] = ()


def unpacking(ups: Sequence[Upgrade], postrm: Sequence[ScriptRun],
              tree: MutableTree) -> Unpacking:
    """The :class:`Unpacking` of ``ups``, with the conffiles read now from ``tree`` (the
    base: call it before the new files are placed)."""
    saved = []
    for up in ups:
        for c in up.new.conffiles:
            node = tree.lookup(runtime_path(c))
            if not isinstance(node, MutableTree):
                saved.append((runtime_path(c), node))
    return Unpacking(tuple(postrm), tuple(saved))


def swap_conffiles(tree: MutableTree, files: Sequence[tuple[str, str | None]]
                   ) -> list[tuple[str, str | None]]:
    """Put ``files`` (path, checksum or None: absent) into ``tree``; return what was there,
    to put back with the same call.  A path under a non-directory is left alone."""
    before: list[tuple[str, str | None]] = []
    for path, csum in files:
        node = tree.lookup(path)
        parent = tree.lookup(path.rpartition("/")[0]) if "/" in path else tree
        if isinstance(node, MutableTree) or not isinstance(parent, MutableTree):
            continue
        before.append((path, node))
        if csum is None:
            tree.remove(path)
        else:
            tree.set_file(path, csum)
    return before


def find_upgrades(kind: PackageType, removed: Sequence[PackageMeta],
                  added: Sequence[PackageMeta]) -> dict[str, Upgrade]:
    """The Debian base packages in ``removed`` that an ``added`` package of the same name
    and architecture replaces, by name (none for rpm)."""
    if kind is not PackageType.DEB:
        return {}
    new = {(p.name, p.arch): p for p in added}
    return {p.name: Upgrade(p, new[(p.name, p.arch)]) for p in removed
            if (p.name, p.arch) in new}


def old_versions(ups: dict[str, Upgrade]) -> dict[str, str]:
    """Name -> the replaced version, as dpkg passes it to the scripts (epoch when not 0)."""
    return {name: u.old.evr for name, u in ups.items()}


def old_hashes(pkg: PackageMeta) -> dict[str, str]:
    """An installed package's ``Conffiles`` field: path (no leading ``/``) -> md5."""
    field = Deb822(pkg.control).get("Conffiles", "") if pkg.control else ""
    out = {}
    for line in field.strip().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            out[parts[0].lstrip("/")] = parts[1]
    return out


def obsolete_conffiles(up: Upgrade, exists: dict[str, bool]) -> list[tuple[str, str]]:
    """(path, old md5) of the old version's conffiles the new one lacks and that are still
    on disk (``exists``: path -> whether the tree has it), in the old ``Conffiles`` order."""
    hashes = old_hashes(up.old)
    keep = set(up.new.conffiles)
    return [(c, hashes.get(c, "newconffile")) for c in up.old.conffiles
            if c not in keep and exists.get(c, False)]


def old_only(up: Upgrade) -> PackageMeta:
    """The old version with only the paths the new one does not ship and that are not
    conffiles: what ``pkg_remove_old_files`` deletes."""
    new_paths = {f.path for f in up.new.files} | set(up.new.conffiles)
    conf = set(up.old.conffiles)
    return replace(up.old, files=tuple(f for f in up.old.files
                                       if f.path not in new_paths and f.path not in conf))


def leaving(removed: Sequence[PackageMeta], ups: dict[str, Upgrade]) -> list[PackageMeta]:
    """The ``removed`` packages with the files that leave the tree: all of a removed one's,
    only the old-only paths of an upgraded one (:func:`old_only`)."""
    return [old_only(ups[p.name]) if p.name in ups else p for p in removed]
