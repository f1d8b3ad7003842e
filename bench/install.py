"""Install bench: strata install/upgrade on a deployed minbase vs the apt-ostree route.

Usage: python bench/install.py [--runs N]
(1) ``strata install`` of ~15 common tools (about 50 real debs with dependencies)
on a sysroot with a deployed Debian minbase; (2) the route people use today on
an ostree sysroot: ``ostree checkout``, ``dpkg -i`` of the pre-downloaded debs in
a chroot, ``ostree commit --link-checkout-speedup``, ``ostree admin deploy``;
(3) ``strata upgrade`` onto a new base with those layers (cache warm).
Runs on a loop-mounted ext4; the catalogue is served by nginx.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # bench/store.py would shadow the store package
from bench.common import STRATA, loop_ext4, median, sync, table, timed  # noqa: E402
from bench.layering import TOOLS, prepare_minbase, run_rounds  # noqa: E402

KVER = "6.1.0-bench"


def prepare(mnt: Path) -> tuple[Path, list[Path]]:
    rootfs, debs = prepare_minbase(mnt)
    kdir = rootfs / "usr/lib/modules" / KVER
    kdir.mkdir(parents=True)
    (kdir / "vmlinuz").write_bytes(b"bench kernel")
    (kdir / "initramfs.img").write_bytes(b"bench initramfs")
    return rootfs, debs


def strata_round(mnt: Path, rootfs: Path, source: str, i: int) -> tuple[float, float]:
    sysroot = mnt / f"strata-sysroot-{i}"
    st = [*STRATA, "-q", "--sysroot", sysroot]
    subprocess.run([*st, "os-init", "bench"], check=True)
    subprocess.run([*st, "--repo", sysroot / "ostree/repo", "commit", "-b", "os/base", rootfs],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*st, "deploy", "os/base"], check=True, stdout=subprocess.DEVNULL)
    deployed = next(p for p in (sysroot / "ostree/deploy/bench/deploy").iterdir() if p.is_dir())
    (deployed / "etc/apt/sources.list").unlink(missing_ok=True)  # same debs as the route
    (deployed / "etc/apt/sources.list.d/bench.list").write_text(source + "\n")
    sync()
    cold, _ = timed([*st, "install", *TOOLS])
    (rootfs / "usr/share/base-marker").write_text(f"new base {i}\n")
    subprocess.run([*st, "--repo", sysroot / "ostree/repo", "commit", "-b", "os/base", rootfs],
                   check=True, stdout=subprocess.DEVNULL)
    (rootfs / "usr/share/base-marker").unlink()
    sync()
    warm, _ = timed([*st, "upgrade"])
    subprocess.run(["chattr", "-R", "-i", sysroot], capture_output=True)
    shutil.rmtree(sysroot)
    return cold, warm


def route_round(mnt: Path, rootfs: Path, debs: list[Path], i: int) -> float:
    sysroot = mnt / f"ostree-sysroot-{i}"
    repo = sysroot / "ostree/repo"
    co = mnt / f"route-co-{i}"
    sysroot.mkdir()
    subprocess.run(["ostree", "admin", "init-fs", sysroot], check=True, capture_output=True)
    subprocess.run(["ostree", "admin", "os-init", "bench", f"--sysroot={sysroot}"], check=True,
                   capture_output=True)
    subprocess.run(["ostree", "commit", f"--repo={repo}", "-b", "os/base", rootfs], check=True,
                   stdout=subprocess.DEVNULL)
    sync()
    total = timed(["ostree", "checkout", f"--repo={repo}", "os/base", co])[0]
    shutil.copytree(debs[0].parent, co / "tmp/debs")
    total += timed(["chroot", co, "sh", "-c", "dpkg -i /tmp/debs/*.deb"],
                   env={"DEBIAN_FRONTEND": "noninteractive"})[0]
    shutil.rmtree(co / "tmp/debs")
    total += timed(["sh", "-c", f"mkdir -p {co}/usr && mv {co}/etc {co}/usr/etc"])[0]
    total += timed(["ostree", "commit", f"--repo={repo}", "-b", "os/layered",
                    "--link-checkout-speedup", co])[0]
    total += timed(["ostree", "admin", "deploy", f"--sysroot={sysroot}", "--os=bench",
                    "os/layered"])[0]
    subprocess.run(["chattr", "-R", "-i", sysroot], capture_output=True)
    shutil.rmtree(sysroot)
    shutil.rmtree(co)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with loop_ext4(16) as mnt:
        rootfs, debs = prepare(mnt)
        cold, warm, route = run_rounds(mnt, rootfs, debs, strata_round, route_round, args.runs)
    print(f"{len(TOOLS)} tools, {len(debs)} debs on a deployed Debian minbase; "
          f"{args.runs} runs; medians")
    print(table([
        ("install vs checkout+dpkg -i+commit+admin deploy", median(cold), median(route),
         "target <= 0.5x"),
        ("warm upgrade (new base) vs strata install", median(warm), median(cold),
         "target <= 0.25x"),
    ]))


if __name__ == "__main__":
    main()
