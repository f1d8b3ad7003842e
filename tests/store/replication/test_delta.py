"""Static deltas across strata and ostree, both directions."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from store.replication.delta_format import Superblock, delta_dir, delta_name
from store.replication.pull import pull
from store.replication.remote import add_remote, delete_remote
from store.repo import Repo, RepoMode
from tests.store.servers import (
    OstreeSource,
    checkout_listing,
    make_ostree_source,
    nginx_server,
    ostree,
)
from tests.util import StrataRunner, require_tool


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> OstreeSource:
    require_tool("ostree")
    src = make_ostree_source(tmp_path_factory.mktemp("delta-src"))
    ostree("static-delta", "generate", f"--repo={src.path}", "--from", src.c1, "--to", src.c2)
    ostree("static-delta", "generate", f"--repo={src.path}", "--empty", "--to", src.c2)
    ostree("summary", "-u", f"--repo={src.path}")
    return src


@pytest.fixture(scope="module")
def seed(source: OstreeSource, tmp_path_factory: pytest.TempPathFactory) -> Path:
    seed = tmp_path_factory.mktemp("seed") / "repo"
    shutil.copytree(source.path, seed, symlinks=True)
    (seed / "summary").unlink()
    (seed / "refs/heads/main").write_text(source.c1 + "\n")
    return seed


def client_at_c1(tmp_path: Path, seed: Path, strata: StrataRunner,
                 mode: RepoMode = RepoMode.ARCHIVE) -> Path:
    dst = tmp_path / "dst"
    Repo.init(dst, mode)
    # seeding in-process: the CLI is tested elsewhere
    add_remote(dst, "origin", seed.as_uri(), sign_verify=False)
    pull(dst, "origin", ["main"])
    delete_remote(dst, "origin")
    return dst


def fetched_parts(paths: list[str]) -> list[str]:
    return [p for p in paths if p.startswith("/deltas/")]


def test_ostree_delta_shapes(source: OstreeSource) -> None:
    name = delta_name(source.c1, source.c2)
    sb = Superblock.from_bytes((source.path / delta_dir(name) / "superblock").read_bytes())
    assert sb.to_bytes() == (source.path / delta_dir(name) / "superblock").read_bytes()
    assert sb.from_csum == source.c1 and sb.to_csum == source.c2 and sb.parts


@pytest.mark.parametrize("mode", [RepoMode.ARCHIVE, RepoMode.BARE_USER])
def test_strata_applies_ostree_delta(source: OstreeSource, seed: Path, tmp_path: Path,
                                     strata: StrataRunner, mode: RepoMode) -> None:
    dst = client_at_c1(tmp_path, seed, strata, mode)
    with nginx_server(source.path, tmp_path / "nginx") as srv:
        strata("--repo", dst, "remote", "add", "--no-sign-verify", "origin", srv.url)
        out = strata("--repo", dst, "pull", "origin", "main").stdout
        time.sleep(0.1)
        fetched = srv.fetched()
    assert "1 static delta(s)" in out
    base = "/" + delta_dir(delta_name(source.c1, source.c2))
    assert f"{base}/superblock" in fetched and f"{base}/0" in fetched
    assert f"/objects/{source.new_file[:2]}/{source.new_file[2:]}.filez" not in fetched
    assert (dst / "refs/remotes/origin/main").read_text().strip() == source.c2
    ostree("fsck", f"--repo={dst}")
    assert checkout_listing(dst, "origin:main", tmp_path / "a") == \
        checkout_listing(source.path, "main", tmp_path / "b")


def test_strata_applies_ostree_empty_delta_and_can_disable(
        source: OstreeSource, tmp_path: Path, strata: StrataRunner) -> None:
    for flag in ((), ("--disable-static-deltas",)):
        dst = tmp_path / f"dst{len(flag)}"
        Repo.init(dst, RepoMode.ARCHIVE)
        with nginx_server(source.path, tmp_path / f"nginx{len(flag)}") as srv:
            strata("--repo", dst, "remote", "add", "--no-sign-verify", "origin", srv.url)
            strata("--repo", dst, "pull", *flag, "origin", "main")
            time.sleep(0.1)
            deltas = fetched_parts(srv.fetched())
        assert bool(deltas) is not bool(flag)
        ostree("fsck", f"--repo={dst}")


def strata_delta_source(tmp_path: Path, source: OstreeSource, strata: StrataRunner,
                        *args: str) -> Path:
    """A copy of the ostree source with strata's delta c1 -> c2 (and no ostree deltas)."""
    repo = tmp_path / "served"
    shutil.copytree(source.path, repo, symlinks=True)
    shutil.rmtree(repo / "deltas")
    shutil.rmtree(repo / "delta-indexes", ignore_errors=True)
    out = strata("--repo", repo, "static-delta", "generate", *args, "--to", source.c2).stdout
    name = out.strip()
    assert strata("--repo", repo, "static-delta", "list").stdout.split() == [name]
    strata("--repo", repo, "summary", "--update")
    return repo


