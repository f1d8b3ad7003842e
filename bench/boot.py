#!/usr/bin/env python3
"""Bench: boot time of a strata deployment against the same commit deployed by
``ostree admin deploy`` (same image, same accelerator, same run, alternating).

The image is the cached bootable Debian 12 tree of the boot tests
(``tests/boot/vm.py``).  One repository holds its commit; two sysroots are made
from it, one by ``strata deploy`` and one by ``ostree admin deploy``, with the
same kernel arguments.  Each boot runs to the probe (after multi-user.target),
which powers the guest off; the time is from starting QEMU to the probe's end
(and, from the guest, its uptime when the probe ran).  Every boot starts from a
fresh disk image, so each is a first boot of its deployment.  Prints the medians
and the ratio strata/ostree.  Needs root and QEMU.

    PYTHONPATH=. python bench/boot.py [--rounds N] [--keep-logs DIR] [--same-var]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.boot.vm import boot, bootable_rootfs, write_probe  # noqa: E402
from tests.util import run, run_strata  # noqa: E402

ROUNDS = 4
MEASURES = ("wall, QEMU start to probe", "guest uptime at probe", "QEMU CPU time")
PROBE = "echo \"uptime $(cut -d' ' -f1 /proc/uptime)\"\n"
KARGS = ("root=/dev/vda", "rw", "console=ttyS0")


def sysroots(work: Path, rootfs: Path, *, same_var: bool = False) -> tuple[Path, Path]:
    """(strata's sysroot, ostree's sysroot), each deploying the same OSTree-layout commit
    of ``rootfs`` (``ostree admin deploy`` wants ``/usr/etc``).

    strata fills the new stateroot's /var from the image; ostree 2022.7 leaves it empty
    (systemd-tmpfiles fills it at boot).  ``same_var`` copies strata's into ostree's, so
    that only the deployments differ."""
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
    if same_var:
        var = "ostree/deploy/debian/var"
        shutil.rmtree(o / var)
        run(["cp", "-a", s / var, o / var])
    return s, o


def _uptime(probe: str) -> float:
    for line in probe.splitlines():
        if line.startswith("uptime "):
            return float(line.split()[1])
    raise SystemExit(f"no uptime in the probe's output: {probe!r}")


Times = dict[str, dict[str, list[float]]]  # measure -> sysroot -> seconds per boot


def rounds(work: Path, roots: dict[str, Path], n: int,
           keep: Path | None) -> tuple[Times, set[str]]:
    """Boot each sysroot ``n`` times, alternating; wall, guest and CPU seconds per sysroot."""
    times: Times = {m: {k: [] for k in roots} for m in MEASURES}
    accels = set()
    for i in range(n):
        for name, root in roots.items():
            write_probe(root, "debian", PROBE)
            res = boot(root, work, name=f"{name}-{i}")
            (work / f"{name}-{i}.img").unlink()
            for m, value in zip(MEASURES, (res.seconds, _uptime(res.probe), res.cpu),
                                strict=True):
                times[m][name].append(value)
            accels.add(res.accel)
            if keep is not None:
                shutil.copy(res.log, keep / res.log.name)
            print(f"round {i + 1}: {name} {res.seconds:.1f} s (guest {_uptime(res.probe):.1f} s,"
                  f" QEMU CPU {res.cpu:.1f} s)", flush=True)
    return times, accels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--keep-logs", type=Path, default=None, metavar="DIR")
    ap.add_argument("--same-var", action="store_true",
                    help="give ostree's stateroot the /var strata's got from the image")
    args = ap.parse_args()
    rootfs = bootable_rootfs()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
        work = Path(d)
        strata_root, ostree_root = sysroots(work, rootfs, same_var=args.same_var)
        if args.keep_logs is not None:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
        try:
            times, accels = rounds(work, {"strata": strata_root, "ostree": ostree_root},
                                   args.rounds, args.keep_logs)
        finally:
            for root in (strata_root, ostree_root):
                subprocess.run(["chattr", "-R", "-i", str(root)], capture_output=True)
    for label, per in times.items():
        s, o = (statistics.median(per[k]) for k in ("strata", "ostree"))
        pairs = statistics.median(a / b for a, b in zip(per["strata"], per["ostree"],
                                                       strict=True))
        print(f"{label}, median of {args.rounds} ({'/'.join(sorted(accels))}): "
              f"strata {s:.1f} s, ostree {o:.1f} s, ratio {s / o:.2f}x "
              f"(median of the per-round ratios {pairs:.2f}x)")
    print(f"whole bench {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
