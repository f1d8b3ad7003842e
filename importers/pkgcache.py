"""The package cache: each package file imported once as its own commit under a cache ref.

Cache refs follow rpm-ostree's ``rpmostree/pkg/NAME/EVR.ARCH`` with strata's
prefix, each part escaped as rpm-ostree does (``[A-Za-z0-9.-]`` kept, ``_`` ->
``__``, any other byte -> ``_XX``)::

    refs/heads/strata/pkg/<NAME>/<EVR>.<ARCH>  ->  commit
        tree      the package's files as packaged (usr/bin/jq, etc/foo.conf)
        metadata  strata.package          JSON of PackageMeta (files, deps, scripts)
                  strata.package.sha256   sha256 of the package file (re-import skipped
                                          when it, the unpack version and owner map match)
                  strata.package.type     "deb" | "rpm"
                  strata.unpack-version   u32
                  strata.owners           digest of the name->id map used
                  strata.rpm.header       the rpm header blob (rpm only)

All packages of one call share one transaction: on any error no cache ref
moves and the staged objects are dropped (they live in the repository's tmp/).
The index (:mod:`importers.pkgindex`) lets a re-import skip hashing the file,
opening the package and reading the cache commit; it is only a hint, checked
against the ref, and rebuilt when lost.

The package readers (python-debian, libarchive) are imported lazily so that a
re-import of cached packages stays cheap.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from importers.errors import PackageFormatError
from importers.owners import OwnerMap
from importers.pkgindex import CacheHit, PackageIndex
from store.errors import ToolError
from store.faults import fail_point
from store.gvariant import Variant
from store.progress import ProgressFn, Stage
from store.repo import Repo

if TYPE_CHECKING:
    from importers.deb import DebPackage
    from importers.model import PackageMeta
    from importers.rpm import RpmPackage

    Package = DebPackage | RpmPackage

CACHE_PREFIX = "strata/pkg/"
UNPACK_PROCESSES = min(2, os.cpu_count() or 1)  # this one and, with two cores, a forked one
UNPACK_VERSION = 4  # 3: maintainer scripts kept byte for byte (not UTF-8 with replacements);
# 4: rpm OrderWithRequires kept (DepKind.ORDER, for the install order)
DEFAULT_CAP = 1 << 30  # payload.DEFAULT_CAP, without importing libarchive here
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-")


def escape_ref_part(text: str) -> str:
    """rpm-ostree's ref escaping: keep [A-Za-z0-9.-], ``_`` -> ``__``, other bytes -> ``_XX``."""
    out = []
    for byte in text.encode("utf-8"):
        if byte in _SAFE:
            out.append(chr(byte))
        elif byte == ord("_"):
            out.append("__")
        else:
            out.append(f"_{byte:02X}")
    return "".join(out)


def cache_ref(meta: PackageMeta) -> str:
    """The cache ref of a package: ``strata/pkg/NAME/EVR.ARCH``, parts escaped."""
    return (f"{CACHE_PREFIX}{escape_ref_part(meta.name)}/"
            f"{escape_ref_part(meta.evr)}.{escape_ref_part(meta.arch)}")


def open_package(path: Path, *, checksum: str = "") -> Package:
    """Open a .deb or .rpm by its magic bytes (not its name)."""
    from importers.deb import open_deb
    from importers.rpm import open_rpm

    try:
        with open(path, "rb") as f:
            magic = f.read(8)
    except OSError as e:
        raise PackageFormatError(f"cannot read package {path}: {e.strerror}") from e
    if magic.startswith(b"!<arch>\n"):
        return open_deb(path, checksum=checksum)
    if magic.startswith(b"\xed\xab\xee\xdb"):
        return open_rpm(path, checksum=checksum)
    raise PackageFormatError(f"not a .deb or .rpm package: {path.name}")


@dataclass(frozen=True)
class ImportResult:
    """What one package became: its cache ref, commit and file sha256; ``skipped`` on a hit.

    ``meta`` (the stored record) is loaded from the commit on first use.
    """

    ref: str
    commit: str
    sha256: str
    skipped: bool
    repo: Repo = field(repr=False, compare=False)

    @cached_property
    def meta(self) -> PackageMeta:
        """The package record stored in the cache commit."""
        return meta_of_commit(self.repo, self.commit)


