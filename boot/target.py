"""What a new deployment is made of: its commit, origin, stateroot, merge deployment and
kernel arguments (the host's, the image's own ``strata.kargs`` and ``--karg``), chosen
the same way for a deployment written now (:func:`boot.deploy.deploy`) and a staged one
(:func:`boot.stage.stage`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from boot.deployment import Deployment
from boot.errors import DeploymentError, SysrootError
from boot.kargs import Kargs, key_of
from boot.origin import Origin
from boot.sysroot import Sysroot, SysrootState
from store.objects import ObjectType
from store.repo import Repo


def pick_stateroot(sysroot: Sysroot, state: SysrootState, stateroot: str | None) -> str:
    """``stateroot`` (which must exist), else the booted, else the default deployment's,
    else the only one."""
    if stateroot:
        if not sysroot.stateroot_dir(stateroot).is_dir():
            raise SysrootError(f"stateroot {stateroot!r} not initialized in {sysroot.path}; "
                               "run os-init first")
        return stateroot
    if state.booted is not None:
        return state.booted.stateroot
    if state.default is not None:
        return state.default.stateroot
    roots = sysroot.stateroots()
    if len(roots) != 1:
        raise SysrootError(f"cannot choose a stateroot in {sysroot.path} "
                           f"(found {roots or 'none'}); give --stateroot")
    return roots[0]


@dataclass(frozen=True)
class Target:
    """What a new deployment is made of (:func:`target_of`)."""

    repo: Repo
    checksum: str
    origin: Origin
    stateroot: str
    merge: Deployment | None
    kargs: Kargs


def target_of(sysroot: Sysroot, state: SysrootState, *, refspec: str | None,
              checksum: str | None, origin: Origin | None, stateroot: str | None,
              kargs: Kargs | None, karg_replace: Sequence[str]) -> Target:
    """The commit (``checksum``, else ``refspec`` resolved), origin (without its transient
    part), stateroot, merge deployment and kernel arguments of a new deployment, as
    :func:`boot.deploy.deploy` and :func:`boot.stage.stage` take them."""
    repo = Repo.open(sysroot.repo_path)
    csum = checksum or repo.resolve(refspec or "")
    origin = (origin or Origin.for_refspec(refspec or "")).without_transient()
    sr = pick_stateroot(sysroot, state, stateroot)
    merge = state.merge_deployment(sr)
    return Target(repo, csum, origin, sr, merge,
                  new_kargs(repo, merge, csum, kargs, karg_replace))


def new_kargs(repo: Repo, merge: Deployment | None, csum: str, kargs: Kargs | None,
              karg_replace: Sequence[str]) -> Kargs:
    """A new deployment's kernel arguments: ``kargs``, else the merge deployment's, with the
    image's own (:func:`image_kargs`) and ``karg_replace`` applied."""
    base = kargs if kargs is not None else (merge.kargs if merge else Kargs())
    base = image_kargs(repo, base, merge.checksum if merge else None, csum)
    for k in karg_replace:
        base = base.replace(k)
    return base


IMAGE_KARGS_KEY = "strata.kargs"  # written by ``strata compose`` (kargs of a compose file)
MAX_IMAGE_KARGS = 256


def _commit_kargs(repo: Repo, csum: str | None) -> list[str]:
    if csum is None or not repo.has(csum, ObjectType.COMMIT):
        return []
    value = repo.load_commit(csum).meta_value(IMAGE_KARGS_KEY, [])
    if not isinstance(value, list) or len(value) > MAX_IMAGE_KARGS:
        raise DeploymentError(f"commit {csum}: {IMAGE_KARGS_KEY} is not a list of at most "
                              f"{MAX_IMAGE_KARGS} kernel arguments")
    # the deployment's own ostree= argument is strata's to set, never an image's
    return [a for a in value if isinstance(a, str) and key_of(a) != "ostree"]


def image_kargs(repo: Repo, kargs: Kargs, old: str | None, new: str) -> Kargs:
    """``kargs`` with the image's own kernel arguments (commit metadata ``strata.kargs``)
    applied as bootc applies ``kargs.d``: those the old commit had and the new one has not
    are deleted, the new commit's that the old lacked are set (``--karg`` semantics), and
    unchanged ones are left as the host has them."""
    before, after = _commit_kargs(repo, old), _commit_kargs(repo, new)
    for arg in before:
        if arg not in after and arg in kargs.args:
            kargs = kargs.delete(arg)
    for arg in after:
        if arg not in before:
            kargs = kargs.replace(arg)
    return kargs
