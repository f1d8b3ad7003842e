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
from importers.errors import FetchError
from importers.fetch import Fetcher, repo_cache_dir
from importers.model import PackageMeta, PackageType
from importers.owners import OwnerMap
from importers.pkgcache import ImportResult, lookup_many
from importers.pkgindex import file_sha256
from importers.sources import Sources
from layering.assemble import Assembler
from layering.composedb import update_db
from layering.composekey import LEFT_OUT_KEY
from layering.composerequest import ComposeRequest, image_inputs, source_list
from layering.composescripts import (
    finish_upgrades,
    place_packages,
    run_configure,
    run_prerm,
    run_prerm_upgrade,
)
from layering.convert import to_ostree_layout
from layering.debupgrade import Unpacking, find_upgrades, leaving, old_versions
from layering.errors import ComposeError
from layering.hoststate import HostSession, HostState, read_host
from layering.imageclean import clean_image
from layering.packages import (
    Layer,
    LocalPackage,
    import_local,
    load_available,
    materialize,
    peek_local,
    source_label,
)
from layering.resolve import Request, Resolution, resolve
from layering.scriptplan import unpack_order
from layering.scripts import ScriptLog
from layering.vartmpfiles import write_var_tmpfiles
from store.checkoutcache import CheckoutCache
from store.commit import write_commit
from store.errors import ToolError
from store.faults import fail_point
from store.gvariant import Variant
from store.mtree import MutableTree
from store.progress import ProgressFn, Stage
from store.repo import Repo

INPUTHASH_KEY = "strata.inputhash"
KARGS_KEY = "strata.kargs"  # kernel arguments for deployments of the image (boot/deploy.py)


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
               local: dict[str, object], host: HostState | None = None) -> str:
    """sha256 over the base, the resolved package checksums, the request and the host's
    user database the scripts will see (``host``)."""
    doc = {"base": base, "packages": sorted(p.checksum or p.nevra for p in resolution.install),
           "remove": sorted(p.nevra for p in resolution.remove),
           "request": {"install": sorted(request.install), "local": sorted(local),
                       "remove": sorted(request.remove), "no-scripts": request.no_scripts,
                       "no-recommends": request.no_recommends,
                       **({"client-layer": True} if request.client_layer else {}),
                       **image_inputs(request)}}
    if host is not None:
        doc["host-users"] = host.digest()
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


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


def compose(repo: Repo, request: ComposeRequest, *, progress: ProgressFn | None = None,
            fetcher: Fetcher | None = None) -> ComposeResult:
    """Build base + packages as a new commit on ``request.branch``; see the module docstring.

    ``progress`` hears the stages resolve, download, unpack, assemble, scripts, commit
    (the last four only when a new commit is built).  ``fetcher``: the caller's (whose
    snapshot of the sources the compose then uses), else one of its own."""
    base = repo.resolve(request.base)
    checkouts = CheckoutCache(repo)
    if not request.dry_run and not request.no_scripts:
        base_commit = repo.load_commit(base)
        checkouts.prepare((base_commit.root_tree, base_commit.root_meta))
    try:
        if fetcher is not None:
            return _compose(repo, request, base, checkouts, fetcher, progress)
        with Fetcher(repo_cache_dir(repo.tmp_dir), offline=request.offline,
                     read_only=request.dry_run) as own:
            return _compose(repo, request, base, checkouts, own, progress)
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
    available, indexes, uncached = _available(source_list(repo, base, request), fetcher, kind, arch)
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
    # read once: the input hash and the scripts see the same host
    host = (read_host(request.host_etc)
            if request.host_etc is not None and not request.no_scripts else None)
    ihash = input_hash(base, request, resolution, {**local, **replace}, host)
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
                             progress, host)
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


