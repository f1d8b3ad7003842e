"""Bench: `strata deploy` against `ostree admin deploy` of the same commit.

Runs on a loop-mounted ext4 image that the script creates and unmounts.  The
image is a Debian minbase (mmdebstrap, cached in bench/out/) rearranged to
the OSTree layout with a fake kernel; `--synthetic` uses a generated tree of
the same shape instead (no network).  Each timed run deploys into a fresh
sysroot whose repository already holds the commit.  Prints medians, the
ratio strata/ostree, and the disk used by 1, 2 and 3 deployments (unique
inodes' bytes of the whole sysroot).

Usage: python bench/deploy.py [--runs N] [--synthetic]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path[0] = str(ROOT)  # bench/store.py would shadow the store package
from bench.common import STRATA, loop_ext4  # noqa: E402
from tests.layering.realworld import minbase_tar  # noqa: E402


def sh(*argv: str | os.PathLike[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([os.fspath(a) for a in argv], check=True, capture_output=True,
                          text=True, **kw)  # type: ignore[call-overload]


def minbase(dest: Path) -> None:
    cache = minbase_tar()  # from this machine's apt sources, cached for the tests
    dest.mkdir()
    sh("tar", "-C", dest, "-xf", cache, "--exclude=./dev/*")
    shutil.rmtree(dest / "dev")
    (dest / "dev").mkdir()
    os.rename(dest / "etc", dest / "usr" / "etc")


def synthetic(dest: Path) -> None:
    for i in range(7800):
        p = dest / "usr" / "share" / f"d{i % 200}" / f"f{i}"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(27000 if i % 10 == 0 else 300))
    (dest / "usr" / "etc").mkdir(parents=True)
    for i in range(600):
        (dest / "usr" / "etc" / f"conf{i}").write_text(f"setting {i}\n")
    (dest / "usr" / "lib").mkdir(parents=True, exist_ok=True)
    (dest / "usr/lib/os-release").write_text('ID=bench\nPRETTY_NAME="Bench OS"\n')


def make_image(base: Path, kind: str) -> Path:
    tree = base / "tree"
    if kind == "synthetic":
        synthetic(tree)
    else:
        minbase(tree)
    kdir = tree / "usr/lib/modules/6.1.0-bench"
    kdir.mkdir(parents=True, exist_ok=True)
    (kdir / "vmlinuz").write_bytes(os.urandom(8 << 20))
    (kdir / "initramfs.img").write_bytes(os.urandom(30 << 20))
    return tree


def fresh_sysroot(path: Path, tree: Path, tool: str) -> None:
    if tool == "strata":
        sh(*STRATA, "--sysroot", path, "os-init", "bench", cwd=ROOT)
    else:
        path.mkdir()
        sh("ostree", "admin", "init-fs", path)
        sh("ostree", "admin", "os-init", f"--sysroot={path}", "bench")
    sh("ostree", f"--repo={path}/ostree/repo", "commit", "-b", "os/x", "--no-bindings",
       "--timestamp=@1700000000", tree)


def deploy_cmd(path: Path, tool: str) -> list[str]:
    if tool == "strata":
        return [*STRATA, "-q", "--sysroot", str(path), "deploy", "os/x"]
    return ["ostree", "admin", "deploy", f"--sysroot={path}", "--os=bench", "os/x"]


def unique_bytes(root: Path) -> int:
    seen: set[int] = set()
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_size
    return total


def remove(path: Path) -> None:
    subprocess.run(["chattr", "-R", "-i", str(path)], capture_output=True)
    shutil.rmtree(path)


def commit_variant(s: Path, tree: Path, n: int) -> None:
    (tree / "usr/etc/bench-version").write_text(f"{n}\n")
    sh("ostree", f"--repo={s}/ostree/repo", "commit", "-b", "os/x", "--no-bindings",
       f"--timestamp=@{1700000000 + n}", tree)
    (tree / "usr/etc/bench-version").unlink()


def timed(argv: list[str]) -> float:
    sh("sync")
    t = time.perf_counter()
    sh(*argv, cwd=ROOT)
    return time.perf_counter() - t


def time_deploys(fs: Path, tree: Path, runs: int) -> dict[tuple[str, str], list[float]]:
    """First deploy into a fresh sysroot, and a third deploy (merge, retention, prune)."""
    times: dict[tuple[str, str], list[float]] = {}
    for i in range(runs):
        for tool in ("ostree", "strata"):
            s = fs / f"{tool}-{i}"
            fresh_sysroot(s, tree, tool)
            times.setdefault((tool, "first"), []).append(timed(deploy_cmd(s, tool)))
            commit_variant(s, tree, 1)
            sh(*deploy_cmd(s, tool), cwd=ROOT)
            commit_variant(s, tree, 2)
            times.setdefault((tool, "third"), []).append(timed(deploy_cmd(s, tool)))
            remove(s)
    return times


def disk_usage(fs: Path, tree: Path) -> dict[str, list[int]]:
    usage: dict[str, list[int]] = {}
    for tool in ("ostree", "strata"):
        s = fs / f"{tool}-disk"
        fresh_sysroot(s, tree, tool)
        usage[tool] = []
        for n in range(3):
            if n:
                commit_variant(s, tree, n)
            sh(*deploy_cmd(s, tool), cwd=ROOT)
            pin = ([*STRATA, "--sysroot", str(s), "pin", "0"] if tool == "strata"
                   else ["ostree", "admin", "pin", f"--sysroot={s}", "0"])
            sh(*pin, cwd=ROOT)
            usage[tool].append(unique_bytes(s))
        remove(s)
    return usage


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--synthetic", action="store_true")
    args = ap.parse_args()
    with loop_ext4(6) as fs:
        tree = make_image(fs, "synthetic" if args.synthetic else "minbase")
        nfiles = sum(len(f) for _, _, f in os.walk(tree))
        times = time_deploys(fs, tree, args.runs)
        usage = disk_usage(fs, tree)
    print(f"image: {'synthetic' if args.synthetic else 'debian minbase'}, {nfiles} files, "
          f"runs: {args.runs}")
    print(f"{'step':<28}{'strata':>12}{'ostree':>12}{'ratio':>8}")
    for kind, label in (("first", "first deploy (median s)"), ("third", "3rd deploy (median s)")):
        ms = statistics.median(times[("strata", kind)])
        mo = statistics.median(times[("ostree", kind)])
        print(f"{label:<28}{ms:>12.3f}{mo:>12.3f}{ms / mo:>8.2f}")
    for n in range(3):
        a, b = usage["strata"][n], usage["ostree"][n]
        print(f"{f'disk, {n + 1} deployment(s) (MB)':<28}{a / 1e6:>12.1f}{b / 1e6:>12.1f}"
              f"{a / b:>8.2f}")


if __name__ == "__main__":
    main()
