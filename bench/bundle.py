"""Bundle bench: a Debian minbase plus ~50 real debs carried in one file.

Usage: python bench/bundle.py [--runs N]
Sizes: ``strata bundle create`` of the minbase commit with ``--packages`` of the
bench tools (about 50 debs with dependencies, indexes included) against
``ostree static-delta generate --empty --inline --min-fallback-size=0`` (no
fallbacks: apply-offline refuses a delta with any) of the same commit plus the
.deb files in a tar.  Times (same run): ``strata bundle apply`` into a fresh
repository, with and without the packages, against ``ostree static-delta
apply-offline`` into a fresh bare repository.  Runs on a loop-mounted ext4;
the debs are served by nginx while the bundle is created.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # bench/store.py would shadow the store package
from bench.common import STRATA, loop_ext4, median, sync, timed  # noqa: E402
from bench.layering import TOOLS, prepare_minbase  # noqa: E402
from fixtures.images import apt_repo  # noqa: E402
from tests.store.servers import nginx_server  # noqa: E402


def make_inputs(mnt: Path) -> tuple[Path, list[Path], Path, Path, Path, float, int]:
    """The committed minbase, the debs, the two bundles, the ostree delta; create time, RSS."""
    rootfs, debs = prepare_minbase(mnt)
    apt_repo(mnt / "apt", debs)
    repo = mnt / "src"
    with nginx_server(mnt / "apt", mnt / "nginx") as served:
        (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
        (rootfs / "etc/apt/sources.list.d/bench.list").write_text(
            f"deb [trusted=yes] {served.url} stable main\n")
        subprocess.run([*STRATA, "--repo", repo, "init"], check=True)
        subprocess.run([*STRATA, "-q", "--repo", repo, "commit", "-b", "os/base", rootfs],
                       check=True, stdout=subprocess.DEVNULL)
        full, bare = mnt / "full.bundle", mnt / "bare.bundle"
        sync()
        create_s, create_rss = timed([*STRATA, "--repo", repo, "bundle", "create", "-o", full,
                                      "os/base", "--packages", *TOOLS])
    subprocess.run([*STRATA, "--repo", repo, "bundle", "create", "-o", bare, "os/base"],
                   check=True, stdout=subprocess.DEVNULL)
    delta = mnt / "ostree.delta"
    subprocess.run(["ostree", "static-delta", "generate", f"--repo={repo}", "--empty",
                    "--inline", "--min-fallback-size=0", "--to=os/base",
                    f"--filename={delta}"], check=True,
                   stdout=subprocess.DEVNULL)
    return repo, debs, full, bare, delta, create_s, create_rss


def apply_round(mnt: Path, full: Path, bare: Path, delta: Path,
                i: int) -> tuple[float, float, float, int]:
    """(strata apply with packages, strata apply of the commit only, ostree, strata RSS)."""
    times = []
    rss = 0
    for name, bundle in (("full", full), ("bare", bare)):
        repo = mnt / f"apply-{name}-{i}"
        subprocess.run([*STRATA, "--repo", repo, "init"], check=True)
        sync()
        t, r = timed([*STRATA, "--repo", repo, "bundle", "apply", bundle])
        times.append(t)
        rss = max(rss, r)
    oracle = mnt / f"apply-ostree-{i}"
    subprocess.run(["ostree", "init", f"--repo={oracle}", "--mode=bare"], check=True)
    sync()
    t, _ = timed(["ostree", "static-delta", "apply-offline", f"--repo={oracle}", delta])
    return times[0], times[1], t, rss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with loop_ext4(16) as mnt:
        _repo, debs, full, bare, delta, create_s, create_rss = make_inputs(mnt)
        debs_tar = mnt / "debs.tar"
        with tarfile.open(debs_tar, "w") as tar:
            for deb in debs:
                tar.add(deb, arcname=deb.name)
        rounds = [apply_round(mnt, full, bare, delta, i) for i in range(args.runs)]
        sizes = {p.name: p.stat().st_size for p in (full, bare, delta, debs_tar)}
    mb = 1 << 20
    print(f"Debian minbase + {len(debs)} debs ({len(TOOLS)} tools); {args.runs} runs; medians")
    print(f"bundle create: {create_s:.1f} s, peak RSS {create_rss} MB")
    print(f"size: strata bundle {sizes['full.bundle'] / mb:.1f} MB; ostree inline delta "
          f"{sizes['ostree.delta'] / mb:.1f} MB + debs tar {sizes['debs.tar'] / mb:.1f} MB = "
          f"{(sizes['ostree.delta'] + sizes['debs.tar']) / mb:.1f} MB; strata bundle without "
          f"packages {sizes['bare.bundle'] / mb:.1f} MB")
    print(f"apply: strata with packages {median([r[0] for r in rounds]):.1f} s, commit only "
          f"{median([r[1] for r in rounds]):.1f} s; ostree apply-offline "
          f"{median([r[2] for r in rounds]):.1f} s; strata peak RSS "
          f"{max(r[3] for r in rounds)} MB")


if __name__ == "__main__":
    main()
