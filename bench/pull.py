"""Bench: `strata pull` against `ostree pull` from the same archive repository over nginx.

Usage: python bench/pull.py [--tree ROOTFS] [--runs N] [--quick-runs M] [--old DIR]

Runs on a loop-mounted ext4 (bench/common.py).  The served repository is made
by the real ostree: commit 1 is the store bench's ~10,000-file tree (or
ROOTFS), commit 2 changes 300 files in place.  Scenarios, each pulled into
fresh bare-user client repositories, ostree and strata alternating run by run,
medians of N runs for the full pull and M runs for the short ones (their times
are small and noisy): full pull,
incremental pull (client holds commit 1) without deltas, incremental with
ostree's static delta, and a no-op pull (client already holds commit 2).
``--old DIR`` also runs the strata source tree in DIR (e.g. an older commit
unpacked with ``git archive``) in the same rounds, as "strata-old".  strata runs
from this source tree with bytecode caching on (PYTHONDONTWRITEBYTECODE unset),
as an installed package does: otherwise every run would compile its modules.
Requests and bytes on the wire come from nginx's access log.  Delta size and
generation time compare ostree's and strata's delta for the same commit pair.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "bench"))

from common import loop_ext4, make_os_like_tree  # noqa: E402

from tests.store.servers import nginx_server  # noqa: E402


def sh(*argv: str | os.PathLike[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([os.fspath(a) for a in argv], check=True, capture_output=True,
                          text=True, **kw)  # type: ignore[call-overload]


def modify_tree(tree: Path, n: int = 300) -> None:
    rnd = random.Random(11)
    files = sorted(p for p in tree.rglob("*") if p.is_file() and not p.is_symlink()
                   and p.stat().st_size > 64)
    for p in rnd.sample(files, n):
        data = bytearray(p.read_bytes())
        pos = rnd.randrange(len(data) - 16)
        data[pos:pos + 16] = rnd.randbytes(16)
        p.write_bytes(bytes(data))


def wire_bytes(log: Path, start: int) -> tuple[int, int]:
    """(requests, body bytes) in the access log after line ``start``."""
    lines = log.read_text().splitlines()[start:]
    total = 0
    for line in lines:
        parts = line.split('"')
        if len(parts) > 2:
            fields = parts[2].split()
            if len(fields) >= 2 and fields[1].isdigit():
                total += int(fields[1])
    return len(lines), total


def log_len(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


TREES = {"strata": ROOT}


def strata_cmd(tool: str) -> tuple[list[str], dict[str, str]]:
    """The argv prefix and environment running the source tree of ``tool``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(TREES[tool])
    return [sys.executable, "-m", "layering"], env


def strata_client(path: Path, url: str) -> None:
    argv, env = strata_cmd("strata")
    sh(*argv, "--repo", path, "init", "--mode", "bare-user", env=env)
    sh(*argv, "--repo", path, "remote", "add", "--no-sign-verify", "origin", url, env=env)


def ostree_client(path: Path, url: str) -> None:
    sh("ostree", "init", f"--repo={path}", "--mode=bare-user")
    sh("ostree", "remote", "add", f"--repo={path}", "--no-gpg-verify", "origin", url)


def timed(argv: list[str | os.PathLike[str]], env: dict[str, str] | None = None) -> float:
    sh("sync")
    t0 = time.perf_counter()
    sh(*argv, env=env)
    return time.perf_counter() - t0


def one_pull(base: Path, url: str, log: Path, tool: str, kind: str, c1: str,
             i: int) -> tuple[float, tuple[int, int]]:
    """One timed pull into a fresh client; (seconds, (requests, bytes on the wire))."""
    repo = base / f"{tool}-{kind}-{i}"
    (ostree_client if tool == "ostree" else strata_client)(repo, url)
    if kind != "full":  # the client holds commit 1 (noop: 2) as origin:main, seeded alike
        sh("ostree", "pull", f"--repo={repo}", "--disable-static-deltas", "origin",
           "main" if kind == "noop" else f"main@{c1}")
    flags = [] if kind == "delta" else ["--disable-static-deltas"]
    start = log_len(log)
    if tool == "ostree":
        secs = timed(["ostree", "pull", f"--repo={repo}", *flags, "origin", "main"])
    else:
        argv, env = strata_cmd(tool)
        secs = timed([*argv, "--repo", repo, "pull", *flags, "origin", "main"], env=env)
    time.sleep(0.2)
    wire = wire_bytes(log, start)
    shutil.rmtree(repo)
    return secs, wire


