"""Deploy, retention, rollback, cleanup, pin, kargs and the sysroot lock (library level)."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import stat
import subprocess
import threading
import time
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest

from boot.admin import cleanup, edit_kargs, pin, rollback, status
from boot.deploy import deploy, os_init
from boot.errors import DeploymentError, KernelError
from boot.origin import Origin
from boot.sysroot import Sysroot
from store.errors import LockedError
from store.objects import ObjectType
from store.repo import Repo
from tests.boot.conftest import make_tree, ostree_commit
from tests.util import run

pytestmark = pytest.mark.integration


def new_sysroot(work: Path) -> Sysroot:
    s = Sysroot(work / "sysroot")
    os_init(s, "testos")
    return s


def commit(s: Sysroot, work: Path, v: int,
           files: dict[str, bytes | str | None] | None = None) -> str:
    return ostree_commit(s.repo_path, make_tree(work / f"v{v}", version=str(v), files=files),
                         "os/x", 1700000000 + v)


def tree_hash(root: Path) -> str:
    """Hash of every path, type, mode, owner, inode link target and content under root."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath, name)
            st = os.lstat(p)
            h.update(f"{p.relative_to(root)}\0{st.st_mode}\0{st.st_uid}\0{st.st_gid}\0"
                     f"{st.st_mtime_ns}\0".encode())
            if stat.S_ISLNK(st.st_mode):
                h.update(os.readlink(p).encode())
            elif stat.S_ISREG(st.st_mode):
                h.update(p.read_bytes())
    return h.hexdigest()


def checksums(s: Sysroot) -> list[str]:
    return [d.checksum for d in s.load().deployments]


def test_previous_deployment_byte_for_byte_unchanged(work: Path) -> None:
    s = new_sysroot(work)
    commit(s, work, 1)
    first = deploy(s, refspec="os/x").deployment
    (s.deployment_dir(first) / "etc/motd").write_text("local edit\n")
    before = tree_hash(s.deployment_dir(first))
    origin_before = s.origin_path(first).read_bytes()
    commit(s, work, 2, files={"usr/bin/tool": "tool 2 changed\n"})
    second = deploy(s, refspec="os/x").deployment
    assert tree_hash(s.deployment_dir(first)) == before
    assert s.origin_path(first).read_bytes() == origin_before
    assert (s.deployment_dir(second) / "etc/motd").read_text() == "local edit\n"
    assert (s.deployment_dir(second) / "usr/bin/tool").read_text() == "tool 2 changed\n"


def test_checkout_is_hardlinked_and_etc_is_a_copy(work: Path) -> None:
    s = new_sysroot(work)
    commit(s, work, 1)
    d = deploy(s, refspec="os/x").deployment
    tree = s.deployment_dir(d)
    assert os.stat(tree / "usr/bin/tool").st_nlink >= 2
    assert os.stat(tree / "etc/motd").st_nlink == 1
    assert (tree / "etc/motd").read_text() == "welcome\n"


def test_retention_keeps_default_rollback_and_pinned(work: Path) -> None:
    s = new_sysroot(work)
    cs = []
    for v in range(1, 5):
        cs.append(commit(s, work, v))
        deploy(s, refspec="os/x")
        if v == 1:
            pin(s, 0)
    assert checksums(s) == [cs[3], cs[2], cs[0]]
    on_disk = sorted(p.name for p in (s.stateroot_dir("testos") / "deploy").iterdir())
    assert on_disk == sorted(f"{c}.0{e}" for c in (cs[3], cs[2], cs[0]) for e in ("", ".origin"))
    repo = Repo.open(s.repo_path)
    assert {k: v for k, v in repo.list_refs().items() if k.startswith("ostree/")} == {
        f"ostree/{s.bootversion()}/{s.subbootversion(s.bootversion())}/{i}": c
        for i, c in enumerate([cs[3], cs[2], cs[0]])}


