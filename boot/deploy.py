"""Create the sysroot, write new deployments, and keep the sysroot tidy.

A new deployment is checked out beside the others under a name no boot entry
reaches (or takes over the repository's kept checkout, which a compose has
just brought close to the new tree, see :mod:`store.checkoutcache`),
completed (/etc, kernel, .origin), synced, and only then made reachable by
:func:`boot.bootloader.write_deployments`.  Anything a killed run left behind
is unreachable and is removed by the next run (:func:`remove_leftovers`).
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from boot.bootloader import cleanup_boot_versions, syncfs, write_deployments
from boot.deployment import Deployment, parse_dirname
from boot.errors import DeploymentError, SysrootError
from boot.etcmerge import EtcDiff, EtcMergePlan, copy_at, merge_etc, preview_merge
from boot.kargs import Kargs
from boot.kernel import boot_dirname, find_kernel, install_kernel
from boot.origin import Origin
from boot.staged import clear_record
from boot.sysroot import Sysroot, SysrootState
from boot.target import target_of
from boot.varcarry import VarCarry, carry_var
from store import beneath
from store.checkout import checkout_tree
from store.checkoutcache import CheckoutCache
from store.errors import ToolError
from store.faults import fail_point
from store.fsutil import atomic_write, fsync_dir, rmtree
from store.objects import ObjectType
from store.progress import ProgressFn, Stage
from store.prune import PruneResult, prune
from store.repo import Repo, RepoMode
from store.run import start

LOCK_WAIT = 30.0
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FS_IMMUTABLE_FL = 0x10


@dataclass(frozen=True)
class DeployResult:
    """A new deployment, its /etc merge (carried changes, conflicts) and what retention dropped."""

    deployment: Deployment
    etc: EtcMergePlan
    removed: tuple[Deployment, ...]
    staged: bool = False  # written now, made the default at shutdown (boot.stage)
    var: VarCarry = VarCarry()

    @property
    def etc_changes(self) -> EtcDiff:
        return self.etc.carried


def os_init(sysroot: Sysroot, stateroot: str) -> None:
    """Create the sysroot layout (as ``ostree admin init-fs`` + ``os-init``); idempotent."""
    if not stateroot or "/" in stateroot or stateroot.startswith("."):
        raise SysrootError(f"invalid stateroot name {stateroot!r}")
    root = sysroot.path
    for sub, mode in (("boot", 0o755), ("dev", 0o755), ("home", 0o755), ("proc", 0o755),
                      ("root", 0o700), ("run", 0o755), ("sys", 0o755), ("tmp", 0o1777),
                      ("ostree/deploy", 0o755)):
        p = root / sub
        if not p.is_dir():
            p.mkdir(parents=True)
            os.chmod(p, mode)
    Repo.init(sysroot.repo_path, RepoMode.BARE)
    for sub in ("deploy", "var"):
        (sysroot.stateroot_dir(stateroot) / sub).mkdir(parents=True, exist_ok=True)
    fsync_dir(root / "ostree" / "deploy")


def set_immutable(path: Path, on: bool) -> None:
    """Set or clear the immutable flag of a directory, as ostree does for deployment roots."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        buf = array.array("l", [0])
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, buf, True)
        new = buf[0] | _FS_IMMUTABLE_FL if on else buf[0] & ~_FS_IMMUTABLE_FL
        if new != buf[0]:
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, array.array("l", [new]), False)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_deployment_dir(path: Path) -> None:
    """Delete a deployment tree, clearing ostree's immutable bit first."""
    set_immutable(path, False)
    try:
        rmtree(path)
    except OSError as e:
        raise DeploymentError(f"cannot remove deployment {path}: {e}") from e


def _staged_checksums(sysroot: Sysroot) -> set[str]:
    """Commits of a deployment ostree/rpm-ostree staged on the running host (kept, not ours)."""
    staged = Path("/run/ostree/staged-deployment")
    if sysroot.path.resolve() != Path("/") or not staged.is_file():
        return set()
    return {m.decode() for m in re.findall(rb"[0-9a-f]{64}", staged.read_bytes())}


def remove_leftovers(sysroot: Sysroot, state: SysrootState) -> list[str]:
    """Remove deployment dirs, .origin files and kernels no boot entry reaches.

    These are what a killed run (or an undeploy) leaves; returns their paths.
    A deployment staged by ostree on the running host is left alone.
    """
    removed, trees = _remove_leftovers_but_trees(sysroot, state)
    for tree in trees:
        remove_deployment_dir(tree)
    return removed


