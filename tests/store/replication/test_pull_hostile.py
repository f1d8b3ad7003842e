"""Hostile remotes: every failure is one ``error:`` line, exit 1, no ref moved, and a later
healthy pull completes and fscks clean."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from store.replication.pull import pull
from store.replication.remote import add_remote, delete_remote
from store.replication.summary import RefEntry, Summary
from store.repo import Repo, RepoMode
from tests.store.servers import (
    OstreeSource,
    hostile_server,
    http_server,
    make_ostree_source,
    ostree,
    send,
)
from tests.util import ROOT, StrataRunner, require_tool

MISSING = "ab" * 32


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> OstreeSource:
    require_tool("ostree")
    return make_ostree_source(tmp_path_factory.mktemp("hostile-src"))


@pytest.fixture(scope="module")
def seed(source: OstreeSource, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the source whose main is the first commit, without a summary."""
    seed = tmp_path_factory.mktemp("seed") / "repo"
    shutil.copytree(source.path, seed, symlinks=True)
    (seed / "summary").unlink()
    (seed / "refs/heads/main").write_text(source.c1 + "\n")
    return seed


def client_at_c1(tmp_path: Path, seed: Path, strata: StrataRunner) -> Path:
    dst = tmp_path / "dst"
    Repo.init(dst, RepoMode.ARCHIVE)
    # seeding in-process: the CLI is tested elsewhere
    add_remote(dst, "origin", seed.as_uri(), sign_verify=False)
    pull(dst, "origin", ["main"])
    delete_remote(dst, "origin")
    return dst


def obj_path(csum: str, ext: str) -> str:
    return f"/objects/{csum[:2]}/{csum[2:]}.{ext}"


Case = Callable[[OstreeSource], tuple[Callable, dict, str]]  # type: ignore[type-arg]


def wrong_content(src: OstreeSource):  # type: ignore[no-untyped-def]
    other = ostree("ls", f"--repo={src.path}", "-C", "main", "/etc/conf.d/a.conf").split()[4]
    target = obj_path(src.new_file, "filez")

    def hook(h, path, file):  # type: ignore[no-untyped-def]
        if path == target:
            send(h, 200, src.object_file(other, "filez").read_bytes())
            return True
        return False
    return hook, {}, (rf"file object {src.new_file} from http://\S+{target} "
                      r"does not match its checksum")


def truncated_object(src: OstreeSource):  # type: ignore[no-untyped-def]
    target = obj_path(src.new_file, "filez")

    def hook(h, path, file):  # type: ignore[no-untyped-def]
        if path == target:
            data = file.read_bytes()
            send(h, 200, data[: len(data) - 10])
            return True
        return False
    return hook, {}, rf"file object {src.new_file} from http://\S+{target} is (corrupt|truncated)"


def truncated_transfer(src: OstreeSource):  # type: ignore[no-untyped-def]
    target = obj_path(src.new_dirtree, "dirtree")

    def hook(h, path, file):  # type: ignore[no-untyped-def]
        if path == target:
            data = file.read_bytes()
            send(h, 200, data[:5], length=len(data))
            return True
        return False
    return hook, {}, rf"truncated response fetching http://\S+{target}"


def summary_missing_commit(src: OstreeSource):  # type: ignore[no-untyped-def]
    s = Summary.from_bytes((src.path / "summary").read_bytes())
    bad = Summary({**s.refs, "main": RefEntry("main", MISSING, 100, 1)}, s.deltas, s.metadata)

    def hook(h, path, file):  # type: ignore[no-untyped-def]
        if path == "/summary":
            send(h, 200, bad.to_bytes())
            return True
        return False
    return hook, {}, rf"not found \(HTTP 404\): http://\S+{obj_path(MISSING, 'commit')}"


def server_dies(src: OstreeSource):  # type: ignore[no-untyped-def]
    return None, {"die_after": 6}, (r"(cannot reach http://\S+: connection refused|"
                                    r"(connection closed by the server|connection reset|"
                                    r"connection lost) fetching http://\S+)")


def one_404(src: OstreeSource):  # type: ignore[no-untyped-def]
    target = obj_path(src.new_dirtree, "dirtree")

    def hook(h, path, file):  # type: ignore[no-untyped-def]
        if path == target:
            send(h, 404, b"gone")
            return True
        return False
    return hook, {}, rf"not found \(HTTP 404\): http://\S+{target}"


def redirect_loop(src: OstreeSource):  # type: ignore[no-untyped-def]
    target = obj_path(src.new_file, "filez")

    def hook(h, path, file):  # type: ignore[no-untyped-def]
        if path == target:
            send(h, 302, b"", {"Location": target})
            return True
        return False
    return hook, {}, rf"too many redirects fetching http://\S+{target}"


@pytest.mark.parametrize("case", [wrong_content, truncated_object, truncated_transfer,
                                  summary_missing_commit, server_dies, one_404, redirect_loop],
                         ids=lambda c: c.__name__)
