"""The configure order of Debian postinsts against the real apt-get and dpkg.

The oracle installs packages built here with the machine's own ``apt-get`` (a flat
``file:`` repository, its own state under tmp_path) and ``dpkg --root`` (scripts run
chrooted in a root with a static busybox as ``/bin/sh``), and reads the order of
``configure`` lines in dpkg's log.  strata's :func:`plan_scripts` must run the
postinsts in that order.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from importers.deb import open_deb
from importers.debcontrol import meta_from_control
from importers.model import DepKind, Origin, PackageMeta, PackageType, Relation, Script
from layering.dpkgorder import DpkgRun, Graph, fnv1a, hash_order
from layering.scriptplan import plan_scripts
from store.mtree import MutableTree
from tests.util import require_tool

# name: (Pre-Depends, Depends, Provides, has a postinst); shaped after openssh-server's
# install: systemd-sysv pre-depends on systemd, which pre-depends on libssl3 and needs a
# library cycle (dmsetup and libdevmapper, one without a postinst); the rest waits for
# ``dpkg --configure --pending`` (hash order, deferral, a cycle of two postinsts, a
# provider), over a base with a cycle of its own (libc6 and libgcc-s1)
PACKAGES: dict[str, tuple[str, str, str, bool]] = {
    "top": ("", "srv, sysv, users-a, mailx, zeta, alpha, mid, kappa", "", True),
    "sysv": ("init", "", "", True),
    "init": ("ssl, base-a", "crypt, shared", "", True),
    "ssl": ("", "base-a", "", True),
    "crypt": ("", "argon, libdm", "", True),
    "argon": ("", "", "", True),
    "libdm": ("", "base-a, dm", "", False),
    "dm": ("", "libdm", "", True),
    "shared": ("", "base-b", "", True),
    "srv": ("", "users-b, init", "", True),
    "users-a": ("", "bus-common", "", True),
    "users-b": ("", "", "", True),
    "bus-common": ("", "", "", True),
    "mailx": ("", "default-mta | mail-transport-agent", "", True),
    "mta": ("", "mta-base, base-a", "mail-transport-agent", True),
    "mta-base": ("", "mta", "", True),
    "zeta": ("", "", "", True),
    "alpha": ("", "mid", "", True),
    "mid": ("", "", "", True),
    "kappa": ("", "", "", False),
}
BASE = {"base-a": "base-b", "base-b": "base-a"}


def test_fnv_hash_is_dpkgs() -> None:
    # dpkg's own vectors (lib/dpkg/t/t-string.c)
    assert [fnv1a(s) for s in ("", "a", "b", "c")] == [
        0x811c9dc5, 0xe40c292c, 0xe70c2de5, 0xe60c2c52]
    # bins in index order: 65521 bins, not the names' order
    assert hash_order(["systemd-timesyncd", "dbus-system-bus-common", "libexpat1"]) == [
        "libexpat1", "systemd-timesyncd", "dbus-system-bus-common"]


def _meta(name: str, depends: str = "", pre: str = "", postinst: bool = True) -> PackageMeta:
    deps = {kind: tuple(tuple(Relation(a.strip()) for a in g.split("|")) for g in text.split(","))
            for kind, text in ((DepKind.DEPENDS, depends), (DepKind.PRE_DEPENDS, pre)) if text}
    return PackageMeta(PackageType.DEB, name, "1", "all", deps=deps,
                       scripts=(Script("postinst", "#!/bin/sh\n"),) if postinst else ())


def test_queue_defers_until_dependencies_are_configured() -> None:
    # dpkg pops in hash order and puts a package back while a dependency waits in the queue
    pkgs = [_meta("libexpat1"), _meta("systemd-timesyncd", "dbus-system-bus-common"),
            _meta("dbus-system-bus-common")]
    run = DpkgRun(Graph.of(pkgs, []), set(), {p.name for p in pkgs})
    assert run.configure(hash_order([p.name for p in pkgs])) == [
        "libexpat1", "dbus-system-bus-common", "systemd-timesyncd"]


def test_cycle_broken_at_the_package_without_postinst() -> None:
    # dmsetup <-> libdevmapper1.02.1: libdevmapper has no postinst, so its link to dmsetup
    # goes and it is configured first (after both were put back once)
    pkgs = [_meta("dmsetup", "libdevmapper1.02.1"),
            _meta("libdevmapper1.02.1", "dmsetup", postinst=False), _meta("late")]
    run = DpkgRun(Graph.of(pkgs, []), set(), {p.name for p in pkgs})
    assert run.configure(["dmsetup", "libdevmapper1.02.1", "late"]) == [
        "late", "libdevmapper1.02.1", "dmsetup"]
    assert run.broken == {("libdevmapper1.02.1", 0, 0)}


def test_cycle_of_two_postinsts_broken_at_the_first_package() -> None:
    # both have a postinst: the link out of the package the search started from goes
    pkgs = [_meta("a", "b"), _meta("b", "a")]
    run = DpkgRun(Graph.of(pkgs, []), set(), {"a", "b"})
    assert run.configure(["b", "a"]) == ["b", "a"]
    assert run.broken == {("b", 0, 0)}


def test_hostile_web_of_cycles_ends() -> None:
    names = [f"p{i}" for i in range(60)]
    pkgs = [_meta(n, ", ".join(m for m in names if m != n)) for n in names]
    run = DpkgRun(Graph.of(pkgs, []), set(), set(names))
    assert sorted(run.configure(names)) == sorted(names)


def _build(tmp: Path, name: str, fields: tuple[str, str, str, bool]) -> Path:
    pre, depends, provides, postinst = fields
    src = tmp / "src" / name
    (src / "DEBIAN").mkdir(parents=True)
    control = [f"Package: {name}", "Version: 1", "Architecture: all",
               "Maintainer: strata tests <tests@example.invalid>"]
    control += [f"{k}: {v}" for k, v in (("Pre-Depends", pre), ("Depends", depends),
                                         ("Provides", provides)) if v]
    (src / "DEBIAN/control").write_text("\n".join([*control, f"Description: {name}", ""]))
    if postinst:
        (src / "DEBIAN/postinst").write_text("#!/bin/sh\nexit 0\n")
        (src / "DEBIAN/postinst").chmod(0o755)
    deb = tmp / "repo" / f"{name}_1_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", src, deb],
                   check=True, capture_output=True)
    return deb


def _root(tmp: Path) -> Path:
    root = tmp / "root"
    for d in ("var/lib/dpkg/updates", "var/lib/dpkg/info", "var/lib/dpkg/triggers", "bin",
              "etc/apt/apt.conf.d", "etc/apt/preferences.d", "etc/apt/sources.list.d",
              "var/lib/apt/lists/partial", "var/cache/apt/archives/partial", "var/log/apt",
              "tmp"):
        (root / d).mkdir(parents=True)
    status = "".join(f"Package: {n}\nStatus: install ok installed\nMaintainer: x <x@x.invalid>\n"
                     f"Architecture: all\nVersion: 1\nDepends: {d}\nDescription: {n}\n\n"
                     for n, d in BASE.items())
    (root / "var/lib/dpkg/status").write_text(status)
    shutil.copy(shutil.which("busybox") or "/bin/busybox", root / "bin/busybox")
    (root / "bin/sh").symlink_to("busybox")
    (root / "etc/apt/sources.list").write_text(f"deb [trusted=yes] file:{tmp / 'repo'} ./\n")
    return root


def _apt_install(tmp: Path, root: Path, *names: str) -> list[str]:
    """``apt-get install`` of ``names`` into ``root``: the packages in dpkg's configure order."""
    wrapper = tmp / "dpkg"
    wrapper.write_text(f"#!/bin/sh\nexec /usr/bin/dpkg --root={root} --log={tmp}/dpkg.log "
                       '"$@"\n')
    wrapper.chmod(0o755)
    conf = tmp / "apt.conf"
    conf.write_text(f'Dir "{root}/";\nDir::Bin::dpkg "{wrapper}";\nDebug::NoLocking "true";\n'
                    'APT::Sandbox::User "root";\nAPT::Install-Recommends "false";\n')
    env = {**os.environ, "APT_CONFIG": str(conf), "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *names]):
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line.split() for line in (tmp / "dpkg.log").read_text().splitlines()]
    return [w[3].split(":")[0] for w in lines if len(w) > 3 and w[2] == "configure"]


@pytest.mark.integration
def test_postinsts_run_in_apt_gets_configure_order(tmp_path: Path) -> None:
    require_tool("apt-get", "apt-ftparchive", "dpkg-deb", "busybox")
    if os.geteuid() != 0:
        pytest.skip("dpkg --root chroots into the root for the postinsts")
    (tmp_path / "repo").mkdir()
    debs = [_build(tmp_path, n, f) for n, f in PACKAGES.items()]
    index = subprocess.run(["apt-ftparchive", "packages", "."], cwd=tmp_path / "repo",
                           check=True, capture_output=True, text=True).stdout
    (tmp_path / "repo/Packages").write_text(index)
    root = _root(tmp_path)
    configured = _apt_install(tmp_path, root, "top")
    assert sorted(configured) == sorted(PACKAGES)
    added = [open_deb(d).meta for d in debs]
    base = [meta_from_control(s, origin=Origin.INSTALLED)
            for s in (root / "var/lib/dpkg/status").read_text().split("\n\n")
            if s.startswith("Package: base-")]
    runs = plan_scripts(PackageType.DEB, added, MutableTree(), installed=base)
    planned = [r.package for r in runs if r.name == "postinst"]
    assert planned == [n for n in configured if PACKAGES[n][3]]
