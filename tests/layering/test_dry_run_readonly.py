"""A ``--dry-run`` is read-only: an unprivileged user who may read the sysroot and its
repository but write neither gets the transaction (exit 0), and nothing changes: not
the sysroot, not the repository's caches, no lock file, no temporary file left."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.layering.test_client import Host, make_host
from tests.store.test_failures_cli import UNPRIVILEGED, one_error_line, public_scratch
from tests.util import ROOT, require_tool

Listing = dict[str, tuple[int, int, int, int]]


def listing(root: Path) -> Listing:
    """Every path under ``root``: (mode, size, mtime in ns, inode), symlinks not followed."""
    out: Listing = {}
    for dirpath, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            p = Path(dirpath, name)
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size if not stat.S_ISDIR(
                st.st_mode) else 0, st.st_mtime_ns, st.st_ino)
    out["."] = (0, 0, root.stat().st_mtime_ns, 0)
    return out


@pytest.fixture
def public_host() -> Iterator[tuple[Host, Path]]:
    """The client test host in a directory others may read, and an empty TMPDIR nobody may
    write to."""
    require_tool("setpriv")
    with public_scratch() as public:
        tmpdir = public / "tmpdir"
        tmpdir.mkdir()
        tmpdir.chmod(0o1777)
        gen = make_host(public / "sysroot", public)
        try:
            yield next(gen), tmpdir
        finally:
            gen.close()


def as_nobody(host: Host, tmpdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STRATA_")},
           "PYTHONPATH": str(ROOT), "TMPDIR": str(tmpdir)}
    return subprocess.run([*UNPRIVILEGED, sys.executable, "-m", "layering", "--sysroot",
                           str(host.sysroot), *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=600)


def _read_only_run(host: Host, tmpdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    before = listing(host.sysroot)
    proc = as_nobody(host, tmpdir, *args)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    after = listing(host.sysroot)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert changed == [], changed
    assert list(tmpdir.iterdir()) == []
    return proc


def test_dry_run_as_nobody_reads_only_with_and_without_caches(
        public_host: tuple[Host, Path]) -> None:
    host, tmpdir = public_host
    # no cached index yet: what is fetched stays in memory or a private temporary dir
    composed = _read_only_run(host, tmpdir, "--repo", str(host.sysroot / "ostree/repo"),
                              "compose", "-b", "t/dry", "--base", "os/stable", "--install",
                              "hello", "--source", host.source_line, "--dry-run").stdout
    assert "install libgreet " in composed
    cold = json.loads(_read_only_run(host, tmpdir, "install", "--dry-run", "--json",
                                     "hello").stdout)
    assert sorted(p["name"] for p in cold["install"]) == ["hello", "hello-doc", "less",
                                                          "libgreet"]
    text = _read_only_run(host, tmpdir, "install", "--dry-run", "hello").stdout
    assert "hello" in text and "libgreet" in text
    host.strata("install", "--dry-run", "hello")  # root fills the repository's caches
    warm = json.loads(_read_only_run(host, tmpdir, "install", "--dry-run", "--json",
                                     "hello").stdout)
    assert warm == cold
    host.strata("install", "hello")
    gone = json.loads(_read_only_run(host, tmpdir, "uninstall", "--dry-run", "--json",
                                     "hello").stdout)
    assert gone["requested-packages"] == [] and gone["install"] == []
    up = json.loads(_read_only_run(host, tmpdir, "upgrade", "--dry-run", "--json").stdout)
    assert up["requested-packages"] == ["hello"]


def test_not_root_without_dry_run_is_one_error_line(public_host: tuple[Host, Path]) -> None:
    host, tmpdir = public_host
    before = listing(host.sysroot)
    for args in (("install", "hello"), ("uninstall", "hello"), ("upgrade",)):
        line = one_error_line(as_nobody(host, tmpdir, *args))
        assert line.startswith("error: permission denied: "), line
        assert line.endswith(f"(strata needs root for {args[0]})"), line
    assert listing(host.sysroot) == before
    assert list(tmpdir.iterdir()) == []


def test_dry_run_holds_the_sysroot_lock_shared(public_host: tuple[Host, Path]) -> None:
    """A dry run never reads what a writer is changing: it waits for a writer's lock (and
    gives up with one line), and runs beside another reader."""
    from boot.sysroot import Sysroot

    host, tmpdir = public_host
    with Sysroot(host.sysroot).lock():
        line = one_error_line(as_nobody(host, tmpdir, "--lock-timeout", "0", "install",
                                        "--dry-run", "hello"))
    assert line.startswith(f"error: sysroot {host.sysroot} is locked by another process"), line
    with Sysroot(host.sysroot).read_lock():
        _read_only_run(host, tmpdir, "--lock-timeout", "0", "install", "--dry-run", "hello")
