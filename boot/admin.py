"""Sysroot operations besides deploy: status, rollback, cleanup, pin, kargs, /etc preview.

"Pending" and "rollback" follow ``ostree_sysroot_query_deployments_for``
relative to a reference deployment: the booted one, or on a scratch sysroot
(nothing booted) the default.  Pending deployments come before it in boot
order, the rollback is the first one of its stateroot after it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from boot.bootloader import write_deployments
from boot.deploy import LOCK_WAIT, DeployResult, deploy, finish, prune_repo
from boot.deployment import Deployment
from boot.errors import DeploymentError
from boot.etcmerge import EtcDiff, EtcMergePlan, preview_merge
from boot.kargs import Kargs
from boot.stage import discard_staged
from boot.sysroot import Sysroot, SysrootState
from store.errors import ObjectNotFound, ToolError
from store.fsutil import atomic_write, scratch_dir, writable
from store.prune import PruneResult
from store.repo import Repo


@dataclass(frozen=True)
class DeploymentStatus:
    """One line of ``status``: a deployment and what its commit and origin say."""

    deployment: Deployment
    default: bool
    booted: bool
    timestamp: int | None
    version: str | None
    base_checksum: str
    layered_packages: tuple[str, ...]
    removed_base_packages: tuple[str, ...]
    replaced_base_packages: tuple[str, ...]
    inactive_requests: tuple[str, ...] = ()
    staged: bool = False

    def to_dict(self) -> dict[str, object]:
        """The ``status --json`` record (keys as the CLI contract lists them)."""
        d, o = self.deployment, self.deployment.origin
        return {
            "index": d.index, "stateroot": d.stateroot, "checksum": d.checksum,
            "base-checksum": self.base_checksum, "origin": o.refspec,
            "requested-packages": o.requested_packages,
            "requested-local-packages": o.requested_local_packages,
            "layered-packages": list(self.layered_packages),
            "removed-base-packages": list(self.removed_base_packages),
            "replaced-base-packages": list(self.replaced_base_packages),
            "pinned": d.pinned, "default": self.default, "booted": self.booted,
            "staged": self.staged, "timestamp": self.timestamp, "version": self.version,
        }


def _strs(value: object) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(v if isinstance(v, str) else str(v[0] if isinstance(v, tuple) else v)
                     for v in value)
    return ()


@dataclass(frozen=True)
class CommitInfo:
    """What status shows from a deployment's commit object."""

    base: str
    timestamp: int | None = None
    version: str | None = None
    layered: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    replaced: tuple[str, ...] = ()
    inactive: tuple[str, ...] = ()


def commit_info(repo: Repo | None, csum: str) -> CommitInfo:
    """Timestamp, version and rpm-ostree layering metadata of ``csum`` (bare when unreadable)."""
    if repo is None:
        return CommitInfo(csum)
    try:
        commit = repo.load_commit(csum)
    except ToolError:
        return CommitInfo(csum)
    meta = {k: v.value for k, v in commit.metadata.items()}
    version = meta.get("version")
    layered = bool(meta.get("rpmostree.clientlayer")) and commit.parent is not None
    if not layered:  # a base, or an image composed elsewhere: its packages are its base's
        return CommitInfo(csum, commit.timestamp, version if isinstance(version, str) else None)
    return CommitInfo(
        commit.parent or csum, commit.timestamp,
        version if isinstance(version, str) else None, _strs(meta.get("rpmostree.packages")),
        _strs(meta.get("rpmostree.removed-base-packages")),
        _strs(meta.get("rpmostree.replaced-base-packages")),
        _strs(meta.get("strata.satisfied-by-base")))


def listed(state: SysrootState) -> list[Deployment]:
    """The deployments as status numbers them: the staged one (index 0, as ostree lists it)
    first, then the boot entries' in boot order."""
    return [replace(d, index=i) for i, d in enumerate(state.all_deployments)]