def import_packages(repo: Repo, paths: Iterable[Path], *, owners: OwnerMap | None = None,
                    cap: int = DEFAULT_CAP,
                    progress: ProgressFn | None = None) -> list[ImportResult]:
    """Import package files into the cache, all or nothing.

    Guarantees: a package whose file checksum, unpack version and owner map match
    its existing cache commit is not unpacked again; otherwise its files are
    streamed into the store (bounded memory) and its cache ref points at a new
    commit. On error no ref moves and nothing remains outside ``repo/tmp``.
    ``progress`` hears stage ``unpack``: packages unpacked (cache hits are not
    counted), their file bytes; only this process reports.
    """
    owners = owners or OwnerMap()
    digest = owners.digest()
    paths = list(paths)
    index = PackageIndex.load(repo)
    try:
        shas = [index.sha256_of(p) for p in paths]
    except OSError as e:
        raise PackageFormatError(f"cannot read package {e.filename}: {e.strerror}") from e
    found: dict[str, ImportResult] = {}
    pkgs: dict[str, Package] = {}
    for path, sha in zip(paths, shas, strict=True):
        if sha in found or sha in pkgs:
            continue
        hit = _lookup(repo, index, sha, digest)
        if hit is None:
            pkgs[sha] = open_package(path, checksum=sha)
            hit = _cached(repo, index, cache_ref(pkgs[sha].meta), sha, digest)
        if hit is not None:
            pkgs.pop(sha, None)
            found[sha] = hit
    _check_distinct_refs(pkgs)
    unpacking = Stage(progress, "unpack", len(pkgs))
    if pkgs:
        with repo.transaction() as txn:
            for result in _unpack_all(repo, txn, list(pkgs.values()), owners, cap, unpacking):
                found[result.sha256] = result
                txn.set_ref(result.ref, result.commit)
            fail_point("pkgcache-before-refs")
    unpacking.finish()
    final = [found[sha] for sha in shas]
    for r in final:
        index.remember(r.sha256, CacheHit(r.ref, r.commit, UNPACK_VERSION, digest))
    index.save()
    return final


def _check_distinct_refs(pkgs: dict[str, Package]) -> None:
    seen: dict[str, str] = {}
    for pkg in pkgs.values():
        ref = cache_ref(pkg.meta)
        if ref in seen:
            raise PackageFormatError(
                f"{seen[ref]} and {pkg.label} are different files for the same package "
                f"{pkg.meta.nevra}")
        seen[ref] = pkg.label


def _unpack_all(repo: Repo, txn: Any, pkgs: list[Package], owners: OwnerMap,
                cap: int, counted: Stage) -> list[ImportResult]:
    """Unpack packages in this process and a forked one when there are two cores (threads
    would share one interpreter lock, and the per-file work is Python).  Both take the next
    package, largest first, from one queue until it is empty.  ``counted`` hears this
    process's packages as they end and the child's when it reports (the child never does)."""
    if min(len(pkgs), UNPACK_PROCESSES) <= 1 or len(pkgs) * _INDEX.size > _PIPE_CAPACITY:
        return [_counted(counted, pkg, _import_one(repo, txn, pkg, owners, cap))
                for pkg in pkgs]
    read, write = os.pipe()
    largest_first = sorted(range(len(pkgs)), key=lambda i: -pkgs[i].meta.size)
    os.write(write, b"".join(_INDEX.pack(i) for i in largest_first))
    os.close(write)
    done: dict[int, ImportResult] = {}
    try:
        with _Forked(repo, txn, pkgs, read, owners, cap) as child:
            for i in _queued(read):
                done[i] = _counted(counted, pkgs[i], _import_one(repo, txn, pkgs[i], owners, cap))
            txn.flush_soon()
            theirs = child.results()
            counted.advance(len(theirs), sum(pkgs[i].meta.size for i in theirs))
            done.update(theirs)
    finally:
        os.close(read)
    return [done[i] for i in range(len(pkgs))]


