"""Shared bench plumbing: a loop-mounted ext4 scratch area, timed runs, a table."""

from __future__ import annotations

import contextlib
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STRATA = [str(Path(sys.executable).parent / "strata")]  # the installed console script
# ... importing this tree's packages, not those of the checkout the venv was installed from
# (an editable install's path entry comes after PYTHONPATH): a bench measures its own tree
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


@contextlib.contextmanager
def loop_ext4(size_gb: int = 8) -> Iterator[Path]:
    """A fresh ext4 filesystem on a loop device, mounted for the duration of the block."""
    base = Path(tempfile.mkdtemp(prefix="strata-bench-"))
    img, mnt = base / "fs.img", base / "mnt"
    mnt.mkdir()
    subprocess.run(["truncate", "-s", f"{size_gb}G", img], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", img], check=True)
    subprocess.run(["mount", "-o", "loop", img, mnt], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["chattr", "-R", "-i", mnt], capture_output=True)
        subprocess.run(["umount", mnt], check=False)
        shutil.rmtree(base, ignore_errors=True)


def timed(argv: Sequence[str | os.PathLike[str]], *, cwd: Path | None = None,
          env: dict[str, str] | None = None) -> tuple[float, int]:
    """Run a command; return (wall seconds, peak RSS in MB). Fails loudly on error."""
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "", **(env or {})}
    proc = subprocess.Popen([os.fspath(a) for a in argv], cwd=cwd or ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env)
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"bench command failed: {' '.join(map(str, argv))}\n{err}")
    return elapsed, usage.ru_maxrss // 1024


def sync() -> None:
    os.sync()


def make_os_like_tree(root: Path, *, files: int = 10_000, seed: int = 1) -> int:
    """A tree like a small OS: ~10,000 files of mixed sizes (~200 MB); returns total bytes."""
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10)))
             for _ in range(2000)]
    dirs = [root / f"usr/{top}/{i:03d}" for top in ("lib", "share", "bin", "libexec")
            for i in range(60)] + [root / f"etc/{i:02d}" for i in range(20)]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    total = 0
    for n in range(files):
        kind = rng.random()
        if kind < 0.70:
            size = rng.randint(200, 8_000)
            data = b" ".join(rng.choice(words) for _ in range(size // 6))[:size]
        elif kind < 0.995:
            size = rng.randint(8_000, 60_000)
            data = rng.randbytes(size // 2) + b"\0" * (size // 2)
        else:
            size = rng.randint(500_000, 2_500_000)
            data = rng.randbytes(size)
        path = rng.choice(dirs) / f"f{n:05d}"
        path.write_bytes(data)
        if rng.random() < 0.1:
            os.chmod(path, 0o755)
        total += len(data)
    for i in range(200):
        os.symlink(f"../{i:03d}/f{i:05d}", root / f"usr/lib/{i % 60:03d}/link{i}")
    return total


def table(rows: list[tuple[str, float, float, str]]) -> str:
    """Rows of (operation, strata median, real-tool median, note) as a markdown table."""
    out = ["| operation | strata (s) | real tool (s) | ratio | note |", "|---|---|---|---|---|"]
    for name, ours, theirs, note in rows:
        ratio = ours / theirs if theirs else float("nan")
        out.append(f"| {name} | {ours:.3f} | {theirs:.3f} | {ratio:.2f}x | {note} |")
    return "\n".join(out)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def max_rss_mb() -> int:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
