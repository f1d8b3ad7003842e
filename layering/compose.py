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

import contextlib
import functools
import hashlib
import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from importers import package_db_kind, read_installed
from importers.aptsource import IndexFile
from importers.dpkgdb import DB_DIRS as DPKG_DB_DIRS
from importers.errors import FetchError
from importers.fetch import Fetcher, repo_cache_dir
from importers.model import PackageMeta, PackageType
from importers.owners import OwnerMap
from importers.pkgcache import ImportResult, lookup_many
from importers.pkgindex import file_sha256
from importers.rpmdb import DB_DIRS as RPM_DB_DIRS
from importers.sources import Sources, parse_spec, sources_from_commit
from layering import dpkgdb, rpmdbupdate
from layering.assemble import Assembler
from layering.convert import config_dir, to_ostree_layout
from layering.errors import ComposeError
from layering.hoststate import read_host, restore_image, show_host
from layering.imageclean import clean_image
from layering.packages import (
    Layer,
    LocalPackage,
    cached_local,
    download,
    import_local,
    load_available,
    materialize,
    peek_local,
    source_label,
)
from layering.resolve import Request, Resolution, resolve
from layering.scriptplan import plan_removal, plan_scripts
from layering.scripts import ScriptLog, ScriptRun, run_scripts
from layering.vartmpfiles import write_var_tmpfiles
from store.checkoutcache import CheckoutCache
from store.commit import write_commit
from store.errors import ToolError
from store.faults import fail_point
from store.gvariant import Variant
from store.mtree import MutableTree
from store.progress import ProgressFn, Stage
from store.repo import Repo
from store.txn import Transaction

INPUTHASH_KEY = "strata.inputhash"
KARGS_KEY = "strata.kargs"  # kernel arguments for deployments of the image (boot/deploy.py)
LEFT_OUT_KEY = "strata.left-out"  # the compose report's lines on removed run-dependent files


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
    version: str = ""  # the commit's ``version`` metadata (default: the base's)
    kargs: tuple[str, ...] = ()  # kernel arguments for deployments of the image
    client_layer: bool = False  # a host's own layer (rpm-ostree's clientlayer), not an image
    host_etc: Path | None = None  # the host's /etc: its users and identity, for the scripts
    reuse: str | None = None  # a commit returned as is when its input hash is this request's
    refuse_inactive: tuple[str, ...] = ()  # names refused when the base already provides them
    download_only: bool = False  # fill the package cache, commit nothing


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
    left_out: list[str] = field(default_factory=list)  # a line per class of removed files
    warnings: list[str] = field(default_factory=list)  # for the CLI to print

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
                       **({"client-layer": True} if request.client_layer else {}),
                       **_image_inputs(request)}}
    if request.host_etc is not None and not request.no_scripts:
        doc["host-users"] = read_host(request.host_etc).digest()
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _image_inputs(request: ComposeRequest) -> dict[str, object]:
    """The request's image-only inputs that change the commit, when given."""
    doc: dict[str, object] = {}
    if request.version:
        doc["version"] = request.version
    if request.subject:
        doc["subject"] = request.subject
    if request.kargs:
        doc["kargs"] = list(request.kargs)
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and not request.client_layer:
        doc["source-date-epoch"] = epoch
    return doc


def commit_timestamp(request: ComposeRequest, base_timestamp: int) -> int:
    """An image's commit time: ``SOURCE_DATE_EPOCH`` when set, else the base commit's,
    so that the same inputs give the same commit on any machine; a host's own layer
    keeps the current time."""
    if request.client_layer:
        return int(time.time())
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        return base_timestamp
    if not epoch.isascii() or not epoch.isdigit() or int(epoch) >= 2**63:
        raise ComposeError(f"SOURCE_DATE_EPOCH={epoch!r} is not a number of seconds "
                           "in the environment")
    return int(epoch)


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
        with Fetcher(repo_cache_dir(repo.tmp_dir), offline=request.offline,
                     read_only=request.dry_run) as fetcher:
            return _compose(repo, request, base, checkouts, fetcher, progress)
    finally:
        checkouts.cancel()  # a checkout nobody leased (no scripts, reuse, error) is not waited for


