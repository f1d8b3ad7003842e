"""strata importers: packages, sources and image package databases, into and out of the store.

Entry points (each module documents its format):

- :func:`importers.pkgcache.import_packages` — .deb/.rpm files into cache commits
- :func:`importers.aptsource.load_catalogue` / :func:`importers.rpmmd.load_catalogue`
- :func:`importers.sources.sources_from_commit` / :func:`importers.sources.parse_spec`
- :func:`read_installed` — what a commit already has, from its own package database
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from importers.model import PackageMeta, PackageType
    from store.repo import Repo

__all__ = ["PackageMeta", "PackageType", "get_reader", "read_installed", "read_package"]


def __getattr__(name: str) -> Any:
    """``PackageMeta`` and ``PackageType`` load on first use, so a cache hit never builds them."""
    if name in ("PackageMeta", "PackageType"):
        from importers import model

        return getattr(model, name)
    raise AttributeError(f"module 'importers' has no attribute {name!r}")


def get_reader(kind: PackageType) -> Callable[..., Any]:
    """The package-file opener of an ecosystem: ``open_deb`` or ``open_rpm`` (``(path) -> pkg``
    with ``.meta``)."""
    from importers.model import PackageType

    if kind == PackageType.DEB:
        from importers.deb import open_deb

        return open_deb
    from importers.rpm import open_rpm

    return open_rpm


def read_package(path: Path) -> PackageMeta:
    """The record of a .deb or .rpm file, chosen by its magic bytes (the payload is not read)."""
    from importers.pkgcache import open_package
    from importers.pkgindex import file_sha256

    return open_package(path, checksum=file_sha256(path)).meta


def package_db_kind(repo: Repo, rev: str) -> PackageType | None:
    """Which package database commit ``rev`` has (rpm is looked for first), or None."""
    from importers import dpkgdb, rpmdb
    from importers.model import PackageType
    from importers.treeread import CommitReader

    reader = CommitReader(repo, rev)
    if rpmdb.find_db(reader) is not None:
        return PackageType.RPM
    if dpkgdb.find_db(reader) is not None:
        return PackageType.DEB
    return None


def read_installed(repo: Repo, rev: str, *, with_files: bool = True
                   ) -> tuple[PackageType | None, list[PackageMeta]]:
    """The package database kind found in commit ``rev`` and its packages ((None, []) if none)."""
    from importers import dpkgdb, rpmdb
    from importers.model import PackageType

    kind = package_db_kind(repo, rev)
    if kind is PackageType.RPM:
        return kind, rpmdb.read_installed(repo, rev, with_files=with_files)
    if kind is PackageType.DEB:
        return kind, dpkgdb.read_installed(repo, rev, with_files=with_files)
    return None, []
