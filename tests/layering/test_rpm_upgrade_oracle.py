"""``%triggerin`` on install and rpm's upgrade scriptlets: ``strata install`` and
``strata override replace`` against ``rpm -i --root`` / ``rpm -U --root`` on a copy of the
same base (the sides of :mod:`tests.layering.rpmoracle`).

The base (:func:`fixtures.rpmimages.base_specs` and
:func:`fixtures.rpmupgradeimages.base_extra_specs`, installed by ``rpm --root -i``) holds
``foo-peer`` (package triggers on ``foo-up`` and ``foo-new``, file triggers of every kind
on ``foo-up``'s directory) and ``foo-up`` 1.0.  Scenarios: ``install`` adds ``foo-new``
(``%triggerin`` on foo-peer and on itself; foo-peer's fires on it) from a served
repository; ``upgrade`` replaces ``foo-up`` 1.0 by the local ``foo-up`` 2.0; ``mixed``
removes ``foo-up`` and installs ``foo-new`` in one compose (``override remove`` then
``install``; the oracle is one librpm transaction, :mod:`tests.layering.rpmts`, as dnf
runs: rpm erases after every install).  Each scriptlet
appends its name, ``$#``, ``$*`` and which of foo-up's old-only and new-only files are
there to :data:`fixtures.rpmupgradeimages.LOG`: both sides must give the same log, files
and package set.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.images import BUSYBOX
from fixtures.rpmimages import DBPATH, base_specs, build
from fixtures.rpmupgradeimages import LOG, base_extra_specs, new_spec, up_spec
from tests.layering.corpus_compare import tree_diff
from tests.layering.corpus_sides import StrataSide, boot_tmpfiles
from tests.layering.rpmoracle import (
    World,
    installed,
    layout,
    oracle_base,
    read_side,
    rpm_root,
    scenario_dirs,
    strata_deployed,
)
from tests.store.servers import http_server
from tests.util import run

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(600)]

# the logs rpm 4.18 writes here (lib/psm.c rpmPackageInstall / rpmPackageErase)
EXPECTED = {"install": """\
triggerprein foo-peer on foo-new 2 1 0 old=y new=n
triggerprein foo-new on foo-peer 2 0 1 old=y new=n
pre foo-new 1 1 old=y new=n
post foo-new 1 1 old=y new=n
triggerin foo-peer on foo-new 2 1 1 old=y new=n
triggerin foo-new on foo-new 2 1 1 old=y new=n
triggerin foo-new on foo-new 2 1 1 old=y new=n
triggerin foo-new on foo-peer 2 1 1 old=y new=n
posttrans foo-new 1 1 old=y new=n
""", "upgrade": """\
transfiletriggerun 1 0 old=y new=n
  /usr/share/foo-up
  /usr/share/foo-up/common.txt
  /usr/share/foo-up/old-only.txt
triggerprein foo-peer on foo-up 2 1 1 old=y new=n
pre foo-up-2.0 1 2 old=y new=n
filetriggerin 1 0 old=y new=y
  /usr/share/foo-up
  /usr/share/foo-up/common.txt
  /usr/share/foo-up/new-only.txt
post foo-up-2.0 1 2 old=y new=y
triggerin foo-peer on foo-up 2 1 2 old=y new=y
triggerin foo-up-2.0 on foo-peer 2 2 1 old=y new=y
filetriggerun 1 0 old=y new=y
  /usr/share/foo-up/old-only.txt
triggerun foo-peer on foo-up 2 1 1 old=y new=y
triggerun foo-up-2.0 on foo-up < 2.0 2 2 1 old=y new=y
preun foo-up-1.0 1 1 old=y new=y
filetriggerpostun 1 0 old=n new=y
  /usr/share/foo-up/old-only.txt
postun foo-up-1.0 1 1 old=n new=y
triggerpostun foo-peer on foo-up 2 1 1 old=n new=y
posttrans foo-up-2.0 1 2 old=n new=y
transfiletriggerin 1 0 old=n new=y
  /usr/share/foo-up
  /usr/share/foo-up/common.txt
  /usr/share/foo-up/new-only.txt
transfiletriggerpostun 1 0 old=n new=y
""", "mixed": """\
transfiletriggerun 1 0 old=y new=n
  /usr/share/foo-up
  /usr/share/foo-up/common.txt
  /usr/share/foo-up/old-only.txt
triggerprein foo-peer on foo-new 2 1 0 old=y new=n
triggerprein foo-new on foo-peer 2 0 1 old=y new=n
pre foo-new 1 1 old=y new=n
post foo-new 1 1 old=y new=n
triggerin foo-peer on foo-new 2 1 1 old=y new=n
triggerin foo-new on foo-new 2 1 1 old=y new=n
triggerin foo-new on foo-new 2 1 1 old=y new=n
triggerin foo-new on foo-peer 2 1 1 old=y new=n
filetriggerun 1 0 old=y new=n
  /usr/share/foo-up
  /usr/share/foo-up/common.txt
  /usr/share/foo-up/old-only.txt
triggerun foo-peer on foo-up 2 1 0 old=y new=n
preun foo-up-1.0 1 0 old=y new=n
filetriggerpostun 1 0 old=n new=n
  /usr/share/foo-up
  /usr/share/foo-up/common.txt
  /usr/share/foo-up/old-only.txt
