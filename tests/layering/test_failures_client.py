"""Client commands that fail (a full filesystem, not root, Ctrl-C) end in one ``error:``
line with exit 1 (130 on Ctrl-C), leave no new deployment, nothing in the repository's
``tmp/`` (the package cache aside) and a repository the real ``ostree fsck`` accepts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from store.repo import Repo
from tests.layering.test_client import Host, make_host
from tests.store.test_failures_cli import (
    UNPRIVILEGED,
    fill,
    leftovers,
    one_error_line,
    ostree_fsck,
    public_scratch,
    small_fs,
)
from tests.util import ROOT, require_tool, run_strata


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    yield from make_host(tmp_path / "sysroot", tmp_path)


@pytest.fixture
def small_host(tmp_path: Path) -> Iterator[Host]:
    """The client test host with its sysroot on a small filesystem of its own."""
    with small_fs(tmp_path, "64M") as mnt:
        yield from make_host(mnt / "sysroot", tmp_path)


def _snapshot(host: Host) -> tuple[list[dict], list[str]]:  # type: ignore[type-arg]
    deploy = host.sysroot / "ostree/deploy/test/deploy"
    return host.status(), sorted(p.name for p in deploy.iterdir())


ROOMS = (0, 4_096, 12_288, 24_576, 40_960, 65_536, 98_304, 131_072, 262_144, 10**6)


def _grow_until_it_fits(host: Host, argv: list[str], where: str) -> list[str]:
    """Run ``argv`` on a full filesystem, then with a little more room each round until it
    succeeds; every failure on the way must be one clean line that changed nothing."""
    before = _snapshot(host)
    repo = host.sysroot / "ostree/repo"
    refs = Repo.open(repo).list_refs()
    mnt = host.sysroot.parent
    failures: list[str] = []
    tmpdir = host.tmp / "tmpdir"
    tmpdir.mkdir(exist_ok=True)
    for leave in ROOMS:
        fill(mnt, leave)
        proc = run_strata(*argv, check=False, env={"TMPDIR": str(tmpdir)})
        for p in mnt.glob("filler-*"):
            p.unlink()
        if proc.returncode == 0:
            return failures
        line = one_error_line(proc)
        assert "no space left on device" in line and where in line, line
        assert _snapshot(host) == before
        new = {r: c for r, c in Repo.open(repo).list_refs().items() if refs.get(r) != c}
        assert all(r.startswith("strata/pkg/") for r in new), new  # package cache may stay
        assert leftovers(repo) == [] and list(tmpdir.iterdir()) == []
        ostree_fsck(repo)
        failures.append(line)
    raise AssertionError(f"{argv} never fitted")


def test_install_into_a_full_filesystem(small_host: Host) -> None:
    failures = _grow_until_it_fits(small_host, ["--sysroot", str(small_host.sysroot), "install",
                                                "hello"], str(small_host.sysroot))
    assert len(failures) >= 2, failures
    assert small_host.status()[0]["requested-packages"] == ["hello"]
    ostree_fsck(small_host.sysroot / "ostree/repo")


def test_compose_into_a_full_filesystem(small_host: Host) -> None:
    repo = small_host.sysroot / "ostree/repo"
    failures = _grow_until_it_fits(small_host, [
        "--repo", str(repo), "compose", "-b", "test/composed", "--base", "os/stable",
        "--install", "hello", "--source", small_host.source_line], str(repo))
    assert len(failures) >= 2, failures
    assert Repo.open(repo).read_ref("test/composed") is not None
    ostree_fsck(repo)


def _start(host: Host, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")} | env
    return subprocess.Popen([sys.executable, "-m", "layering", "--sysroot", str(host.sysroot),
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=full, start_new_session=True)


def _stopped_in_group(pgid: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "T" and int(fields[2]) == pgid:
            return True
    return False


def _wait_stopped(proc: subprocess.Popen[str], point: str) -> None:
    """Until a process of ``proc``'s group has stopped itself at ``point`` (the forked
    unpacker stops in the child); bounded by the command's own run."""
    while not _stopped_in_group(proc.pid):
        assert proc.poll() is None, f"{point} not reached"
        threading.Event().wait(0.02)


