"""Compose a derived image: base commit + packages, resolved client-side, as a new commit.

Steps: read the base's package database; gather catalogues (``--source`` or
the image's own configuration) and local files; resolve with libsolv; if the
branch already holds a commit with the same input hash, return it; otherwise
materialize every package in the cache (downloaded and unpacked once), merge
their trees into the base at the object level, update the package database,
run maintainer scripts in a sandbox when there are any, and commit — all in
one transaction: on any failure nothing is committed.  The checkout the
scripts' sandbox needs is started at once on the spare core (a speculative
checkout of the base, :meth:`CheckoutCache.prepare`) when none is kept.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from importers import package_db_kind, read_installed
from importers.dpkgdb import DB_DIRS as DPKG_DB_DIRS
from importers.fetch import Fetcher, repo_cache_dir
from importers.model import PackageMeta, PackageType
from importers.owners import OwnerMap
from importers.pkgcache import ImportResult, lookup_many
from importers.rpmdb import DB_DIRS as RPM_DB_DIRS
from importers.sources import Sources, parse_spec, sources_from_commit
from layering import dpkgdb, rpmdbupdate
from layering.assemble import Assembler
from layering.convert import config_dir, to_ostree_layout
from layering.errors import ComposeError
from layering.packages import (
    Layer,
    LocalPackage,
    cached_local,
    download,
    import_local,
    load_available,
    materialize,
    peek_local,
)
from layering.resolve import Request, Resolution, resolve
from layering.scriptplan import plan_removal, plan_scripts
from layering.scripts import ScriptLog, ScriptRun, run_scripts
from store.checkoutcache import CheckoutCache
from store.commit import write_commit
from store.faults import fail_point
from store.gvariant import Variant
from store.mtree import MutableTree
from store.progress import ProgressFn, Stage
from store.repo import Repo
from store.txn import Transaction

INPUTHASH_KEY = "strata.inputhash"


@dataclass(frozen=True)
class ComposeRequest:
    """Everything ``compose`` is asked: base, branch and the package request."""

    base: str
    branch: str | None = None
    install: tuple[str, ...] = ()
    install_local: tuple[Path, ...] = ()
    remove: tuple[str, ...] = ()
    replace_local: tuple[Path, ...] = ()
    sources: tuple[str, ...] = ()
    source_set: Sources | None = None
    no_scripts: bool = False
    offline: bool = False
    no_recommends: bool = False
    dry_run: bool = False
    subject: str = ""
    client_layer: bool = False  # a host's own layer (rpm-ostree's clientlayer), not an image


@dataclass
class ComposeResult:
    """The new (or reused) commit and what went into it."""

    checksum: str | None
    base: str
    kind: PackageType
    resolution: Resolution
    reused: bool = False
    layers: list[Layer] = field(default_factory=list)
    script_log: ScriptLog = field(default_factory=ScriptLog)
    download_size: int = 0
    growth: int = 0
    local_sha256: list[str] = field(default_factory=list)
    replace_sha256: list[str] = field(default_factory=list)

    @property
    def downloaded(self) -> int:
        return sum(1 for layer in self.layers if layer.downloaded)

    @property
    def unpacked(self) -> int:
        return sum(1 for layer in self.layers if layer.unpacked)


def image_arch(kind: PackageType, installed: list[PackageMeta]) -> str:
    """The image's native architecture: its most common non-``all``/``noarch`` package arch."""
    arches = Counter(p.arch for p in installed if p.arch not in ("all", "noarch", ""))
    if arches:
        return arches.most_common(1)[0][0]
    return "amd64" if kind is PackageType.DEB else "x86_64"


