"""The image's package database after a compose: dpkg's status, info files and trigger
interests, or the rpmdb, updated for the packages added and removed."""

from __future__ import annotations

from pathlib import Path

from importers.dpkgdb import DB_DIRS as DPKG_DB_DIRS
from importers.fetch import Fetcher
from importers.model import PackageMeta, PackageType
from layering import dpkgdb
from layering.assemble import Assembler
from layering.composescripts import find_dir
from layering.convert import config_dir
from layering.dpkgtriggers import Activation, update_interests
from layering.errors import ComposeError
from layering.packages import Layer, cached_local, download
from store.repo import Repo
from store.txn import Transaction


def update_db(repo: Repo, txn: Transaction, asm: Assembler, layers: list[Layer],
              removed: list[PackageMeta], fetcher: Fetcher, *, added: list[PackageMeta],
              obsolete: dict[str, list[tuple[str, str]]],
              leaving: list[PackageMeta]) -> list[Activation]:
    """Update the package database of ``asm``'s tree for ``layers`` added (``added``: their
    records in unpack order) and the base packages ``removed``, with the ``obsolete``
    conffiles upgraded Debian packages keep; for dpkg, also its trigger interests (in the
    order of ``added``), and return the triggers the added files and the ``leaving``
    ones (removed packages' and upgraded packages' old-only files) activate."""
    tree = asm.tree
    if asm.kind is PackageType.DEB:
        db = find_dir(tree, DPKG_DB_DIRS, "status")
        if db is None:
            return []
        dpkgdb.update(repo, txn, tree, db, add=added, remove=removed,
                      taken_over=asm.taken_over, etc_dir=config_dir(tree), obsolete=obsolete)
        return update_interests(repo, txn, tree, db, add=added, remove=leaving)
    from importers.rpmdb import DB_DIRS as RPM_DB_DIRS  # the rpm modules: rpm images only
    from layering import rpmdbupdate

    db = find_dir(tree, RPM_DB_DIRS, "rpmdb.sqlite")
    if db is not None:
        files = [_package_file(repo, layer, fetcher) for layer in layers]
        rpmdbupdate.update(repo, txn, tree, db, add=files, remove=[p.name for p in removed])
    return []


def _package_file(repo: Repo, layer: Layer, fetcher: Fetcher) -> Path:
    try:
        return cached_local(repo, layer.sha256)
    except ComposeError:
        return download(layer.entry or layer.meta, fetcher)
