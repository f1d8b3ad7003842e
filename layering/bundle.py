"""Bundles: one file carrying a commit and, optionally, the packages a host will layer.

A bundle is an uncompressed POSIX tar (docs/bundles.md)::

    bundle.json         the manifest (first member): format, ref, commit, from,
                        the superblock's sha256 and size, the cache entries
    delta.superblock    an OSTree static delta with inline parts: extracted, it is
                        what ``ostree static-delta apply-offline REPO delta.superblock``
                        reads; it carries the commit's detached metadata (signatures)
    cache/<sha256>      files the package resolution fetched: the sources' InRelease
                        and Packages indexes and the .deb/.rpm files, each under the
                        URL it came from; local package files (``--packages FILE``)

The tar is written to a temporary file beside the output and renamed into
place whole.  Applying is :mod:`layering.bundle_apply`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from importers import package_db_kind, read_installed
from importers.fetch import DOWNLOAD_CAP, Expected, Fetcher, repo_cache_dir
from importers.model import PackageType
from importers.sources import sources_from_commit
from layering.compose import image_arch
from layering.errors import ComposeError
from layering.packages import download, load_available
from layering.resolve import Request, resolve
from store.errors import InputError
from store.fsutil import fsync_dir
from store.objects import is_checksum
from store.progress import ProgressFn, Stage
from store.replication.bundle_delta import generate_inline
from store.repo import Repo

FORMAT = 1
MANIFEST = "bundle.json"
SUPERBLOCK = "delta.superblock"
CACHE_MEMBER = re.compile(r"cache/[0-9a-f]{64}")
MAX_MANIFEST = 16 << 20
CHUNK = 1 << 20


class BundleError(InputError):
    """A bundle that is not one, or does not match its manifest."""


@dataclass(frozen=True)
class CacheEntry:
    """A file in the bundle: its sha256, size, and the URL it is cached under ("" for a
    local package file); ``package`` when it is a package to import."""

    sha256: str
    size: int
    url: str
    package: bool

    @property
    def member(self) -> str:
        return f"cache/{self.sha256}"

    def to_dict(self) -> dict[str, object]:
        return {"sha256": self.sha256, "size": self.size, "url": self.url,
                "package": self.package}

    @classmethod
    def from_dict(cls, d: object) -> CacheEntry:
        if not isinstance(d, dict) or set(d) != {"sha256", "size", "url", "package"}:
            raise BundleError("a cache entry of the manifest has wrong keys")
        sha, size, url, pkg = d["sha256"], d["size"], d["url"], d["package"]
        if (not isinstance(sha, str) or not is_checksum(sha) or not isinstance(size, int)
                or size < 0 or not isinstance(url, str) or not isinstance(pkg, bool)
                or (url and not url.startswith(("http://", "https://")))):
            raise BundleError("a cache entry of the manifest is malformed")
        return cls(sha, size, url, pkg)


@dataclass(frozen=True)
class Manifest:
    """``bundle.json``: what the bundle holds."""

    ref: str
    commit: str
    from_commit: str | None
    superblock_sha256: str
    superblock_size: int
    entries: tuple[CacheEntry, ...]

    def to_bytes(self) -> bytes:
        return json.dumps({
            "format": FORMAT, "ref": self.ref, "commit": self.commit, "from": self.from_commit,
            "superblock-sha256": self.superblock_sha256,
            "superblock-size": self.superblock_size,
            "entries": [e.to_dict() for e in self.entries]}, sort_keys=True, indent=1).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse a manifest; BundleError unless every key is known and well-formed."""
        try:
            d = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise BundleError(f"{MANIFEST} is not JSON: {e}") from None
        keys = {"format", "ref", "commit", "from", "superblock-sha256", "superblock-size",
                "entries"}
        if not isinstance(d, dict) or set(d) != keys:
            raise BundleError(f"{MANIFEST} has wrong keys")
        if d["format"] != FORMAT:
            raise BundleError(f"{MANIFEST} has format {d['format']!r}, not {FORMAT}")
        ok = (isinstance(d["ref"], str) and _is_csum(d["commit"])
              and (d["from"] is None or _is_csum(d["from"]))
              and _is_csum(d["superblock-sha256"]) and isinstance(d["superblock-size"], int)
              and isinstance(d["entries"], list))
        if not ok:
            raise BundleError(f"{MANIFEST} is malformed")
        entries = tuple(CacheEntry.from_dict(e) for e in d["entries"])
        if len({e.sha256 for e in entries}) != len(entries):
            raise BundleError(f"{MANIFEST} lists a file twice")
        return cls(d["ref"], d["commit"], d["from"], d["superblock-sha256"],
                   d["superblock-size"], entries)


def _is_csum(v: object) -> bool:
    return isinstance(v, str) and is_checksum(v)


