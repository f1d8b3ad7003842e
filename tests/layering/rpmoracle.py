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
from pathlib import Path

from fixtures.rpmimages import DBPATH
from tests.layering.corpus_compare import Entry, snapshot

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
