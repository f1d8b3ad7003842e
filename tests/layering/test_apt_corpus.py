"""Real Debian 12 packages layered by strata, with apt-get as the oracle (issue 13).

For each package of :data:`tests.layering.corpus.CORPUS`: ``strata install`` on a
deployed minbase, and ``apt-get install`` in a chroot of a checkout of the same
base commit from the same local apt repository, must give the same installed
package set, the same files (path, type, mode, owner, file capabilities,
content; exclusions in :data:`tests.layering.corpus_compare.EXCLUDED`), hence
the same users and groups, alternatives, diversions, statoverrides and systemd
enablement links; ``dpkg --audit`` and ``dpkg --verify`` are clean in the new
deployment and the package's program runs.  The repository and the minbase
are cached (:data:`tests.layering.corpus.CACHE`); the last test writes the table
package -> identical / differences and the install times of both sides to
``CACHE/report.txt`` after each package (the causes of differences classified by
:data:`tests.layering.corpus_compare.CAUSES`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from importers.deb import open_deb
from importers.debcontrol import meta_from_control
from importers.model import Origin, PackageType
from layering.scriptplan import plan_scripts
from store.mtree import MutableTree
from tests.layering.corpus import (
    CACHE,
    CORPUS,
    CorpusPackage,
    apt_results,
    local_repo,
    minbase_tar,
)
from tests.layering.corpus_compare import (
    causes,
    entry,
    machine_id_diff,
    snapshot,
    status_diff,
    tree_diff,
)
from tests.layering.corpus_sides import (
    AptSide,
    StrataSide,
    audit_and_verify,
    boot_tmpfiles,
    bwrap_view,
    packages,
    prepare_rootfs,
)
from tests.store.servers import http_server
from tests.util import require_tool, run

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(900)]

# Packages that cannot match apt yet, each with the exact causes (remove a package once its
# causes are fixed: strict, so an unexpected pass fails).  Found by this corpus, 2026-12:
XFAIL: dict[str, str] = {}  # none left: 2026-12-06, after the configure order and man-db's index


# packages whose dpkg.log configure order strata's plan is checked against: pre-depended
# packages configured at once (systemd, cron-daemon-common, python3.11-minimal, libmpfr6),
# a cycle (dmsetup and libdevmapper1.02.1), long pending queues
ORDER_CHECKED = ("openssh-server", "systemd-timesyncd", "postfix", "cron", "gawk", "git")


@dataclass
class Outcome:
    """What one package gave on both sides."""

    name: str
    strata_s: float = 0.0
    apt_s: float = 0.0
    failure: str = ""
    diffs: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.failure and not self.diffs


@dataclass
class World:
    strata: StrataSide
    apt: AptSide
    tmp: Path
    outcomes: dict[str, Outcome] = field(default_factory=dict)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require_tool("mmdebstrap", "apt-get", "apt-ftparchive", "bwrap", "systemd-tmpfiles")
    if os.geteuid() != 0:
        pytest.skip("the corpus needs root (overlay mounts, chroots)")
    repo = local_repo()
    tmp = tmp_path_factory.mktemp("corpus")
    with http_server(repo) as served:
        rootfs = prepare_rootfs(minbase_tar(), tmp / "rootfs",
                                f"deb [trusted=yes] {served.url} stable main")
        strata = StrataSide(tmp / "sysroot")
        strata.setup(rootfs)
        shutil.rmtree(rootfs)
        apt = AptSide(tmp / "pristine", apt_results())
        apt.setup(strata)
        w = World(strata, apt, tmp)
        try:
            yield w
        finally:
            subprocess.run(["chattr", "-R", "-i", tmp / "sysroot"], capture_output=True)


def _compare(w: World, pkg: CorpusPackage, out: Outcome, work: Path) -> None:
    proc, out.strata_s = w.strata.install(pkg.name)
    if proc.returncode != 0:
        out.failure = f"strata install failed: {proc.stderr.strip()[-600:]}"
    deployed = w.strata.default_dir() if not out.failure else None
    svar = work / "strata-var"
    if deployed is not None:
        run(["cp", "-a", w.strata.var, svar])
        boot_tmpfiles(deployed, svar, work / "mnt-s")
    with w.apt.installed(work / "apt", pkg.name) as (root, upper, out.apt_s, error):
        if error or deployed is None:
            out.failure += error
            return
        out.diffs += _differences(w, pkg, deployed, svar, root, upper)


def _differences(w: World, pkg: CorpusPackage, deployed: Path, svar: Path, root: Path,
                 upper: Path) -> list[str]:
    s = {**snapshot(deployed, skip=("var",)), "var": entry(str(svar), str(svar)),
         **snapshot(svar, "var")}
    a = snapshot(root, real_of=lambda rel: w.apt.real_path(upper, rel))
    diffs = tree_diff(s, a, roots=(deployed, root))
    diffs += machine_id_diff(deployed, svar, os.path.lexists(root / "var/lib/dbus/machine-id"))
    diffs += status_diff(deployed / "usr/lib/sysimage/dpkg/status",
                         root / "usr/lib/sysimage/dpkg/status")
    sp, (ap, apt_audit) = packages(deployed, svar), w.apt.facts(root, pkg.name)
    diffs += [f"P strata: {p}" for p in sorted(set(sp) - set(ap))]
    diffs += [f"P apt: {p}" for p in sorted(set(ap) - set(sp))]
    audit = audit_and_verify(deployed, svar)
    if audit != apt_audit:
        diffs.append(f"A {audit or 'apt side not clean'}")
    elif audit:
        diffs.append(f"A (apt too) {audit}")
    check = bwrap_view(deployed, svar, list(pkg.check))
    if check.returncode != 0:
        diffs.append(f"R {' '.join(pkg.check)} exit {check.returncode}: "
                     f"{(check.stdout + check.stderr)[-300:]}")
    return diffs


def _params() -> list[object]:
    """The corpus, or the packages named in ``$STRATA_CORPUS`` (comma-separated)."""
    only = [n for n in os.environ.get("STRATA_CORPUS", "").split(",") if n]
    return [pytest.param(p, id=p.name, marks=[pytest.mark.xfail(strict=True, reason=XFAIL[p.name])]
                         if p.name in XFAIL else []) for p in CORPUS if not only or p.name in only]


@pytest.mark.parametrize("pkg", _params())
def test_package_as_apt_installs_it(world: World, pkg: CorpusPackage) -> None:
    out = world.outcomes[pkg.name] = Outcome(pkg.name)
    work = world.tmp / f"work-{pkg.name}"
    work.mkdir()
    try:
        _compare(world, pkg, out, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        world.strata.back_to_base()
        _write_report(world)
    assert out.identical, "\n".join([out.failure, *out.diffs[:200]])


def _write_report(w: World) -> None:
    lines = [f"{'package':20} {'strata s':>9} {'apt s':>7}  result"]
    for o in w.outcomes.values():
        result = "identical" if o.identical else (
            f"{len(o.diffs) or 'install failed'}: "
            + "; ".join(causes([o.failure] if o.failure else o.diffs)))
        lines.append(f"{o.name:20} {o.strata_s:9.1f} {o.apt_s:7.1f}  {result}")
    ts, ta = sum(o.strata_s for o in w.outcomes.values()), sum(o.apt_s for o in w.outcomes.values())
    lines.append(f"{'total':20} {ts:9.1f} {ta:7.1f}  "
                 f"{sum(o.identical for o in w.outcomes.values())}/{len(w.outcomes)} identical")
    for o in w.outcomes.values():
        if not o.identical:
            found = causes([o.failure] if o.failure else o.diffs)
            lines += ["", f"== {o.name}", *(f"cause ({n}): {c}" for c, n in found.items()),
                      o.failure, *o.diffs]
    CACHE.mkdir(parents=True, exist_ok=True)
    report = CACHE / os.environ.get("STRATA_CORPUS_REPORT", "report.txt")
    report.write_text("\n".join(lines) + "\n")


def _order_params() -> list[str]:
    only = [n for n in os.environ.get("STRATA_CORPUS", "").split(",") if n]
    return [n for n in ORDER_CHECKED if not only or n in only]


@pytest.mark.parametrize("name", _order_params())
def test_postinsts_planned_in_dpkg_logs_configure_order(world: World, name: str) -> None:
    """strata's postinst order for what apt-get installed equals the ``configure`` lines
    of that run's /var/log/dpkg.log (packages without a postinst left out)."""
    work = world.tmp / f"order-{name}"
    work.mkdir()
    try:
        with world.apt.installed(work / "apt", name) as (root, _upper, _s, error):
            assert not error, error
            log = [line.split() for line in (root / "var/log/dpkg.log").read_text().splitlines()]
            status = (root / "usr/lib/sysimage/dpkg/status").read_text()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    new = [w[3].split(":")[0] for w in log if len(w) > 3 and w[2] == "install"]
    configured = [w[3].split(":")[0] for w in log if len(w) > 3 and w[2] == "configure"]
    pool = local_repo() / "pool"
    added = [open_deb(deb).meta for n in new for deb in sorted(pool.glob(f"{n}_*.deb"))]
    assert sorted(p.name for p in added) == sorted(new)
    base = [meta_from_control(s, origin=Origin.INSTALLED) for s in status.split("\n\n")
            if s.strip() and meta_from_control(s, origin=Origin.INSTALLED).name not in new]
    runs = plan_scripts(PackageType.DEB, added, MutableTree(), installed=base)
    with_postinst = {p.name for p in added if any(s.name == "postinst" for s in p.scripts)}
    assert [r.package for r in runs if r.name == "postinst"] == [
        n for n in configured if n in with_postinst]