def test_redeploying_same_commit_bumps_serial(work: Path) -> None:
    s = new_sysroot(work)
    c = commit(s, work, 1)
    deploy(s, refspec="os/x")
    d = deploy(s, refspec="os/x").deployment
    assert (d.checksum, d.deployserial) == (c, 1)
    assert [(x.deployserial, x.bootserial) for x in s.load().deployments] == [(1, 0), (0, 1)]


def test_rollback_swaps_default(work: Path) -> None:
    s = new_sysroot(work)
    c1 = commit(s, work, 1)
    deploy(s, refspec="os/x")
    c2 = commit(s, work, 2)
    deploy(s, refspec="os/x")
    assert rollback(s).checksum == c1
    assert checksums(s) == [c1, c2]
    assert rollback(s).checksum == c2


def test_rollback_without_second_deployment_fails(work: Path) -> None:
    s = new_sysroot(work)
    commit(s, work, 1)
    deploy(s, refspec="os/x")
    with pytest.raises(DeploymentError, match="no rollback"):
        rollback(s)


def test_cleanup_rollback_respects_pin_and_prunes(work: Path) -> None:
    s = new_sysroot(work)
    c1 = commit(s, work, 1, files={"usr/share/only-v1": b"x" * 5000})
    deploy(s, refspec="os/x")
    c2 = commit(s, work, 2)
    deploy(s, refspec="os/x")
    pin(s, 1)
    assert cleanup(s, rollback=True).removed == ()
    assert checksums(s) == [c2, c1]
    pin(s, 1, pinned=False)
    res = cleanup(s, rollback=True)
    assert [d.checksum for d in res.removed] == [c1]
    assert checksums(s) == [c2]
    assert not any(p.name.startswith(c1) for p in (s.stateroot_dir("testos") / "deploy").iterdir())
    assert res.pruned is not None and res.pruned.deleted > 0
    assert not Repo.open(s.repo_path).has(c1, ObjectType.COMMIT)
    run(["ostree", f"--repo={s.repo_path}", "fsck"])


def test_kargs_edit_makes_new_deployment(work: Path) -> None:
    s = new_sysroot(work)
    commit(s, work, 1)
    deploy(s, refspec="os/x", karg_replace=["root=/dev/vda1"])
    kargs, res = edit_kargs(s, append=["quiet"])
    assert res is not None and kargs.to_text() == "root=/dev/vda1 quiet"
    kargs, _ = edit_kargs(s, delete=["root=/dev/vda1"])
    assert kargs.to_text() == "quiet"
    assert edit_kargs(s)[0].to_text() == "quiet"
    entry = (s.boot / "loader/entries/ostree-2-testos.conf").read_text()
    assert "options ostree=/ostree/boot." in entry and entry.split("\n")[2].endswith(" quiet")


def test_tree_without_kernel_is_a_clear_error_and_leaves_nothing(work: Path) -> None:
    s = new_sysroot(work)
    commit(s, work, 1)
    deploy(s, refspec="os/x")
    before = sorted(os.listdir(s.stateroot_dir("testos") / "deploy"))
    tree = make_tree(work / "nok")
    (tree / "usr/lib/modules/6.1.0-test/vmlinuz").unlink()
    ostree_commit(s.repo_path, tree, "os/nokernel")
    with pytest.raises(KernelError, match="no kernel"):
        deploy(s, refspec="os/nokernel")
    assert sorted(os.listdir(s.stateroot_dir("testos") / "deploy")) == before
    assert len(s.load().deployments) == 1


def test_var_copied_only_into_empty_stateroot_var(work: Path) -> None:
    s = new_sysroot(work)
    commit(s, work, 1)
    deploy(s, refspec="os/x")
    var = s.stateroot_dir("testos") / "var"
    assert (var / "lib/app/state").read_text() == "image var\n"
    (var / "lib/app/state").write_text("runtime data\n")
    commit(s, work, 2, files={"var/lib/app/state": "image var 2\n"})
    deploy(s, refspec="os/x")
    assert (var / "lib/app/state").read_text() == "runtime data\n"