def run_scenario(base: Path, url: str, log: Path, kind: str, c1: str,
                 runs: int) -> dict[str, tuple[float, int, int]]:
    """Median seconds and the wire counts per tool; the tools alternate run by run so that
    the machine's drift touches both alike."""
    times: dict[str, list[float]] = {"ostree": [], **{t: [] for t in TREES}}
    wire: dict[str, tuple[int, int]] = {}
    for i in range(runs):
        for tool in times:
            secs, wire[tool] = one_pull(base, url, log, tool, kind, c1, i)
            times[tool].append(secs)
    return {tool: (statistics.median(t), *wire[tool]) for tool, t in times.items()}


def delta_sizes(served: Path, c1: str, c2: str) -> dict[str, tuple[float, int]]:
    from store.replication.delta_format import delta_dir, delta_name

    d = served / delta_dir(delta_name(c1, c2))
    out = {}
    t0 = time.perf_counter()
    sh("ostree", "static-delta", "generate", f"--repo={served}", "--from", c1, "--to", c2)
    out["ostree"] = (time.perf_counter() - t0, sum(f.stat().st_size for f in d.iterdir()))
    keep = served / "ostree-delta"
    shutil.move(d, keep)
    t0 = time.perf_counter()
    argv, env = strata_cmd("strata")
    sh(*argv, "--repo", served, "static-delta", "generate", "--from", c1, "--to", c2, env=env)
    out["strata"] = (time.perf_counter() - t0, sum(f.stat().st_size for f in d.iterdir()))
    shutil.rmtree(d)
    shutil.move(keep, d)  # clients pull ostree's delta in the "delta" scenario
    sh("ostree", "summary", "-u", f"--repo={served}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick-runs", type=int, default=9)
    ap.add_argument("--tree", type=Path, help="use this root filesystem for commit 1")
    ap.add_argument("--old", type=Path, help="also run the strata source tree in OLD")
    args = ap.parse_args()
    if args.old:
        TREES["strata-old"] = args.old.resolve()
    with loop_ext4(6) as mnt:
        tree, served = mnt / "tree", mnt / "served"
        if args.tree:
            shutil.copytree(args.tree, tree, symlinks=True)
        else:
            make_os_like_tree(tree)
        nfiles = sum(len(f) for _d, _s, f in os.walk(tree))
        sh("ostree", "init", f"--repo={served}", "--mode=archive")
        c1 = sh("ostree", "commit", f"--repo={served}", "-b", "main", tree).stdout.strip()
        modify_tree(tree)
        c2 = sh("ostree", "commit", f"--repo={served}", "-b", "main", tree).stdout.strip()
        shutil.rmtree(tree)
        sizes = delta_sizes(served, c1, c2)
        with nginx_server(served, mnt / "nginx") as srv:
            rows = []
            for kind in ("full", "incremental", "delta", "noop"):
                runs = args.runs if kind == "full" else args.quick_runs
                got = run_scenario(mnt, srv.url, srv.log, kind, c1, runs)
                rows += [(kind, tool, *got[tool]) for tool in ("ostree", *TREES)]
    print(f"pull bench: {nfiles} files, commit 2 changes 300; medians of {args.runs} runs "
          f"(full) and {args.quick_runs} (incremental, delta, noop); tools interleaved")
    print("| scenario | tool | seconds | requests | MB on wire | time ratio strata/ostree |")
    print("|---|---|---|---|---|---|")
    ostree_secs = {kind: secs for kind, tool, secs, _r, _b in rows if tool == "ostree"}
    for kind, tool, secs, reqs, nbytes in rows:
        ratio = f"{secs / ostree_secs[kind]:.2f}x" if tool != "ostree" else ""
        print(f"| {kind} | {tool} | {secs:.2f} | {reqs} | {nbytes / 1e6:.2f} | {ratio} |")
    so, ss = sizes["ostree"], sizes["strata"]
    print(f"\ndelta c1->c2: ostree {so[1] / 1e3:.1f} kB in {so[0]:.2f}s, "
          f"strata {ss[1] / 1e3:.1f} kB in {ss[0]:.2f}s, size ratio {ss[1] / so[1]:.2f}")


if __name__ == "__main__":
    main()
