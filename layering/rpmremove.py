"""The scripts ``rpm -e`` runs when base packages of an rpm image are removed, in rpm 4.18's
order (checked against ``rpm -e --root`` by tests/layering/test_rpm_remove_oracle.py).

1. Before anything is removed (``rpmtsRun`` in lib/transaction.c): the
   ``%transfiletriggerun`` of the packages that stay, over the removed packages' matching
   files (``runFileTriggers(ts, NULL, ...)``), then each removed package's own, over the
   whole database's matching files (``runTransScripts(ts, PKG_TRANSFILETRIGGERUN)``).
2. Each removed package in erase order (``rpmPackageErase`` in lib/psm.c), the database
   still holding it and the packages erased after it:

   - its own ``%filetriggerun`` over the database's files, then those of the database
     (itself included) over its files, priority >= 10000 only (``runImmedFileTriggers``,
     ``runFileTriggers`` with priority class 1);
   - its own ``%triggerun`` on installed packages (``runImmedTriggers``: ``$1 = 0``,
     ``$2`` = instances of the other package), then the installed packages' ``%triggerun``
     on it (``runTriggers``: ``$1`` = instances of the trigger's package, ``$2 = 0``);
   - ``%preun`` with ``$1 = 0``;
   - the ``%filetriggerun`` of priority < 10000, as above (class 2);
   - its files go (``rpmpsmRemove``);
   - the database's ``%filetriggerpostun`` of priority >= 10000 over its removed files;
   - ``%postun`` with ``$1 = 0``;
   - the installed packages' ``%triggerpostun`` on it (as ``%triggerun``);
   - the database's ``%filetriggerpostun`` of priority < 10000;
   - the ``%transfiletriggerpostun`` its files match are noted
     (``rpmtriggersPrepPostUnTransFileTrigs``), then it leaves the database.
3. After the transaction: the noted ``%transfiletriggerpostun`` of the packages left
   (``runPostUnTransFileTrigs``), each once, with ``$1 = 0`` and nothing on stdin.

File triggers run highest priority first, then in database order, then in the header's
order, with ``$1 = 0`` (no ``$2``) and the matching paths on stdin, one a line, by
prefix (in the header's order), then package, then the header's file order.  A package
trigger fires when it names the removed package with a version it meets (the release
compared only when the trigger gives one); of the triggers of one package, the first
in index order runs (rpm takes the first in its sorted name list: they differ only for
two triggers of one kind on one package that both match).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from importers.model import Op, PackageMeta, PackageType, Relation, Script
from importers.versions import satisfies
from layering import rpmorder
from layering.errors import ScriptError
from layering.scripts import ScriptRun

BOUND = 10000  # rpm's TRIGGER_PRIORITY_BOUND
UN, POSTUN = "filetriggerun", "filetriggerpostun"
TRANS_UN, TRANS_POSTUN = "transfiletriggerun", "transfiletriggerpostun"


@dataclass(frozen=True)
class Erase:
    """One removed package: the runs before its files go and those after."""

    pkg: PackageMeta
    before: tuple[ScriptRun, ...]
    after: tuple[ScriptRun, ...]


@dataclass(frozen=True)
class ErasePlan:
    """Every run of a removal: ``first`` before any package, ``erases`` in erase order,
    ``last`` after the transaction."""

    first: tuple[ScriptRun, ...]
    erases: tuple[Erase, ...]
    last: tuple[ScriptRun, ...]

    def runs(self) -> list[ScriptRun]:
        """All runs, in order."""
        return [*self.first, *(r for e in self.erases for r in (*e.before, *e.after)),
                *self.last]


def _run(pkg: PackageMeta, script: Script, args: tuple[str, ...],
         paths: Sequence[str] = ()) -> ScriptRun:
    label = f"%{script.name}"
    interp = script.interpreter or "/bin/sh"
    if interp.startswith("<lua>"):
        raise ScriptError(f"{label} of {pkg.name} is a lua scriptlet, which strata cannot run")
    return ScriptRun(pkg.name, label, script.body, interp, args,
                     stdin="".join(f"{p}\n" for p in paths))


def _paths(pkgs: Sequence[PackageMeta], prefixes: tuple[str, ...]) -> list[str]:
    """The files of ``pkgs`` under ``prefixes``: by prefix, package, then header order."""
    return [path for prefix in prefixes for p in pkgs for f in p.files
            if (path := f"/{f.path}").startswith(prefix)]


def _file_triggers(pkgs: Sequence[PackageMeta], kind: str,
                   cls: int = 0) -> list[tuple[PackageMeta, Script]]:
    """(package, file trigger) of ``kind``, highest priority first, then in order; ``cls``
    1 keeps priorities >= :data:`BOUND`, 2 the others, 0 all."""
    found = [(p, s) for p in pkgs for s in p.scripts if s.name == kind and s.prefixes
             and (cls == 0 or (s.priority >= BOUND) == (cls == 1))]
    return sorted(found, key=lambda t: -t[1].priority)


def _file_runs(triggers: list[tuple[PackageMeta, Script]],
               over: Sequence[PackageMeta]) -> list[ScriptRun]:
    """A run of each trigger some file of ``over`` matches, with those files on stdin."""
    return [_run(owner, s, ("0",), paths) for owner, s in triggers
            if (paths := _paths(over, s.prefixes))]


def _fires(script: Script, sense: str, source: PackageMeta) -> bool:
    """Whether package trigger ``script`` of ``sense`` names ``source`` (at its version)."""
    if script.name != sense:
        return False
    for rel in map(_target, script.targets):
        if rel.name == source.name and satisfies(PackageType.RPM, rel,
                                                 _evr_as(source, rel.version)):
            return True
    return False


def _target(text: str) -> Relation:
    """``NAME`` or ``NAME OP VERSION`` (as the importer writes it) as a relation; text of
    another shape (a hostile name with spaces) is all name."""
    parts = text.rsplit(" ", 2)
    if len(parts) == 3 and parts[1] in {o.value for o in Op}:
        return Relation(parts[0], Op(parts[1]), parts[2])
    return Relation(text)


def _evr_as(pkg: PackageMeta, version: str) -> str:
    """``pkg``'s version as rpm compares it with ``version``: without the release when
    ``version`` has none (``rpmdsCompareEVR``)."""
    if "-" in version:
        return pkg.evr
    return f"{pkg.epoch}:{pkg.version}" if pkg.epoch else pkg.version


def _count(db: Sequence[PackageMeta], name: str) -> int:
    return sum(p.name == name for p in db)


def triggers_on(pkg: PackageMeta, db: Sequence[PackageMeta], sense: str,
                correction: int = -1) -> list[ScriptRun]:
    """``runTriggers``: each installed package's first ``sense`` trigger on ``pkg``, with
    ``$1`` = instances of the trigger's package, ``$2`` = those of ``pkg`` plus
    ``correction`` (-1 erasing, 0 installing)."""
    runs = []
    for owner in db:
        script = next((s for s in owner.scripts if _fires(s, sense, pkg)), None)
        if script is not None:
            runs.append(_run(owner, script, (str(_count(db, owner.name)),
                                             str(_count(db, pkg.name) + correction))))
    return runs


def own_triggers(pkg: PackageMeta, db: Sequence[PackageMeta], sense: str = "triggerun",
                 correction: int = -1) -> list[ScriptRun]:
    """``runImmedTriggers``: ``pkg``'s ``sense`` triggers on the installed packages it names
    (by name, as rpmbuild sorts the header's trigger names), each script once, with
    ``$1`` = instances of ``pkg`` plus ``correction``, ``$2`` = those of the other."""
    runs, done = [], set()
    names = sorted({_target(t).name for s in pkg.scripts for t in s.targets})
    for name in names:
        for source in (p for p in db if p.name == name):
            script = next((s for s in pkg.scripts if _fires(s, sense, source)), None)
            if script is not None and id(script) not in done:
                done.add(id(script))
                runs.append(_run(pkg, script, (str(_count(db, pkg.name) + correction),
                                               str(_count(db, name)))))
    return runs


def phase_runs(pkg: PackageMeta, phase: str, label: str, arg: str = "0") -> list[ScriptRun]:
    """``pkg``'s script ``phase`` (e.g. ``preun``) as ``label`` with ``$1 = arg`` (``0``: no
    instance left); none when its body is empty; a lua one is refused."""
    return [_run(pkg, Script(label.lstrip("%"), s.body, s.interpreter), (arg,))
            for s in pkg.scripts if s.name == phase and (s.body.strip() or s.interpreter)]


def _un(pkg: PackageMeta, view: PackageMeta, db: Sequence[PackageMeta],
        cls: int) -> list[ScriptRun]:
    return (_file_runs(_file_triggers([pkg], UN, cls), db)
            + _file_runs(_file_triggers(db, UN, cls), [view]))


def erase_runs(pkg: PackageMeta, db: Sequence[PackageMeta],
               view: PackageMeta | None = None) -> Erase:
    """``rpmPackageErase`` of ``pkg``; ``db`` still holds it (and, in an upgrade, the
    version replacing it).  ``view``: ``pkg`` with only the files that go (an upgrade
    keeps those the new version ships: ``FA_SKIP``, which file triggers do not list)."""
    view = view or pkg
    arg = str(_count(db, pkg.name) - 1)
    before = [*_un(pkg, view, db, 1), *own_triggers(pkg, db), *triggers_on(pkg, db, "triggerun"),
              *phase_runs(pkg, "preun", "%preun", arg), *_un(pkg, view, db, 2)]
    after = [*_file_runs(_file_triggers(db, POSTUN, 1), [view]),
             *phase_runs(pkg, "postun", "%postun", arg),
             *triggers_on(pkg, db, "triggerpostun"),
             *_file_runs(_file_triggers(db, POSTUN, 2), [view])]
    return Erase(pkg, tuple(before), tuple(after))


def erase_order(removed: Sequence[PackageMeta]) -> list[PackageMeta]:
    """``removed`` in the order ``rpm -e`` erases them given their names sorted
    (:func:`layering.rpmorder.erase_order`): a package before those it requires."""
    return rpmorder.erase_order(sorted(removed, key=lambda p: (p.name, p.evr, p.arch)))


def trans_un(kept: Sequence[PackageMeta], gone: Sequence[PackageMeta],
             db: Sequence[PackageMeta]) -> list[ScriptRun]:
    """Before anything is erased: the ``%transfiletriggerun`` of the packages ``kept`` over
    the files of those ``gone`` (in erase order), then each one's own over ``db``."""
    first = _file_runs(_file_triggers(kept, TRANS_UN), gone)
    for pkg in gone:
        first += _file_runs(_file_triggers([pkg], TRANS_UN), db)
    return first


