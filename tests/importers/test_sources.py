"""Sources read from an image commit, and --source specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from importers import read_installed
from importers.errors import RepoMetadataError
from importers.model import PackageType
from importers.sources import parse_spec, sources_from_commit
from store.commit import commit_directory
from store.repo import Repo


@pytest.mark.parametrize("etc", ["usr/etc", "etc"])
def test_sources_from_commit(tmp_path: Path, etc: str) -> None:
    root = tmp_path / "img"
    (root / etc / "apt/sources.list.d").mkdir(parents=True)
    (root / etc / "yum.repos.d").mkdir(parents=True)
    (root / etc / "apt/sources.list").write_text("deb http://a/debian bookworm main\n")
    (root / etc / "apt/sources.list.d/extra.list").write_text("deb [trusted=yes] file:///r ./\n")
    (root / etc / "apt/sources.list.d/d.sources").write_text(
        "Types: deb\nURIs: http://b/debian\nSuites: bookworm-updates\nComponents: main\n")
    (root / etc / "apt/sources.list.d/ignored.save").write_text("deb http://nope x y\n")
    (root / etc / "yum.repos.d/f.repo").write_text("[f]\nbaseurl=http://c/$basearch\n")
    repo = Repo.init(tmp_path / "repo")
    commit_directory(repo, root, branch="img", timestamp=0)
    s = sources_from_commit(repo, "img", basearch="aarch64")
    assert [a.uri for a in s.apt] == ["http://a/debian", "http://b/debian", "file:///r"]
    assert [r.baseurls for r in s.rpmmd] == [("http://c/aarch64",)]


def test_commit_without_config_has_no_sources(tmp_path: Path) -> None:
    root = tmp_path / "img"
    (root / "usr").mkdir(parents=True)
    repo = Repo.init(tmp_path / "repo")
    commit_directory(repo, root, branch="img", timestamp=0)
    assert sources_from_commit(repo, "img").apt == ()
    assert read_installed(repo, "img") == (None, [])


def test_parse_spec() -> None:
    assert parse_spec("rpm-md http://h/r").rpmmd[0].baseurls == ("http://h/r",)
    assert parse_spec("deb http://h/d stable main").apt[0].suite == "stable"
    deb822 = parse_spec("Types: deb\nURIs: http://h/d\nSuites: s\nComponents: main\n")
    assert deb822.apt[0].components == ("main",)
    with pytest.raises(RepoMetadataError):
        parse_spec("yum http://x")


def test_read_installed_detects_kind(tmp_path: Path) -> None:
    root = tmp_path / "img"
    db = root / "var/lib/dpkg"
    (db / "info").mkdir(parents=True)
    (db / "status").write_text(
        "Package: a\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n\n"
        "Package: gone\nStatus: deinstall ok config-files\nVersion: 2\nArchitecture: all\n")
    (db / "info/a.list").write_text("/.\n/usr\n/usr/a\n")
    repo = Repo.init(tmp_path / "repo")
    commit_directory(repo, root, branch="img", timestamp=0)
    kind, pkgs = read_installed(repo, "img")
    assert kind == PackageType.DEB and [p.name for p in pkgs] == ["a"]
    assert [f.path for f in pkgs[0].files] == ["usr", "usr/a"]


def test_owner_map_from_commit(tmp_path: Path) -> None:
    from importers.owners import OwnerMap
    root = tmp_path / "img"
    (root / "usr/etc").mkdir(parents=True)
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/etc/passwd").write_text("root:x:0:0::/root:/bin/sh\nsvc:x:990:990::/:/bin/false\n")
    (root / "usr/etc/group").write_text("root:x:0:\nsvc:x:990:\n")
    (root / "usr/lib/passwd").write_text("alt:x:42:42::/:/bin/false\n")
    repo = Repo.init(tmp_path / "repo")
    commit_directory(repo, root, branch="img", timestamp=0)
    owners = OwnerMap.from_commit(repo, "img")
    assert (owners.uid("svc"), owners.gid("svc"), owners.uid("alt")) == (990, 990, 42)
    assert owners.uid("nobody-here") == 0


def test_reader_registry_and_read_package(tmp_path: Path) -> None:
    from importers import get_reader, read_package
    from importers.deb import open_deb
    from importers.rpm import open_rpm
    from tests.importers.builders import hand_deb, tinfo
    assert get_reader(PackageType.DEB) is open_deb and get_reader(PackageType.RPM) is open_rpm
    meta = read_package(hand_deb(tmp_path, "reg", [tinfo("./x", data=b"x")]))
    assert (meta.name, meta.type, len(meta.checksum)) == ("reg", PackageType.DEB, 64)


def test_sources_from_dir_never_follow_a_symlink_out_of_the_tree(tmp_path: Path) -> None:
    """A merged /etc holds the image's symlinks: a sources file or directory that points at
    a host path is not read (it could print a host file in an error, or add a source)."""
    import os

    from importers.sources import sources_from_dir

    host = tmp_path / "host"
    host.mkdir()
    (host / "secret.list").write_text("deb [trusted=yes] http://127.0.0.1:9/secret stable main\n")
    os.mkfifo(host / "fifo")
    etc = tmp_path / "deploy" / "etc"
    (etc / "apt/sources.list.d").mkdir(parents=True)
    (etc / "apt/sources.list").symlink_to(host / "secret.list")
    (etc / "apt/sources.list.d/a.list").symlink_to(host / "secret.list")
    (etc / "apt/sources.list.d/b.list").symlink_to(host / "fifo")
    os.mkfifo(etc / "apt/sources.list.d/d.list")  # read as a file, it would block for ever
    (etc / "apt/sources.list.d/c.list").write_text("deb [trusted=yes] http://127.0.0.1:8/own stable main\n")
    assert [s.uri for s in sources_from_dir(etc).apt] == ["http://127.0.0.1:8/own"]
    import shutil

    shutil.rmtree(etc / "apt/sources.list.d")
    (etc / "apt/sources.list.d").symlink_to(host)
    assert sources_from_dir(etc).apt == ()