def test_status_fields(work: Path) -> None:
    s = new_sysroot(work)
    c1 = commit(s, work, 1)
    deploy(s, refspec="os/x")
    (row,) = status(s)
    d = row.to_dict()
    assert d["checksum"] == c1 and d["base-checksum"] == c1 and d["origin"] == "os/x"
    assert d["default"] is True and d["booted"] is False and d["staged"] is False
    assert d["timestamp"] == 1700000001 and d["layered-packages"] == []


def _hold_lock(path: str, ready: Event, release: Event) -> None:
    with Sysroot(Path(path)).lock():
        ready.set()
        release.wait(10)


def test_sysroot_lock_excludes_strata_and_ostree(work: Path) -> None:
    s = new_sysroot(work)
    commit(s, work, 1)
    deploy(s, refspec="os/x")
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(str(s.path), ready, release))
    p.start()
    try:
        assert ready.wait(10)
        with pytest.raises(LockedError, match="is locked by another"), s.lock(wait=0.2):
            pass
        with pytest.raises(subprocess.TimeoutExpired):  # real ostree waits for strata's lock
            subprocess.run(["ostree", "admin", "pin", f"--sysroot={s.path}", "0"],
                           capture_output=True, timeout=1.5)
        threading.Timer(0.5, release.set).start()
        t = time.monotonic()
        commit(s, work, 2)
        deploy(s, refspec="os/x")  # waits for the holder, then proceeds
        assert time.monotonic() - t >= 0.4
    finally:
        release.set()
        p.join()
    assert len(s.load().deployments) == 2


def test_deploy_by_checksum_with_layered_origin(work: Path) -> None:
    """The form layering uses: a commit without a ref, an origin with requested packages."""
    s = new_sysroot(work)
    c1 = commit(s, work, 1)
    Repo.open(s.repo_path).set_ref("os/x", None)
    origin = Origin.parse("[origin]\nbaserefspec=remote:os/x\n\n[packages]\nrequested=vim;git;\n")
    d = deploy(s, checksum=c1, origin=origin).deployment
    assert s.origin_path(d).read_text() == origin.to_text()
    row = status(s)[0].to_dict()
    assert row["checksum"] == c1 and row["origin"] == "remote:os/x"
    assert row["requested-packages"] == ["vim", "git"]
    commit(s, work, 2)
    deploy(s, refspec="os/x")
    deploy(s, refspec="os/x")  # c1 drops out and is pruned: no ref keeps it any more
    assert not Repo.open(s.repo_path).has(c1, ObjectType.COMMIT)


def test_empty_sysroot_lists_nothing(work: Path) -> None:
    s = new_sysroot(work)
    state = s.load()
    assert (state.bootversion, state.deployments, state.default) == (0, (), None)
    with pytest.raises(DeploymentError, match="refspec"):
        deploy(s)


def test_booted_deployment_from_kernel_cmdline(work: Path) -> None:
    s = new_sysroot(work)
    commit(s, work, 1)
    deploy(s, refspec="os/x")
    commit(s, work, 2)
    deploy(s, refspec="os/x")
    state = s.load()
    second = s.read_entries(state.bootversion)[1][1].get("options") or ""
    booted = s.find_booted(state.deployments, f"root=/dev/vda1 {second} quiet")
    assert booted is not None and booted.same(state.deployments[1])
    assert s.find_booted(state.deployments, "root=/dev/vda1") is None


def test_a_pin_is_not_carried_into_a_new_deployment(work: Path) -> None:
    """ostree keeps the pin under [libostree-transient]: deploying with the pinned
    deployment's origin (as layering does) makes an unpinned deployment."""
    s = new_sysroot(work)
    c1 = commit(s, work, 1)
    deploy(s, refspec="os/x")
    pin(s, 0)
    pinned = s.load().default
    assert pinned is not None and pinned.pinned
    deploy(s, checksum=c1, origin=pinned.origin)
    assert [d.pinned for d in s.load().deployments] == [False, True]
    assert "libostree-transient" not in s.origin_path(s.load().deployments[0]).read_text()
