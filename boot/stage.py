"""Staged deployments: written now, made the default at shutdown (``ostree admin deploy
--stage``, and rpm-ostree's way on a booted host).

:func:`stage` does everything a deploy does that does not depend on the
running system's ``/etc``: the tree is checked out, the image's ``/usr/etc``
copied to ``/etc``, the kernel copied to ``boot/``, the ``.origin`` written,
all synced.  Then it records the deployment in ``/run`` (:mod:`boot.staged`)
and changes no boot entry.  At shutdown ``strata finalize-staged``
(:func:`finalize_staged`, run by ``strata-finalize-staged.service`` as its
``ExecStop``) takes the sysroot lock, forgets the record, merges the booted
``/etc`` as it is then (edits made after the install are kept) into the
tree and switches the boot entries to it, as a deploy would.

Crash safety: the record is in ``/run``; before the switch nothing boots the
staged tree, and a run that finds a tree no entry and no record reaches
removes it.  A second stage replaces the first; a deployment written directly
drops the staged one, as ostree does.  Staging needs the running host
(``--sysroot`` resolving to ``/`` with a booted deployment), as ostree's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from enum import StrEnum

from boot.deploy import (
    LOCK_WAIT,
    DeployResult,
    _create,
    _next_serial,
    _retained,
    _switch,
    _sync_tree,
    deploy,
    finish,
    merge_var_files,
    remove_leftovers,
    set_immutable,
)
from boot.deployment import Deployment
from boot.errors import DeploymentError
from boot.etcmerge import EtcDiff, EtcMergePlan, merge_etc, preview_merge
from boot.kargs import Kargs
from boot.origin import Origin
from boot.staged import StagedRecord, clear_record, read_record, write_record
from boot.sysroot import Sysroot, SysrootState
from boot.target import target_of
from boot.varcarry import VarCarry
from store.errors import ToolError
from store.faults import fail_point
from store.progress import ProgressFn, Stage
from store.repo import Repo
from store.run import run

FINALIZE_UNIT = "strata-finalize-staged.service"
FINALIZE_LOCK_WAIT = 120.0  # seconds finalize waits at shutdown for a command still running


class StageError(DeploymentError):
    """A deployment cannot be staged (not booted, or the finalize service cannot start)."""


class StageMode(StrEnum):
    """When a command stages its new deployment."""

    AUTO = "auto"  # on the running host when the finalize service starts, else directly
    ALWAYS = "always"  # stage or fail (``--stage``)
    NEVER = "never"  # write the boot entries now (``--no-stage``)


def start_finalizer() -> None:
    """Start the unit whose stop (at shutdown) finalizes; StageError when it cannot start.

    Started by the staging command itself, as ostree does since it dropped its
    ``.path`` unit (a reboot right after staging could miss the path trigger).
    """
    try:
        run(["systemctl", "start", "--quiet", FINALIZE_UNIT], timeout=120)
    except ToolError as e:
        raise StageError(f"cannot stage: {FINALIZE_UNIT} does not start: {e}") from e


def should_stage(sysroot: Sysroot, mode: StageMode) -> bool:
    """Whether to stage under ``mode``; with a yes the finalize service is started.

    ALWAYS raises StageError when the sysroot is not the booted host's or the
    service cannot start; AUTO then answers no (the deployment is written directly).
    """
    if mode is StageMode.NEVER:
        return False
    if sysroot.load().booted is None:
        if mode is StageMode.ALWAYS:
            raise StageError(f"cannot stage a deployment in {sysroot.path}: not the sysroot of "
                             "a booted host (staging finalizes at this host's shutdown)")
        return False
    try:
        start_finalizer()
    except StageError:
        if mode is StageMode.ALWAYS:
            raise
        return False
    return True


def stage_or_deploy(sysroot: Sysroot, mode: StageMode, **kw: object) -> DeployResult:
    """:func:`stage` or :func:`boot.deploy.deploy` with the same arguments, by ``mode``."""
    if should_stage(sysroot, mode):
        return stage(sysroot, **kw)  # type: ignore[arg-type]
    return deploy(sysroot, **kw)  # type: ignore[arg-type]


def stage(sysroot: Sysroot, *, refspec: str | None = None, checksum: str | None = None,
          origin: Origin | None = None, stateroot: str | None = None,
          karg_replace: Sequence[str] = (), kargs: Kargs | None = None, prune: bool = True,
          progress: ProgressFn | None = None, merge_var: bool = False) -> DeployResult:
    """Write a deployment to be made the default at shutdown (see the module text).

    Arguments as :func:`boot.deploy.deploy`; ``merge_var``'s carry of /var files happens
    at finalize, once the deployment is the default.  The boot entries are unchanged; a
    deployment staged before is removed.  The result's ``etc`` is the merge as
    it would be now (the one done at shutdown uses ``/etc`` as it is then).
    """
    with sysroot.lock(wait=LOCK_WAIT):
        state = sysroot.load()
        if state.booted is None:
            raise StageError(f"cannot stage a deployment in {sysroot.path}: no booted deployment")
        remove_leftovers(sysroot, state)
        t = target_of(sysroot, state, refspec=refspec, checksum=checksum, origin=origin,
                      stateroot=stateroot, kargs=kargs, karg_replace=karg_replace)
        merge = t.merge
        steps = Stage(progress, "deploy", 2)
        dep, _ = _create(sysroot, t.repo, None, t.checksum, t.stateroot,
                         _next_serial(sysroot, state, t.stateroot, t.checksum), t.origin, t.kargs)
        steps.advance()
        write_record(StagedRecord.of(dep, merge, merge_var))
        finish(sysroot, replace(state, staged=dep), prune_objects=prune and bool(state.staged))
        steps.finish()
        return DeployResult(dep, _preview(sysroot, merge, dep), (), staged=True)


def _preview(sysroot: Sysroot, merge: Deployment | None, d: Deployment) -> EtcMergePlan:
    if merge is None:
        return EtcMergePlan(EtcDiff(), (), ())
    mdir = sysroot.deployment_dir(merge)
    return preview_merge(mdir / "usr/etc", mdir / "etc", sysroot.deployment_dir(d) / "usr/etc")


def discard_staged(state: SysrootState) -> SysrootState:
    """Forget the staged deployment (its tree is removed as a leftover by the next cleanup)."""
    if state.staged is not None:
        clear_record()
    return replace(state, staged=None)


def finalize_staged(sysroot: Sysroot) -> DeployResult | None:
    """Make the staged deployment the default: merge ``/etc`` as it is now, switch the boot
    entries (retention as a deploy).  None when nothing is staged.

    The record is forgotten first: if this fails or is killed, the boot entries are
    unchanged and the tree is removed by the next run; nothing half-merged boots.
    """
    with sysroot.lock(wait=FINALIZE_LOCK_WAIT):
        state = sysroot.load()
        rec = read_record()
        d = state.staged
        if d is None or rec is None:
            clear_record()  # a record whose tree is gone
            return None
        merge = next((x for x in state.deployments if x.key == rec.merge), None)
        state = discard_staged(state)
        if rec.merge is not None and merge is None:
            finish(sysroot, state, prune_objects=False)
            raise StageError(f"staged deployment {d.dirname}: its merge deployment "
                             f"{rec.merge[1]}.{rec.merge[2]} is gone; not finalized")
        plan = _merge_etc(sysroot, merge, d)
        fail_point("after-etc-merge")
        retained = _retained(state, d.stateroot, merge)
        new_state = _switch(sysroot, state, [d, *retained])
        gone = tuple(x for x in state.deployments if not any(x.same(r) for r in retained))
        var = (merge_var_files(sysroot, Repo.open(sysroot.repo_path), merge, d.checksum,
                               d.stateroot) if rec.merge_var else VarCarry())
        finish(sysroot, new_state, prune_objects=False)
        return DeployResult(new_state.deployments[0], plan, gone, var=var)


def _merge_etc(sysroot: Sysroot, merge: Deployment | None, d: Deployment) -> EtcMergePlan:
    """The booted /etc's changes carried into the staged tree's /etc, then synced."""
    tree = sysroot.deployment_dir(d)
    plan = _preview(sysroot, merge, d)
    if merge is not None:
        mdir = sysroot.deployment_dir(merge)
        set_immutable(tree, False)
        try:
            merge_etc(mdir / "usr/etc", mdir / "etc", tree / "etc", changes=plan.carried)
            _sync_tree(tree)
        finally:
            set_immutable(tree, True)
    return plan