def _compose(repo: Repo, request: ComposeRequest, base: str, checkouts: CheckoutCache,
             fetcher: Fetcher, progress: ProgressFn | None) -> ComposeResult:
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
    arch = image_arch(kind, installed)
    available, indexes, uncached = _available(_sources(repo, base, request), fetcher, kind, arch)
    _check_kind(kind, [*local.values(), *replace.values()])
    try:
        resolution = resolve(kind, arch, installed, available, Request(
            install=request.install, install_local=tuple(r.meta for r in local.values()),
            remove=request.remove, replace_local=tuple(r.meta for r in replace.values()),
            no_recommends=request.no_recommends), indexes, fetcher.root.parent,
            fetcher.read_dirs("solv")[1:])
    except ToolError as e:
        if not uncached:
            raise
        raise ComposeError(f"{e} (with --offline, not cached: source "
                           f"{', '.join(uncached)})") from e
    _check_inactive(request, resolution)
    cached = lookup_many(repo, (p.checksum for p in resolution.install if p.checksum),
                         owners=owners)
    result = ComposeResult(None, base, kind, resolution, warnings=_stale(fetcher, indexes),
                           download_size=sum(p.size for p in resolution.install
                                             if p.checksum not in local
                                             and p.checksum not in cached),
                           growth=sum(p.installed_size for p in resolution.install)
                           - sum(p.installed_size for p in resolution.remove),
                           local_sha256=sorted(local), replace_sha256=sorted(replace))
    resolving.finish()
    ihash = input_hash(base, request, resolution, {**local, **replace})
    existing = _existing(repo, request.branch, ihash) or _existing_commit(repo, request.reuse,
                                                                          ihash)
    if existing is not None or request.dry_run:
        result.checksum, result.reused = existing, existing is not None
        if existing is not None:
            result.left_out = list(repo.load_commit(existing).meta_value(LEFT_OUT_KEY, []))
        return result
    imported = {s: r for s, r in {**local, **replace}.items() if isinstance(r, ImportResult)}
    result.layers = materialize(repo, resolution.install, imported, cached, fetcher, owners,
                                progress)
    if request.download_only:
        return result
    result.checksum = _build(repo, request, result, installed, ihash, fetcher, checkouts,
                             progress)
    return result


def _available(sources: Sources, fetcher: Fetcher, kind: PackageType, arch: str
               ) -> tuple[dict[str, list[PackageMeta]], dict[str, list[IndexFile]], list[str]]:
    """The catalogues of ``sources``. Offline, a source with nothing cached is left out
    (and named in the third item) instead of failing: the request may not need it."""
    if not fetcher.offline:
        return (*load_available(sources, fetcher, kind=kind, arch=arch), [])
    records: dict[str, list[PackageMeta]] = {}
    indexes: dict[str, list[IndexFile]] = {}
    uncached: list[str] = []
    one: list[Sources] = [Sources(apt=(a,)) for a in sources.apt]
    one += [Sources(rpmmd=(r,)) for r in sources.rpmmd]
    for src in one:
        try:
            recs, idx = load_available(src, fetcher, kind=kind, arch=arch)
        except FetchError:
            uncached += [source_label(x) for x in (*src.apt, *src.rpmmd)]
            continue
        for label, items in recs.items():
            records.setdefault(label, []).extend(items)
        for label, files in idx.items():
            indexes.setdefault(label, []).extend(files)
    return records, indexes, uncached


def _stale(fetcher: Fetcher, indexes: dict[str, list[IndexFile]]) -> list[str]:
    """When the network was unreachable and cached indexes served: one warning per source
    with the age of its index."""
    if not fetcher.went_offline:
        return []
    out = []
    now = time.time()
    for label, files in sorted(indexes.items()):
        stamps = [f.path.stat().st_mtime for f in files if f.path.exists()]
        if stamps:
            out.append(f"the network is unreachable; using the cached index of {label}, "
                       f"{_age(now - max(stamps))} old")
    return out or ["the network is unreachable; using cached indexes"]


def _age(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(max(seconds, 0))} seconds"


def _local(repo: Repo, paths: tuple[Path, ...], owners: OwnerMap,
           dry_run: bool) -> list[ImportResult] | list[LocalPackage]:
    """Local package files: imported into the cache, or only read for a dry run. An error
    names the file the user gave, not the cache's copy (``SHA256.deb``)."""
    if dry_run:
        return peek_local(paths)
    try:
        return import_local(repo, paths, owners)
    except ToolError as e:
        raise _renamed(e, paths) from e