def status(sysroot: Sysroot) -> list[DeploymentStatus]:
    """The deployments (:func:`listed`) with their commit's timestamp, version and packages.
    ``default`` marks the boot entries' default; a staged deployment becomes it at shutdown."""
    state = sysroot.load()
    try:
        repo: Repo | None = Repo.open(sysroot.repo_path)
    except ToolError:
        repo = None
    out = []
    for d in listed(state):
        info = commit_info(repo, d.checksum)
        staged = d.same(state.staged)
        out.append(DeploymentStatus(d, d.same(state.default), d.same(state.booted),
                                    info.timestamp, info.version, info.base, info.layered,
                                    info.removed, info.replaced, info.inactive, staged))
    return out


def _reference(state: SysrootState) -> Deployment | None:
    return state.booted or state.default


def pending_and_rollback(state: SysrootState) -> tuple[Deployment | None, Deployment | None]:
    """The pending (the staged one, else one newer than the reference) and rollback
    deployments of the reference's stateroot."""
    ref = _reference(state)
    if ref is None:
        return None, None
    same = [d for d in state.deployments if d.stateroot == ref.stateroot]
    pos = next(i for i, d in enumerate(same) if d.same(ref))
    pending = state.staged or (same[0] if pos > 0 else None)
    rollback = same[pos + 1] if pos + 1 < len(same) else None
    return pending, rollback


def db_diff_pair(sysroot: Sysroot) -> tuple[tuple[str, Deployment], tuple[str, Deployment]]:
    """What ``db diff`` compares without arguments, as rpm-ostree does: the booted (else
    default) deployment and the pending one; without a pending one, the rollback and the
    booted (else default) one.  Each comes with its role; DeploymentError when neither exists."""
    state = sysroot.load()
    ref = _reference(state)
    pending, rollback = pending_and_rollback(state)
    role = "booted" if state.booted is not None else "default"
    if ref is not None and pending is not None:
        return (role, ref), ("pending", pending)
    if ref is not None and rollback is not None:
        return ("rollback", rollback), (role, ref)
    raise DeploymentError(f"no pending or rollback deployment to compare with in sysroot "
                          f"{sysroot.path}")


def rollback(sysroot: Sysroot) -> Deployment:
    """Make the rollback deployment (or, with a pending one, the booted one) the default."""
    with sysroot.lock(wait=LOCK_WAIT):
        state = sysroot.load()
        if state.staged is not None:  # as rpm-ostree
            raise DeploymentError(f"a staged deployment ({state.staged.dirname}) is pending in "
                                  f"{sysroot.path}; remove it with 'cleanup --pending' first")
        pending, back = pending_and_rollback(state)
        target = state.booted if pending is not None and state.booted else back
        if target is None:
            raise DeploymentError(f"no rollback deployment in {sysroot.path}")
        order = [target, *(d for d in state.deployments if not d.same(target))]
        new = write_deployments(sysroot, state, order)
        finish(sysroot, new, prune_objects=False)
        return new.deployments[0]


@dataclass(frozen=True)
class CleanupResult:
    """Deployments dropped and leftover paths removed."""

    removed: tuple[Deployment, ...]
    leftovers: tuple[str, ...]
    pruned: PruneResult | None = None
    dropped_refs: tuple[str, ...] = ()


RefDropper = Callable[[Repo, SysrootState], Sequence[str]]


def cleanup(sysroot: Sysroot, *, pending: bool = False, rollback: bool = False,
            drop_refs: RefDropper | None = None) -> CleanupResult:
    """Drop the unpinned pending and/or rollback deployment, remove leftovers, let
    ``drop_refs`` delete refs no remaining deployment needs (the package cache's), prune.
    Everything runs under the sysroot lock."""
    with sysroot.lock(wait=LOCK_WAIT):
        state = sysroot.load()
        p, r = pending_and_rollback(state)
        staged = state.staged if pending else None
        drop = [d for d, want in ((p, pending), (r, rollback))
                if want and d is not None and not d.pinned and not d.same(state.booted)
                and not d.same(staged)]
        state = discard_staged(state) if staged is not None else state  # a leftover below
        if drop:
            keep = [d for d in state.deployments if not any(d.same(x) for x in drop)]
            state = write_deployments(sysroot, state, keep)
        leftovers = finish(sysroot, state, prune_objects=False)
        repo = Repo.open(sysroot.repo_path)
        dropped = tuple(drop_refs(repo, state)) if drop_refs is not None else ()
        pruned = prune_repo(repo)
        gone = (staged, *drop) if staged is not None else tuple(drop)
        return CleanupResult(gone, tuple(leftovers), pruned, dropped)