def _remove_leftovers_but_trees(sysroot: Sysroot,
                                state: SysrootState) -> tuple[list[str], list[Path]]:
    """:func:`remove_leftovers`, except that deployment trees are returned, not removed."""
    keep = _staged_checksums(sysroot)
    live = {(d.stateroot, d.dirname) for d in state.all_deployments}
    boots = {boot_dirname(d.stateroot, d.bootcsum) for d in state.all_deployments}
    removed: list[str] = []
    trees: list[Path] = []
    for sr in sysroot.stateroots():
        ddir = sysroot.stateroot_dir(sr) / "deploy"
        for p in sorted(ddir.iterdir()) if ddir.is_dir() else []:
            name = p.name.removesuffix(".origin")
            if (sr, name) in live or name.split(".")[0] in keep:
                continue
            if p.is_dir() and not p.is_symlink():
                trees.append(p)
            else:
                p.unlink()
            removed.append(str(p))
    kdir = sysroot.boot / "ostree"
    for p in sorted(kdir.iterdir()) if kdir.is_dir() else []:
        if p.name not in boots:
            rmtree(p)
            removed.append(str(p))
    cleanup_boot_versions(sysroot, state)
    return removed, trees


@contextlib.contextmanager
def _removing(trees: list[Path]) -> Iterator[None]:
    """Remove deployment trees in a background ``rm`` while the block runs (a prune: the
    unlinks of one and the reads of the other overlap on two cores); done on exit."""
    proc = None
    if trees:
        for tree in trees:
            set_immutable(tree, False)
        with contextlib.suppress(ToolError):
            proc = start(["rm", "-rf", "--one-file-system", "--", *trees])
    try:
        yield
    finally:
        if proc is not None:
            proc.wait()
        for tree in trees:
            remove_deployment_dir(tree)  # what rm could not remove, with its error


BASE_REF_PREFIX = "rpmostree/base/"
STAGED_REF = "strata/staged"  # and STAGED_REF-base: keep a staged commit (and its base)


def layer_base(repo: Repo, csum: str) -> str | None:
    """The base commit under a host's own layer (``rpmostree.clientlayer`` with
    ``strata.base-commit``), else None; None too when ``csum`` is not readable."""
    try:
        commit = repo.load_commit(csum)
    except ToolError:
        return None
    base = commit.meta_value("strata.base-commit")
    return base if isinstance(base, str) and commit.meta_value("rpmostree.clientlayer") else None


def update_boot_refs(repo: Repo, state: SysrootState) -> None:
    """Point ``ostree/BV/SBV/INDEX`` refs at the deployed commits (ostree keeps them from
    prune) and, as rpm-ostree, ``rpmostree/base/INDEX`` at the base under each layered one,
    so a later install or upgrade on any deployment finds its base."""
    want = {f"ostree/{state.bootversion}/{state.subbootversion}/{d.index}": d.checksum
            for d in state.deployments}
    for d in state.deployments:
        base = layer_base(repo, d.checksum)
        if base is not None and repo.has(base, ObjectType.COMMIT):
            want[f"{BASE_REF_PREFIX}{d.index}"] = base
    if state.staged is not None:
        want[STAGED_REF] = state.staged.checksum
        base = layer_base(repo, state.staged.checksum)
        if base is not None and repo.has(base, ObjectType.COMMIT):
            want[f"{STAGED_REF}-base"] = base
    for name, csum in repo.list_refs().items():
        if (name.startswith(("ostree/", BASE_REF_PREFIX)) or name in (
                STAGED_REF, f"{STAGED_REF}-base")) and want.get(name) != csum:
            repo.set_ref(name, None)
    for name, csum in want.items():
        if repo.read_ref(name) != csum:
            repo.set_ref(name, csum)


def prune_repo(repo: Repo) -> PruneResult:
    """Delete objects no ref head reaches (refs only, depth 0, as ostree's sysroot cleanup)."""
    return prune(repo, refs_only=True, depth=0)


def finish(sysroot: Sysroot, state: SysrootState, *, prune_objects: bool = True) -> list[str]:
    """Everything after a switch: leftovers, boot refs, prune."""
    removed, trees = _remove_leftovers_but_trees(sysroot, state)
    with _removing(trees):
        repo = Repo.open(sysroot.repo_path)
        update_boot_refs(repo, state)
        if prune_objects:
            prune_repo(repo)
    return removed


