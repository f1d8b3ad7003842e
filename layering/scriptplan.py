"""Which maintainer scripts run, in what order, with which arguments and environment.

Debian: every added package's ``preinst install``, dependencies first
(:func:`dependency_order`), then every ``postinst configure`` in the order
apt-get and dpkg configure them (:func:`configure_order`: a pre-depended package
at once, the rest in dpkg's hash-table order with each package put back until its
dependencies are configured, so ``cron`` after ``cron-daemon-common``, which creates
the group its postinst needs), with dpkg's ``DPKG_*`` variables.  RPM, in
the order ``rpm -i`` installs them (:mod:`layering.rpmorder`) and as ``rpm -U`` upgrades
a base package (:mod:`layering.rpmtrans`): ``%pre``/``%post`` with ``$1`` = the
instances installed after (2 for an upgrade), each ``%post`` amid the file triggers and
``%triggerin`` runs it sets off, the upgraded versions' erase, then ``%posttrans`` and
the ``%transfiletriggerin`` runs (:mod:`layering.rpmtriggers`).  Removed Debian
base packages run ``prerm remove`` (while their files are still there) and
``postrm remove`` (after), as dpkg does; removed RPM base packages run their scripts
and triggers as ``rpm -e`` does (:mod:`layering.rpmremove`).  Triggers: ``ldconfig``
runs once at the end when an added package ships a shared library.  For Debian, the
image's dpkg then processes dpkg's triggers (:mod:`layering.dpkgtriggers`).  A compose
runs Debian ``preinst`` before the package's files are placed (:func:`plan_preinst`,
:mod:`layering.composescripts`).  A Debian base package replaced by another version
gets dpkg's upgrade arguments: old ``prerm``/``postrm upgrade NEW``
(:func:`plan_upgrade`), new ``preinst upgrade OLD NEW`` and ``postinst configure OLD``
(:mod:`layering.debupgrade`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from importers.model import DepKind, PackageMeta, PackageType
from layering.dpkgdb import info_name
from layering.dpkgorder import apt_configure_order
from layering.dpkgtriggers import Activation, trigger_run
from layering.scripts import ScriptRun
from store.mtree import MutableTree

if TYPE_CHECKING:  # the rpm modules load only for rpm images
    from layering import rpmtrans

DPKG_VERSION = "1.21.22"
LDCONFIG = ("usr/sbin/ldconfig", "sbin/ldconfig", "usr/bin/ldconfig")
_SHLIB = re.compile(r"(^|/)lib[^/]*\.so(\.[0-9.]+)?$")


def _deb_env(pkg: PackageMeta, script: str) -> tuple[tuple[str, str], ...]:
    """dpkg's environment for a maintainer script.  A preinst runs from ``info/`` here, not
    from dpkg's ``tmp.ci/`` beside the package's ``control``, where debconf's frontend
    reads the package name; ``DEBCONF_PACKAGE`` names it instead (else the templates the
    preinst loads are owned by "unknown" in debconf's database)."""
    debconf = (("DEBCONF_PACKAGE", pkg.name),) if script == "preinst" else ()
    return (("DPKG_MAINTSCRIPT_PACKAGE", pkg.name), ("DPKG_MAINTSCRIPT_NAME", script),
            ("DPKG_MAINTSCRIPT_ARCH", pkg.arch), ("DPKG_MAINTSCRIPT_PACKAGE_REFCOUNT", "1"),
            ("DPKG_ROOT", ""), ("DPKG_ADMINDIR", "/var/lib/dpkg"),
            ("DPKG_RUNNING_VERSION", DPKG_VERSION), ("DEBIAN_FRONTEND", "noninteractive"),
            *debconf)


def dependency_order(added: list[PackageMeta]) -> list[PackageMeta]:
    """``added`` with each package after the added packages it (pre-)depends on, directly or
    through a virtual package, as dpkg configures them; ties and cycles by name."""
    return _ordered(added, None)


def configure_order(added: list[PackageMeta],
                    installed: Sequence[PackageMeta] = ()) -> list[PackageMeta]:
    """``added`` in the order apt-get's dpkg runs configure them over the base packages
    ``installed`` (:mod:`layering.dpkgorder`): the packages an added one pre-depends on
    (with what they need) at once, the rest as ``dpkg --configure --pending`` does."""
    rank = {n: i for i, n in enumerate(apt_configure_order(added, installed,
                                                          dependency_order(added)))}
    return sorted(added, key=lambda p: rank.get(p.name, len(rank)))


def unpack_order(added: list[PackageMeta], requested: Sequence[str]) -> list[PackageMeta]:
    """``added`` in :func:`dependency_order` but with ties as apt unpacks them, which
    dpkg's ``triggers/File`` shows: the packages others pre-depend on (and what they
    need) first, then the ``requested`` ones (with what they need), then the rest."""
    return _ordered(added, requested)


def _ordered(added: list[PackageMeta], requested: Sequence[str] | None) -> list[PackageMeta]:
    names = {p.name: p for p in added}
    providers: dict[str, set[str]] = {}
    for p in added:
        for group in p.relations(DepKind.PROVIDES):
            for rel in group:
                providers.setdefault(rel.name, set()).add(p.name)
    deps: dict[str, set[str]] = {}
    for p in added:
        wanted = {r.name for kind in (DepKind.PRE_DEPENDS, DepKind.DEPENDS)
                  for group in p.relations(kind) for r in group}
        deps[p.name] = {t for w in wanted for t in ({w} & names.keys()) | providers.get(w, set())
                        if t != p.name}
    out: list[PackageMeta] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for dep in sorted(deps[name]):
            visit(dep)
        out.append(names[name])

    lead = [] if requested is None else (sorted(_pre_depended(added, names, providers))
                                         + [n for n in requested if n in names])
    for name in lead + sorted(names):
        visit(name)
    return out


def _pre_depended(added: list[PackageMeta], names: Iterable[str],
                  providers: dict[str, set[str]]) -> set[str]:
    """The added packages another added package pre-depends on: apt unpacks them before
    the rest (``systemd`` before ``dbus`` when ``systemd-sysv`` comes along)."""
    wanted = {r.name for p in added for group in p.relations(DepKind.PRE_DEPENDS)
              for r in group}
    known = set(names)
    return {t for w in wanted for t in ({w} & known) | providers.get(w, set())}


def plan_preinst(added: list[PackageMeta], db: str,
                 old: Mapping[str, str] | None = None) -> list[ScriptRun]:
    """The ``preinst install`` runs of ``added`` (in the given order), from dpkg's info
    directory; ``preinst upgrade OLD NEW`` for a package replacing version ``old[name]``."""
    return _deb_runs(added, db, ("preinst",), old or {})


def _deb_args(pkg: PackageMeta, phase: str, old: Mapping[str, str]) -> tuple[str, ...]:
    """dpkg's arguments: ``install`` / ``configure`` for a new package; for one replacing
    version OLD (unpack.c's maintscript_new, configure.c's maintscript_postinst)
    ``upgrade OLD NEW`` / ``configure OLD``."""
    was = old.get(pkg.name)
    if phase == "preinst":
        return ("install",) if was is None else ("upgrade", was, pkg.evr)
    return ("configure",) if was is None else ("configure", was)


def _deb_runs(added: list[PackageMeta], db: str,
              phases: tuple[str, ...] = ("preinst", "postinst"),
              old: Mapping[str, str] | None = None) -> list[ScriptRun]:
    """Scripts run from dpkg's info directory, as dpkg runs them: debconf's confmodule
    finds ``PKG.templates`` and ``PKG.config`` beside the running script."""
    runs = []
    for phase in ("preinst", "postinst"):
        if phase not in phases:
            continue
        for pkg in added:
            for s in pkg.scripts:
                if s.name == phase:
                    runs.append(ScriptRun(pkg.name, phase, s.body, "",
                                          _deb_args(pkg, phase, old or {}),
                                          _deb_env(pkg, phase),
                                          path=f"/{db}/info/{info_name(pkg)}.{phase}"))
    return runs


def plan_removal(kind: PackageType, removed: list[PackageMeta], db: str,
                 read: Callable[[str], bytes | None]) -> tuple[list[ScriptRun], list[ScriptRun]]:
    """(``prerm remove`` runs, ``postrm remove`` runs) of removed Debian packages, their
    bodies read now from the image's dpkg database (``read`` gives a tree file's bytes);
    none for rpm (:mod:`layering.rpmtrans` erases those)."""
    if kind is not PackageType.DEB:
        return [], []
    return _installed_runs([(pkg, ("remove",)) for pkg in removed], db, read)


def plan_upgrade(pairs: Sequence[tuple[PackageMeta, PackageMeta]], db: str,
                 read: Callable[[str], bytes | None]) -> tuple[list[ScriptRun], list[ScriptRun]]:
    """(old ``prerm upgrade NEW`` runs, old ``postrm upgrade NEW`` runs) of Debian base
    packages replaced by another version, (old, new) in ``pairs``: the old bodies are read
    now from the image's dpkg database, before the new version's control files replace
    them (dpkg's maintscript_fallback runs the installed version's scripts)."""
    return _installed_runs([(old, ("upgrade", new.evr)) for old, new in pairs], db, read)


def _installed_runs(pkgs: Sequence[tuple[PackageMeta, tuple[str, ...]]], db: str,
                    read: Callable[[str], bytes | None]) -> tuple[list[ScriptRun], list[ScriptRun]]:
    """(``prerm ARGS`` runs, ``postrm ARGS`` runs) of installed packages, each with its
    arguments, their bodies read now; the prerm runs from its file in the database, the
    postrm from the body alone (its file is gone, or the new version's, by then)."""
    out: tuple[list[ScriptRun], list[ScriptRun]] = ([], [])
    for runs, phase in zip(out, ("prerm", "postrm"), strict=True):
        for pkg, args in pkgs:
            path = f"{db}/info/{info_name(pkg)}.{phase}"
            body = read(path)
            if body is not None:
                here = f"/{path}" if phase == "prerm" else ""
                runs.append(ScriptRun(pkg.name, phase, body.decode("utf-8", "surrogateescape"),
                                      "", args, _deb_env(pkg, phase), path=here))
    return out


def rpm_install_order(added: Sequence[PackageMeta]) -> list[PackageMeta]:
    """``added`` in the order ``rpm -i`` installs them (:mod:`layering.rpmorder`)."""
    from layering.rpmorder import install_order

    return install_order(sorted(added, key=lambda p: (p.name, p.evr, p.arch)))


def plan_rpm_pre(added: Sequence[PackageMeta],
                 db: Sequence[PackageMeta] = ()) -> list[ScriptRun]:
    """The ``%triggerprein`` and ``%pre`` runs of rpm packages ``added``, in rpm's install
    order, over the installed packages ``db`` (:func:`layering.rpmtrans.pre_runs`: ``$1 = 2``
    for one upgrading an installed version, else 1)."""
    from layering import rpmtrans

    runs, now = [], list(db)
    for pkg in rpm_install_order(added):
        runs += rpmtrans.pre_runs(pkg, now)
        now.append(pkg)
    return runs


def plan_rpm_steps(added: list[PackageMeta], tree: MutableTree,
                   installed: Sequence[PackageMeta] = (),
                   base: Callable[[], Sequence[PackageMeta]] = list, *,
                   preinst: bool = True, removed: Collection[str] = ()) -> list[rpmtrans.Step]:
    """The rpm runs of :func:`plan_scripts` in steps: after a step's runs the package it
    names is erased (:mod:`layering.rpmtrans`: the base packages named ``removed`` and
    those an added one upgrades); ldconfig last."""
    from layering import rpmtrans

    names = {p.name for p in installed}
    db = base() if (removed or _may_trigger([*added, *installed])
                    or any(p.name in names for p in added)) else []
    steps = rpmtrans.plan(rpm_install_order(added), db, pre=preinst, removed=removed)
    if any(s.runs for s in steps) or added:
        steps[-1] = rpmtrans.Step((*steps[-1].runs, *_ldconfig(added, tree)))
    return steps


def _ldconfig(added: list[PackageMeta], tree: MutableTree) -> list[ScriptRun]:
    if not any(_SHLIB.search(f.path) for p in added for f in p.files):
        return []
    if not any(tree.lookup(p) is not None for p in LDCONFIG):
        return []
    return [ScriptRun("ldconfig", "trigger", "#!/bin/sh\nexec ldconfig\n")]


def _dpkg_runs_ldconfig(tree: MutableTree, db: str, activations: list[Activation]) -> bool:
    """Whether the image's dpkg will run ldconfig itself: ``ldconfig`` is activated and a
    package of the image (libc-bin) is interested in it (``triggers/ldconfig``)."""
    return (any(a.name == "ldconfig" for a in activations)
            and isinstance(tree.lookup(f"{db}/triggers/ldconfig"), str))


def _may_trigger(pkgs: Sequence[PackageMeta]) -> bool:
    """Whether one of ``pkgs`` has a file or package trigger (records carry their scripts
    even without file lists)."""
    from layering import rpmtriggers

    kinds = (rpmtriggers.IN, rpmtriggers.TRANS_IN)
    return any(s.name in kinds or s.name.startswith("trigger") for p in pkgs for s in p.scripts)


def plan_scripts(kind: PackageType, added: list[PackageMeta], tree: MutableTree,
                 db: str = "var/lib/dpkg", installed: Sequence[PackageMeta] = (),
                 base: Callable[[], Sequence[PackageMeta]] = list, *, preinst: bool = True,
                 activations: list[Activation] | None = None,
                 old: Mapping[str, str] | None = None) -> list[ScriptRun]:
    """The script invocations for ``added`` packages, in order (empty when none ship any
    and no trigger is activated).

    ``db`` is the image's dpkg database directory, where Debian scripts are run from;
    Debian ``preinst`` and rpm ``%pre`` runs are left out unless ``preinst``.  For
    Debian, the last run hands ``activations`` to the image's dpkg and lets it process
    the pending triggers; a package replacing a base package's version ``old[name]``
    gets dpkg's upgrade arguments (:func:`_deb_args`).
    For rpm's triggers, ``installed`` are the base's package records and ``base``
    gives the ones that stay (and the versions added ones upgrade) with their file lists
    in database order (called only when a package has a trigger or one is upgraded).
    """
    if kind is not PackageType.DEB:
        return [r for step in plan_rpm_steps(added, tree, installed, base, preinst=preinst)
                for r in step.runs]
    runs = _deb_runs(dependency_order(added), db, ("preinst",), old) if preinst else []
    runs += _deb_runs(configure_order(added, installed), db, ("postinst",), old)
    if not _dpkg_runs_ldconfig(tree, db, activations or []):
        runs += _ldconfig(added, tree) if runs or added else []
    if runs or activations:
        runs.append(trigger_run(db, activations or []))
    return runs