def test_ostree_pulls_strata_delta(source: OstreeSource, seed: Path, tmp_path: Path,
                                   strata: StrataRunner) -> None:
    repo = strata_delta_source(tmp_path, source, strata, "--from", source.c1)
    name = delta_name(source.c1, source.c2)
    ours = sum(f.stat().st_size for f in (repo / delta_dir(name)).iterdir())
    theirs = sum(f.stat().st_size for f in (source.path / delta_dir(name)).iterdir())
    assert ours <= theirs * 1.1 + 2048, (ours, theirs)
    client = tmp_path / "client"
    ostree("init", f"--repo={client}", "--mode=bare-user")
    ostree("remote", "add", f"--repo={client}", "--no-gpg-verify", "seed", seed.as_uri())
    ostree("pull", f"--repo={client}", "seed", "main")
    with nginx_server(repo, tmp_path / "nginx") as srv:
        ostree("remote", "add", f"--repo={client}", "--no-gpg-verify", "origin", srv.url)
        ostree("pull", f"--repo={client}", "origin", "main@" + source.c1)
        log_before = len(srv.fetched())
        ostree("pull", f"--repo={client}", "origin", "main")
        time.sleep(0.1)
        fetched = srv.fetched()[log_before:]
    base = "/" + delta_dir(name)
    assert f"{base}/superblock" in fetched and f"{base}/0" in fetched
    assert ostree("rev-parse", f"--repo={client}", "origin:main").strip() == source.c2
    ostree("fsck", f"--repo={client}")
    assert checkout_listing(client, "origin:main", tmp_path / "a") == \
        checkout_listing(source.path, "main", tmp_path / "b")


def test_strata_delta_round_trip_and_empty(source: OstreeSource, seed: Path, tmp_path: Path,
                                           strata: StrataRunner) -> None:
    repo = strata_delta_source(tmp_path, source, strata, "--empty")
    dst = tmp_path / "fresh"
    Repo.init(dst, RepoMode.BARE_USER)
    with nginx_server(repo, tmp_path / "nginx") as srv:
        strata("--repo", dst, "remote", "add", "--no-sign-verify", "origin", srv.url)
        out = strata("--repo", dst, "pull", "origin", "main").stdout
        time.sleep(0.1)
        fetched = srv.fetched()
    assert "1 static delta(s)" in out
    assert not [p for p in fetched if p.endswith(".filez")]
    ostree("fsck", f"--repo={dst}")
    client = client_at_c1(tmp_path / "c1", seed, strata, RepoMode.BARE_USER)
    repo2 = strata_delta_source(tmp_path / "d2", source, strata, "--from", source.c1)
    with nginx_server(repo2, tmp_path / "nginx2") as srv:
        strata("--repo", client, "remote", "add", "--no-sign-verify", "origin", srv.url)
        out = strata("--repo", client, "pull", "origin", "main").stdout
    assert "1 static delta(s)" in out
    ostree("fsck", f"--repo={client}")
    assert checkout_listing(client, "origin:main", tmp_path / "a") == \
        checkout_listing(source.path, "main", tmp_path / "b")