def _counted(counted: Stage, pkg: Package, result: ImportResult) -> ImportResult:
    counted.advance(1, pkg.meta.size)
    return result


_INDEX = struct.Struct("=I")
_PIPE_CAPACITY = 1 << 16  # the queue is written whole before anyone reads


def _queued(fd: int) -> Iterator[int]:
    """Package indexes from the shared queue (each read takes one whole record)."""
    while len(b := os.read(fd, _INDEX.size)) == _INDEX.size:
        yield _INDEX.unpack(b)[0]


def _portable(e: BaseException) -> BaseException | None:
    """``e`` if it survives pickling (to be raised again in the parent), else None."""
    import pickle

    try:
        again = pickle.loads(pickle.dumps(e))
    except Exception:  # noqa: BLE001 - exceptions whose __init__ pickle cannot call
        return None
    return again if type(again) is type(e) and str(again) == str(e) else None


class _Forked:
    """A forked process importing queued ``pkgs`` into the open transaction's staging directory.

    It reports what it staged and its results (or its error) through a pipe; the
    parent adopts them into the transaction, so the import stays all or nothing.
    """

    def __init__(self, repo: Repo, txn: Any, pkgs: list[Package], queue: int, owners: OwnerMap,
                 cap: int) -> None:
        self.repo, self.txn, self.pkgs, self.queue = repo, txn, pkgs, queue
        self.owners, self.cap = owners, cap
        self.pid = 0
        self.fd = -1

    def __enter__(self) -> _Forked:
        parent = os.getpid()
        read, write = os.pipe()
        try:
            self.pid = os.fork()
        except OSError:
            os.close(read)
            os.close(write)
            raise
        if self.pid == 0:
            os.close(read)
            self._child(parent, write)
        os.close(write)
        self.fd = read
        return self

    def _child(self, parent: int, fd: int) -> None:
        import pickle

        from store.run import die_with_parent

        status = 1
        try:
            die_with_parent(parent)
            fail_point("pkgcache-forked")
            before = self.txn.in_forked_child()
            out = []
            for i in _queued(self.queue):
                r = _import_one(self.repo, self.txn, self.pkgs[i], self.owners, self.cap)
                out.append((i, r.ref, r.commit, r.sha256, r.meta))
            data = pickle.dumps(("ok", out, self.txn.staged_since(before)))
            status = 0
        except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it
            data = pickle.dumps(("error", _portable(e), str(e) or type(e).__name__))
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        finally:
            os._exit(status)

    def results(self) -> dict[int, ImportResult]:
        """The child's results, its staged objects adopted; its error raised again here."""
        import pickle

        with os.fdopen(self.fd, "rb") as f:
            self.fd = -1
            data = f.read()
        _pid, status = os.waitpid(self.pid, 0)
        self.pid = 0
        try:
            kind, payload, extra = pickle.loads(data)
        except Exception:  # noqa: BLE001 - a child that died left nothing readable
            raise ToolError(f"the unpacking process died (wait status {status})") from None
        if kind != "ok":
            raise payload if isinstance(payload, BaseException) else ToolError(extra)
        self.txn.adopt(extra)
        out = {}
        for i, ref, commit, sha, meta in payload:
            out[i] = ImportResult(ref, commit, sha, skipped=False, repo=self.repo)
            out[i].__dict__["meta"] = meta
        return out

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)


def import_package(repo: Repo, path: Path, *, owners: OwnerMap | None = None,
                   cap: int = DEFAULT_CAP) -> ImportResult:
    """Import one package file; see :func:`import_packages`."""
    return import_packages(repo, [path], owners=owners, cap=cap)[0]


def _lookup(repo: Repo, index: PackageIndex, sha: str, digest: str) -> ImportResult | None:
    """The cache entry of a package file checksum, through the index's hint when it holds."""
    hint = index.hit(sha)
    if hint is None:
        return None
    if (hint.unpack_version == UNPACK_VERSION and hint.owners == digest
            and _read_ref(repo, hint.ref) == hint.commit):
        return ImportResult(hint.ref, hint.commit, sha, skipped=True, repo=repo)
    return _cached(repo, index, hint.ref, sha, digest)


