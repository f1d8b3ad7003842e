"""The rpm-ostree-style client: package requests kept in the origin, re-applied on every base.

Every command starts from the default deployment: its origin says which base
it follows (``[origin] refspec`` or, once packages are layered,
``baserefspec``) and what the user asked for (``[packages] requested``,
``requested-local=SHA256:NEVRA``, ``[overrides] remove``, ``replace-local``).
The new request is composed onto the chosen base commit (:mod:`layering.compose`,
sources read from the default deployment's merged ``/etc``) and deployed
beside the existing deployments (:mod:`boot.deploy`); the running and default
deployments are never written.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from boot.deploy import LOCK_WAIT, DeployResult
from boot.deployment import Deployment
from boot.etcmerge import EtcMergePlan
from boot.mountns import ensure_writable
from boot.origin import Origin
from boot.stage import StageMode, stage_or_deploy
from boot.sysroot import Sysroot, SysrootState
from importers.sources import sources_from_dir
from layering.compose import ComposeRequest, ComposeResult, compose
from layering.errors import ComposeError
from layering.packages import cached_local, peek_local
from store.progress import ProgressFn
from store.refs import split_refspec
from store.replication.pullcheck import DowngradeError, Floor, check_not_older
from store.repo import Repo

ORIGIN, PACKAGES, OVERRIDES = "origin", "packages", "overrides"
NO_UPDATE_EXIT = 77


class NoUpdate(ComposeError):
    """``upgrade --check`` found nothing newer (exit 77, as rpm-ostree)."""

    exit_code = NO_UPDATE_EXIT


@dataclass(frozen=True)
class ClientRequest:
    """One client command's change to the default deployment's request."""

    install: tuple[str, ...] = ()
    install_local: tuple[Path, ...] = ()
    uninstall: tuple[str, ...] = ()
    override_remove: tuple[str, ...] = ()
    override_replace: tuple[Path, ...] = ()
    override_reset: tuple[str, ...] = ()
    rebase: str | None = None
    upgrade: bool = False
    dry_run: bool = False
    no_scripts: bool = False
    offline: bool = False
    allow_downgrade: bool = False
    no_recommends: bool = False  # this composition only; not kept in the origin
    idempotent: bool = False  # a package already requested is no error
    allow_inactive: bool = False  # a package the base already provides may be requested
    download_only: bool = False  # fill the package cache; deploy nothing
    cache_only: bool = False  # rpm-ostree's name for offline: no network, cached data only
    version: str | None = None  # with rebase: the commit of the ref's history with this version
    stage: StageMode = StageMode.AUTO  # on a booted host: finalize at shutdown (rpm-ostree)
    progress: ProgressFn | None = field(default=None, compare=False, repr=False)


@dataclass
class ClientResult:
    """What a client command did (or would do, with ``dry_run``)."""

    base: str
    target: str | None
    origin: Origin
    compose: ComposeResult | None = None
    deployed: DeployResult | None = None
    etc_plan: EtcMergePlan | None = None
    pulled: list[str] = field(default_factory=list)
    no_upgrade: bool = False  # an upgrade found the same base and the same packages
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Layering:
    """The package request an origin holds."""

    refspec: str
    requested: tuple[str, ...] = ()
    local: tuple[str, ...] = ()
    removes: tuple[str, ...] = ()
    replaces: tuple[str, ...] = ()
    override_commit: str | None = None  # a commit of the ref kept until an upgrade moves on

    @property
    def layered(self) -> bool:
        return bool(self.requested or self.local or self.removes or self.replaces)

    @classmethod
    def of(cls, origin: Origin) -> Layering:
        if not origin.refspec:
            raise ComposeError("the default deployment's origin has no refspec")
        return cls(origin.refspec, tuple(origin.requested_packages),
                   tuple(origin.requested_local_packages), tuple(origin.removed_base_packages),
                   tuple(origin.replaced_local_packages), origin.override_commit)

    def to_origin(self, old: Origin) -> Origin:
        key, other = ("baserefspec", "refspec") if self.layered else ("refspec", "baserefspec")
        o = old.with_value(ORIGIN, key, self.refspec).with_value(ORIGIN, other, None)
        o = o.with_value(ORIGIN, "override-commit", self.override_commit)
        o = o.with_list(PACKAGES, "requested", sorted(self.requested))
        o = o.with_list(PACKAGES, "requested-local", sorted(self.local))
        o = o.with_list(OVERRIDES, "remove", sorted(self.removes))
        return o.with_list(OVERRIDES, "replace-local", sorted(self.replaces))


def _name_of_local(entry: str) -> str:
    """``SHA256:NEVRA`` -> package name (NEVRA as strata writes it: NAME-EVR.ARCH)."""
    nevra = entry.split(":", 1)[1] if ":" in entry else entry
    name_evr = nevra.rsplit(".", 1)[0]
    parts = name_evr.split("-")
    for i in range(1, len(parts)):
        if parts[i][:1].isdigit() or ":" in parts[i]:
            return "-".join(parts[:i])
    return parts[0]


def _local_entries(paths: tuple[Path, ...], fresh: dict[str, Path]) -> list[str]:
    """``SHA256:NEVRA`` origin entries of local package files; their paths go into ``fresh``
    (they are copied into the cache by the compose, never by a dry run)."""
    out = []
    for pkg, path in zip(peek_local(paths), paths, strict=True):
        fresh[pkg.sha256] = path
        out.append(f"{pkg.sha256}:{pkg.meta.nevra}")
    return out


def _package_file(repo: Repo, entry: str, fresh: dict[str, Path]) -> Path:
    """The file of an origin's local entry: the one just given, else the cached copy."""
    sha = entry.split(":", 1)[0]
    return fresh.get(sha) or cached_local(repo, sha)


