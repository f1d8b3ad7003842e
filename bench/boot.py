#!/usr/bin/env python3
"""Bench: boot time of a strata deployment against the same commit deployed by
``ostree admin deploy`` (same image, same accelerator, same run, alternating).

The image is the cached bootable Debian 12 tree of the boot tests
(``tests/boot/vm.py``).  One repository holds its commit; two sysroots are made
from it, one by ``strata deploy`` and one by ``ostree admin deploy``, with the
same kernel arguments.  Each boot runs to the probe (after multi-user.target),
which powers the guest off; the time is from starting QEMU to the probe's end.
Prints the medians and the ratio strata/ostree.  Needs root and QEMU.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.boot.vm import boot, bootable_rootfs, write_probe  # noqa: E402
from tests.util import run, run_strata  # noqa: E402

ROUNDS = 3
KARGS = ("root=/dev/vda", "rw", "console=ttyS0")


def sysroots(work: Path, rootfs: Path) -> tuple[Path, Path]:
    """(strata's sysroot, ostree's sysroot), each deploying the same OSTree-layout commit
    of ``rootfs`` (``ostree admin deploy`` wants ``/usr/etc``)."""
    s = work / "strata"
    run_strata("--sysroot", s, "os-init", "debian")
    repo = s / "ostree/repo"
    plain = run_strata("--repo", repo, "commit", "-b", "plain", rootfs).stdout.strip()
    tree = work / "tree"
    run_strata("--repo", repo, "checkout", plain, tree)
    (tree / "etc").rename(tree / "usr/etc")
    csum = run_strata("--repo", repo, "commit", "-b", "debian/bookworm", "--timestamp",
                      "1700000000", tree).stdout.strip()
    shutil.rmtree(tree)
    run_strata("--sysroot", s, "deploy", "--stateroot", "debian",
               *[a for k in KARGS for a in ("--karg", k)], "debian/bookworm")
    o = work / "ostree"
    o.mkdir()
    run(["ostree", "admin", "init-fs", o])
    run(["ostree", "admin", "os-init", f"--sysroot={o}", "debian"])
    run(["ostree", f"--repo={o}/ostree/repo", "pull-local", repo, csum])
    run(["ostree", "admin", "deploy", f"--sysroot={o}", "--os=debian",
         *[f"--karg={k}" for k in KARGS], csum])
    return s, o


def main() -> None:
    rootfs = bootable_rootfs()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
        work = Path(d)
        strata_root, ostree_root = sysroots(work, rootfs)
        times: dict[str, list[float]] = {"strata": [], "ostree": []}
        accel = ""
        for i in range(ROUNDS):
            for name, root in (("strata", strata_root), ("ostree", ostree_root)):
                write_probe(root, "debian", "echo ok\n")
                res = boot(root, work, name=f"{name}-{i}")
                times[name].append(res.seconds)
                accel = res.accel
                print(f"round {i + 1}: {name} {res.seconds:.1f} s", flush=True)
        s, o = (statistics.median(times[k]) for k in ("strata", "ostree"))
        print(f"boot to the probe, median of {ROUNDS} ({accel}): strata {s:.1f} s, "
              f"ostree {o:.1f} s, ratio {s / o:.2f}x")
        for root in (strata_root, ostree_root):
            subprocess.run(["chattr", "-R", "-i", str(root)], capture_output=True)


if __name__ == "__main__":
    main()