def _read_ref(repo: Repo, ref: str) -> str | None:
    try:
        return repo.read_ref(ref)
    except ToolError:
        return None


def _cached(repo: Repo, index: PackageIndex, ref: str, sha: str,
            digest: str) -> ImportResult | None:
    """The entry under ``ref`` if its commit's metadata matches the file and this unpacker."""
    csum = _read_ref(repo, ref)
    if csum is None:
        return None
    md = repo.load_commit(csum).metadata
    if (_val(md, "strata.package.sha256") != sha
            or _val(md, "strata.unpack-version") != UNPACK_VERSION
            or _val(md, "strata.owners") != digest):
        return None
    index.remember(sha, CacheHit(ref, csum, UNPACK_VERSION, digest))
    return ImportResult(ref, csum, sha, skipped=True, repo=repo)


def _val(md: dict[str, Variant], key: str) -> object:
    v = md.get(key)
    return v.value if v is not None else None


def _import_one(repo: Repo, txn: Any, pkg: Package, owners: OwnerMap,
                cap: int) -> ImportResult:
    from importers.deb import DebPackage
    from importers.treewrite import write_deb_tree, write_rpm_tree
    from store.commit import write_commit

    if isinstance(pkg, DebPackage):
        (tree, meta_csum), meta = write_deb_tree(txn, pkg, owners, cap)
        timestamp, extra = 0, {}
    else:
        (tree, meta_csum), meta = write_rpm_tree(repo, txn, pkg, owners, cap)
        timestamp = pkg.header.number(1006)
        extra = {"strata.rpm.header": Variant("ay", pkg.header.blob)}
    metadata = {
        "strata.package": Variant("s", json.dumps(meta.to_dict(), sort_keys=True)),
        "strata.package.sha256": Variant("s", meta.checksum),
        "strata.package.type": Variant("s", str(meta.type)),
        "strata.unpack-version": Variant("u", UNPACK_VERSION),
        "strata.owners": Variant("s", owners.digest()),
        **extra,
    }
    commit = write_commit(txn, root_tree=tree, root_meta=meta_csum, parent=None,
                          subject=f"Import {meta.nevra}", timestamp=timestamp, metadata=metadata)
    result = ImportResult(cache_ref(meta), commit, meta.checksum, skipped=False, repo=repo)
    result.__dict__["meta"] = meta
    return result


def meta_of_commit(repo: Repo, csum: str) -> PackageMeta:
    """The package record stored in a cache commit's metadata."""
    from importers.model import PackageMeta

    md = repo.load_commit(csum).metadata
    text = _val(md, "strata.package")
    if not isinstance(text, str):
        raise PackageFormatError(f"commit {csum} is not a package cache commit")
    return PackageMeta.from_dict(json.loads(text))


def list_cached(repo: Repo) -> dict[str, str]:
    """Cache ref -> commit for every package in the cache."""
    return {r: c for r, c in repo.list_refs().items() if r.startswith(CACHE_PREFIX)}


def drop_unused(repo: Repo, used: set[str]) -> list[str]:
    """Delete the cache ref of every package whose NEVRA is not in ``used`` (an entry whose
    commit is unreadable goes too); return the refs deleted. Their objects go at the next
    prune; a later compose that needs one downloads and unpacks it again."""
    dropped = []
    for ref, csum in sorted(list_cached(repo).items()):
        try:
            nevra: str | None = meta_of_commit(repo, csum).nevra
        except ToolError:
            nevra = None
        if nevra not in used:
            repo.set_ref(ref, None)
            dropped.append(ref)
    return dropped


def lookup_many(repo: Repo, sha256s: Iterable[str], *,
                owners: OwnerMap | None = None) -> dict[str, ImportResult]:
    """The cache entries of the package files with these sha256s (the index is read once)."""
    index = PackageIndex.load(repo)
    digest = (owners or OwnerMap()).digest()
    found = {sha: _lookup(repo, index, sha, digest) for sha in set(sha256s)}
    index.save()
    return {sha: r for sha, r in found.items() if r is not None}
