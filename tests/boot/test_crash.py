"""Killed deploys: the old boot configuration stays valid and the next run cleans up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from boot.deploy import deploy, os_init
from boot.sysroot import Sysroot
from tests.boot.conftest import make_tree, ostree_admin, ostree_commit
from tests.boot.test_deploy import tree_hash
from tests.util import ROOT, StrataRunner

pytestmark = pytest.mark.integration


def assert_bootable(s: Sysroot) -> list[str]:
    """Every entry's kernel, initramfs and ostree= target exist; returns checksums in order."""
    state = s.load()
    entries = s.read_entries(state.bootversion)
    assert len(entries) == len(state.deployments) >= 1
    for (_, e), d in zip(entries, state.deployments, strict=True):
        for key in ("linux", "initrd"):
            assert (s.boot / (e.get(key) or "").lstrip("/")).is_file()
        link = d.kargs.get("ostree") or ""
        target = Path(os.path.realpath(s.path / link.lstrip("/")))
        assert target == Path(os.path.realpath(s.deployment_dir(d)))
        assert (target / "usr/lib/os-release").is_file() and (target / "etc/motd").is_file()
    ostree_admin("status", f"--sysroot={s.path}")
    return [d.checksum for d in state.deployments]


def leftovers(s: Sysroot) -> list[str]:
    live = {d.dirname for d in s.load().deployments}
    ddir = s.stateroot_dir("testos") / "deploy"
    return [p.name for p in ddir.iterdir() if p.name.removesuffix(".origin") not in live]


def setup(work: Path, nfiles: int = 0) -> tuple[Sysroot, str, str]:
    s = Sysroot(work / "sysroot")
    os_init(s, "testos")
    c1 = ostree_commit(s.repo_path, make_tree(work / "v1"), "os/x", 1700000001)
    deploy(s, refspec="os/x")
    extra: dict[str, bytes | str | None] = {f"usr/share/data/f{i}": f"{i}\n" * 50
                                            for i in range(nfiles)}
    c2 = ostree_commit(s.repo_path, make_tree(work / "v2", version="2", kernel=b"k2",
                                              files=extra), "os/x", 1700000002)
    return s, c1, c2


@pytest.mark.parametrize("point", ["after-checkout", "after-etc", "after-kernel",
                                   "before-swap", "after-swap"])
def test_fail_point_leaves_valid_boot_and_retry_succeeds(
        work: Path, strata: StrataRunner, point: str) -> None:
    s, c1, c2 = setup(work)
    old = s.load().default
    assert old is not None
    before = tree_hash(s.deployment_dir(old))
    proc = strata("--sysroot", s.path, "deploy", "os/x", check=False,
                  env={"STRATA_TEST_FAIL_AT": point})
    assert proc.returncode == 1
    order = assert_bootable(s)
    assert order == ([c2, c1] if point == "after-swap" else [c1])
    assert tree_hash(s.deployment_dir(old)) == before
    status = strata("--sysroot", s.path, "status")
    assert c1 in status.stdout
    strata("--sysroot", s.path, "deploy", "os/x")
    assert assert_bootable(s)[0] == c2
    assert leftovers(s) == []


def _wait_for_checkout(s: Sysroot, p: subprocess.Popen[bytes], limit: float = 30.0) -> None:
    """Return once the deploy has begun writing a new tree (or has exited)."""
    end = time.monotonic() + limit
    while p.poll() is None and time.monotonic() < end and not leftovers(s):
        time.sleep(0.002)


def test_real_sigkill_at_many_moments(work: Path) -> None:
    s, c1, c2 = setup(work, nfiles=3000)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    argv = [sys.executable, "-m", "layering", "--sysroot", str(s.path), "deploy", "os/x"]
    half_written = kills = 0
    # Two kinds of moment alternate. Blind ones: 50 ms steps from start-up, which land
    # in start-up, in the clean-up of the last kill's tree, in the checkout or in the
    # switch. Aimed ones, from a clean state: once the new tree has appeared, 0-40 ms
    # later, so that kills inside the checkout happen however fast this machine is.
    for k in range(1, 31):
        clean = not leftovers(s)
        aimed = clean and k % 2 == 0
        p = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        if aimed:
            _wait_for_checkout(s, p)
            time.sleep(0.01 * (k // 2 % 5))
        else:
            time.sleep(0.05 * k)
        p.send_signal(signal.SIGKILL)
        p.wait()
        kills += 1
        order = assert_bootable(s)
        assert set(order) <= {c1, c2}
        half_written += clean and bool(leftovers(s))
        if half_written >= 3 and kills >= 10:
            break
    assert half_written >= 1, "no kill landed inside a deploy"
    subprocess.run(argv, cwd=ROOT, env=env, check=True, capture_output=True)
    assert assert_bootable(s)[0] == c2
    assert leftovers(s) == []


def test_status_reads_consistently_during_deploys(work: Path) -> None:
    s, c1, c2 = setup(work)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    script = ("import sys\nfrom pathlib import Path\nfrom boot.deploy import deploy\n"
              "from boot.sysroot import Sysroot\n"
              f"for _ in range(6): deploy(Sysroot(Path({str(s.path)!r})), refspec='os/x')\n")
    p = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env)
    reads = 0
    while p.poll() is None:
        order = [d.checksum for d in s.load().deployments]
        assert order and set(order) <= {c1, c2}
        reads += 1
    assert p.returncode == 0 and reads > 5
