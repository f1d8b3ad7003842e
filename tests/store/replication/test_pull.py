"""strata pull <-> real ostree, over python http.server, nginx and file://."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from store.commit import commit_directory
from store.repo import Repo, RepoMode
from tests.store.servers import (
    OstreeSource,
    checkout_listing,
    fill_tree,
    http_server,
    make_ostree_source,
    nginx_server,
    ostree,
    tree_listing,
)
from tests.util import StrataRunner, require_tool


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> OstreeSource:
    require_tool("ostree")
    return make_ostree_source(tmp_path_factory.mktemp("ostree-src"))


def new_repo(path: Path, mode: RepoMode = RepoMode.ARCHIVE) -> Path:
    Repo.init(path, mode)
    return path


def test_pull_from_ostree_over_http_server(source: OstreeSource, tmp_path: Path,
                                           strata: StrataRunner) -> None:
    dst = new_repo(tmp_path / "dst")
    with http_server(source.path) as srv:
        strata("--repo", dst, "remote", "add", "--no-sign-verify", "origin", srv.url)
        proc = strata("--repo", dst, "pull", "origin", "main")
    assert "objects" in proc.stdout.splitlines()[-1] and "fetched" in proc.stdout
    assert proc.stderr == ""  # not a tty: no progress line
    assert (dst / "refs/remotes/origin/main").read_text().strip() == source.c2
    assert not (dst / "refs/heads/main").exists()
    assert list((dst / "state").iterdir()) == []
    ostree("fsck", f"--repo={dst}")
    assert checkout_listing(dst, "origin:main", tmp_path / "a") == \
        checkout_listing(source.path, "main", tmp_path / "b")


@pytest.mark.parametrize("mode", [RepoMode.BARE_USER, RepoMode.BARE])
def test_pull_into_non_archive_over_nginx(source: OstreeSource, tmp_path: Path,
                                          strata: StrataRunner, mode: RepoMode) -> None:
    dst = new_repo(tmp_path / "dst", mode)
    with nginx_server(source.path, tmp_path / "nginx") as srv:
        strata("--repo", dst, "remote", "add", "--no-sign-verify", "origin", srv.url)
        strata("--repo", dst, "pull", "origin")  # every ref of the summary
        time.sleep(0.1)
        fetched = srv.fetched()
    assert "/summary" in fetched
    assert f"/objects/{source.new_file[:2]}/{source.new_file[2:]}.filez" in fetched
    assert len(fetched) == len(set(fetched))  # nothing fetched twice
    refs = ostree("refs", f"--repo={dst}").split()
    assert sorted(refs) == ["origin:main", "origin:other"]
    ostree("fsck", f"--repo={dst}")
    assert checkout_listing(dst, "origin:main", tmp_path / "a") == \
        checkout_listing(source.path, "main", tmp_path / "b")


def test_second_pull_fetches_only_the_difference(source: OstreeSource, tmp_path: Path,
                                                 strata: StrataRunner) -> None:
    dst = new_repo(tmp_path / "dst")
    with nginx_server(source.path, tmp_path / "nginx") as srv:
        strata("--repo", dst, "remote", "add", "--no-sign-verify", "origin", srv.url)
        strata("--repo", dst, "pull", "origin", "main")
        n_first = len(srv.fetched())
        ref = dst / "refs/remotes/origin/main"
        before = ref.stat()
        again = strata("--repo", dst, "pull", "origin", "main")
        time.sleep(0.1)
        second = srv.fetched()[n_first:]
    assert second == ["/summary"]
    assert again.stdout.startswith("1 ref(s) from origin: 0 objects")
    after = ref.stat()  # a no-op pull rewrites (and syncs) no ref, as ostree
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_pull_file_url_without_summary_and_depth(source: OstreeSource, tmp_path: Path,
                                                 strata: StrataRunner) -> None:
    plain = tmp_path / "nosummary"
    shutil.copytree(source.path, plain, symlinks=True)
    (plain / "summary").unlink()
    dst = new_repo(tmp_path / "dst")
    strata("--repo", dst, "remote", "add", "--no-sign-verify", "origin", plain.as_uri())
    bad = strata("--repo", dst, "pull", "origin", check=False)
    assert bad.returncode == 1 and "no summary" in bad.stderr
    strata("--repo", dst, "pull", "--depth", "1", "origin", "main")
    log = ostree("log", f"--repo={dst}", "origin:main")
    assert source.c1 in log and source.c2 in log
    ostree("fsck", f"--repo={dst}")


def test_pull_mirror_writes_local_refs(source: OstreeSource, tmp_path: Path,
                                       strata: StrataRunner) -> None:
    dst = new_repo(tmp_path / "dst")
    strata("--repo", dst, "remote", "add", "--no-sign-verify", "origin", source.path.as_uri())
    strata("--repo", dst, "pull", "--mirror", "--depth=-1", "origin")
    assert sorted(ostree("refs", f"--repo={dst}").split()) == ["main", "other"]
    assert source.c1 in ostree("log", f"--repo={dst}", "main")


def test_unknown_ref_and_unknown_remote(source: OstreeSource, tmp_path: Path,
                                        strata: StrataRunner) -> None:
    dst = new_repo(tmp_path / "dst")
    strata("--repo", dst, "remote", "add", "--no-sign-verify", "origin", source.path.as_uri())
    p = strata("--repo", dst, "pull", "origin", "nope", check=False)
    assert p.returncode == 1 and p.stderr.strip() == \
        "error: ref nope not found in the summary of remote origin"
    p = strata("--repo", dst, "pull", "elsewhere", "main", check=False)
    assert p.returncode == 1 and "remote elsewhere not found" in p.stderr


def test_ostree_pulls_from_strata_repo(tmp_path: Path, strata: StrataRunner) -> None:
    require_tool("ostree")
    tree = tmp_path / "tree"
    fill_tree(tree, 20)
    srv_repo = Repo.init(tmp_path / "served", RepoMode.ARCHIVE)
    c1 = commit_directory(srv_repo, tree, branch="os/main", subject="s1", timestamp=1700000000)
    (tree / "etc/conf.d/b.conf").write_text("b\n")
    c2 = commit_directory(srv_repo, tree, branch="os/main", subject="s2", timestamp=1700000001)
    c1 = getattr(c1, "checksum", c1)
    c2 = getattr(c2, "checksum", c2)
    strata("--repo", srv_repo.path, "summary", "--update")
    client = tmp_path / "client"
    ostree("init", f"--repo={client}", "--mode=archive")
    with nginx_server(srv_repo.path, tmp_path / "nginx") as srv:
        ostree("remote", "add", f"--repo={client}", "--no-gpg-verify", "s", srv.url)
        assert "os/main" in ostree("remote", "refs", f"--repo={client}", "s")
        ostree("pull", f"--repo={client}", "--depth=1", "s", "os/main")
    assert ostree("rev-parse", f"--repo={client}", "s:os/main").strip() == c2
    assert c1 in ostree("log", f"--repo={client}", "s:os/main")
    ostree("fsck", f"--repo={client}")
    assert checkout_listing(client, "s:os/main", tmp_path / "co") == tree_listing(tree) | {}


def test_progress_line_only_on_a_terminal(source: OstreeSource, tmp_path: Path,
                                          strata: StrataRunner) -> None:
    import os
    import pty
    import subprocess
    import sys

    dst = new_repo(tmp_path / "dst")
    strata("--repo", dst, "remote", "add", "--no-sign-verify", "origin", source.path.as_uri())
    master, slave = pty.openpty()
    proc = subprocess.run([sys.executable, "-m", "layering", "--repo", str(dst), "pull", "origin",
                           "main"], stdout=subprocess.PIPE, stderr=slave, text=True,
                          cwd=Path(__file__).resolve().parents[3], timeout=120)
    os.close(slave)
    err = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        err += chunk
    os.close(master)
    assert proc.returncode == 0
    assert b"pull-content" in err and b"B/s" in err and b"\r" in err
    assert proc.stdout.count("\n") == 1 and "objects" in proc.stdout


def test_pull_over_https_with_tls_ca_path(source: OstreeSource, tmp_path: Path,
                                          strata: StrataRunner) -> None:
    from tests.util import run

    require_tool("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"])
    dst = new_repo(tmp_path / "dst", RepoMode.BARE_USER)
    with nginx_server(source.path, tmp_path / "nginx", tls=(cert, key)) as srv:
        strata("--repo", dst, "remote", "add", "--no-sign-verify", "origin", srv.url)
        ostree("config", f"--repo={dst}", "set", 'remote "origin".tls-ca-path', str(cert))
        strata("--repo", dst, "pull", "origin", "main")
    ostree("fsck", f"--repo={dst}")
    assert (dst / "refs/remotes/origin/main").read_text().strip() == source.c2


def test_contenturl_serves_objects_url_serves_summary(source: OstreeSource, tmp_path: Path,
                                                      strata: StrataRunner) -> None:
    from tests.store.servers import hostile_server

    index_only = tmp_path / "index"
    index_only.mkdir()
    shutil.copy(source.path / "summary", index_only / "summary")
    dst = new_repo(tmp_path / "dst")
    with hostile_server(index_only) as idx, hostile_server(source.path) as content:
        strata("--repo", dst, "remote", "add", "--no-sign-verify", "origin", idx.url)
        ostree("config", f"--repo={dst}", "set", 'remote "origin".contenturl', content.url)
        strata("--repo", dst, "pull", "origin", "main")
    assert idx.requests == ["/summary"]
    assert "/summary" not in content.requests and len(content.requests) > 10
    ostree("fsck", f"--repo={dst}")