def _already(what: str, req: ClientRequest) -> None:
    if not req.idempotent:
        raise ComposeError(f"package {what} is already requested in the default deployment; "
                           "use --idempotent to ignore this")


def _edit(lay: Layering, req: ClientRequest, fresh: dict[str, Path]) -> Layering:
    requested = [n for n in lay.requested]
    local = list(lay.local)
    for name in req.uninstall:
        if name in requested:
            requested.remove(name)
        elif any(_name_of_local(e) == name for e in local):
            local = [e for e in local if _name_of_local(e) != name]
        else:
            raise ComposeError(f"package {name} is not requested in the default deployment")
    for name in req.install:
        if name in requested:
            _already(name, req)
        else:
            requested.append(name)
    for path, entry in zip(req.install_local, _local_entries(req.install_local, fresh),
                           strict=True):
        if entry in local:
            _already(str(path), req)
        else:
            local.append(entry)
    removes = [n for n in lay.removes if n not in req.override_reset]
    removes += [n for n in req.override_remove if n not in removes]
    replaces = [e for e in lay.replaces if _name_of_local(e) not in req.override_reset]
    replaces += _local_entries(req.override_replace, fresh)
    for name in req.override_reset:
        if name not in lay.removes and not any(_name_of_local(e) == name for e in lay.replaces):
            raise ComposeError(f"no override of package {name} to reset")
    return Layering(req.rebase or lay.refspec, tuple(requested), tuple(local), tuple(removes),
                    tuple(replaces), lay.override_commit)


def base_of(repo: Repo, csum: str) -> str:
    """The base commit of a deployment's commit: the ``strata.base-commit`` of a host's own
    layer (``rpmostree.clientlayer``), else the commit itself, which is then a base
    image, or an image composed elsewhere and pulled as a whole."""
    commit = repo.load_commit(csum)
    base = commit.meta_value("strata.base-commit")
    layer = commit.meta_value("rpmostree.clientlayer")
    return base if isinstance(base, str) and layer else csum


def _pull(sysroot: Sysroot, refspec: str, *, allow_downgrade: bool = False,
          floor: Floor | None = None, progress: ProgressFn | None = None) -> bool:
    remote, ref = split_refspec(refspec)
    if remote is None:
        return False
    from store.replication.pull import pull

    pull(sysroot.repo_path, remote, [ref], allow_downgrade=allow_downgrade, not_older_than=floor,
         progress=progress)
    return True


def deployment_floor(sysroot: Sysroot, repo: Repo) -> Floor | None:
    """The base commit a new base must not be older than: the booted deployment's, else
    (no deployment of this sysroot is booted) the default deployment's; None without any
    (or when that base commit is no longer in the repository)."""
    from store.objects import ObjectType

    state = sysroot.load()
    d = state.booted or state.default
    if d is None:
        return None
    base = base_of(repo, d.checksum)
    if not repo.has(base, ObjectType.COMMIT):
        return None
    which = "booted" if state.booted is not None else "default"
    return Floor(base, repo.load_commit(base).timestamp, f"the base of the {which} deployment")