def _build(repo: Repo, request: ComposeRequest, result: ComposeResult,
           installed: list[PackageMeta], ihash: str, fetcher: Fetcher,
           checkouts: CheckoutCache, progress: ProgressFn | None,
           host_state: HostState | None) -> str:
    res = result.resolution
    assembling = Stage(progress, "assemble", len(res.remove) + len(result.layers))
    base_commit = repo.load_commit(result.base)
    with repo.transaction() as txn:
        tree = MutableTree.from_commit(repo, result.base)
        to_ostree_layout(tree, txn)
        with_files = functools.cache(lambda: _with_files(repo, result, installed))
        asm = Assembler(repo, tree, result.kind, installed, file_lists=with_files)
        kept = {p.name for p in installed} - {p.name for p in res.remove}
        full = {p.name: p for p in with_files()} if res.remove else {}
        later = _upgraded(result)  # placed over, then removed (after %post with scripts)
        if result.kind is PackageType.RPM and not request.no_scripts:
            later |= {p.name for p in res.remove}  # rpm erases after every install
        rpm_db = functools.cache(lambda: _rpm_installed(repo, result.base, kept | later))
        host = HostSession(host_state) if host_state is not None else None
        ups = find_upgrades(result.kind, [full.get(p.name, p) for p in res.remove],
                            [layer.meta for layer in result.layers])  # dpkg's upgrade
        replaced = old_versions(ups)  # name -> the version each upgrade replaces
        postrm, up_postrm = [], Unpacking()
        if not request.no_scripts and result.kind is PackageType.DEB:
            postrm = run_prerm(repo, txn, tree, result.kind,
                               [p for p in _gone(result) if p.name not in ups], checkouts,
                               result.script_log)
            up_postrm = run_prerm_upgrade(repo, txn, tree, list(ups.values()), checkouts,
                                          result.script_log)
        for pkg in res.remove:
            if pkg.name not in later and pkg.name not in ups:
                asm.remove_package(full.get(pkg.name, pkg), kept)
            assembling.advance()
        preinst_done = place_packages(repo, txn, asm, result.layers,
                                      {p.name for p in res.remove},
                                      scripts=not request.no_scripts, checkouts=checkouts,
                                      log=result.script_log, host=host,
                                      assembling=assembling, rpm_db=rpm_db,
                                      old=replaced)
        obsolete = finish_upgrades(repo, txn, asm, list(ups.values()), kept, up_postrm,
                                   checkouts=checkouts, log=result.script_log, host=host)
        added = [layer.meta for layer in result.layers]
        for old in (p for p in res.remove if p.name in later and request.no_scripts):
            from layering.rpmtrans import leaving as rpm_leaving

            asm.remove_package(rpm_leaving(full.get(old.name, old), added), kept)
        activations = update_db(
            repo, txn, asm, result.layers, list(res.remove), fetcher,
            added=unpack_order(added, request.install), obsolete=obsolete,
            leaving=leaving([full.get(p.name, p) for p in res.remove], ups))
        assembling.finish()
        fail_point("compose-before-scripts")
        if not request.no_scripts:
            base = [p for p in installed if p.name in kept | later]
            run_configure(repo, txn, tree, result.kind, added, postrm,
                          activations=activations, preinst_done=preinst_done,
                          checkouts=checkouts, log=result.script_log, host=host,
                          progress=progress, base=(base, rpm_db), removed=later,
                          remove=lambda p: asm.remove_package(p, kept | {a.name for a in added}),
                          old=replaced)
        result.warnings += asm.warnings
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


def _rpm_installed(repo: Repo, base: str, names: set[str]) -> list[PackageMeta]:
    """The base's rpm packages named ``names``, with file lists, in database order."""
    from importers import rpmdb  # the rpm modules load only for rpm images

    return [p for p in rpmdb.read_installed(repo, base, db_order=True) if p.name in names]


def _gone(result: ComposeResult) -> list[PackageMeta]:
    """The base packages being removed, not replaced by a local package (nor, on rpm
    images, upgraded: :func:`_upgraded`)."""
    replaced = {layer.meta.name for layer in result.layers
                if layer.sha256 in result.replace_sha256} | _upgraded(result)
    return [p for p in result.resolution.remove if p.name not in replaced]


def _upgraded(result: ComposeResult) -> set[str]:
    """rpm images: the base packages an added package of the same name upgrades, whose
    removal runs as ``rpm -U`` erases them (:mod:`layering.rpmtrans`)."""
    if result.kind is not PackageType.RPM:
        return set()
    return {p.name for p in result.resolution.remove} & {x.meta.name for x in result.layers}


def _with_files(repo: Repo, result: ComposeResult,
                installed: list[PackageMeta]) -> list[PackageMeta]:
    """The installed packages with their file lists (read from the base only when needed)."""
    if any(p.files for p in installed):
        return installed
    return read_installed(repo, result.base)[1]


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
    replaced |= set(find_upgrades(result.kind, res.remove, res.install))  # apt's upgrades too
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
