"""Failures of store commands end in one ``error:`` line naming a path, exit 1 (130 on
Ctrl-C), no traceback, nothing left in the repository's ``tmp/`` and a repository the
real ``ostree fsck`` accepts: a full filesystem, a ``--repo`` that is a file, a bad URL,
an unprivileged user, an interrupt; concurrent ``remote add`` lose no remote."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from store.replication.remote import list_remotes
from store.repo import Repo, RepoMode
from tests.store.servers import OstreeSource, hostile_server, make_ostree_source
from tests.util import ROOT, StrataRunner, require_tool, run

UNPRIVILEGED = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                # read and search like root (the interpreter lives under /root), write as nobody
                "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]


def one_error_line(proc: subprocess.CompletedProcess[str], status: int = 1) -> str:
    """The single ``error:`` line of a failed command (asserting there is nothing else)."""
    assert proc.returncode == status, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


KEPT = ("cache", "checkout", "checkout.state", "checkout.lock")  # caches, see README


def leftovers(repo: Path) -> list[str]:
    """What a failed command left in ``tmp/`` (the package cache and kept checkout aside)."""
    return sorted(p.name for p in (repo / "tmp").iterdir() if p.name not in KEPT)


def ostree_fsck(repo: Path) -> None:
    require_tool("ostree")
    run(["ostree", "fsck", f"--repo={repo}"])


@contextlib.contextmanager
def small_fs(base: Path, size: str = "24M") -> Iterator[Path]:
    """A loop-mounted ext4 of ``size`` with no reserved blocks (root can fill it)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    img, mnt = base / "small.img", base / "small"
    mnt.mkdir()
    run(["truncate", "-s", size, img])
    run(["mkfs.ext4", "-q", "-m", "0", img])
    run(["mount", "-o", "loop", img, mnt])
    try:
        yield mnt
    finally:
        subprocess.run(["chattr", "-R", "-i", str(mnt)], capture_output=True)
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        img.unlink(missing_ok=True)


def fill(mnt: Path, leave: int) -> None:
    """Take all free space of ``mnt`` but ``leave`` bytes."""
    st = os.statvfs(mnt)
    size = st.f_bavail * st.f_frsize - leave
    filler = mnt / f"filler-{len(list(mnt.glob('filler-*')))}"
    for _ in range(64):  # the filler's own extent blocks take a little room too
        if size <= 0:
            return
        with open(filler, "wb") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, size)
                return
            except OSError:
                size -= 16384
    raise AssertionError(f"cannot fill {mnt}")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> OstreeSource:
    require_tool("ostree")
    return make_ostree_source(tmp_path_factory.mktemp("ostree-src"))


