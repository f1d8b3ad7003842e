"""`make lint` stays clean: ruff over the whole tree, mypy (as configured in
pyproject.toml) over the four packages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.layering.realworld import cache_root

ROOT = Path(__file__).resolve().parent.parent


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True,
                          text=True, check=False)


def test_ruff_clean() -> None:
    proc = _run("ruff", "check", "--no-cache", "store", "importers", "boot", "layering",
                "tests", "bench", "fixtures")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_clean() -> None:
    # the cache lives with the test cache, not in the tree (a warm run takes seconds)
    cache = cache_root() / "mypy"
    proc = _run("mypy", "--cache-dir", str(cache), "store", "importers", "boot", "layering")
    assert proc.returncode == 0, proc.stdout + proc.stderr
