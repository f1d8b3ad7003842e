"""Store bench: strata vs the real ostree on the same ~10,000-file tree, in one run.

Usage: python bench/store.py [--tree ROOTFS] [--runs N]
Times first commit (bare, archive), re-commit of an unchanged hardlinked checkout,
hardlink checkout and fsck; prints medians, ratios strata/ostree and strata's peak RSS.
Runs on a loop-mounted ext4 (the root filesystem creates files erratically).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # bench/store.py would shadow store/
from bench.common import STRATA, loop_ext4, make_os_like_tree, median, sync, table, timed  # noqa: E402


def one_round(mnt: Path, tree: Path, i: int, res: dict[str, list[float]], rss: list[int]) -> None:
    def run(name: str, argv: list, env: dict | None = None) -> None:
        sync()
        t, peak = timed(argv, env=env)
        res.setdefault(name, []).append(t)
        if argv[:len(STRATA)] == STRATA:
            rss.append(peak)

    for tool in ("strata", "ostree"):
        for mode in ("bare", "archive"):
            repo = mnt / f"{tool}-{mode}-{i}"
            if tool == "strata":
                subprocess.run([*STRATA, "--repo", repo, "init", "--mode", mode], check=True)
                run(f"{tool} commit {mode}", [*STRATA, "--repo", repo, "commit", "-b", "main",
                                              "--timestamp", "1", tree])
            else:
                subprocess.run(["ostree", "init", f"--repo={repo}", f"--mode={mode}"], check=True)
                run(f"{tool} commit {mode}", ["ostree", "commit", f"--repo={repo}", "-b", "main",
                                              "--timestamp=@1", tree])
        repo = mnt / f"{tool}-bare-{i}"
        co = mnt / f"{tool}-co-{i}"
        if tool == "strata":
            run(f"{tool} checkout", [*STRATA, "--repo", repo, "checkout", "main", co])
            run(f"{tool} recommit", [*STRATA, "--repo", repo, "commit", "-b", "main",
                                     "--timestamp", "2", co])
            run(f"{tool} fsck", [*STRATA, "-q", "--repo", repo, "fsck"])
        else:
            run(f"{tool} checkout", ["ostree", "checkout", f"--repo={repo}", "main", co])
            run(f"{tool} recommit", ["ostree", "commit", f"--repo={repo}", "-b", "main",
                                     "--link-checkout-speedup", "--timestamp=@2", co])
            run(f"{tool} fsck", ["ostree", "fsck", f"--repo={repo}"])
    for p in mnt.iterdir():
        if p.name.endswith(f"-{i}"):
            shutil.rmtree(p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tree", type=Path, help="commit this root filesystem instead")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with loop_ext4(8) as mnt:
        tree = mnt / "tree"
        if args.tree:
            shutil.copytree(args.tree, tree, symlinks=True)
        else:
            make_os_like_tree(tree)
        nfiles = sum(1 for p in tree.rglob("*") if not p.is_dir())
        size = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file() and not p.is_symlink())
        res: dict[str, list[float]] = {}
        rss: list[int] = []
        for i in range(args.runs):
            one_round(mnt, tree, i, res, rss)
    rows = []
    for op, target in (("commit bare", "<= 1.5x"), ("commit archive", "<= 1.5x"),
                       ("checkout", "<= 1.5x"), ("recommit", "<= 2x"), ("fsck", "")):
        rows.append((op, median(res[f"strata {op}"]), median(res[f"ostree {op}"]),
                     f"target {target}" if target else ""))
    print(f"tree: {nfiles} files, {size / 1e6:.0f} MB; {args.runs} runs; medians")
    print(table(rows))
    print(f"strata peak RSS: {max(rss)} MB (target < 300 MB)")


if __name__ == "__main__":
    main()
