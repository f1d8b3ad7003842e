"""Where layered packages come from: catalogues of the sources, local files, the cache.

A package already in the cache (matched by the SHA256 its catalogue entry
declares) is neither downloaded nor unpacked again.  Local package files are
kept under ``tmp/cache/local/SHA256.EXT`` so that later composes (upgrades)
can re-apply them without the original file.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from importers import aptsource
from importers.aptsource import IndexFile
from importers.fetch import Fetcher
from importers.model import PackageMeta, PackageType
from importers.owners import OwnerMap
from importers.pkgcache import ImportResult, import_packages
from importers.pkgindex import file_sha256
from importers.sources import Sources
from layering.errors import ComposeError
from store.progress import ProgressFn, Stage
from store.repo import Repo


@dataclass(frozen=True)
class Layer:
    """A resolved package ready to merge: its full record and its cache commit."""

    meta: PackageMeta
    commit: str
    sha256: str
    downloaded: bool
    unpacked: bool
    entry: PackageMeta | None = None


def local_dir(repo: Repo) -> Path:
    return repo.tmp_dir / "cache" / "local"


def keep_local(repo: Repo, path: Path) -> tuple[str, Path]:
    """Copy a local package file into the cache by its SHA256; return (sha256, cached path)."""
    sha = file_sha256(path)
    ext = path.suffix if path.suffix in (".deb", ".rpm") else ".pkg"
    dest = local_dir(repo) / f"{sha}{ext}"
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}")
        shutil.copyfile(path, tmp)
        os.replace(tmp, dest)
    return sha, dest


def cached_local(repo: Repo, sha: str) -> Path:
    """A local package kept earlier by :func:`keep_local`."""
    for ext in (".deb", ".rpm", ".pkg"):
        p = local_dir(repo) / f"{sha}{ext}"
        if p.exists():
            return p
    raise ComposeError(f"local package {sha} is no longer in the cache ({local_dir(repo)})")


@dataclass(frozen=True)
class LocalPackage:
    """A local package file read for a dry run: its record and SHA256; nothing is stored."""

    sha256: str
    meta: PackageMeta


def _existing_file(path: Path) -> Path:
    if not path.is_file():
        raise ComposeError(f"no such package file: {path}")
    return path


def peek_local(paths: Iterable[Path]) -> list[LocalPackage]:
    """Read local package files' records (their payloads are not read, nothing is written)."""
    from importers.pkgcache import open_package

    out = []
    for p in map(_existing_file, paths):
        sha = file_sha256(p)
        out.append(LocalPackage(sha, open_package(p, checksum=sha).meta))
    return out


def import_local(repo: Repo, paths: Iterable[Path], owners: OwnerMap) -> list[ImportResult]:
    """Import local package files (kept in the cache by SHA256)."""
    kept = [keep_local(repo, p)[1] for p in map(_existing_file, paths)]
    return import_packages(repo, kept, owners=owners) if kept else []


def source_label(src: object) -> str:
    if isinstance(src, aptsource.AptSource):
        return f"{src.uri} {src.suite}".strip()
    from importers.rpmmd import RpmRepo

    assert isinstance(src, RpmRepo)
    return src.id


def load_available(sources: Sources, fetcher: Fetcher, *, kind: PackageType, arch: str
                   ) -> tuple[dict[str, list[PackageMeta]], dict[str, list[IndexFile]]]:
    """The sources that fit the image's package type: rpm-md catalogues as records, apt
    sources as verified index files (for libsolv to read)."""
    records: dict[str, list[PackageMeta]] = {}
    indexes: dict[str, list[IndexFile]] = {}
    if kind is PackageType.DEB:
        for src in sources.apt:
            indexes.setdefault(source_label(src), []).extend(
                aptsource.index_files(src, fetcher, arch=arch))
    else:
        from importers import rpmmd  # the rpm modules load only for rpm images

        for repo in sources.rpmmd:
            if repo.enabled:
                records.setdefault(source_label(repo), []).extend(
                    rpmmd.load_catalogue(repo, fetcher, filelists=True))
    return records, indexes


def download(meta: PackageMeta, fetcher: Fetcher) -> Path:
    """The package file of a catalogue entry (from the fetch cache when it has it)."""
    if meta.type is PackageType.DEB:
        return aptsource.download_deb(meta, fetcher)
    from importers import rpmmd

    return rpmmd.download_rpm(meta, fetcher)


def materialize(repo: Repo, pkgs: Iterable[PackageMeta], local: dict[str, ImportResult],
                cached: dict[str, ImportResult], fetcher: Fetcher,
                owners: OwnerMap, progress: ProgressFn | None = None) -> list[Layer]:
    """Cache commits for every resolved package, downloading and unpacking only what is new
    (``cached``: the cache entries already found, by package file sha256); ``progress``
    hears stage ``download`` (packages, bytes) then ``unpack``."""
    layers: dict[str, Layer] = {}
    order = list(pkgs)
    wanted = []
    for meta in order:
        sha = meta.checksum
        if sha in local:
            r = local[sha]
            layers[meta.nevra] = Layer(r.meta, r.commit, sha, False, not r.skipped, meta)
            continue
        hit = cached.get(sha) if sha else None
        if hit is not None:
            layers[meta.nevra] = Layer(hit.meta, hit.commit, sha, False, False, meta)
        else:
            wanted.append(meta)
    fetching = Stage(progress, "download", len(wanted))
    paths: dict[str, Path] = {}
    # a few at once (the fetcher's connections), as ostree pulls objects
    downloads = fetcher.http.map_unordered(lambda m: (m, download(m, fetcher)), wanted)
    try:
        for meta, path in downloads:
            paths[meta.nevra] = path
            fetching.advance(1, meta.size)
    except KeyboardInterrupt:
        fetcher.http.interrupt()
        raise
    finally:
        downloads.close()  # the downloads still running end before this returns
    todo = [(meta, paths[meta.nevra]) for meta in wanted]
    fetching.finish()
    if not todo:
        Stage(progress, "unpack", 0).finish()  # the same stages whether or not there is work
    else:
        results = import_packages(repo, [p for _m, p in todo], owners=owners, progress=progress)
        for (meta, _p), r in zip(todo, results, strict=True):
            layers[meta.nevra] = Layer(r.meta, r.commit, r.sha256, True, not r.skipped, meta)
    return [layers[m.nevra] for m in order]