def noted_postun(db: Sequence[PackageMeta], pkg: PackageMeta) -> list[tuple[PackageMeta, Script]]:
    """``rpmtriggersPrepPostUnTransFileTrigs``: the ``%transfiletriggerpostun`` of ``db``
    that files of ``pkg`` (erased now) match."""
    return [(owner, s) for owner, s in _file_triggers(db, TRANS_POSTUN)
            if _paths([pkg], s.prefixes)]


def plan_erase(db: Sequence[PackageMeta], removed: set[str]) -> ErasePlan:
    """The runs of ``rpm -e`` of the packages named ``removed``; ``db`` is the image's
    database in its order, with file lists."""
    gone = erase_order([p for p in db if p.name in removed])
    first = trans_un([p for p in db if p.name not in removed], gone, db)
    now, erases, noted = list(db), [], []
    for pkg in gone:
        erases.append(erase_runs(pkg, now))
        noted += noted_postun(now, pkg)
        now.remove(pkg)
    return ErasePlan(tuple(first), tuple(erases), tuple(postun_trans(noted, now)))


def postun_trans(noted: list[tuple[PackageMeta, Script]],
                 left: list[PackageMeta]) -> list[ScriptRun]:
    """``runPostUnTransFileTrigs``: each noted trigger of a package left, once, by priority,
    database order, header order; ``$1 = 0``, nothing on stdin."""
    where = {id(p): i for i, p in enumerate(left)}
    seen: dict[int, tuple[PackageMeta, Script]] = {id(s): (p, s) for p, s in noted
                                                   if id(p) in where}
    ordered = sorted(seen.values(), key=lambda t: (-t[1].priority, where[id(t[0])],
                                                   t[0].scripts.index(t[1])))
    return [_run(p, s, ("0",)) for p, s in ordered]