def check_not_downgrade(sysroot: Sysroot, repo: Repo, csum: str, what: str) -> None:
    """Raise DowngradeError when the base of commit ``csum`` is older than the booted (else
    the default) deployment's base, as rpm-ostree refuses without --allow-downgrade."""
    base = base_of(repo, csum)
    check_not_older(deployment_floor(sysroot, repo), base, repo.load_commit(base).timestamp, what)


def _default(sysroot: Sysroot) -> Deployment:
    """The deployment a request changes: the staged one (as rpm-ostree), else the default."""
    d = sysroot.load().next
    if d is None:
        raise ComposeError(f"no deployment in {sysroot.path}; deploy a base image first")
    return d


def check_upgrade(sysroot: Sysroot, *, allow_downgrade: bool = False) -> tuple[str, str]:
    """(current base, newest base) after fetching the origin's ref; NoUpdate when equal or,
    unless ``allow_downgrade``, when what the origin offers is older (its ref does not move)."""
    ensure_writable(sysroot.path)  # it pulls into the sysroot's repository, unlocked
    d = _default(sysroot)
    repo = Repo.open(sysroot.repo_path)
    lay = Layering.of(d.origin)
    floor = None if allow_downgrade else deployment_floor(sysroot, repo)
    try:
        _pull(sysroot, lay.refspec, allow_downgrade=allow_downgrade, floor=floor)
        current, newest = base_of(repo, d.checksum), repo.resolve(lay.refspec)
        if not allow_downgrade:
            check_not_downgrade(sysroot, repo, newest, f"commit of {lay.refspec}")
    except DowngradeError as e:
        raise NoUpdate(f"no update for {lay.refspec}: {e}") from e
    if current == newest:
        raise NoUpdate(f"no update for {lay.refspec}: {current[:12]} is the newest")
    return current, newest


def _new_base(sysroot: Sysroot, repo: Repo, lay: Layering, req: ClientRequest) -> tuple[str, bool]:
    """(the base an upgrade or rebase moves to, whether it was pulled).

    An upgrade refuses (DowngradeError) a base older than the booted, else
    default, deployment's unless ``allow_downgrade``; a rebase, as rpm-ostree's,
    may go to an older base, but its ref still never moves backwards unasked.
    """
    floor = None if req.allow_downgrade or not req.upgrade else deployment_floor(sysroot, repo)
    pulled = not _offline(req) and not _read_only(req, repo) and _pull(
        sysroot, lay.refspec, floor=floor, allow_downgrade=req.allow_downgrade,
        progress=req.progress)
    if req.version is not None:
        return commit_of_version(repo, lay.refspec, req.version), pulled
    base = repo.resolve(lay.refspec)
    if req.upgrade and not req.allow_downgrade:
        check_not_downgrade(sysroot, repo, base, f"commit of {lay.refspec}")
    return base, pulled


def _offline(req: ClientRequest) -> bool:
    return req.offline or req.cache_only


def _read_only(req: ClientRequest, repo: Repo) -> bool:
    """A dry run by a user who may not write the repository: it pulls nothing."""
    from store.fsutil import writable

    return req.dry_run and not writable(repo.path / "objects")


MAX_HISTORY = 10_000  # commits walked back from a ref looking for a version


def commit_of_version(repo: Repo, refspec: str, version: str) -> str:
    """The newest commit in ``refspec``'s history (as far as the repository holds it) whose
    ``version`` metadata is ``version``; ComposeError naming both when there is none."""
    from store.objects import ObjectType

    csum: str | None = repo.resolve(refspec)
    for _ in range(MAX_HISTORY):
        if csum is None or not repo.has(csum, ObjectType.COMMIT):
            break
        commit = repo.load_commit(csum)
        if commit.meta_value("version") == version:
            return csum
        csum = commit.parent
    raise ComposeError(f"version {version} not found in the history of {refspec}")


def drop_unused_packages(repo: Repo, state: SysrootState) -> list[str]:
    """For cleanup: delete the package-cache refs (and kept local package files) that no
    deployment of ``state`` uses; nothing when a deployment's commit cannot be read."""
    from importers.pkgcache import drop_unused
    from layering.packages import local_dir
    from store.errors import ToolError

    used: set[str] = set()
    shas: set[str] = set()
    for d in state.all_deployments:  # a staged deployment's packages stay too
        try:
            packages = repo.load_commit(d.checksum).meta_value("rpmostree.packages")
        except ToolError:
            return []
        used.update(p for p in packages or () if isinstance(p, str))
        o = d.origin
        shas.update(e.split(":", 1)[0] for e in [*o.requested_local_packages,
                                                 *o.replaced_local_packages])
    dropped = drop_unused(repo, used)
    if local_dir(repo).is_dir():
        for f in sorted(local_dir(repo).iterdir()):
            name = f.name.split(".", 1)[0]  # SHA256.deb; a '.SHA256...' copy is in progress
            if name and name not in shas and f.is_file() and not f.is_symlink():
                f.unlink()
                dropped.append(f"{f}")
    return dropped