def pin(sysroot: Sysroot, index: int, *, pinned: bool = True) -> Deployment:
    """Set or clear ``[libostree-transient] pinned`` in deployment ``index``'s origin."""
    with sysroot.lock(wait=LOCK_WAIT):
        state = sysroot.load()
        deps = listed(state)
        if not 0 <= index < len(deps):
            raise DeploymentError(f"no deployment with index {index} in {sysroot.path} "
                                  f"(have {len(deps)})")
        d = deps[index]
        if d.same(state.staged):  # as ostree
            raise DeploymentError(f"cannot pin the staged deployment {d.dirname}")
        new = replace(d, origin=d.origin.with_pinned(pinned))
        atomic_write(sysroot.origin_path(d), new.origin.to_text().encode())
        return new


def edit_kargs(sysroot: Sysroot, *, append: Sequence[str] = (), delete: Sequence[str] = (),
               replace_args: Sequence[str] = ()) -> tuple[Kargs, DeployResult | None]:
    """Current default kargs when nothing is asked; else a new deployment of the default's
    commit and origin with the edited kernel arguments (the sysroot lock held from
    reading the default to the deploy)."""
    if not (append or delete or replace_args):
        return _edit_kargs(sysroot, append, delete, replace_args)
    with sysroot.lock(wait=LOCK_WAIT):
        return _edit_kargs(sysroot, append, delete, replace_args)


def _edit_kargs(sysroot: Sysroot, append: Sequence[str], delete: Sequence[str],
                replace_args: Sequence[str]) -> tuple[Kargs, DeployResult | None]:
    state = sysroot.load()
    d = state.next
    if d is None:
        raise DeploymentError(f"no deployment in {sysroot.path}")
    kargs = d.kargs
    if not (append or delete or replace_args):
        return kargs.without("ostree"), None
    for a in delete:
        kargs = kargs.delete(a)
    for a in replace_args:
        kargs = kargs.replace(a)
    for a in append:
        kargs = kargs.append(a)
    res = deploy(sysroot, checksum=d.checksum, origin=d.origin.with_pinned(False),
                 stateroot=d.stateroot, kargs=kargs)
    return kargs.without("ostree"), res


def preview_etc(sysroot: Sysroot, new_etc: Path, *, stateroot: str | None = None,
                owners: bool = True) -> EtcMergePlan:
    """The /etc merge onto ``new_etc`` (a new image's usr/etc) a deploy would do, unwritten.

    With no deployment to merge from, nothing is carried; ``owners=False``: see
    :func:`boot.etcmerge.preview_merge`.
    """
    state = sysroot.load()
    sr = stateroot or (state.default.stateroot if state.default else "")
    merge = state.merge_deployment(sr)
    if merge is None:
        return EtcMergePlan(EtcDiff(), (), ())
    mdir = sysroot.deployment_dir(merge)
    return preview_merge(mdir / "usr" / "etc", mdir / "etc", new_etc, owners=owners)


def preview_deploy(sysroot: Sysroot, refspec: str, *,
                   stateroot: str | None = None) -> tuple[str, EtcMergePlan]:
    """Dry run of ``deploy REFSPEC``: the commit it resolves to and the /etc merge plan."""
    from store.checkout import checkout

    repo = Repo.open(sysroot.repo_path)
    csum = repo.resolve(refspec)
    # a dry run by a user who may not write the repository previews in $TMPDIR, checked
    # out in user mode (files cannot be given their owners)
    parent = repo.tmp_dir if writable(repo.tmp_dir) else None
    root = os.geteuid() == 0
    with scratch_dir(parent, "strata-etc-preview-") as tmp:
        dest = tmp / "etc"
        for sub in ("usr/etc", "etc"):
            try:
                checkout(repo, csum, dest, subpath=sub, copy=True, user_mode=not root)
                break
            except ObjectNotFound:
                continue
        else:
            raise DeploymentError(f"commit {csum} has no /usr/etc (nor /etc)")
        return csum, preview_etc(sysroot, dest, stateroot=stateroot, owners=root)
