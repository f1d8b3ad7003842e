"""The rpm side of issue 13: one rpm base commit, strata on a deployment, ``rpm -i --root`` on
a checkout, and how the two are read and compared.

- base: :func:`fixtures.rpmimages.base_specs` and ``foo-base-data`` installed by
  ``rpm --root -i`` (real sqlite rpmdb in ``usr/lib/sysimage/rpm``), ``/etc`` moved to
  ``usr/etc``, a ``yum.repos.d`` file naming the served rpm-md repository;
- strata: that commit deployed, ``strata install foo-app`` (the repository is made by
  ``createrepo_c`` and served on 127.0.0.1), the deployment with a copy of the
  stateroot's ``/var`` after ``systemd-tmpfiles --create --boot``;
- rpm: a checkout of the same commit with ``/etc`` from ``usr/etc`` (as deploy makes it),
  ``rpm --root COPY -i`` of the same package files, the same tmpfiles pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fixtures.images import BUSYBOX
from fixtures.rpmimages import DBPATH
from tests.layering.corpus_compare import Entry, snapshot
from tests.layering.corpus_sides import BRANCH, StrataSide, boot_tmpfiles
from tests.layering.realworld import cache_root
from tests.util import require_tool, run

# paths left out on both sides (a directory drops what is below it) -> why
EXCLUDED_RPM: dict[str, str] = {
    "usr/lib/sysimage/rpm": "the rpm database itself: compared as `rpm -qa` (name, version, "
    "install order) and `rpm -Va`, since sqlite pages differ with any write order",
    "var/tmp": "rpm's scriptlet temporary files (deleted; strata runs scripts from its own)",
    "var/lib/rpm-state": "rpm's scratch directory for scriptlets",
    "var/log": "logs of the installing tool (none are written by the packages here)",
    "var/lib/rpm": "strata's compatibility symlink to the database moved under /usr "
    "(layering/convert.py, its tmpfiles line makes it at boot), like rpm-ostree's",
    "usr/lib/foo-user/pre-saw-own-file": "compared by its own test, which names the "
    "order it checks (test_pre_runs_before_the_package_files)",
    "usr/lib/tmpfiles.d/strata-": "strata's transport of /var content to a stateroot "
    "(strata-*.conf, as in the apt corpus)",
}
# the entry itself is left out (what is below it is compared)
ENTRY_ONLY_RPM: dict[str, str] = {
    "usr/lib/tmpfiles.d": "made by strata to hold its strata-*.conf (the base has none)",
}


def rpm_root(*args: object) -> list[str]:
    """``rpm --root ... --dbpath ...`` argv start."""
    return ["rpm", "--dbpath", DBPATH, *map(str, args)]


def layout(root: Path, repo_url: str) -> Path:
    """The rpm root in OSTree layout with a ``.repo`` naming ``repo_url``."""
    repos = root / "etc/yum.repos.d"
    repos.mkdir(parents=True)
    (repos / "foo.repo").write_text(f"[foo]\nname=foo\nbaseurl={repo_url}\nenabled=1\n"
                                    "gpgcheck=0\n")
    (root / "usr/etc").mkdir(parents=True, exist_ok=True)
    for entry in (root / "etc").iterdir():
        shutil.move(entry, root / "usr/etc" / entry.name)
    (root / "etc").rmdir()
    return root


def install_oracle(root: Path, rpms: list[Path]) -> float:
    """``rpm --root ROOT -i`` of ``rpms`` given by file name, as ``rpm -i *.rpm`` does; the
    seconds it took."""
    t0 = time.monotonic()
    ordered = sorted(rpms, key=lambda p: p.name)
    proc = subprocess.run([*rpm_root("--root", root), "-i", *map(str, ordered)],
                          capture_output=True, text=True, timeout=300)
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return seconds


def not_excluded(snap: dict[str, Entry]) -> dict[str, Entry]:
    """``snap`` without :data:`EXCLUDED_RPM` paths."""
    return {rel: e for rel, e in snap.items() if rel not in ENTRY_ONLY_RPM
            and not any(rel == p or rel.startswith(p if p.endswith("-") else p + "/")
                        for p in EXCLUDED_RPM)}


def read_side(root: Path, var: Path) -> dict[str, Entry]:
    """A side's files: ``root`` without /var, and ``var`` as /var."""
    from tests.layering.corpus_compare import entry

    s = {**snapshot(root, skip=("var",)), "var": entry(str(var), str(var)),
         **snapshot(var, "var")}
    return not_excluded(s)