def input_hash(base: str, request: ComposeRequest, resolution: Resolution,
               local: dict[str, object]) -> str:
    """sha256 over the base, the resolved package checksums and the request."""
    doc = {"base": base, "packages": sorted(p.checksum or p.nevra for p in resolution.install),
           "remove": sorted(p.nevra for p in resolution.remove),
           "request": {"install": sorted(request.install), "local": sorted(local),
                       "remove": sorted(request.remove), "no-scripts": request.no_scripts,
                       "no-recommends": request.no_recommends,
                       **({"client-layer": True} if request.client_layer else {})}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _sources(repo: Repo, base: str, request: ComposeRequest) -> Sources:
    """``--source`` specs, else the given source set, else the image's own configuration."""
    if request.sources:
        src = Sources()
        for spec in request.sources:
            src = src + parse_spec(spec)
        return src
    if request.source_set is not None:
        return request.source_set
    return sources_from_commit(repo, base)


def compose(repo: Repo, request: ComposeRequest, *,
            progress: ProgressFn | None = None) -> ComposeResult:
    """Build base + packages as a new commit on ``request.branch``; see the module docstring.

    ``progress`` hears the stages resolve, download, unpack, assemble, scripts, commit
    (the last four only when a new commit is built)."""
    base = repo.resolve(request.base)
    checkouts = CheckoutCache(repo)
    if not request.dry_run and not request.no_scripts:
        base_commit = repo.load_commit(base)
        checkouts.prepare((base_commit.root_tree, base_commit.root_meta))
    try:
        return _compose(repo, request, base, checkouts, progress)
    finally:
        checkouts.cancel()  # a checkout nobody leased (no scripts, reuse, error) is not waited for


def _compose(repo: Repo, request: ComposeRequest, base: str,
             checkouts: CheckoutCache, progress: ProgressFn | None) -> ComposeResult:
    resolving = Stage(progress, "resolve", 1)
    # rpm file dependencies need the file lists up front; dpkg's are read when needed
    kind, installed = read_installed(
        repo, base, with_files=package_db_kind(repo, base) is PackageType.RPM)
    if kind is None:
        raise ComposeError(f"base {request.base} has no package database "
                           "(dpkg status or rpmdb.sqlite) to layer onto")
    owners = OwnerMap.from_commit(repo, base)
    local = {r.sha256: r for r in _local(repo, request.install_local, owners, request.dry_run)}
    replace = {r.sha256: r for r in _local(repo, request.replace_local, owners, request.dry_run)}
    fetcher = Fetcher(repo_cache_dir(repo.tmp_dir), offline=request.offline)
    arch = image_arch(kind, installed)
    available, indexes = load_available(_sources(repo, base, request), fetcher, kind=kind,
                                        arch=arch)
    _check_kind(kind, [*local.values(), *replace.values()])
    resolution = resolve(kind, arch, installed, available, Request(
        install=request.install, install_local=tuple(r.meta for r in local.values()),
        remove=request.remove, replace_local=tuple(r.meta for r in replace.values()),
        no_recommends=request.no_recommends), indexes, repo.tmp_dir)
    cached = lookup_many(repo, (p.checksum for p in resolution.install if p.checksum),
                         owners=owners)
    result = ComposeResult(None, base, kind, resolution,
                           download_size=sum(p.size for p in resolution.install
                                             if p.checksum not in local
                                             and p.checksum not in cached),
                           growth=sum(p.installed_size for p in resolution.install)
                           - sum(p.installed_size for p in resolution.remove),
                           local_sha256=sorted(local), replace_sha256=sorted(replace))
    resolving.finish()
    ihash = input_hash(base, request, resolution, {**local, **replace})
    existing = _existing(repo, request.branch, ihash)
    if existing is not None or request.dry_run:
        result.checksum, result.reused = existing, existing is not None
        return result
    result.layers = materialize(repo, resolution.install, {**local, **replace}, cached, fetcher,
                                owners, progress)
    result.checksum = _build(repo, request, result, installed, ihash, fetcher, checkouts,
                             progress)
    return result


def _local(repo: Repo, paths: tuple[Path, ...], owners: OwnerMap,
           dry_run: bool) -> list[ImportResult] | list[LocalPackage]:
    """Local package files: imported into the cache, or only read for a dry run."""
    return peek_local(paths) if dry_run else import_local(repo, paths, owners)


def _check_kind(kind: PackageType, results: list) -> None:  # type: ignore[type-arg]
    for r in results:
        if r.meta.type is not kind:
            raise ComposeError(f"cannot layer {r.meta.type} package {r.meta.nevra} "
                               f"onto an image whose package database is {kind}")


def _existing(repo: Repo, branch: str | None, ihash: str) -> str | None:
    head = repo.read_ref(branch) if branch else None
    if head is None:
        return None
    return head if repo.load_commit(head).meta_value(INPUTHASH_KEY) == ihash else None


def _find_dir(tree: MutableTree, candidates: tuple[str, ...], marker: str) -> str | None:
    for d in candidates:
        node = tree.lookup(d)
        if isinstance(node, MutableTree) and marker in node.files:
            return d
    return None


def _build(repo: Repo, request: ComposeRequest, result: ComposeResult,
           installed: list[PackageMeta], ihash: str, fetcher: Fetcher,
           checkouts: CheckoutCache, progress: ProgressFn | None) -> str:
    res = result.resolution
    assembling = Stage(progress, "assemble", len(res.remove) + len(result.layers))
    base_commit = repo.load_commit(result.base)
    with repo.transaction() as txn:
        tree = MutableTree.from_commit(repo, result.base)
        to_ostree_layout(tree, txn)
        with_files = functools.cache(lambda: _with_files(repo, result, installed))
        asm = Assembler(repo, tree, result.kind, installed, file_lists=with_files)
        removed = {p.name for p in res.remove}
        kept = {p.name for p in installed} - removed
        full = {p.name: p for p in with_files()} if res.remove else {}
        postrm = _run_prerm(repo, txn, tree, request, result, checkouts)
        for pkg in res.remove:
            asm.remove_package(full.get(pkg.name, pkg), kept)
            assembling.advance()
        for layer in result.layers:
            asm.add_package(layer.meta, layer.commit, txn, removed)
            assembling.advance()
        asm.write_tmpfiles(txn)
        added = [layer.meta for layer in result.layers]
        _update_db(repo, txn, tree, result, added, asm, fetcher)
        assembling.finish()
        fail_point("compose-before-scripts")
        if not request.no_scripts:
            db = _find_dir(tree, DPKG_DB_DIRS, "status") or "var/lib/dpkg"
            runs = postrm + plan_scripts(result.kind, added, tree, db)
            scripts = Stage(progress, "scripts", len(runs))
            log = run_scripts(repo, txn, tree, runs, checkouts=checkouts, counted=scripts)
            result.script_log.entries.extend(log.entries)
            scripts.finish()
        committing = Stage(progress, "commit", 1)
        root_tree, root_meta = tree.write(txn)
        csum = write_commit(txn, root_tree=root_tree, root_meta=root_meta,
                            timestamp=int(time.time()), parent=result.base,
                            subject=request.subject or _subject(res),
                            metadata=_metadata(request, result, base_commit.metadata, ihash))
        if request.branch:
            txn.set_ref(request.branch, csum)
    committing.finish()
    return csum


def _run_prerm(repo: Repo, txn: Transaction, tree: MutableTree, request: ComposeRequest,
               result: ComposeResult, checkouts: CheckoutCache) -> list[ScriptRun]:
    """Run ``prerm remove`` of the base packages being removed (not replaced), over the
    tree that still holds their files; return their ``postrm remove`` runs for later."""
    replaced = {layer.meta.name for layer in result.layers
                if layer.sha256 in result.replace_sha256}
    gone = [p for p in result.resolution.remove if p.name not in replaced]
    if request.no_scripts or not gone:
        return []
    db = _find_dir(tree, DPKG_DB_DIRS, "status") or "var/lib/dpkg"

    def read(path: str) -> bytes | None:
        node = tree.lookup(path)
        return repo.load_file(node)[1] if isinstance(node, str) else None

    prerm, postrm = plan_removal(result.kind, gone, db, read)
    log = run_scripts(repo, txn, tree, prerm, checkouts=checkouts)
    result.script_log.entries.extend(log.entries)
    return postrm


def _with_files(repo: Repo, result: ComposeResult,
                installed: list[PackageMeta]) -> list[PackageMeta]:
    """The installed packages with their file lists (read from the base only when needed)."""
    if any(p.files for p in installed):
        return installed
    return read_installed(repo, result.base)[1]


def _update_db(repo: Repo, txn: Transaction, tree: MutableTree, result: ComposeResult,
               added: list[PackageMeta], asm: Assembler, fetcher: Fetcher) -> None:
    res = result.resolution
    if result.kind is PackageType.DEB:
        db = _find_dir(tree, DPKG_DB_DIRS, "status")
        if db is not None:
            dpkgdb.update(repo, txn, tree, db, add=added, remove=list(res.remove),
                          taken_over=asm.taken_over, etc_dir=config_dir(tree))
        return
    db = _find_dir(tree, RPM_DB_DIRS, "rpmdb.sqlite")
    if db is not None:
        files = [_package_file(repo, layer, fetcher) for layer in result.layers]
        rpmdbupdate.update(repo, txn, tree, db, add=files, remove=[p.name for p in res.remove])


def _package_file(repo: Repo, layer: Layer, fetcher: Fetcher) -> Path:
    try:
        return cached_local(repo, layer.sha256)
    except ComposeError:
        return download(layer.entry or layer.meta, fetcher)


def _subject(res: Resolution) -> str:
    parts = []
    if res.install:
        parts.append(f"+{len(res.install)}")
    if res.remove:
        parts.append(f"-{len(res.remove)}")
    return f"strata compose: {' '.join(parts) or 'no changes'} packages"


def _metadata(request: ComposeRequest, result: ComposeResult, base_md: dict[str, Variant],
              ihash: str) -> dict[str, Variant]:
    res = result.resolution
    replaced = {layer.meta.name for layer in result.layers if layer.sha256 in result.replace_sha256}
    md: dict[str, Variant] = {}
    if "version" in base_md:
        md["version"] = base_md["version"]
    md.update({
        "strata.base-commit": Variant("s", result.base),
        "strata.package-type": Variant("s", str(result.kind)),
        "strata.request": Variant("s", json.dumps({
            "install": list(request.install), "remove": list(request.remove),
            "local": sorted(result.local_sha256),
        }, sort_keys=True)),
        "rpmostree.packages": Variant("as", [p.nevra for p in res.install]),
        "rpmostree.removed-base-packages": Variant("as", [p.nevra for p in res.remove
                                                          if p.name not in replaced]),
        "rpmostree.replaced-base-packages": Variant("as", [p.nevra for p in res.remove
                                                           if p.name in replaced]),
        "strata.satisfied-by-base": Variant("as", list(res.satisfied_by_base)),
        INPUTHASH_KEY: Variant("s", ihash),
    })
    if request.client_layer:
        md["rpmostree.clientlayer"] = Variant("b", True)
    if request.branch:
        md["ostree.ref-binding"] = Variant("as", [request.branch])
    return md
