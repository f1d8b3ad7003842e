"""The compose key (layering/composekey.py): a rerun with nothing changed says
``No change`` and stops before resolving or downloading; every input that could change
the image (the file's values, ``SOURCE_DATE_EPOCH``, a local package, the branch, a new
Release of a source) makes it compose again; the source's signature is checked on every
run; an unreachable source takes the full path, which reports it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures.images import apt_repo, build_deb, deb_base_rootfs, ostree_layout
from store.commit import commit_directory
from store.fsck import fsck
from store.repo import Repo
from tests.layering.conftest import fixture_debs
from tests.store.servers import Served, http_server, nginx_server
from tests.util import gpg, gpg_keypair, require_tool, run_strata

BASE_TIME = 1_700_000_000


@dataclass
class World:
    tmp: Path
    rootfs: Path
    apt: Path  # a signed apt repository (InRelease) of the fixture packages
    key: Path  # its public key
    other_key: Path


def publish(apt: Path, home: Path, debs: list[Path]) -> None:
    """(Re)build the repository with ``debs`` added, and sign its Release as InRelease;
    the files' times move on so that a conditional GET sees the change."""
    inrelease = apt / "dists/stable/InRelease"
    # strictly later than the last publish, even within one second: nginx's ETag is the
    # mtime (in seconds) and the size, which a republished InRelease may share
    before = inrelease.stat().st_mtime if inrelease.exists() else 0.0
    apt_repo(apt, debs)
    inrelease.unlink(missing_ok=True)
    gpg(home, "--clearsign", "--output", inrelease, apt / "dists/stable/Release")
    later = max((apt / "dists/stable/Release").stat().st_mtime, before) + 10
    for f in (apt / "dists/stable").rglob("*"):
        os.utime(f, (later, later))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    require_tool("dpkg-deb", "apt-ftparchive", "bwrap", "gpg", "gpgv")
    tmp = tmp_path_factory.mktemp("composekey")
    home, key = gpg_keypair(tmp, "repo")
    _other, other_key = gpg_keypair(tmp, "other")
    publish(tmp / "apt", home, fixture_debs(tmp / "debs"))
    rootfs = ostree_layout(deb_base_rootfs(tmp / "rootfs"))
    return World(tmp, rootfs, tmp / "apt", key, other_key)


@pytest.fixture
def served(world: World, tmp_path: Path) -> Iterator[tuple[Path, Served]]:
    """A copy of the signed repository (a test may publish into it) served by nginx."""
    apt = tmp_path / "apt"
    shutil.copytree(world.apt, apt)
    with nginx_server(apt, tmp_path / "nginx") as srv:
        yield apt, srv


def machine(world: World, path: Path) -> Repo:
    repo = Repo.init(path)
    commit_directory(repo, world.rootfs, branch="base/stable", subject="base",
                     timestamp=BASE_TIME)
    return repo


def image_file(directory: Path, source: str, local: Path, **extra: str) -> Path:
    lines = ['base = "base/stable"', 'branch = "acme/web"', 'packages = ["hello"]',
             f'local-packages = ["{local}"]', f'sources = ["{source}"]',
             *(f"{k} = {v}" for k, v in extra.items())]
    path = directory / "image.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def compose(repo: Repo, conf: Path, env: dict[str, str] | None = None,
            check: bool = True) -> tuple[str, str]:
    proc = run_strata("--repo", repo.path, "compose", "--file", conf, env=env, check=check)
    return proc.stdout.strip(), proc.stderr


def local_deb(directory: Path, text: bytes) -> Path:
    shutil.rmtree(directory, ignore_errors=True)
    return build_deb(directory, "acme-tools", "1.2", files={"usr/bin/acme": text})


def test_unchanged_rerun_says_no_change_and_fetches_only_the_release(
        world: World, served: tuple[Path, Served], tmp_path: Path) -> None:
    _apt, srv = served
    repo = machine(world, tmp_path / "repo")
    conf = image_file(tmp_path, f"deb [signed-by={world.key}] {srv.url} stable main",
                      local_deb(tmp_path / "debs", b"#!/bin/sh\necho acme\n"))
    first, _ = compose(repo, conf)
    assert srv.log is not None
    srv.log.write_text("")
    again, err = compose(repo, conf)
    assert again == first and err.startswith(f"No change: acme/web is at {first}\n"), err
    assert srv.fetched() == ["/dists/stable/InRelease"]  # no index, no package
    assert [c for c in run_strata("--repo", repo.path, "log", "acme/web").stdout.split()
            if len(c) == 64][:2] == [first, repo.resolve("base/stable")]
    assert fsck(repo).ok
    # --json always resolves and reports the transaction (the commit is found by input hash)
    out = run_strata("--repo", repo.path, "compose", "--file", conf, "--json").stdout
    assert '"reused": true' in out and first in out