def _prepare_etc(tree: Path) -> None:
    """Move the image's /etc to /usr/etc if it has it there, then copy /usr/etc to /etc.

    Both are the image's content: a symlink there is refused, never followed on
    the host; everything happens through directory fds (see :mod:`store.beneath`).
    """
    root = beneath.open_root(tree)
    try:
        usr = _image_dir(root, "usr", tree)
        try:
            etc, usr_etc = _lstat_at(root, "etc"), _lstat_at(usr, "etc")
            if etc is not None and usr_etc is not None:
                raise DeploymentError(f"tree {tree.name} contains both /etc and /usr/etc")
            if etc is not None:
                if not stat.S_ISDIR(etc.st_mode):
                    raise DeploymentError(f"tree {tree.name}: /etc is not a directory "
                                          "(a symlink is not followed)")
                os.rename("etc", "etc", src_dir_fd=root, dst_dir_fd=usr)
            elif usr_etc is None:
                raise DeploymentError(f"tree {tree.name} has no /usr/etc (nor /etc)")
            elif not stat.S_ISDIR(usr_etc.st_mode):
                raise DeploymentError(f"tree {tree.name}: /usr/etc is not a directory "
                                      "(a symlink is not followed)")
            copy_at(usr, "etc", root, "etc")
        finally:
            os.close(usr)
    finally:
        os.close(root)


def _lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _image_dir(root: int, name: str, tree: Path) -> int:
    """An fd of directory ``name`` of the image at ``root``; DeploymentError if it is not a
    real directory."""
    try:
        return os.open(name, beneath.DIR_FLAGS, dir_fd=root)
    except OSError as e:
        raise DeploymentError(f"tree {tree.name}: /{name} is not a directory "
                              f"(a symlink is not followed): {e.strerror}") from None


