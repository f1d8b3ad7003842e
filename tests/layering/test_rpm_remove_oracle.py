"""Removing a base package of an rpm image: ``strata override remove`` against
``rpm -e --root`` on a copy of the same base (the sides of
:mod:`tests.layering.rpmoracle`).

The base (:func:`fixtures.rpmimages.base_specs` and
:func:`fixtures.rpmremoveimages.remove_specs`, installed by ``rpm --root -i``) holds
``foo-gone``, whose ``%pre`` made a user its ``%postun`` deletes, ``foo-watch`` with
``%triggerun``/``%triggerpostun`` on it and ``foo-ftrig`` with every kind of removal file
trigger on the prefixes ``foo-gone`` ships files under.  Each scriptlet appends its name,
its arguments and whether ``foo-gone``'s files are still there to one log
(:data:`fixtures.rpmremoveimages.LOG`), file triggers the paths they read: both sides
must give the same log, files, users and groups and package set.  Scenarios: ``one`` removes ``foo-gone``,
``two`` removes it with ``foo-watch`` (rpm erases ``foo-watch`` first).  Both times go to
``CACHE/rpm-oracle/report-remove-SCENARIO.txt``.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.images import BUSYBOX
from fixtures.rpmimages import base_specs, build
from fixtures.rpmremoveimages import LOG, REMOVED, remove_specs
from tests.layering.corpus_sides import StrataSide, boot_tmpfiles
from tests.layering.realworld import cache_root
from tests.layering.rpmoracle import (
    World,
    layout,
    oracle_base,
    read_side,
    rpm_root,
    scenario_dirs,
    strata_deployed,
)
from tests.store.servers import http_server
from tests.util import run

USER_DB = tuple(f"etc/{f}" for f in ("passwd", "group", "shadow", "gshadow"))
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(600)]

# the log rpm -e writes (read from rpm 4.18 here; the order is lib/psm.c rpmPackageErase)
EXPECTED_LOG = """\
transfiletriggerun 1 0 present
  /usr/lib/foo-gone
  /usr/lib/foo-gone/bin.txt
  /usr/share/foo/c.txt
  /usr/share/foo/gone
  /usr/share/foo/gone/a.txt
  /usr/share/foo/gone/b.txt
transfiletriggerun-low 1 0 present
  /usr/lib/foo-gone
  /usr/lib/foo-gone/bin.txt
filetriggerun 1 0 present
  /usr/share/foo/c.txt
  /usr/share/foo/gone
  /usr/share/foo/gone/a.txt
  /usr/share/foo/gone/b.txt
triggerun foo-gone on foo-watch 2 0 1 present
triggerun foo-watch 2 1 0 present
preun foo-gone 1 0 present
filetriggerun-low 1 0 present
  /usr/share/foo/gone
  /usr/share/foo/gone/a.txt
  /usr/share/foo/gone/b.txt
filetriggerpostun 1 0 absent
  /usr/share/foo/c.txt
  /usr/share/foo/gone
  /usr/share/foo/gone/a.txt
  /usr/share/foo/gone/b.txt
postun foo-gone 1 0 absent
triggerpostun foo-watch 2 1 0 absent
filetriggerpostun-low 1 0 absent
  /usr/lib/foo-gone
  /usr/lib/foo-gone/bin.txt
  /usr/share/foo/gone
  /usr/share/foo/gone/a.txt
  /usr/share/foo/gone/b.txt
transfiletriggerpostun 1 0 absent
"""


SCENARIOS = {"one": (REMOVED,), "two": (REMOVED, "foo-watch")}


@pytest.fixture(scope="module", params=list(SCENARIOS))
def world(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    scenario: str = request.param
    cache, tmp = scenario_dirs(tmp_path_factory, f"rpmremove-{scenario}")
    repo = tmp / "rpmrepo"
    repo.mkdir()
    run(["createrepo_c", "--quiet", repo])
    strata = StrataSide(tmp / "sysroot")
    try:
        with http_server(repo) as served:
            rootfs = tmp / "rootfs"
            rootfs.mkdir()
            run([*rpm_root("--root", rootfs), "-i",
                 *(build(s, cache) for s in base_specs(BUSYBOX))])
            run([*rpm_root("--root", rootfs), "-i", *(build(s, cache) for s in remove_specs())])
            strata.setup(layout(rootfs, served.url))
            t0 = time.monotonic()
            proc = strata.strata("override", "remove", *SCENARIOS[scenario], check=False)
            strata_s = time.monotonic() - t0
        yield _sides(scenario, strata, tmp, proc, strata_s)
    finally:
        subprocess.run(["chattr", "-R", "-i", tmp / "sysroot"], capture_output=True)


def _sides(scenario: str, strata: StrataSide, tmp: Path,
           proc: subprocess.CompletedProcess[str], strata_s: float) -> World:
    failure = "" if proc.returncode == 0 else f"strata override remove failed: {proc.stderr}"
    deployed, svar = strata_deployed(strata, tmp)
    oracle = oracle_base(strata, tmp)
    t0 = time.monotonic()
    erase = subprocess.run([*rpm_root("--root", oracle), "-e", *SCENARIOS[scenario]],
                           capture_output=True, text=True, timeout=300)
    rpm_s = time.monotonic() - t0
    assert erase.returncode == 0, erase.stdout + erase.stderr
    boot_tmpfiles(oracle, oracle / "var", tmp / "mnt-a")
    report = cache_root() / f"rpm-oracle/report-remove-{scenario}.txt"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(f"strata override remove {strata_s:.2f} s, rpm -e {rpm_s:.2f} s\n")
    return World(scenario, deployed, oracle, read_side(deployed, svar),
                 read_side(oracle, oracle / "var"), failure, strata_s, rpm_s)


def test_scriptlets_and_triggers_run_in_rpm_order(world: World) -> None:
    """The log of every %preun, %postun, trigger and file trigger: names, $#, $1 $2, the
    removed files' presence and the paths on stdin."""
    assert not world.strata_failure, world.strata_failure
    rel = LOG.lstrip("/")
    log = (world.rpm_root / rel).read_text()
    if world.scenario == "one":
        assert log == EXPECTED_LOG
    else:  # rpm erases foo-watch first: its own %triggerun fires, and nothing after
        assert log.index("triggerun foo-watch 2 0 1") < log.index("preun foo-gone")
        assert "triggerpostun foo-watch" not in log
    assert (world.strata_root / rel).exists(), "no scriptlet ran"
    assert (world.strata_root / rel).read_text() == log


def test_image_users_and_groups_as_rpm_leaves_them(world: World) -> None:
    """%postun deleted the user and group %pre made: the new image's user database
    (``usr/etc``) is the one ``rpm -e`` leaves."""
    for f in USER_DB:
        s = (world.strata_root / "usr" / f).read_text().splitlines()
        a = (world.rpm_root / f).read_text().splitlines()
        assert s == a, f
        assert not any(line.startswith("gonesvc:") for line in a), f


def test_deployment_keeps_the_host_account_postun_deleted(world: World) -> None:
    """Where strata departs from ``rpm -e`` on purpose: the deployment's ``/etc`` keeps
    every account the host has, so a removal script cannot delete a host account (not
    even ``root``); only the new image's defaults lose it (docs/script-sandbox.md).
    Apart from that account the deployment's user database is the one rpm leaves."""
    for f in USER_DB:
        s = (world.strata_root / f).read_text().splitlines()
        a = (world.rpm_root / f).read_text().splitlines()
        kept = [line for line in s if line.startswith("gonesvc:")]
        assert kept, f
        assert [line for line in s if line not in kept] == a, f
