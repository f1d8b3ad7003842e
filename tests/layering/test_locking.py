"""Two client commands on one sysroot never interleave and none is lost; a held lock
names its holder; ``--lock-timeout`` gives up with one error line."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from boot.sysroot import Sysroot
from tests.layering.test_client import Host, make_host

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    yield from make_host(tmp_path / "sysroot", tmp_path)


def _start(host: Host, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    return subprocess.Popen([sys.executable, "-m", "layering", "--sysroot", str(host.sysroot),
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=env)


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_two_installs_at_once_both_requests_honoured(host: Host) -> None:
    for _round in range(3):
        a, b = _start(host, "install", "hello-doc"), _start(host, "install", "less")
        outs = [(p, *p.communicate(timeout=600)) for p in (a, b)]
        for p, _out, err in outs:  # by default the second waits for the first
            assert p.returncode == 0 and not _errors(err), err
        requested = host.status()[0]["requested-packages"]
        assert sorted(requested) == ["hello-doc", "less"], (requested, outs)
        host.strata("uninstall", "hello-doc", "less")
        assert host.status()[0]["requested-packages"] == []


def test_lock_timeout_zero_names_the_holder(host: Host) -> None:
    before = host.status()
    with Sysroot(host.sysroot).lock():
        proc = host.strata("--lock-timeout", "0", "install", "less", check=False)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: sysroot "), proc.stderr
    assert f"locked by another process, pid {os.getpid()} (" in lines[0]
    assert host.status() == before


def test_waiter_says_whom_it_waits_for_then_proceeds(host: Host) -> None:
    lock = Sysroot(host.sysroot).lock()
    lock.__enter__()
    try:
        p = _start(host, "install", "less")
        assert p.stderr is not None
        first = p.stderr.readline()  # bounded: the process either waits (and says so) or ends
        assert first.startswith("strata: waiting for sysroot "), first
        assert f"pid {os.getpid()} (" in first
    finally:
        lock.__exit__(None, None, None)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    assert host.status()[0]["requested-packages"] == ["less"]
