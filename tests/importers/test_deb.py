"""Importing .deb files: compared against dpkg-deb's own view of the same package."""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path

import pytest

from importers.deb import open_deb
from importers.model import DepKind, Op, Relation
from importers.owners import OwnerMap
from importers.pkgcache import import_package
from store.repo import Repo
from tests.importers.builders import build_deb, dpkg_listing, hand_deb, tinfo
from tests.importers.conftest import file_content, tree_listing
from tests.util import require_tool


def assert_matches_dpkg(repo: Repo, ref: str, deb: Path) -> None:
    ours = tree_listing(repo, ref)
    theirs = dpkg_listing(deb)
    assert set(ours) == set(theirs)
    for path, (perms, owner, target) in theirs.items():
        mode, uid, gid, link = ours[path]
        want_type = "-" if perms[0] == "h" else perms[0]
        assert stat.filemode(mode) == want_type + perms[1:], path
        assert owner == "root/root" and (uid, gid) == (0, 0), path
        if perms[0] == "l":
            assert link == target, path


def fancy_deb(tmp: Path, compression: str) -> Path:
    root_files = {"usr/bin/hello": b"#!/bin/sh\necho hi\n", "etc/hello.conf": b"greeting=hi\n",
                  "usr/share/doc/hello/README": b"readme\n" * 100}
    deb = build_deb(tmp, "hello", "1:2.0~rc1-3", files=root_files, compression=compression,
                    symlinks={"usr/bin/hi": "hello", "usr/lib/abs": "/etc/hello.conf"},
                    control="Depends: libc6 (>= 2.34), foo | bar (<< 3)\nProvides: greeter\n",
                    scripts={"postinst": "#!/bin/sh\nexit 0\n", "prerm": "#!/bin/bash\n:\n"},
                    conffiles=["etc/hello.conf"])
    return deb


@pytest.mark.parametrize("compression", ["gzip", "xz", "zstd", "none"])
def test_dpkg_built_deb_matches_dpkg_listing(tmp_path: Path, repo: Repo, compression: str) -> None:
    require_tool("dpkg-deb")
    deb = fancy_deb(tmp_path, compression)
    result = import_package(repo, deb)
    assert result.ref == "strata/pkg/hello/1_3A2.0_7Erc1-3.all"
    assert_matches_dpkg(repo, result.ref, deb)
    assert file_content(repo, result.ref, "usr/bin/hello") == b"#!/bin/sh\necho hi\n"
    assert file_content(repo, result.ref, "usr/share/doc/hello/README") == b"readme\n" * 100


def test_control_data_kept_as_metadata(tmp_path: Path) -> None:
    require_tool("dpkg-deb")
    meta = open_deb(fancy_deb(tmp_path, "xz")).meta
    assert (meta.name, meta.epoch, meta.version, meta.release, meta.arch) == (
        "hello", 1, "2.0~rc1", "3", "all")
    assert meta.evr == "1:2.0~rc1-3"
    assert meta.relations(DepKind.DEPENDS) == (
        (Relation("libc6", Op.GE, "2.34"),),
        (Relation("foo"), Relation("bar", Op.LT, "3")))
    assert meta.relations(DepKind.PROVIDES) == ((Relation("greeter"),),)
    assert {(s.name, s.interpreter) for s in meta.scripts} == {
        ("postinst", "/bin/sh"), ("prerm", "/bin/bash")}
    assert meta.conffiles == ("etc/hello.conf",)


def test_hardlinks_in_data_tar(tmp_path: Path, repo: Repo) -> None:
    require_tool("dpkg-deb")
    root = tmp_path / "hl-root"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: hl\nVersion: 1\nArchitecture: all\nMaintainer: t <t@e.org>\nDescription: d\n")
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/a").write_bytes(b"same\n")
    os.link(root / "usr/bin/a", root / "usr/bin/b")
    deb = tmp_path / "hl.deb"
    from tests.util import run
    run(["dpkg-deb", "--root-owner-group", "--build", root, deb])
    assert any(p[0] == "h" for p, _o, _t in dpkg_listing(deb).values())
    result = import_package(repo, deb)
    assert_matches_dpkg(repo, result.ref, deb)
    assert file_content(repo, result.ref, "usr/bin/b") == b"same\n"


def test_bz2_data_tar_and_directory_modes(tmp_path: Path, repo: Repo) -> None:
    deb = hand_deb(tmp_path, "bz", [
        tinfo("./", kind=tarfile.DIRTYPE, mode=0o755),
        tinfo("./var/", kind=tarfile.DIRTYPE, mode=0o1777),
        tinfo("./var/x", data=b"bz2 content", mode=0o600)], data_name="data.tar.bz2",
        compression="bz2")
    ref = import_package(repo, deb).ref
    listing = tree_listing(repo, ref)
    assert listing["var"][0] == stat.S_IFDIR | 0o1777
    assert listing["var/x"][0] == stat.S_IFREG | 0o600
    assert file_content(repo, ref, "var/x") == b"bz2 content"


def test_implied_directories_are_0755_root(tmp_path: Path, repo: Repo) -> None:
    deb = hand_deb(tmp_path, "implied", [tinfo("./opt/deep/file", data=b"x", mode=0o640)])
    listing = tree_listing(repo, import_package(repo, deb).ref)
    assert listing["opt"] == (stat.S_IFDIR | 0o755, 0, 0, "")
    assert listing["opt/deep"] == (stat.S_IFDIR | 0o755, 0, 0, "")


def test_owner_names_mapped_through_target_tables(tmp_path: Path, repo: Repo) -> None:
    deb = hand_deb(tmp_path, "owners", [
        tinfo("./srv/", kind=tarfile.DIRTYPE, mode=0o750, uid=999, gid=999, uname="www-data",
              gname="www-data"),
        tinfo("./srv/known", data=b"k", uid=999, gid=999, uname="svc", gname="svc"),
        tinfo("./srv/unknown", data=b"u", uid=4321, gid=4322, uname="nosuch", gname="nosuch")])
    owners = OwnerMap.from_files("root:x:0:0::/:/bin/sh\nsvc:x:120:121::/:/bin/false\n"
                                 "www-data:x:33:33::/:/bin/false\n",
                                 "root:x:0:\nsvc:x:121:\nwww-data:x:33:\n")
    listing = tree_listing(repo, import_package(repo, deb, owners=owners).ref)
    assert listing["srv"][1:3] == (33, 33)
    assert listing["srv/known"][1:3] == (120, 121)
    assert listing["srv/unknown"][1:3] == (4321, 4322)


def test_real_debian_packages_match_dpkg(real_debs: list[Path], repo: Repo) -> None:
    require_tool("dpkg-deb")
    for deb in real_debs:
        result = import_package(repo, deb)
        assert result.meta.name == deb.name.split("_")[0]
        assert_matches_dpkg(repo, result.ref, deb)
        regular = [f for f in result.meta.files if f.kind == "file"]
        assert regular and all(f.digest.startswith("md5:") for f in regular)
