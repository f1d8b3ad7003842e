"""``make demo``: the strata story end to end in a scratch directory, with real output.

Run as ``python -m layering.demo [WORKDIR]`` (default ``./demo-work``).  Each
step prints the command and what it printed, so the README can show the same.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path


def step(argv: list[str], *, cwd: Path) -> str:
    """Run one command of the demo, echoing it and its output; stop the demo on failure."""
    shown = " ".join(shlex.quote(a) for a in argv)
    print(f"\n$ {shown}", flush=True)
    cmd = [sys.executable, "-m", "layering", *argv[1:]] if argv[0] == "strata" else argv
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    lines = out.splitlines()
    print("\n".join(lines[:25] + ([f"... ({len(lines) - 25} more lines)"] if len(lines) > 25
                                  else [])), flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"demo step failed (exit {proc.returncode}): {shown}")
    return proc.stdout


def sample_tree(root: Path) -> None:
    """A tiny OS-like tree: a program, config, a symlink, an empty dir."""
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/etc").mkdir(parents=True)
    (root / "usr/lib").mkdir(parents=True)
    (root / "var").mkdir()
    (root / "usr/bin/hello").write_text("#!/bin/sh\necho hello from strata\n")
    os.chmod(root / "usr/bin/hello", 0o755)
    (root / "usr/etc/motd").write_text("welcome\n")
    (root / "usr/lib/os-release").write_text('NAME="strata demo"\nID=strata-demo\n')
    os.symlink("usr/bin", root / "bin")


def main() -> None:
    work = Path(sys.argv[1] if len(sys.argv) > 1 else "demo-work").resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sample_tree(work / "rootfs")
    step(["strata", "--repo", "repo", "init", "--mode", "archive"], cwd=work)
    csum = step(["strata", "--repo", "repo", "commit", "-b", "demo/base", "-s", "base image",
                 "--add-metadata", "version=1", "rootfs"], cwd=work).strip()
    step(["strata", "--repo", "repo", "log", "demo/base"], cwd=work)
    step(["strata", "--repo", "repo", "ls", "-R", "demo/base"], cwd=work)
    step(["strata", "--repo", "repo", "checkout", "demo/base", "checkout"], cwd=work)
    step(["sh", "checkout/usr/bin/hello"], cwd=work)
    step(["strata", "--repo", "repo", "fsck"], cwd=work)
    step(["ostree", "fsck", "--repo=repo"], cwd=work)
    step(["ostree", "ls", "-R", "--repo=repo", csum], cwd=work)
    print(f"\ndemo finished in {work}")


if __name__ == "__main__":
    main()
