"""An rpm transaction of installs, upgrades and erasures, as ``rpm -i`` / ``rpm -U`` /
``rpm -e`` (and a librpm transaction mixing them, as dnf runs one) run it: rpm 4.18's
``rpmtsRun`` in lib/transaction.c, ``rpmPackageInstall``/``rpmPackageErase`` in
lib/psm.c, checked by tests/layering/test_rpm_upgrade_oracle.py.

A base package is erased when the compose removes it, or upgraded when an added package
has its name.  rpm orders every install before every erase (``rpmtsOrder``'s two passes).

1. When a package is erased: the ``%transfiletriggerun`` runs (:func:`rpmremove.trans_un`).
2. Each added package in install order: the ``%triggerprein`` runs (as ``%triggerin``
   below, but before it is counted), ``%pre`` with ``$1`` = instances after it
   (1, or 2 for an upgrade), its files, then the file triggers of priority >= 10000, its
   ``%post`` (same ``$1``), the ``%triggerin`` of installed packages on it
   (``runTriggers``: ``$1`` = instances of the trigger's package, ``$2`` = of the added
   one, the old version still counted), its own ``%triggerin`` on installed packages
   (``runImmedTriggers``: ``$1`` = its instances, ``$2`` = the other's; a package
   triggering on itself runs twice, once each way), the lower file triggers.
3. Each erased package in erase order (:func:`rpmremove.erase_runs`, the database holding
   every added package): ``%preun`` and ``%postun`` with ``$1`` = the instances left (1
   for an upgraded version, else 0), ``%triggerun`` / ``%triggerpostun`` likewise, its
   files that no added package ships removed between them (file triggers list only
   those).
4. ``%posttrans`` of each added package (``$1`` = instances, plus one for an upgrade:
   ``isUpdate``), the base's ``%transfiletriggerin`` over the added files, the noted
   ``%transfiletriggerpostun``, the added packages' own ``%transfiletriggerin``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from importers.model import PackageMeta
from layering import rpmremove, rpmtriggers
from layering.assemble import runtime_path
from layering.scripts import ScriptRun


@dataclass(frozen=True)
class Step:
    """Runs, then (when ``remove`` is set) that erased package's files go: ``remove`` lists
    only the files no added package ships.  ``host``: the runs see the host's users (an
    erase's run on the image's own, so that an account its ``%postun`` deletes leaves
    the image's defaults: docs/script-sandbox.md)."""

    runs: tuple[ScriptRun, ...]
    remove: PackageMeta | None = None
    host: bool = True


def _count(db: Sequence[PackageMeta], name: str) -> int:
    return sum(p.name == name for p in db)


def pre_runs(pkg: PackageMeta, db: Sequence[PackageMeta]) -> list[ScriptRun]:
    """What runs before ``pkg``'s files are placed, ``db`` holding what was installed
    before it: the ``%triggerprein`` of installed packages on it (``$2`` = its instances
    before, 0 or 1), its own on installed packages (``$1`` = the same), then its ``%pre``
    with ``$1`` = its instances after (2 when it upgrades an installed version)."""
    return [*rpmremove.triggers_on(pkg, db, "triggerprein", 0),
            *rpmremove.own_triggers(pkg, db, "triggerprein", 0),
            *rpmremove.phase_runs(pkg, "prein", "%pre", str(_count(db, pkg.name) + 1))]


def trans_un(added: Sequence[PackageMeta], db: Sequence[PackageMeta],
             removed: Collection[str] = ()) -> list[ScriptRun]:
    """The ``%transfiletriggerun`` runs before the transaction: those of the packages that
    stay over the files of the packages erased (named ``removed``, or replaced by an
    ``added`` one of their name), then theirs."""
    olds = _olds(added, db, removed)
    if not olds:
        return []
    return rpmremove.trans_un([p for p in db if not _in(p, olds)],
                              rpmremove.erase_order(olds), db)


def install_runs(pkg: PackageMeta, db: Sequence[PackageMeta]) -> list[ScriptRun]:
    """What runs once ``pkg``'s files are in place; ``db`` holds it (last) and what was
    installed before it."""
    arg = str(_count(db, pkg.name))
    return [*rpmtriggers.around_post(db, pkg, before=True),
            *rpmremove.phase_runs(pkg, "postin", "%post", arg),
            *rpmremove.triggers_on(pkg, db, "triggerin", 0),
            *rpmremove.own_triggers(pkg, db, "triggerin", 0),
            *rpmtriggers.around_post(db, pkg, before=False)]


def plan(added: Sequence[PackageMeta], db: Sequence[PackageMeta], *,
         pre: bool = True, removed: Collection[str] = ()) -> list[Step]:
    """Every run after the files of ``added`` (in install order) are placed, with the
    erased packages' removals between; ``db``: the installed packages in database order
    with file lists, the packages erased included (named ``removed``, or of an added
    one's name).  ``pre``: include the ``%pre`` runs (and :func:`trans_un`), else they
    ran before the files were placed."""
    olds = _olds(added, db, removed)
    upgraded = {p.name for p in olds} & {p.name for p in added}
    runs = trans_un(added, db, removed) if pre else []
    now = list(db)
    for pkg in added:
        runs += pre_runs(pkg, now) if pre else []
        now.append(pkg)
        runs += install_runs(pkg, now)
    steps, noted = [], []
    for old in rpmremove.erase_order(olds):
        view = leaving(old, added)
        erase = rpmremove.erase_runs(old, now, view)
        steps += [Step(tuple(runs)), Step(erase.before, view, host=False),
                  Step(erase.after, host=False)]
        runs = []
        noted += rpmremove.noted_postun(now, old)
        now = [p for p in now if p is not old]
    runs += [r for p in added for r in rpmremove.phase_runs(
        p, "posttrans", "%posttrans", str(_count(now, p.name) + (p.name in upgraded)))]
    runs += rpmtriggers.base_trans_in(now, added)
    runs += rpmremove.postun_trans(noted, now)
    runs += rpmtriggers.own_trans_in(now, added)
    return [*steps, Step(tuple(runs))]


def _in(pkg: PackageMeta, pkgs: Sequence[PackageMeta]) -> bool:
    return any(p is pkg for p in pkgs)


def _olds(added: Sequence[PackageMeta], db: Sequence[PackageMeta],
          removed: Collection[str]) -> list[PackageMeta]:
    """The installed packages erased: named ``removed`` or of an added package's name."""
    names = {p.name for p in added} | set(removed)
    return [p for p in db if p.name in names and not any(p is a for a in added)]


def leaving(old: PackageMeta, added: Sequence[PackageMeta]) -> PackageMeta:
    """``old`` with only the files no added package ships (rpm skips the others:
    ``FA_SKIP`` in ``handleOverlappedFiles``)."""
    kept = {runtime_path(f.path) for p in added for f in p.files}
    return dataclasses.replace(old, files=tuple(f for f in old.files
                                                if runtime_path(f.path) not in kept))