def test_delta_with_fallbacks_and_small_parts(source: OstreeSource, tmp_path: Path,
                                              strata: StrataRunner) -> None:
    from store.replication.delta_generate import generate_delta

    repo = tmp_path / "served"
    shutil.copytree(source.path, repo, symlinks=True)
    shutil.rmtree(repo / "deltas")
    info = generate_delta(Repo.open(repo), None, source.c2, min_fallback_size=100_000,
                          max_chunk_size=20_000)
    assert info.fallbacks >= 1 and info.parts > 2
    sb = Superblock.from_bytes((repo / delta_dir(info.name) / "superblock").read_bytes())
    big = [f.csum for f in sb.fallbacks]
    strata("--repo", repo, "summary", "--update")
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    Repo.init(ours, RepoMode.ARCHIVE)
    ostree("init", f"--repo={theirs}", "--mode=bare-user")
    with nginx_server(repo, tmp_path / "nginx") as srv:
        strata("--repo", ours, "remote", "add", "--no-sign-verify", "origin", srv.url)
        assert "1 static delta(s)" in strata("--repo", ours, "pull", "origin", "main").stdout
        ostree("remote", "add", f"--repo={theirs}", "--no-gpg-verify", "origin", srv.url)
        ostree("pull", f"--repo={theirs}", "origin", "main")
        time.sleep(0.1)
        fetched = srv.fetched()
    assert f"/objects/{big[0][:2]}/{big[0][2:]}.filez" in fetched
    assert fetched.count("/" + delta_dir(info.name) + "/superblock") == 2
    for client in (ours, theirs):
        ostree("fsck", f"--repo={client}")
    assert checkout_listing(ours, "origin:main", tmp_path / "a") == \
        checkout_listing(theirs, "origin:main", tmp_path / "b")


def test_format_primitives() -> None:
    from store.replication.delta_format import (
        from_mb64,
        mb64,
        read_varuint,
        split_name,
        write_varuint,
    )
    from store.replication.delta_pull import apply_endsley_patch, make_endsley_patch

    csum = "ff1fa966da090e2c2f34b89a3d9abdf452fb6c27b9393d8a9b00e0cb0ae043c3"
    assert mb64(csum) == "_x+pZtoJDiwvNLiaPZq99FL7bCe5OT2KmwDgywrgQ8M"  # as ostree names it
    assert from_mb64(mb64(csum)) == csum
    assert split_name(f"{'a' * 64}-{csum}") == ("a" * 64, csum)
    for n in (0, 1, 127, 128, 300, 2**35, 2**63):
        assert read_varuint(write_varuint(n) + b"x", 0) == (n, len(write_varuint(n)))
    old = bytes(range(256)) * 40
    new = old[:5000] + b"inserted" + old[5000:9000] + b"tail"
    assert apply_endsley_patch(old, make_endsley_patch(old, new), len(new)) == new


def test_corrupt_delta_part_is_refused(source: OstreeSource, seed: Path, tmp_path: Path,
                                       strata: StrataRunner) -> None:
    from tests.store.servers import hostile_server, send

    dst = client_at_c1(tmp_path, seed, strata)
    part = "/" + delta_dir(delta_name(source.c1, source.c2)) + "/0"

    def hook(h, path, file):  # type: ignore[no-untyped-def]
        if path == part:
            data = bytearray(file.read_bytes())
            data[len(data) // 2] ^= 0xFF
            send(h, 200, bytes(data))
            return True
        return False

    with hostile_server(source.path, hook) as srv:
        strata("--repo", dst, "remote", "add", "--no-sign-verify", "origin", srv.url)
        p = strata("--repo", dst, "pull", "origin", "main", check=False)
        assert p.returncode == 1
        assert p.stderr.strip().splitlines() == [
            f"error: static delta part {srv.url}{part} does not match its checksum"]
        assert (dst / "refs/remotes/origin/main").read_text().strip() == source.c1
        strata("--repo", dst, "pull", "--disable-static-deltas", "origin", "main")
    ostree("fsck", f"--repo={dst}")