def query(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``rpm --root ROOT ARGS`` (not checked)."""
    return subprocess.run([*rpm_root("--root", root), *args], capture_output=True, text=True,
                          timeout=300)


def installed(root: Path) -> list[str]:
    """``rpm -qa``: NEVRA lines in database order."""
    return query(root, "-qa", "--qf", "%{NEVRA}\\n").stdout.splitlines()


def owners(root: Path) -> dict[str, str]:
    """path (relative) -> owning package name, from the rpm database."""
    out = query(root, "-qa", "--qf", "[%{FILENAMES}\\t%{NAME}\\n]").stdout
    return {line.split("\t")[0].lstrip("/"): line.split("\t")[1]
            for line in out.splitlines() if "\t" in line}


def verify(root: Path) -> str:
    """``rpm -Va --nomtime`` (OSTree stores no mtimes), lines sorted."""
    proc = query(root, "-Va", "--nomtime")
    return "\n".join(sorted(proc.stdout.splitlines()))


def by_package(diffs: list[str], own: dict[str, str], names: list[str]) -> dict[str, list[str]]:
    """Each difference line under the package owning its path ("(scripts)" if none)."""
    out: dict[str, list[str]] = {n: [] for n in names}
    for line in diffs:
        path = line.split()[1].rstrip(":").lstrip("/") if len(line.split()) > 1 else ""
        out.setdefault(own.get(path, "(scripts)"), []).append(line)
    return out


def xattrs(side: dict[str, Entry]) -> dict[str, dict[str, bytes]]:
    """path -> every extended attribute (name -> value) of a side's non-symlink paths."""
    out = {}
    for rel, e in side.items():
        if e.kind in ("f", "d"):
            names = os.listxattr(e.real, follow_symlinks=False)
            out[rel] = {n: os.getxattr(e.real, n, follow_symlinks=False) for n in sorted(names)}
    return out


def owner_names(root: Path, side: dict[str, Entry]) -> dict[str, tuple[str, str]]:
    """path -> (user name, group name), through the side's own /etc/passwd and /etc/group."""
    def names(f: str) -> dict[int, str]:
        rows = [line.split(":") for line in (root / f).read_text().splitlines()]
        return {int(r[2]): r[0] for r in rows if len(r) > 2}

    users, groups = names("etc/passwd"), names("etc/group")
    return {rel: (users.get(e.uid, str(e.uid)), groups.get(e.gid, str(e.gid)))
            for rel, e in side.items()}


@dataclass
class World:
    """Both sides of one rpm oracle scenario: the strata deployment (``strata_root``) and
    the tree rpm itself worked on (``rpm_root``), each read as path -> entry."""

    scenario: str
    strata_root: Path
    rpm_root: Path
    strata: dict[str, Entry]
    rpm: dict[str, Entry]
    strata_failure: str
    strata_s: float = 0.0
    rpm_s: float = 0.0
    strata_stderr: str = ""
    names: list[str] = field(default_factory=list)


def scenario_dirs(factory: pytest.TempPathFactory, prefix: str) -> tuple[Path, Path]:
    """(the cache of built rpms, a new scratch directory ``PREFIX*``), after checking the
    tools; the scenario is skipped without root or a static busybox."""
    require_tool("rpm", "rpmbuild", "createrepo_c", "bwrap", "systemd-tmpfiles")
    if os.geteuid() != 0 or not BUSYBOX:
        pytest.skip("needs root (chroot, overlay of /var) and a static busybox")
    return cache_root() / "rpm-oracle", factory.mktemp(prefix)


def strata_deployed(strata: StrataSide, tmp: Path) -> tuple[Path, Path]:
    """strata's default deployment and a copy of the stateroot /var with the deployment's
    tmpfiles applied, as the booted system has it."""
    deployed, svar = strata.default_dir(), tmp / "strata-var"
    run(["cp", "-a", strata.var, svar])
    boot_tmpfiles(deployed, svar, tmp / "mnt-s")
    return deployed, svar


def oracle_base(strata: StrataSide, tmp: Path) -> Path:
    """A checkout of the same base commit for rpm to work on (``/etc`` from ``/usr/etc``)."""
    oracle = tmp / "oracle"
    strata.strata("--repo", strata.sysroot / "ostree/repo", "checkout", BRANCH, oracle)
    run(["cp", "-a", oracle / "usr/etc", oracle / "etc"])
    return oracle
