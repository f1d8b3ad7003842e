"""Which maintainer scripts run, in what order, with which arguments and environment.

Debian: every added package's ``preinst install``, then every ``postinst
configure`` (dependencies first), with dpkg's ``DPKG_*`` variables.  RPM:
``%pre``/``%post`` with ``$1 = 1`` (one instance installed), then
``%posttrans``.  Removed Debian base packages run ``prerm remove`` (while their
files are still there) and ``postrm remove`` (after), as dpkg does; removed RPM
base packages run none, as with rpm-ostree's overrides.  Triggers: ``ldconfig``
runs once at the end when an added package ships a shared library.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from importers.model import PackageMeta, PackageType
from layering.dpkgdb import info_name
from layering.errors import ScriptError
from layering.scripts import ScriptRun
from store.mtree import MutableTree

DPKG_VERSION = "1.21.22"
LDCONFIG = ("usr/sbin/ldconfig", "sbin/ldconfig", "usr/bin/ldconfig")
_SHLIB = re.compile(r"(^|/)lib[^/]*\.so(\.[0-9.]+)?$")


def _deb_env(pkg: PackageMeta, script: str) -> tuple[tuple[str, str], ...]:
    return (("DPKG_MAINTSCRIPT_PACKAGE", pkg.name), ("DPKG_MAINTSCRIPT_NAME", script),
            ("DPKG_MAINTSCRIPT_ARCH", pkg.arch), ("DPKG_MAINTSCRIPT_PACKAGE_REFCOUNT", "1"),
            ("DPKG_ROOT", ""), ("DPKG_ADMINDIR", "/var/lib/dpkg"),
            ("DPKG_RUNNING_VERSION", DPKG_VERSION), ("DEBIAN_FRONTEND", "noninteractive"))


def _deb_runs(added: list[PackageMeta], db: str) -> list[ScriptRun]:
    """Scripts run from dpkg's info directory, as dpkg runs them: debconf's confmodule
    finds ``PKG.templates`` and ``PKG.config`` beside the running script."""
    runs = []
    for phase, args in (("preinst", ("install",)), ("postinst", ("configure",))):
        for pkg in added:
            for s in pkg.scripts:
                if s.name == phase:
                    runs.append(ScriptRun(pkg.name, phase, s.body, "", args,
                                          _deb_env(pkg, phase),
                                          path=f"/{db}/info/{info_name(pkg)}.{phase}"))
    return runs


def plan_removal(kind: PackageType, removed: list[PackageMeta], db: str,
                 read: Callable[[str], bytes | None]) -> tuple[list[ScriptRun], list[ScriptRun]]:
    """(``prerm remove`` runs, ``postrm remove`` runs) of removed Debian packages, their
    bodies read now from the image's dpkg database (``read`` gives a tree file's bytes)."""
    if kind is not PackageType.DEB:
        return [], []
    out: tuple[list[ScriptRun], list[ScriptRun]] = ([], [])
    for runs, phase in zip(out, ("prerm", "postrm"), strict=True):
        for pkg in removed:
            path = f"{db}/info/{info_name(pkg)}.{phase}"
            body = read(path)
            if body is not None:
                here = f"/{path}" if phase == "prerm" else ""  # postrm's file is gone by then
                runs.append(ScriptRun(pkg.name, phase, body.decode("utf-8", "replace"), "",
                                      ("remove",), _deb_env(pkg, phase), path=here))
    return out


def _rpm_runs(added: list[PackageMeta]) -> list[ScriptRun]:
    runs = []
    for phase, label, arg in (("prein", "%pre", "1"), ("postin", "%post", "1"),
                              ("posttrans", "%posttrans", "0")):
        for pkg in added:
            for s in pkg.scripts:
                if s.name != phase or not (s.body.strip() or s.interpreter):
                    continue
                interp = s.interpreter or "/bin/sh"
                if interp.startswith("<lua>"):
                    raise ScriptError(f"{label} of {pkg.name} is a lua scriptlet, "
                                      "which strata cannot run")
                runs.append(ScriptRun(pkg.name, label, s.body, interp, (arg,)))
    return runs


def _ldconfig(added: list[PackageMeta], tree: MutableTree) -> list[ScriptRun]:
    if not any(_SHLIB.search(f.path) for p in added for f in p.files):
        return []
    if not any(tree.lookup(p) is not None for p in LDCONFIG):
        return []
    return [ScriptRun("ldconfig", "trigger", "#!/bin/sh\nexec ldconfig\n")]


def plan_scripts(kind: PackageType, added: list[PackageMeta], tree: MutableTree,
                 db: str = "var/lib/dpkg") -> list[ScriptRun]:
    """The script invocations for ``added`` packages, in order (empty when none ship any).

    ``db`` is the image's dpkg database directory, where Debian scripts are run from.
    """
    runs = _deb_runs(added, db) if kind is PackageType.DEB else _rpm_runs(added)
    return runs + _ldconfig(added, tree) if runs or added else runs
