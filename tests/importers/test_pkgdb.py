"""Package databases inside commits (dpkg status + info/*.list, rpmdb.sqlite), no checkout."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from importers import dpkgdb, rpmdb
from importers.errors import PackageDbError
from importers.model import Origin
from importers.rpm import open_rpm
from store.commit import commit_directory
from store.repo import Repo
from tests.importers.builders import build_rpm
from tests.util import require_tool, run

HOST_DPKG = Path("/var/lib/dpkg")


def _dpkg_image(tmp_path: Path, layout: str) -> Path:
    """A root holding a copy of this machine's dpkg database in the given layout."""
    root = tmp_path / f"img-{layout}"
    db = root / ("var/lib/dpkg" if layout == "var" else "usr/share/dpkg/database")
    (db / "info").mkdir(parents=True)
    shutil.copy(HOST_DPKG / "status", db / "status")
    for lst in (HOST_DPKG / "info").glob("*.list"):
        shutil.copy(lst, db / "info" / lst.name)
    if layout == "usr":
        (root / "var/lib").mkdir(parents=True)
        os.symlink("../../usr/share/dpkg/database", root / "var/lib/dpkg")
    return db


def _dpkg_query(db: Path) -> list[tuple[str, str, str]]:
    out = run(["dpkg-query", f"--admindir={db}", "-W", "-f",
               "${db:Status-Abbrev}|${Package}|${Version}|${Architecture}\n"]).stdout
    rows = []
    for line in out.splitlines():
        abbrev, name, version, arch = line.split("|")
        if abbrev[1] in "iUFWt":
            rows.append((name, version, arch))
    return sorted(rows)


@pytest.mark.parametrize("layout", ["var", "usr"])
def test_dpkg_database_matches_dpkg_query(tmp_path: Path, layout: str) -> None:
    require_tool("dpkg-query")
    if not (HOST_DPKG / "status").exists():
        pytest.skip("this machine has no dpkg database to copy")
    db = _dpkg_image(tmp_path, layout)
    repo = Repo.init(tmp_path / "repo")
    commit_directory(repo, db.parents[2] if layout == "var" else db.parents[3],
                     branch="img", timestamp=0)
    ours = dpkgdb.read_installed(repo, "img")
    assert sorted((m.name, m.evr, m.arch) for m in ours) == _dpkg_query(db)
    assert all(m.origin == Origin.INSTALLED for m in ours)
    dpkg = next(m for m in ours if m.name == "dpkg")
    listed = run(["dpkg-query", f"--admindir={db}", "-L", "dpkg"]).stdout.split("\n")
    assert {f.path for f in dpkg.files} == {p.lstrip("/") for p in listed if p and p != "/."}
    assert dpkg.deps


def test_missing_dpkg_database_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    (root / "usr").mkdir(parents=True)
    (root / "usr/x").write_text("x")
    repo = Repo.init(tmp_path / "repo")
    commit_directory(repo, root, branch="img", timestamp=0)
    with pytest.raises(PackageDbError, match="no dpkg database"):
        dpkgdb.read_installed(repo, "img")


@pytest.fixture(scope="module")
def rpms(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    require_tool("rpmbuild", "rpm")
    d = tmp_path_factory.mktemp("dbrpms")
    return [
        build_rpm(d, "alpha", version="1.2", release="3", extra="Epoch: 1\nRequires: beta\n",
                  install="mkdir -p %{buildroot}/usr/bin\necho a > %{buildroot}/usr/bin/alpha\n",
                  files="/usr/bin/alpha"),
        build_rpm(d, "beta", install="mkdir -p %{buildroot}/etc\necho b > %{buildroot}/etc/b\n",
                  files="%config /etc/b"),
    ]


@pytest.mark.parametrize("dbpath", ["/usr/lib/sysimage/rpm", "/var/lib/rpm"])
def test_rpmdb_matches_rpm_query(tmp_path: Path, rpms: list[Path], dbpath: str) -> None:
    root = tmp_path / "img"
    root.mkdir()
    run(["rpm", "--root", root, "--dbpath", dbpath, "--nodeps", "-i", *rpms])
    want = run(["rpm", "--root", root, "--dbpath", dbpath, "-qa", "--qf",
                "%{NAME}|%{EVR}|%{ARCH}\n"]).stdout.split()
    repo = Repo.init(tmp_path / "repo")
    commit_directory(repo, root, branch="img", timestamp=0)
    objects_before = sorted((repo.path / "objects").rglob("*"))
    ours = rpmdb.read_installed(repo, "img")
    assert sorted(f"{m.name}|{m.evr}|{m.arch}" for m in ours) == sorted(want)
    alpha = next(m for m in ours if m.name == "alpha")
    assert alpha.origin == Origin.INSTALLED
    assert alpha.deps == open_rpm(rpms[0]).meta.deps
    assert [f.path for f in alpha.files] == ["usr/bin/alpha"]
    ql = run(["rpm", "--root", root, "--dbpath", dbpath, "-ql", "beta"]).stdout.split()
    beta = next(m for m in ours if m.name == "beta")
    assert [f"/{f.path}" for f in beta.files] == ql and beta.conffiles == ("etc/b",)
    assert sorted((repo.path / "objects").rglob("*")) == objects_before
    assert not [n for n in os.listdir(repo.tmp_dir) if n.startswith("rpmdb-")]


def test_corrupt_rpmdb_blob_is_an_error(tmp_path: Path, rpms: list[Path]) -> None:
    import sqlite3
    root = tmp_path / "img"
    root.mkdir()
    run(["rpm", "--root", root, "--dbpath", "/usr/lib/sysimage/rpm", "--nodeps", "-i", rpms[1]])
    db = root / "usr/lib/sysimage/rpm/rpmdb.sqlite"
    con = sqlite3.connect(db)
    con.execute("UPDATE Packages SET blob = X'0000ffff7fffffff'")
    con.commit()
    con.close()
    repo = Repo.init(tmp_path / "repo")
    commit_directory(repo, root, branch="img", timestamp=0)
    with pytest.raises(PackageDbError, match="absurd sizes"):
        rpmdb.read_installed(repo, "img")