def test_every_input_makes_it_compose_again(world: World, served: tuple[Path, Served],
                                           tmp_path: Path) -> None:
    _apt, srv = served
    repo = machine(world, tmp_path / "repo")
    source = f"deb [signed-by={world.key}] {srv.url} stable main"
    deb = local_deb(tmp_path / "debs", b"#!/bin/sh\necho acme\n")
    seen: list[str] = []

    def step(conf: Path, env: dict[str, str] | None = None) -> None:
        csum, err = compose(repo, conf, env)
        assert "No change" not in err and csum not in seen, err
        seen.append(csum)
        again, err = compose(repo, conf, env)
        assert again == csum and err.startswith("No change: "), err

    step(image_file(tmp_path, source, deb))
    step(image_file(tmp_path, source, deb, version='"2"'))
    step(image_file(tmp_path, source, deb, version='"2"', kargs='["quiet"]'))
    step(image_file(tmp_path, source, deb, version='"2"', kargs='["quiet"]'),
         env={"SOURCE_DATE_EPOCH": "1767225600"})
    conf = image_file(tmp_path, source, deb, version='"2"', kargs='["quiet"]')
    local_deb(tmp_path / "debs", b"#!/bin/sh\necho acme 2\n")  # same path, new content
    step(conf)
    # the branch moved elsewhere: the full compose runs (and finds the same commit again)
    repo.set_ref("acme/web", seen[0])
    csum, err = compose(repo, conf)
    assert csum == seen[-1] and "No change" not in err and "layered" in err, err


def test_a_new_release_of_the_source_is_seen(world: World, served: tuple[Path, Served],
                                              tmp_path: Path) -> None:
    apt, srv = served
    repo = machine(world, tmp_path / "repo")
    conf = image_file(tmp_path, f"deb [signed-by={world.key}] {srv.url} stable main",
                      local_deb(tmp_path / "debs", b"#!/bin/sh\necho acme\n"))
    first, _ = compose(repo, conf)
    home = world.tmp / "gnupg-repo"
    # an unrelated package published: composed again, the same commit found by input hash
    publish(apt, home, [build_deb(tmp_path / "new", "unrelated", "1.0")])
    again, err = compose(repo, conf)
    assert again == first and "(existing commit)" in err, err
    assert compose(repo, conf)[1].startswith("No change: ")
    # a new version of a requested package: a new commit that holds it
    publish(apt, home, [build_deb(tmp_path / "new", "hello", "2.10-4", arch="amd64",
                                  control="Depends: libgreet (>= 1.0)\n",
                                  files={"usr/bin/hello": b"#!/bin/sh\necho newer\n"})])
    assert srv.log is not None
    srv.log.write_text("")
    newer, err = compose(repo, conf)
    assert newer != first and "No change" not in err, err
    # the key and the compose read one snapshot of the source: its Release once
    assert srv.fetched().count("/dists/stable/InRelease") == 1, srv.fetched()
    assert "hello 2.10-4" in run_strata("--repo", repo.path, "db", "list", newer).stdout


def test_the_signature_is_checked_on_every_run(world: World, served: tuple[Path, Served],
                                               tmp_path: Path) -> None:
    _apt, srv = served
    key = tmp_path / "keyring.gpg"
    shutil.copy(world.key, key)
    repo = machine(world, tmp_path / "repo")
    conf = image_file(tmp_path, f"deb [signed-by={key}] {srv.url} stable main",
                      local_deb(tmp_path / "debs", b"#!/bin/sh\necho acme\n"))
    first, _ = compose(repo, conf)
    assert compose(repo, conf)[1].startswith("No change: ")
    shutil.copy(world.other_key, key)  # the host no longer trusts the repository's key
    proc = run_strata("--repo", repo.path, "compose", "--file", conf, check=False)
    assert proc.returncode == 1 and "No change" not in proc.stderr
    assert proc.stderr.startswith("error: ") and "InRelease" in proc.stderr, proc.stderr
    assert repo.read_ref("acme/web") == first


def test_an_unreachable_source_takes_the_full_path(world: World, tmp_path: Path) -> None:
    apt = tmp_path / "apt"
    shutil.copytree(world.apt, apt)
    repo = machine(world, tmp_path / "repo")
    with http_server(apt) as srv:
        conf = image_file(tmp_path, f"deb [signed-by={world.key}] {srv.url} stable main",
                          local_deb(tmp_path / "debs", b"#!/bin/sh\necho acme\n"))
        first, _ = compose(repo, conf)
        assert compose(repo, conf)[1].startswith("No change: ")
    again, err = compose(repo, conf)  # the server is gone: cached indexes, with a warning
    assert again == first and "No change" not in err and "unreachable" in err, err