def _renamed(e: ToolError, paths: tuple[Path, ...]) -> ToolError:
    """``e`` with each cached copy's name (``[DIR/]SHA256.EXT``) replaced by the path given."""
    text = str(e)
    for path in paths:
        with contextlib.suppress(OSError):
            copy = re.escape(file_sha256(path)) + r"\.(?:deb|rpm|pkg)"
            given = str(path)
            text = re.sub(r"\S*" + copy, lambda _m: given, text)  # noqa: B023 - used at once
    if text == str(e):
        return e
    try:
        return type(e)(text)
    except TypeError:
        return ComposeError(text)


def _check_kind(kind: PackageType, results: list[ImportResult | LocalPackage]) -> None:
    for r in results:
        if r.meta.type is not kind:
            raise ComposeError(f"cannot layer {r.meta.type} package {r.meta.nevra} "
                               f"onto an image whose package database is {kind}")


def _existing(repo: Repo, branch: str | None, ihash: str) -> str | None:
    return _existing_commit(repo, repo.read_ref(branch) if branch else None, ihash)


def _existing_commit(repo: Repo, csum: str | None, ihash: str) -> str | None:
    """``csum`` when it was composed from the same input hash."""
    if csum is None:
        return None
    return csum if repo.load_commit(csum).meta_value(INPUTHASH_KEY) == ihash else None


def _check_inactive(request: ComposeRequest, resolution: Resolution) -> None:
    """Refuse a newly requested package the base already provides (rpm-ostree's
    --allow-inactive guard), before anything is downloaded or written."""
    inactive = [n for n in request.refuse_inactive if n in resolution.satisfied_by_base]
    if inactive:
        raise ComposeError(f"package {', '.join(inactive)} is already provided by the base "
                           f"{request.base[:12]}; use --allow-inactive to request it anyway")


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
            asm.add_package(layer.meta, layer.commit, removed)
            assembling.advance()
        added = [layer.meta for layer in result.layers]
        _update_db(repo, txn, tree, result, added, asm, fetcher)
        assembling.finish()
        fail_point("compose-before-scripts")
        if not request.no_scripts:
            _scripts(repo, txn, tree, request, result, added, checkouts, postrm, progress)
        if not request.client_layer:  # a host's own layer keeps the host's identity
            result.left_out = clean_image(tree, txn).lines()
        write_var_tmpfiles(MutableTree.from_commit(repo, result.base), tree, txn, added,
                           asm.file_meta)
        committing = Stage(progress, "commit", 1)
        root_tree, root_meta = tree.write(txn)
        csum = write_commit(txn, root_tree=root_tree, root_meta=root_meta,
                            timestamp=commit_timestamp(request, base_commit.timestamp),
                            parent=result.base,
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


def _scripts(repo: Repo, txn: Transaction, tree: MutableTree, request: ComposeRequest,
             result: ComposeResult, added: list[PackageMeta], checkouts: CheckoutCache,
             postrm: list[ScriptRun], progress: ProgressFn | None) -> None:
    """Run the removed packages' postrm and the added ones' scripts, showing them the host's
    users and identity when known."""
    db = _find_dir(tree, DPKG_DB_DIRS, "status") or "var/lib/dpkg"
    runs = postrm + plan_scripts(result.kind, added, tree, db)
    view = None
    if runs and request.host_etc is not None:
        view = show_host(tree, txn, read_host(request.host_etc), config_dir(tree))
    scripts = Stage(progress, "scripts", len(runs))
    log = run_scripts(repo, txn, tree, runs, checkouts=checkouts, counted=scripts)
    result.script_log.entries.extend(log.entries)
    scripts.finish()
    if view is not None:
        restore_image(repo, tree, txn, view)


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
    if request.version:
        md["version"] = Variant("s", request.version)
    elif "version" in base_md:
        md["version"] = base_md["version"]
    inherited = list(base_md[KARGS_KEY].value) if KARGS_KEY in base_md else []
    kargs = list(dict.fromkeys([*inherited, *request.kargs]))
    if kargs:  # a host's layer and an image built on an image keep the base's
        md[KARGS_KEY] = Variant("as", kargs)
    if result.left_out:
        md[LEFT_OUT_KEY] = Variant("as", result.left_out)
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