@pytest.mark.parametrize("point", ["pkgcache-forked", "compose-before-scripts", "after-checkout",
                                   "after-etc", "after-kernel", "before-swap"])
def test_ctrl_c_during_install(host: Host, point: str) -> None:
    """Ctrl-C (SIGINT to the whole process group) at a chosen point of an install."""
    before = _snapshot(host)
    repo = host.sysroot / "ostree/repo"
    tmpdir = host.tmp / "tmpdir"
    tmpdir.mkdir()
    proc = _start(host, "install", "hello", env={"STRATA_TEST_STOP_AT": point,
                                                 "TMPDIR": str(tmpdir)})
    try:
        _wait_stopped(proc, point)
        os.killpg(proc.pid, signal.SIGINT)
        os.killpg(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    line = one_error_line(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), 130)
    assert line == "error: interrupted"
    assert _snapshot(host) == before
    assert leftovers(repo) == [] and list(tmpdir.iterdir()) == []
    ostree_fsck(repo)
    host.strata("install", "hello")  # nothing stale in the way
    assert host.status()[0]["requested-packages"] == ["hello"]


@pytest.mark.parametrize("what", ["Release", "Packages", ".deb"])
def test_ctrl_c_while_downloading(tmp_path: Path, what: str) -> None:
    started, release = threading.Event(), threading.Event()
    stalling = threading.Event()

    def stall(handler: BaseHTTPRequestHandler, path: str, file: Path) -> bool:
        if stalling.is_set() and what in path:
            started.set()
            release.wait(60)
        return False

    gen = make_host(tmp_path / "sysroot", tmp_path, stall)
    try:
        host = next(gen)
        before = _snapshot(host)
        stalling.set()
        proc = _start(host, "install", "hello", env={})
        try:
            assert started.wait(120)
            os.killpg(proc.pid, signal.SIGINT)
            out, err = proc.communicate(timeout=120)
        finally:
            release.set()
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        line = one_error_line(subprocess.CompletedProcess(proc.args, proc.returncode, out, err),
                              130)
        assert line == "error: interrupted"
        assert _snapshot(host) == before
        assert leftovers(host.sysroot / "ostree/repo") == []
        ostree_fsck(host.sysroot / "ostree/repo")
    finally:
        gen.close()


def test_not_root_gets_the_root_hint() -> None:
    require_tool("setpriv")
    with public_scratch() as public:
        gen = make_host(public / "sysroot", public)
        try:
            _check_not_root(next(gen))
        finally:
            gen.close()


def _as_nobody(host: Host, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STRATA_")},
           "PYTHONPATH": str(ROOT)}
    return subprocess.run([*UNPRIVILEGED, sys.executable, "-m", "layering", "--sysroot",
                           str(host.sysroot), *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=300)


def _check_not_root(host: Host) -> None:
    before = _snapshot(host)
    for args in (("install", "hello"), ("uninstall", "x"), ("kargs", "--append", "x=1"),
                 ("rollback",)):
        line = one_error_line(_as_nobody(host, *args))
        assert line.startswith(f"error: permission denied: {host.sysroot}/"), line
        assert line.endswith(f"(strata needs root for {args[0]})"), line
    dry = _as_nobody(host, "install", "--dry-run", "hello")  # reads only (issue 15)
    assert dry.returncode == 0 and "install hello " in dry.stdout, dry.stderr
    st = _as_nobody(host, "status", "--json")  # reading needs no root
    assert st.returncode == 0 and st.stderr == "", st.stderr
    assert _snapshot(host) == before
    assert leftovers(host.sysroot / "ostree/repo") == []