def drop_cached_indexes(repo: Repo) -> list[str]:
    """For ``cleanup -m``: delete the cached package indexes and downloads (``tmp/cache/http``)
    and their parsed form (``tmp/cache/solv``); the next command fetches them again.
    Returns the directories removed with their size, as ``PATH (N bytes)``."""
    from importers.fetch import repo_cache_dir
    from store.fsutil import rmtree

    out = []
    for name in ("http", "solv"):
        path = repo_cache_dir(repo.tmp_dir) / name
        if path.is_dir() and not path.is_symlink():
            size = sum(f.lstat().st_size for f in path.rglob("*") if f.is_file())
            rmtree(path)
            out.append(f"{path} ({size} bytes)")
    return out


def apply(sysroot: Sysroot, req: ClientRequest) -> ClientResult:
    """Compose the default deployment's request, changed by ``req``, and deploy it.

    The sysroot lock is held from reading the default deployment's origin to the
    deploy, so two commands never build on the same default and lose a request;
    a dry run holds it shared (it writes nothing: see importers.fetch.Fetcher's
    ``read_only``), so it never reads what a writer is changing.
    """
    with sysroot.read_lock(wait=LOCK_WAIT) if req.dry_run else sysroot.lock(wait=LOCK_WAIT):
        return _apply(sysroot, req)


def _apply(sysroot: Sysroot, req: ClientRequest) -> ClientResult:
    d = _default(sysroot)
    repo = Repo.open(sysroot.repo_path)
    fresh: dict[str, Path] = {}
    old = Layering.of(d.origin)
    lay = _edit(old, req, fresh)
    pulled = []
    base = base_of(repo, d.checksum)
    warnings = []
    if req.upgrade or req.rebase:
        base, was_pulled = _new_base(sysroot, repo, lay, req)
        pulled += [lay.refspec] if was_pulled else []
        lay = replace(lay, override_commit=base if req.version is not None else None)
        if not _offline(req) and _read_only(req, repo) and split_refspec(lay.refspec)[0]:
            warnings.append(f"{lay.refspec} not pulled: this user may not write {repo.path}; "
                            "the dry run uses the commits the repository holds")
    origin = lay.to_origin(d.origin)
    result = ClientResult(base, None, origin, pulled=pulled, warnings=warnings)
    target = base
    if lay.layered:
        result.compose = _compose(sysroot, repo, d, lay, old, req, base, fresh)
        target = result.compose.checksum or base
    if req.dry_run or req.download_only:
        return result
    if target == d.checksum and origin.to_text() == d.origin.to_text():
        result.target = target
        result.no_upgrade = req.upgrade
        return result
    result.target = target
    result.deployed = stage_or_deploy(sysroot, req.stage, checksum=target, origin=origin,
                                      stateroot=d.stateroot, progress=req.progress,
                                      merge_var=True)
    return result


def _compose(sysroot: Sysroot, repo: Repo, d: Deployment, lay: Layering, old: Layering,
             req: ClientRequest, base: str, fresh: dict[str, Path]) -> ComposeResult:
    """Compose ``lay`` onto ``base``; the default's own commit is reused when its input hash
    is this request's (same base, same resolved packages)."""
    etc = sysroot.deployment_dir(d) / "etc"
    new_names = () if req.allow_inactive else tuple(n for n in req.install
                                                    if n not in old.requested)
    return compose(repo, ComposeRequest(
        base=base, install=lay.requested,
        install_local=tuple(_package_file(repo, e, fresh) for e in lay.local),
        remove=lay.removes,
        replace_local=tuple(_package_file(repo, e, fresh) for e in lay.replaces),
        source_set=sources_from_dir(etc), no_scripts=req.no_scripts, offline=_offline(req),
        no_recommends=req.no_recommends, dry_run=req.dry_run, client_layer=True,
        reuse=d.checksum, refuse_inactive=new_names, download_only=req.download_only,
        host_etc=etc), progress=req.progress)