@dataclass(frozen=True)
class CreateResult:
    """A written bundle: its path, commit, size and the number of packages in it."""

    path: Path
    commit: str
    from_commit: str | None
    size: int
    packages: int


class _Recording(Fetcher):
    """A fetcher that remembers the http(s) URL of each file it hands out."""

    def __init__(self, cache_dir: Path) -> None:
        super().__init__(cache_dir)
        self.got: dict[str, Path] = {}

    def fetch(self, url: str, *, expected: Expected | None = None, label: str = "",
              limit: int = DOWNLOAD_CAP) -> Path:
        path = super().fetch(url, expected=expected, label=label, limit=limit)
        if url.startswith(("http://", "https://")):
            self.got[url] = path
        return path


def create(repo_path: Path, ref: str, out: Path, *, from_rev: str | None = None,
           packages: tuple[str, ...] = (), progress: ProgressFn | None = None) -> CreateResult:
    """Write the bundle of ``ref`` (as a delta from ``from_rev`` when given) to ``out``.

    ``packages`` are names, resolved with their dependencies against the sources
    configured in the commit, or local package files.  Guarantees: ``out``
    appears whole or not at all.  ``progress`` hears the stages ``delta-objects``
    and ``bundle-write`` (members written, their bytes).
    """
    repo = Repo.open(repo_path)
    to = repo.resolve(ref)
    frm = repo.resolve(from_rev) if from_rev else None
    delta = generate_inline(repo, frm, to, progress=progress)
    files = [p for p in packages if "/" in p or p.endswith((".deb", ".rpm"))]
    names = tuple(p for p in packages if p not in files)
    entries: dict[str, tuple[CacheEntry, Path]] = {}
    for f in files:
        p = Path(f)
        if not p.is_file():
            raise InputError(f"no such package file: {p}")
        e = _entry(p, "", package=True)
        entries[e.sha256] = (e, p)
    if packages:
        for url, path in _resolve(repo, to, names, [Path(f) for f in files]).items():
            e = _entry(path, url, package=not _is_index(url))
            entries.setdefault(e.sha256, (e, path))
    manifest = Manifest("" if is_checksum(ref) else ref, to, frm,
                        hashlib.sha256(delta.data).hexdigest(), len(delta.data),
                        tuple(e for e, _p in entries.values()))
    _write_tar(out, manifest, delta.data, [(e.member, p) for e, p in entries.values()],
               Stage(progress, "bundle-write", 2 + len(entries)))
    return CreateResult(out, to, frm, out.stat().st_size,
                        sum(1 for e in manifest.entries if e.package))


def _is_index(url: str) -> bool:
    return not url.endswith((".deb", ".rpm"))


def _entry(path: Path, url: str, *, package: bool) -> CacheEntry:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return CacheEntry(h.hexdigest(), path.stat().st_size, url, package)


def _resolve(repo: Repo, to: str, names: tuple[str, ...], files: list[Path]) -> dict[str, Path]:
    """Resolve ``names`` and the package ``files`` against the commit's sources; return every
    http(s) file fetched (indexes and packages) by URL."""
    from layering.packages import peek_local

    kind = package_db_kind(repo, to)
    kind, installed = read_installed(repo, to, with_files=kind is PackageType.RPM)
    if kind is None:
        raise ComposeError(f"commit {to} has no package database to resolve packages against")
    fetcher = _Recording(repo_cache_dir(repo.tmp_dir))
    arch = image_arch(kind, installed)
    available, indexes = load_available(sources_from_commit(repo, to), fetcher, kind=kind,
                                        arch=arch)
    local = {p.sha256: p.meta for p in peek_local(files)}
    res = resolve(kind, arch, installed, available,
                  Request(install=names, install_local=tuple(local.values())), indexes,
                  repo.tmp_dir)
    for meta in res.install:
        if meta.checksum not in local:
            download(meta, fetcher)
    return fetcher.got


def _write_tar(out: Path, manifest: Manifest, superblock: bytes,
               members: list[tuple[str, Path]], writing: Stage) -> None:
    out = out.absolute()
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            with tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                _add(tar, MANIFEST, io.BytesIO(manifest.to_bytes()), len(manifest.to_bytes()))
                writing.advance(1, len(manifest.to_bytes()))
                _add(tar, SUPERBLOCK, io.BytesIO(superblock), len(superblock))
                writing.advance(1, len(superblock))
                for name, path in members:
                    with open(path, "rb") as src:
                        size = os.fstat(src.fileno()).st_size
                        _add(tar, name, src, size)
                    writing.advance(1, size)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
        fsync_dir(out.parent)
        writing.finish()
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _add(tar: tarfile.TarFile, name: str, f: io.BufferedIOBase | io.BytesIO, size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    tar.addfile(info, f)