def _populate_var(sysroot: Sysroot, stateroot: str, tree: Path) -> None:
    """Copy the image's /var into an empty stateroot /var.  An image /var that is not a real
    directory (a symlink: content) gives nothing; nothing is followed."""
    var = sysroot.stateroot_dir(stateroot) / "var"
    var.mkdir(parents=True, exist_ok=True)
    if any(var.iterdir()):
        return
    root = beneath.open_root(tree)
    try:
        try:
            src = beneath.open_dir(root, "var")
        except OSError as e:
            if e.errno in beneath.ABSENT:
                return
            raise
        try:
            dst = os.open(var, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                for name in sorted(os.listdir(src)):
                    copy_at(src, name, dst, name)
            finally:
                os.close(dst)
        finally:
            os.close(src)
    finally:
        os.close(root)


def _next_serial(sysroot: Sysroot, state: SysrootState, stateroot: str, csum: str) -> int:
    serials = [d.deployserial for d in state.deployments
               if d.stateroot == stateroot and d.checksum == csum]
    ddir = sysroot.stateroot_dir(stateroot) / "deploy"
    for p in ddir.glob(f"{csum}.*") if ddir.is_dir() else []:
        with contextlib.suppress(SysrootError):
            serials.append(parse_dirname(p.name.removesuffix(".origin"))[1])
    return max(serials, default=-1) + 1


def _sync_tree(path: Path) -> None:
    syncfs(path)
    fsync_dir(path)


def _write_tree(sysroot: Sysroot, repo: Repo, merge: Deployment | None, csum: str,
                stateroot: str, serial: int) -> tuple[Path, EtcMergePlan, str]:
    tree = sysroot.stateroot_dir(stateroot) / "deploy" / f"{csum}.{serial}"
    with repo.lock(exclusive=False):
        commit = repo.load_commit(csum)
        if not CheckoutCache(repo).take((commit.root_tree, commit.root_meta), tree):
            checkout_tree(repo, commit.root_tree, commit.root_meta, tree)
    fail_point("after-checkout")
    kernel = find_kernel(tree)
    _prepare_etc(tree)
    plan = EtcMergePlan(EtcDiff(), (), ())
    if merge is not None:
        mdir = sysroot.deployment_dir(merge)
        old_usr, old_etc = mdir / "usr/etc", mdir / "etc"
        plan = preview_merge(old_usr, old_etc, tree / "usr/etc")
        merge_etc(old_usr, old_etc, tree / "etc", changes=plan.carried)
    fail_point("after-etc")
    _populate_var(sysroot, stateroot, tree)
    install_kernel(sysroot.boot, stateroot, kernel)
    fail_point("after-kernel")
    return tree, plan, kernel.bootcsum


def _retained(state: SysrootState, stateroot: str, merge: Deployment | None) -> list[Deployment]:
    return [d for d in state.deployments
            if d.stateroot != stateroot or d.pinned or d.same(state.booted) or d.same(merge)]





def deploy(sysroot: Sysroot, *, refspec: str | None = None, checksum: str | None = None,
           origin: Origin | None = None, stateroot: str | None = None,
           karg_replace: Sequence[str] = (), kargs: Kargs | None = None,
           prune: bool = True, progress: ProgressFn | None = None,
           merge_var: bool = False) -> DeployResult:
    """Deploy a commit as the new default, retaining what ``ostree admin deploy`` retains.

    ``checksum`` defaults to ``refspec`` resolved in the sysroot repository; the
    origin to ``[origin] refspec=REFSPEC``.  Kernel arguments come from ``kargs``,
    else the merge deployment's, with ``karg_replace`` applied.  On any failure
    the boot configuration is unchanged and the partial deployment removed.
    ``progress`` hears stage ``deploy``: 3 steps (tree written, boot switched, cleaned up).
    With ``merge_var`` (a layering deploy), once the new deployment is the default, the
    ``/var`` files the new commit changed against the merge deployment's are brought into
    the stateroot's ``/var`` where the host left them untouched (:mod:`boot.varcarry`).
    """
    with sysroot.lock(wait=LOCK_WAIT):
        state = sysroot.load()
        remove_leftovers(sysroot, state)
        if not refspec and (checksum is None or origin is None):
            raise DeploymentError("deploy needs a refspec, or a checksum and an origin")
        t = target_of(sysroot, state, refspec=refspec, checksum=checksum, origin=origin,
                      stateroot=stateroot, kargs=kargs, karg_replace=karg_replace)
        repo, csum, sr, merge = t.repo, t.checksum, t.stateroot, t.merge
        serial = _next_serial(sysroot, state, sr, csum)
        steps = Stage(progress, "deploy", 3)
        dep, plan = _create(sysroot, repo, merge, csum, sr, serial, t.origin, t.kargs)
        steps.advance()
        if state.staged is not None:  # as ostree: a deployment written now drops the staged one
            clear_record()
            state = replace(state, staged=None)
        retained = _retained(state, sr, merge)
        new_state = _switch(sysroot, state, [dep, *retained])
        steps.advance()
        var = merge_var_files(sysroot, repo, merge, csum, sr) if merge_var else VarCarry()
        gone = tuple(d for d in state.deployments if not any(d.same(r) for r in retained))
        finish(sysroot, new_state, prune_objects=prune and bool(gone))
        steps.finish()
        return DeployResult(new_state.deployments[0], plan, gone, var=var)


def merge_var_files(sysroot: Sysroot, repo: Repo, merge: Deployment | None, csum: str,
                    stateroot: str) -> VarCarry:
    """:func:`boot.varcarry.carry_var` from the merge deployment's commit to ``csum``; it runs
    after the switch (the deployment exists), so a failure is reported, not raised."""
    if merge is None or merge.checksum == csum:
        return VarCarry()
    try:
        with repo.lock(exclusive=False):
            return carry_var(repo, sysroot.stateroot_dir(stateroot) / "var", merge.checksum,
                             csum)
    except (OSError, ToolError) as e:
        return VarCarry(failed=str(e))


def _switch(sysroot: Sysroot, state: SysrootState, deployments: list[Deployment]) -> SysrootState:
    """write_deployments; if it fails before the switch, the new deployment is removed."""
    try:
        return write_deployments(sysroot, state, deployments)
    except BaseException:
        if sysroot.bootversion() == state.bootversion:
            with contextlib.suppress(OSError, ToolError):
                remove_leftovers(sysroot, state)
        raise


def _oserror_in(e: OSError, tree: Path) -> str:
    """``<reason>[: <name>] in deployment <tree>``: an fd-relative error names only the
    entry, so the deployment says where it happened."""
    reason = (e.strerror or str(e) or type(e).__name__).lower()
    name = f": {os.fspath(e.filename)}" if e.filename is not None else ""
    return f"{reason}{name} in deployment {tree}"


def _create(sysroot: Sysroot, repo: Repo, merge: Deployment | None,
            csum: str, sr: str, serial: int, origin: Origin,
            kargs: Kargs) -> tuple[Deployment, EtcMergePlan]:
    tree = sysroot.stateroot_dir(sr) / "deploy" / f"{csum}.{serial}"
    origin_path = tree.with_name(f"{tree.name}.origin")
    try:
        tree, plan, bootcsum = _write_tree(sysroot, repo, merge, csum, sr, serial)
        atomic_write(origin_path, origin.to_text().encode())
        _sync_tree(tree)
        set_immutable(tree, True)
    except BaseException as e:
        with contextlib.suppress(OSError, ToolError):
            remove_deployment_dir(tree)
            origin_path.unlink(missing_ok=True)
        if isinstance(e, (ToolError, KeyboardInterrupt)):
            raise
        if isinstance(e, OSError):
            raise DeploymentError(_oserror_in(e, tree)) from e
        raise
    return Deployment(sr, csum, serial, bootcsum, 0, 0, kargs, origin), plan

