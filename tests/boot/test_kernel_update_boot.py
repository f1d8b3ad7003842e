"""A new kernel in a new base, booted for real: ``strata upgrade`` onto a base whose kernel
is the security suite's update installs it under its own ``boot/ostree`` directory and
the next boot runs it (``uname -r``); ``strata rollback`` boots the old kernel again.

The first boot also has ``/boot`` on a disk of its own (``/dev/vdb``, mounted by the
deployment's fstab): the guest sees the entries strata wrote there.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.boot.vm import boot as boot_vm
from tests.boot.vm import (
    boot_split,
    bootable_rootfs,
    default_entry,
    kernel_version,
    newer_kernel_rootfs,
    write_probe,
)
from tests.util import require_tool, run_strata

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(3600)]

STATEROOT = "debian"
KARGS = ("--karg", "root=/dev/vda", "--karg", "rw", "--karg", "console=ttyS0")
PROBE = r"""
echo "kver $(uname -r)"
[ -f "/usr/lib/modules/$(uname -r)/modules.dep" ] && echo "modules yes"
echo "boot-source $(findmnt -n -o SOURCE /boot 2>&1)"
echo "boot-entries $(ls /boot/loader/entries 2>&1 | tr '\n' ' ')"
echo "boot-kernels $(ls /boot/ostree 2>&1 | wc -l)"
"""


def _lines(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        out.setdefault(key, value.strip())
    return out


def test_new_kernel_boots_after_upgrade_and_old_after_rollback(tmp_path: Path) -> None:
    require_tool("mmdebstrap", "qemu-system-x86_64", "mkfs.ext4")
    old_tree = bootable_rootfs()
    old = kernel_version(old_tree)
    new_tree = newer_kernel_rootfs(old)
    new = kernel_version(new_tree)
    assert new != old
    s = tmp_path / "sysroot"
    repo = s / "ostree/repo"
    run_strata("--sysroot", s, "os-init", STATEROOT)
    run_strata("--repo", repo, "commit", "-b", "debian/bookworm", old_tree, timeout=1800)
    run_strata("--sysroot", s, "deploy", "--stateroot", STATEROOT, *KARGS, "debian/bookworm")
    run_strata("--repo", repo, "commit", "-b", "debian/bookworm", new_tree, timeout=1800)
    run_strata("--sysroot", s, "upgrade", timeout=1800)

    kdirs = sorted(p.name for p in (s / "boot/ostree").iterdir())
    assert len(kdirs) == 2
    entry = default_entry(s)
    assert entry.linux.name == f"vmlinuz-{new}" and entry.initrd.name == f"initramfs-{new}.img"
    status = json.loads(run_strata("--sysroot", s, "--json", "status").stdout)
    (dep,) = (s / "ostree/deploy" / STATEROOT / "deploy").glob(
        f"{status['deployments'][0]['checksum']}.0")
    with open(dep / "etc/fstab", "a") as f:
        f.write("/dev/vdb /boot ext4 defaults 0 2\n")
    write_probe(s, STATEROOT, PROBE)
    results = {}
    try:
        first = boot_split(s, tmp_path, name="new-kernel")
        got = _lines(first.probe)
        results["new"] = (round(first.seconds), first.accel)
        assert got.get("kver") == new, first.probe
        assert got.get("modules") == "yes", first.probe
        assert got.get("boot-source") == "/dev/vdb", first.probe
        assert got.get("boot-entries") == "ostree-1-debian.conf ostree-2-debian.conf", first.probe
        assert got.get("boot-kernels") == "2", first.probe

        run_strata("--sysroot", s, "rollback")
        assert default_entry(s).linux.name == f"vmlinuz-{old}"
        second = boot_vm(s, tmp_path, name="old-kernel")
        got = _lines(second.probe)
        results["old"] = (round(second.seconds), second.accel)
        assert got.get("kver") == old, second.probe
        assert got.get("modules") == "yes", second.probe
    finally:
        subprocess.run(["chattr", "-R", "-i", str(s)], capture_output=True)
    print(f"kernels {old} -> {new}; boots (seconds, accelerator):", json.dumps(results))
