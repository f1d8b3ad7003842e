"""rpm packages the tests build, layered by strata, with ``rpm -i --root`` as the oracle
(issue 13, the rpm side of the apt corpus; the sides are in :mod:`tests.layering.rpmoracle`).

The set (:func:`fixtures.rpmimages.foo_specs`): a ``%pre`` that makes a system user and
group with ``groupadd -r``/``useradd -r``; a ``%post`` that chowns a directory it ships to
that user and a ``%attr`` naming it; a ``%posttrans``; ``%filetriggerin`` and
``%transfiletriggerin`` fired by another package's files and by a base package's;
``%config(noreplace)``, an empty ``%dir`` under /var, a symlink, a setuid file, a
``%caps`` file; Requires / Provides / a virtual package / a file dependency.  Both sides
must give the same installed packages, files (path, type, mode, owner, size, symlink
target, ``security.capability``, content), users and groups, and ``rpm -Va`` output.
Two scenarios: ``layered`` (the trigger package comes with the set) and ``base-trigger``
(``foo-triggers`` is in the base: its triggers fire for the layered files only).  The file
comparison writes package -> identical / differences and both times to
``CACHE/rpm-oracle/report-SCENARIO.txt``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.images import BUSYBOX
from fixtures.rpmimages import (
    REQUESTED,
    base_specs,
    build,
    foo_base_spec,
    foo_specs,
    late_base_spec,
)
from tests.layering.corpus_compare import tree_diff
from tests.layering.corpus_sides import StrataSide, boot_tmpfiles
from tests.layering.realworld import cache_root
from tests.layering.rpmoracle import (
    World,
    by_package,
    install_oracle,
    installed,
    layout,
    oracle_base,
    owner_names,
    owners,
    read_side,
    rpm_root,
    scenario_dirs,
    strata_deployed,
    verify,
    xattrs,
)
from tests.store.servers import http_server
from tests.util import run

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(600)]


SCENARIOS = {"layered": (), "base-trigger": ("foo-triggers",)}


@pytest.fixture(scope="module", params=list(SCENARIOS))
def world(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    scenario: str = request.param
    cache, tmp = scenario_dirs(tmp_path_factory, f"rpmoracle-{scenario}")
    in_base = [s for s in foo_specs() if s.name in SCENARIOS[scenario]]
    layered = [s for s in foo_specs() if s.name not in SCENARIOS[scenario]]
    base = [build(s, cache) for s in [*base_specs(BUSYBOX), foo_base_spec(), *in_base]]
    pkgs = [build(s, cache) for s in layered]
    repo = tmp / "rpmrepo"
    repo.mkdir()
    for p in pkgs:
        shutil.copy(p, repo / p.name)
    run(["createrepo_c", "--quiet", repo])
    strata = StrataSide(tmp / "sysroot")
    try:
        with http_server(repo) as served:
            rootfs = tmp / "rootfs"
            rootfs.mkdir()
            run([*rpm_root("--root", rootfs), "-i", *base])
            run([*rpm_root("--root", rootfs), "-i", build(late_base_spec(), cache)])
            _unowned_files(rootfs)
            strata.setup(layout(rootfs, served.url))
            t0 = time.monotonic()
            proc = strata.strata("install", *REQUESTED, check=False)
            strata_s = time.monotonic() - t0
        w = _sides(strata, tmp, pkgs, proc, strata_s)
        w.scenario, w.names = scenario, [s.name for s in layered]
        yield w
    finally:
        subprocess.run(["chattr", "-R", "-i", tmp / "sysroot"], capture_output=True)


def _unowned_files(rootfs: Path) -> None:
    """Files no package owns where foo-daemon puts a %config(noreplace), a %config and a
    plain file (an admin's edits, a leftover)."""
    (rootfs / "etc/foo-daemon.conf").write_text("port = 8080\n")
    (rootfs / "etc/foo-daemon.defaults").write_text("local defaults\n")
    (rootfs / "usr/share/foo-daemon").mkdir()
    (rootfs / "usr/share/foo-daemon/data.txt").write_text("old data\n")


def _sides(strata: StrataSide, tmp: Path, pkgs: list[Path],
           proc: subprocess.CompletedProcess[str], strata_s: float) -> World:
    failure = "" if proc.returncode == 0 else f"strata install failed: {proc.stderr[-800:]}"
    deployed, svar = strata_deployed(strata, tmp)
    oracle = oracle_base(strata, tmp)
    rpm_s = install_oracle(oracle, pkgs)
    boot_tmpfiles(oracle, oracle / "var", tmp / "mnt-a")
    # rpm -V and the checks read one tree: a copy of the deployment with the booted /var
    view = tmp / "strata-view"
    run(["cp", "-a", "--reflink=auto", deployed, view])
    shutil.rmtree(view / "var")
    run(["cp", "-a", svar, view / "var"])
    return World("", view, oracle, read_side(deployed, svar), read_side(oracle, oracle / "var"),
                 failure, strata_s, rpm_s)


def test_strata_installs_the_set(world: World) -> None:
    assert not world.strata_failure, world.strata_failure


def test_same_installed_packages(world: World) -> None:
    s, a = installed(world.strata_root), installed(world.rpm_root)
    assert sorted(s) == sorted(a)
    assert "foo-daemon-2.1-3.noarch" in a


def test_same_files_owners_modes_caps_and_contents(world: World) -> None:
    diffs = tree_diff(world.strata, world.rpm)
    _report(world, diffs)
    assert not diffs, "\n".join(diffs[:100])


def test_same_owner_names_and_xattrs(world: World) -> None:
    """Owners by name through each side's own passwd/group, every extended attribute."""
    s_own, a_own = owner_names(world.strata_root, world.strata), owner_names(world.rpm_root,
                                                                            world.rpm)
    assert {k: v for k, v in s_own.items() if a_own.get(k) != v} == {}
    assert a_own["var/lib/foo-daemon/state"] == ("foosvc", "foosvc")
    s_x, a_x = xattrs(world.strata), xattrs(world.rpm)
    assert {k: v for k, v in s_x.items() if a_x.get(k, {}) != v} == {}
    assert {k: v for k, v in a_x.items() if s_x.get(k, {}) != v} == {}
    assert "security.capability" in a_x["usr/bin/foo-bind"]


def test_config_files_over_unowned_ones(world: World) -> None:
    """rpm keeps an admin's file under %config(noreplace) (the package's goes to .rpmnew),
    moves it to .rpmorig under %config, and replaces a plain file."""
    etc = world.strata_root / "etc"
    assert (etc / "foo-daemon.conf").read_text() == "port = 8080\n"
    assert (etc / "foo-daemon.conf.rpmnew").read_text() == "port = 80\n"
    assert (etc / "foo-daemon.defaults.rpmorig").read_text() == "local defaults\n"
    assert (etc / "foo-daemon.defaults").read_text() == "defaults\n"
    assert (world.strata_root / "usr/share/foo-daemon/data.txt").read_text() == "data\n"


def test_same_users_and_groups(world: World) -> None:
    for f in ("etc/passwd", "etc/group", "etc/shadow", "etc/gshadow"):
        s = (world.strata_root / f).read_text().splitlines()
        a = (world.rpm_root / f).read_text().splitlines()
        assert s == a, f
    passwd = (world.rpm_root / "etc/passwd").read_text().splitlines()
    assert "foosvc:x:999:999:foo service:/var/lib/foo-daemon:/sbin/nologin" in passwd


def test_pre_runs_before_the_package_files(world: World) -> None:
    rel = "usr/lib/foo-user/pre-saw-own-file"
    assert (world.rpm_root / rel).read_text() == "absent\n"
    assert (world.strata_root / rel).read_text() == "absent\n"


def test_rpm_verify_same_as_rpm(world: World) -> None:
    s, a = verify(world.strata_root), verify(world.rpm_root)
    assert s == a
    # useradd changed /etc/passwd, group, shadow, gshadow, %post chowned foo-daemon's
    # directory and the admin's foo-daemon.conf stayed: rpm flags them on both sides
    assert a.splitlines() == [".....UG..    /var/lib/foo-daemon",
                              ".....UG..    /var/lib/foo-daemon/seed",
                              *(f"S.5......  c /etc/{f}" for f in (
                                  "foo-daemon.conf", "group", "gshadow", "passwd", "shadow"))]


def test_scriptlet_and_trigger_effects(world: World) -> None:
    """What %post, %posttrans and the file triggers left (read, and known independently)."""
    for rel in ("var/lib/foo-daemon/state/post-arg", "usr/lib/foo-daemon/posttrans",
                "usr/lib/foo-triggers/in.log", "usr/lib/foo-triggers/trans.log"):
        s, a = world.strata_root / rel, world.rpm_root / rel
        assert a.exists(), rel
        assert s.exists() and s.read_text() == a.read_text(), rel
    log = (world.rpm_root / "usr/lib/foo-triggers/trans.log").read_text()
    log = log.split("trans 0  1\n")[-1].split("prio-trans")[0]  # foo-triggers' last run
    # a trigger package in the transaction sees every matching file, a base one the new ones
    # (the log of base-trigger starts with the run of the base's own rpm -i)
    assert ("/usr/share/foo/base.txt" in log) == (world.scenario == "layered")
    assert "/usr/share/foo/sub/b.txt" in log and "/usr/share/foo/zz/prio.txt" in log
    if world.scenario == "layered":  # database order is install order, not names
        assert log.index("/usr/share/foo/base.txt") < log.index("/usr/share/foo/late.txt")
    # foo-prio's triggers: priority 2000000 before its %post, 100 after
    log = (world.rpm_root / "usr/lib/foo-triggers/in.log").read_text()
    assert log.index("prio-in") < log.index("post foo-prio") < log.index("low-in")


def _report(world: World, diffs: list[str]) -> None:
    own = owners(world.rpm_root)
    lines = [f"{world.scenario}: strata install {world.strata_s:.1f} s, rpm -i "
             f"{world.rpm_s:.1f} s ({len(world.names)} packages)", world.strata_failure]
    for name, found in by_package(diffs, own, world.names).items():
        lines.append(f"{name:16} {'identical' if not found else f'{len(found)} differences'}")
        lines += [f"    {d}" for d in found]
    out = cache_root() / "rpm-oracle"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"report-{world.scenario}.txt").write_text("\n".join(lines) + "\n")