def test_hostile_remote(case: Case, source: OstreeSource, seed: Path, tmp_path: Path,
                        strata: StrataRunner) -> None:
    dst = client_at_c1(tmp_path, seed, strata)
    hook, kw, pattern = case(source)
    env = {"STRATA_HTTP_RETRIES": "1"}
    with hostile_server(source.path, hook, **kw) as srv:
        strata("--repo", dst, "remote", "add", "--no-sign-verify", "origin", srv.url)
        p = strata("--repo", dst, "pull", "origin", "main", check=False, env=env)
    assert p.returncode == 1, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert (dst / "refs/remotes/origin/main").read_text().strip() == source.c1
    assert sorted(p.name for p in (dst / "tmp").iterdir()) == ["cache"]
    assert not (dst / "objects" / source.c2[:2] / f"{source.c2[2:]}.commit").exists()

    with http_server(source.path) as good:
        strata("--repo", dst, "remote", "delete", "origin")
        strata("--repo", dst, "remote", "add", "--no-sign-verify", "origin", good.url)
        strata("--repo", dst, "pull", "origin", "main")
    assert (dst / "refs/remotes/origin/main").read_text().strip() == source.c2
    assert list((dst / "state").iterdir()) == []
    ostree("fsck", f"--repo={dst}")


def test_interrupted_pull_keeps_verified_objects(source: OstreeSource, seed: Path,
                                                 tmp_path: Path, strata: StrataRunner) -> None:
    dst = client_at_c1(tmp_path, seed, strata)
    hook, kw, _ = redirect_loop(source)
    with hostile_server(source.path, hook) as srv:
        strata("--repo", dst, "remote", "add", "--no-sign-verify", "origin", srv.url)
        strata("--repo", dst, "pull", "origin", "main", check=False)
    partial = dst / "state" / f"{source.c2}.commitpartial"
    assert partial.exists()
    assert (dst / "objects" / source.new_dirtree[:2] / f"{source.new_dirtree[2:]}.dirtree").exists()
    with hostile_server(source.path) as srv:
        strata("--repo", dst, "remote", "delete", "origin")
        strata("--repo", dst, "remote", "add", "--no-sign-verify", "origin", srv.url)
        strata("--repo", dst, "pull", "origin", "main")
        fetched = srv.requests
    assert obj_path(source.new_dirtree, "dirtree") not in fetched
    assert obj_path(source.new_file, "filez") in fetched
    assert not partial.exists()
    ostree("fsck", f"--repo={dst}")


def test_no_ref_moves_when_one_of_several_fails(source: OstreeSource, seed: Path,
                                                tmp_path: Path, strata: StrataRunner) -> None:
    dst = client_at_c1(tmp_path, seed, strata)
    target = obj_path(source.other, "commit")

    def hook(h, path, file):  # type: ignore[no-untyped-def]
        if path == target:
            send(h, 404, b"")
            return True
        return False

    with hostile_server(source.path, hook) as srv:
        strata("--repo", dst, "remote", "add", "--no-sign-verify", "origin", srv.url)
        p = strata("--repo", dst, "pull", "origin", "main", "other", check=False)
    assert p.returncode == 1 and f"commit {source.other} of ref other" in p.stderr
    assert (dst / "refs/remotes/origin/main").read_text().strip() == source.c1
    assert not (dst / "refs/remotes/origin/other").exists()


def test_killed_pull_resumes_from_checkpointed_objects(tmp_path: Path,
                                                       strata: StrataRunner) -> None:
    """SIGKILL mid-pull: objects published at a checkpoint survive and are not fetched again."""
    require_tool("ostree")
    tree, src, dst = tmp_path / "tree", tmp_path / "src", tmp_path / "dst"
    n = 3000
    for i in range(n):
        d = tree / f"usr/share/d{i % 30:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_text(f"file {i}\n")
    ostree("init", f"--repo={src}", "--mode=archive")
    ostree("commit", f"--repo={src}", "-b", "main", "--timestamp=@1700000000", str(tree))
    ostree("summary", "-u", f"--repo={src}")
    Repo.init(dst, RepoMode.BARE_USER)

    def published() -> int:
        return sum(1 for _ in (dst / "objects").glob("*/*.file"))

    with hostile_server(src) as srv:
        add_remote(dst, "origin", srv.url, sign_verify=False)
        script = ("import sys; from pathlib import Path; import store.replication.pull as p\n"
                  "p.CHECKPOINT_SECONDS = 0.2\n"
                  f"p.pull(Path({str(dst)!r}), 'origin', ['main'])\n")
        proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
        deadline = time.monotonic() + 60
        while published() == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, "the pull ended before a checkpoint was seen"
        kept = published()
        assert 0 < kept < n
        assert Repo.open(dst).read_ref("origin:main") is None
        before = len(srv.requests)
        strata("--repo", dst, "pull", "origin", "main")
        refetched = [p for p in srv.requests[before:] if p.endswith(".filez")]
    assert len(refetched) == n - kept
    assert published() == n
    ostree("fsck", f"--repo={dst}")
