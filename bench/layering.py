"""Layering bench: strata compose vs the apt-ostree route on the same minbase and debs.

Usage: python bench/layering.py [--runs N]
(1) strata compose of ~15 common tools (about 50 debs with dependencies) onto a
Debian minbase, cold (empty package cache); (2) the route people use today:
ostree checkout, dpkg -i of the same pre-downloaded .debs in a chroot, ostree
commit --link-checkout-speedup; (3) strata warm compose of the same packages
onto a new base commit (cache hits only).  Runs on a loop-mounted ext4; the
catalogue and packages are served by nginx.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # bench/store.py would shadow the store package
from bench.common import STRATA, loop_ext4, median, sync, table, timed  # noqa: E402
from fixtures.images import apt_repo  # noqa: E402
from tests.layering.realworld import build_minbase  # noqa: E402
from tests.store.servers import nginx_server  # noqa: E402

TOOLS = ["jq", "tree", "curl", "less", "vim-tiny", "file", "procps", "nano", "wget", "htop",
         "rsync", "bc", "lsof", "psmisc", "unzip", "zstd"]


def fetch_closure(rootfs: Path, dest: Path) -> list[Path]:
    """The .debs apt would install into this minbase for TOOLS (no recommends)."""
    # apt needs /dev (the minbase has an empty one, and the bench's mount may be nodev)
    inside = ["bwrap", "--bind", rootfs, "/", "--dev", "/dev", "--proc", "/proc",
              "--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf"]
    subprocess.run([*inside, "apt-get", "update", "-qq"], check=True)
    subprocess.run([*inside, "apt-get", "install", "-qq", "-y", "--download-only",
                    "--no-install-recommends", *TOOLS], check=True, stdout=subprocess.DEVNULL)
    dest.mkdir()
    for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
        shutil.move(deb, dest / deb.name)
    subprocess.run(["chroot", rootfs, "apt-get", "clean"], check=True)
    shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
    (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True)
    return sorted(dest.glob("*.deb"))


def strata_round(mnt: Path, rootfs: Path, source: str, i: int) -> tuple[float, float]:
    repo = mnt / f"strata-{i}"
    subprocess.run([*STRATA, "--repo", repo, "init"], check=True)
    subprocess.run([*STRATA, "-q", "--repo", repo, "commit", "-b", "base", rootfs], check=True,
                   stdout=subprocess.DEVNULL)
    sync()
    cold, _ = timed([*STRATA, "-q", "--repo", repo, "compose", "-b", "layered", "--base", "base",
                     "--source", source, *sum((["--install", t] for t in TOOLS), [])])
    (rootfs / "usr/share/base-marker").write_text(f"new base {i}\n")
    subprocess.run([*STRATA, "-q", "--repo", repo, "commit", "-b", "base", rootfs], check=True,
                   stdout=subprocess.DEVNULL)
    (rootfs / "usr/share/base-marker").unlink()
    sync()
    warm, _ = timed([*STRATA, "-q", "--repo", repo, "compose", "-b", "layered2", "--base", "base",
                     "--source", source, *sum((["--install", t] for t in TOOLS), [])])
    shutil.rmtree(repo)
    return cold, warm


def route_round(mnt: Path, rootfs: Path, debs: list[Path], i: int) -> float:
    repo, co = mnt / f"ostree-{i}", mnt / f"co-{i}"
    subprocess.run(["ostree", "init", f"--repo={repo}", "--mode=bare"], check=True)
    subprocess.run(["ostree", "commit", f"--repo={repo}", "-b", "base", rootfs], check=True,
                   stdout=subprocess.DEVNULL)
    debdir = co / "tmp/debs"
    sync()
    t1, _ = timed(["ostree", "checkout", f"--repo={repo}", "base", co])
    shutil.copytree(debs[0].parent, debdir)
    t2, _ = timed(["chroot", co, "sh", "-c", "dpkg -i /tmp/debs/*.deb"],
                  env={"DEBIAN_FRONTEND": "noninteractive"})
    shutil.rmtree(debdir)
    t3, _ = timed(["ostree", "commit", f"--repo={repo}", "-b", "layered",
                   "--link-checkout-speedup", co])
    shutil.rmtree(repo)
    shutil.rmtree(co)
    return t1 + t2 + t3


def prepare_minbase(mnt: Path) -> tuple[Path, list[Path]]:
    """A Debian minbase root (no device nodes) and the .debs of TOOLS for it."""
    rootfs = build_minbase(mnt / "rootfs")
    debs = fetch_closure(rootfs, mnt / "debs")
    for dev in (rootfs / "dev").iterdir():
        dev.unlink() if not dev.is_dir() or dev.is_symlink() else shutil.rmtree(dev)
    return rootfs, debs


StrataRound = Callable[[Path, Path, str, int], tuple[float, float]]
RouteRound = Callable[[Path, Path, list[Path], int], float]


def run_rounds(mnt: Path, rootfs: Path, debs: list[Path], strata: StrataRound,
               route: RouteRound, runs: int) -> tuple[list[float], list[float], list[float]]:
    """Serve the debs as an apt repository over nginx and alternate a strata round (cold,
    warm) with a route round ``runs`` times; return the cold, warm and route times."""
    apt_repo(mnt / "apt", debs)
    cold, warm, routes = [], [], []
    with nginx_server(mnt / "apt", mnt / "nginx") as served:
        source = f"deb [trusted=yes] {served.url} stable main"
        for i in range(runs):
            c, w = strata(mnt, rootfs, source, i)
            cold.append(c)
            warm.append(w)
            routes.append(route(mnt, rootfs, debs, i))
    return cold, warm, routes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with loop_ext4(16) as mnt:
        rootfs, debs = prepare_minbase(mnt)
        cold, warm, route = run_rounds(mnt, rootfs, debs, strata_round, route_round, args.runs)
    print(f"{len(TOOLS)} tools, {len(debs)} debs onto a Debian minbase; {args.runs} runs; medians")
    print(table([
        ("cold compose vs checkout+dpkg -i+commit", median(cold), median(route), "target <= 0.5x"),
        ("warm compose (new base) vs strata cold", median(warm), median(cold), "target <= 0.25x"),
    ]))


if __name__ == "__main__":
    main()
