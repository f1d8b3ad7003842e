"""The package record, relation parsing and version comparison (oracles: dpkg, rpm)."""

from __future__ import annotations

import subprocess

import pytest

from importers.model import (
    DepKind,
    FileEntry,
    FileKind,
    Op,
    Origin,
    PackageMeta,
    PackageType,
    Relation,
    Script,
    parse_deb_relations,
)
from importers.versions import evrcmp, satisfies
from tests.util import require_tool, run


def test_record_round_trips_through_dict() -> None:
    meta = PackageMeta(
        type=PackageType.RPM, name="x", version="1", release="2", epoch=3, arch="x86_64",
        origin=Origin.CATALOGUE,
        deps={DepKind.DEPENDS: ((Relation("a", Op.GE, "1", flags=64), Relation("b")),)},
        files=(FileEntry("usr/bin/x", FileKind.FILE, 0o100755, 10, caps="cap_net_raw=ep"),),
        scripts=(Script("postin", "echo", "/bin/sh"),
                 Script("filetriggerin", "cat", "/bin/sh", ("/usr/share/a", "/b"), 2000)),
        conffiles=("etc/x",), checksum="ab")
    assert PackageMeta.from_dict(meta.to_dict()) == meta
    assert meta.evr == "3:1-2" and meta.nevra == "x-3:1-2.x86_64"


def test_unknown_record_keys_are_rejected() -> None:
    d = PackageMeta(type=PackageType.DEB, name="x", version="1", arch="all").to_dict()
    d["surprise"] = 1
    with pytest.raises(ValueError, match="surprise"):
        PackageMeta.from_dict(d)


def test_deb_relations_to_cnf() -> None:
    cnf = parse_deb_relations("a (>= 1.0) | b:any, c (<< 2), d [amd64], e (>> 1:0)")
    assert cnf == ((Relation("a", Op.GE, "1.0"), Relation("b", arch="any")),
                   (Relation("c", Op.LT, "2"),), (Relation("d"),), (Relation("e", Op.GT, "1:0"),))


DEB_PAIRS = [("1.0", "1.0"), ("1.0~rc1", "1.0"), ("1:0.1", "2.0"), ("1.0-1", "1.0-1ubuntu1"),
             ("2.0+dfsg-1", "2.0-1"), ("1.0a", "1.0"), ("0:1.0", "1.0"), ("1.10", "1.9")]
RPM_PAIRS = [("1.0", "1.0"), ("1.0~rc1", "1.0"), ("1:0.1-1", "2.0-1"), ("1.0^git1", "1.0"),
             ("1.0a", "1.0"), ("1.10-1", "1.9-1"), ("1.0-1.fc40", "1.0-1.fc39"), ("2.0", "2.0.1")]


@pytest.mark.parametrize(("a", "b"), DEB_PAIRS)
def test_deb_evrcmp_agrees_with_dpkg(a: str, b: str) -> None:
    require_tool("dpkg")
    want = 0 if _dpkg(a, "eq", b) else (-1 if _dpkg(a, "lt", b) else 1)
    assert evrcmp(PackageType.DEB, a, b) == want


def _dpkg(a: str, op: str, b: str) -> bool:
    return subprocess.run(["dpkg", "--compare-versions", a, op, b]).returncode == 0


@pytest.mark.parametrize(("a", "b"), RPM_PAIRS)
def test_rpm_evrcmp_agrees_with_rpm(a: str, b: str) -> None:
    require_tool("rpm")
    lua = (f'%{{lua: local a=rpm.ver("{a}"); local b=rpm.ver("{b}"); '
           f'print(a < b and -1 or (a == b and 0 or 1))}}')
    assert evrcmp(PackageType.RPM, a, b) == int(run(["rpm", "--eval", lua]).stdout.strip())


def test_satisfies() -> None:
    assert satisfies(PackageType.DEB, Relation("a", Op.GE, "1.0"), "1.0")
    assert not satisfies(PackageType.DEB, Relation("a", Op.LT, "1.0"), "1.0")
    assert satisfies(PackageType.RPM, Relation("a", Op.GT, "1.0-1"), "1:0.5-1")
    assert satisfies(PackageType.RPM, Relation("a"), "0")