def test_concurrent_remote_add_keeps_every_remote(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    Repo.init(repo, RepoMode.ARCHIVE)
    for _round in range(3):
        names = [f"r{_round}-{i}" for i in range(8)]
        procs = [subprocess.Popen([sys.executable, "-m", "layering", "--repo", str(repo),
                                   "remote", "add", "--no-sign-verify", n,
                                   f"http://127.0.0.1:1/{n}"], cwd=ROOT,
                                  stderr=subprocess.PIPE, text=True) for n in names]
        errs = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * len(procs), errs
        have = {r.name for r in list_remotes(repo)}
        assert set(names) <= have, sorted(set(names) - have)
    assert len(list_remotes(repo)) == 24
    ostree_fsck(repo)


def test_repo_that_is_a_file(tmp_path: Path, strata: StrataRunner) -> None:
    f = tmp_path / "afile"
    f.write_text("not a repository\n")
    for argv in (["refs"], ["pull", "o", "main"], ["remote", "add", "--no-sign-verify", "o", "http://127.0.0.1:1/"],
                 ["commit", "-b", "x", str(tmp_path)], ["fsck"], ["init"]):
        line = one_error_line(strata("--repo", f, *argv, check=False))
        assert str(f) in line, (argv, line)
    assert f.read_text() == "not a repository\n"


def test_bad_url_one_line(tmp_path: Path, strata: StrataRunner) -> None:
    repo = tmp_path / "repo"
    Repo.init(repo, RepoMode.ARCHIVE)
    for url in ("http://[::1", "http://127.0.0.1:99999/"):
        line = one_error_line(strata("--repo", repo, "remote", "add", "--no-sign-verify", "o", url,
                                    check=False))
        assert url in line
    with (repo / "config").open("a") as f:  # written by hand: pull must not trace back either
        f.write('\n[remote "bad"]\nurl=http://[::1\ngpg-verify=false\nsign-verify=false\n')
    line = one_error_line(strata("--repo", repo, "pull", "bad", "main", check=False))
    assert "http://[::1" in line
    assert leftovers(repo) == []


@pytest.mark.parametrize("leave", [16_000, 400_000, 900_000, 1_150_000])
def test_pull_into_a_full_filesystem(source: OstreeSource, tmp_path: Path, strata: StrataRunner,
                                     leave: int) -> None:
    with small_fs(tmp_path) as mnt, hostile_server(source.path) as srv:
        repo = mnt / "repo"
        Repo.init(repo, RepoMode.ARCHIVE)
        strata("--repo", repo, "remote", "add", "--no-sign-verify", "o", srv.url)
        fill(mnt, leave)
        line = one_error_line(strata("--repo", repo, "pull", "o", "main", check=False))
        assert "no space left on device" in line and str(repo) in line, line
        assert leftovers(repo) == []
        assert Repo.open(repo).read_ref("o:main") is None
        ostree_fsck(repo)
        for p in mnt.glob("filler-*"):
            p.unlink()
        strata("--repo", repo, "pull", "o", "main")  # once there is room, it works
        ostree_fsck(repo)


@contextlib.contextmanager
def public_scratch() -> Iterator[Path]:
    """A scratch directory others may read (pytest's tmp_path is private to root)."""
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="strata-public-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        subprocess.run(["chattr", "-R", "-i", str(d)], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def public_dir() -> Iterator[Path]:
    with public_scratch() as d:
        yield d


def test_unprivileged_user_gets_the_root_hint(public_dir: Path) -> None:
    require_tool("setpriv")
    tmp_path = public_dir
    repo = tmp_path / "repo"
    Repo.init(repo, RepoMode.ARCHIVE)
    run([sys.executable, "-m", "layering", "--repo", repo, "remote", "add", "--no-sign-verify",
         "o", "http://127.0.0.1:1/"], cwd=ROOT)
    before = (repo / "config").read_bytes()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for argv in (["remote", "add", "--no-sign-verify", "p", "http://127.0.0.1:1/"], ["pull", "o", "main"],
                 ["commit", "-b", "x", str(tmp_path)]):
        proc = subprocess.run([*UNPRIVILEGED, sys.executable, "-m", "layering", "--repo",
                               str(repo), *argv], capture_output=True, text=True, cwd=ROOT,
                              env=env, timeout=120)
        line = one_error_line(proc)
        assert line.startswith(f"error: permission denied: {repo}"), line
        assert f"(strata needs root for {argv[0]}" in line, line
    assert (repo / "config").read_bytes() == before and leftovers(repo) == []


def test_ctrl_c_during_pull(source: OstreeSource, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    Repo.init(repo, RepoMode.ARCHIVE)
    started, release = threading.Event(), threading.Event()

    def stall(handler: BaseHTTPRequestHandler, path: str, file: Path) -> bool:
        if "/objects/" in path and not path.endswith(".commit"):
            started.set()
            release.wait(60)
        return False

    with hostile_server(source.path, stall) as srv:
        run([sys.executable, "-m", "layering", "--repo", repo, "remote", "add",
             "--no-sign-verify", "o", srv.url], cwd=ROOT)
        proc = subprocess.Popen([sys.executable, "-m", "layering", "--repo", str(repo), "pull",
                                 "o", "main"], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            assert started.wait(60)
            os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C: the whole process group
            _, err = proc.communicate(timeout=60)
        finally:
            release.set()
            if proc.poll() is None:
                proc.kill()
    line = one_error_line(subprocess.CompletedProcess(proc.args, proc.returncode, "", err), 130)
    assert line == "error: interrupted"
    assert leftovers(repo) == [] and Repo.open(repo).read_ref("o:main") is None
    ostree_fsck(repo)