postun foo-up-1.0 1 0 old=n new=n
triggerpostun foo-peer on foo-up 2 1 0 old=n new=n
posttrans foo-new 1 1 old=n new=n
transfiletriggerpostun 1 0 old=n new=n
"""}
RPMTS = Path(__file__).with_name("rpmts.py")


@pytest.fixture(scope="module", params=list(EXPECTED))
def world(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    scenario: str = request.param
    if scenario == "mixed" and subprocess.run(["/usr/bin/python3", "-c", "import rpm"],
                                              capture_output=True).returncode:
        pytest.skip("needs the system python's rpm bindings (python3-rpm)")
    cache, tmp = scenario_dirs(tmp_path_factory, f"rpmup-{scenario}")
    repo = tmp / "rpmrepo"
    repo.mkdir()
    pkg = build(up_spec("2.0") if scenario == "upgrade" else new_spec(), cache)
    shutil.copy(pkg, repo / pkg.name)
    run(["createrepo_c", "--quiet", repo])
    strata = StrataSide(tmp / "sysroot")
    try:
        with http_server(repo) as served:
            rootfs = tmp / "rootfs"
            rootfs.mkdir()
            run([*rpm_root("--root", rootfs), "-i",
                 *(build(s, cache) for s in base_specs(BUSYBOX))])
            run([*rpm_root("--root", rootfs), "-i",
                 *(build(s, cache) for s in base_extra_specs())])
            (rootfs / LOG.lstrip("/")).unlink(missing_ok=True)
            strata.setup(layout(rootfs, served.url))
            if scenario == "mixed":
                strata.strata("override", "remove", "foo-up")
            args = ("override", "replace", pkg) if scenario == "upgrade" else (
                "install", "foo-new")
            proc = strata.strata(*args, check=False)
        yield _sides(scenario, strata, tmp, pkg, proc)
    finally:
        subprocess.run(["chattr", "-R", "-i", tmp / "sysroot"], capture_output=True)


def _sides(scenario: str, strata: StrataSide, tmp: Path, pkg: Path,
           proc: subprocess.CompletedProcess[str]) -> World:
    failure = "" if proc.returncode == 0 else f"strata failed: {proc.stderr[-800:]}"
    deployed, svar = strata_deployed(strata, tmp)
    oracle = oracle_base(strata, tmp)
    argv = {"install": [*rpm_root("--root", oracle), "-i", pkg],
            "upgrade": [*rpm_root("--root", oracle), "-U", pkg],
            "mixed": ["/usr/bin/python3", RPMTS, oracle, DBPATH, pkg, "-foo-up"]}[scenario]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    boot_tmpfiles(oracle, oracle / "var", tmp / "mnt-a")
    return World(scenario, deployed, oracle, read_side(deployed, svar),
                 read_side(oracle, oracle / "var"), failure, strata_stderr=proc.stderr)


def test_scriptlets_and_triggers_run_in_rpm_order(world: World) -> None:
    """Every scriptlet, package trigger and file trigger: names, $#, $1 $2, which of the
    old and new versions' own files are there, the paths on stdin."""
    assert not world.strata_failure, world.strata_failure
    rel = LOG.lstrip("/")
    assert (world.rpm_root / rel).read_text() == EXPECTED[world.scenario]
    assert (world.strata_root / rel).exists(), "no scriptlet ran"
    assert (world.strata_root / rel).read_text() == EXPECTED[world.scenario]


def test_same_files_and_packages(world: World) -> None:
    """The same files (the old version's own gone, the shared ones the new version's) and
    the same installed packages."""
    assert not world.strata_failure, world.strata_failure
    diffs = tree_diff(world.strata, world.rpm)
    assert not diffs, "\n".join(diffs[:100])
    assert sorted(installed(world.strata_root)) == sorted(installed(world.rpm_root))


def test_config_files_as_rpm_leaves_them(world: World) -> None:
    """The base changed four of foo-up's config files: the upgrade puts the noreplace
    one's new version at .rpmnew, saves the %config one (and the one no longer %config)
    at .rpmsave, leaves the one both versions ship alike, replaces the unchanged one;
    erasing foo-up saves each changed one at .rpmsave; installing foo-new leaves them."""
    base = {"foo-up.conf": "conf 1.0\nlocal\n", "foo-up.defaults": "defaults 1.0\nlocal\n",
            "foo-up.dropped": "dropped 1.0\nlocal\n", "foo-up.plain": "plain 1.0\n",
            "foo-up.same": "same\nlocal\n"}
    want = {"install": base,
            "mixed": {f"{n}.rpmsave": t for n, t in base.items() if "local" in t},
            "upgrade": {**base, "foo-up.conf.rpmnew": "conf 2.0\n",
                        "foo-up.defaults": "defaults 2.0\n",
                        "foo-up.defaults.rpmsave": base["foo-up.defaults"],
                        "foo-up.dropped": "dropped 2.0\n",
                        "foo-up.dropped.rpmsave": base["foo-up.dropped"],
                        "foo-up.plain": "plain 2.0\n"}}[world.scenario]
    for root in (world.rpm_root, world.strata_root):
        got = {p.name: p.read_text() for p in sorted((root / "etc").glob("foo-up.*"))}
        assert got == want, root
    for aside in (n for n in want if n.endswith((".rpmnew", ".rpmsave"))):
        path, _, kind = f"/etc/{aside}".rpartition(".")
        verb = "created" if kind == "rpmnew" else "saved"
        assert f"warning: {path} {verb} as {path}.{kind}" in world.strata_stderr, aside
