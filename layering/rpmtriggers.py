"""rpm's file triggers in a layering transaction, as rpm 4.18 runs them for ``rpm -i``
(checked against it by tests/layering/test_rpm_oracle.py).

- Around each added package's ``%post`` (triggers of priority >= 10000 before it, the
  others after): the ``%filetriggerin`` of every package in the database (the base's,
  those added before, this one) over this package's matching files (in its header's
  order), then this package's own ``%filetriggerin`` over the matching files of the
  other packages of the database.
- After every ``%posttrans``: the ``%transfiletriggerin`` of each base package, over the
  matching files of the added packages (when there are any), then (after the noted
  ``%transfiletriggerpostun`` of an upgrade) those of each package added, over all the
  matching files of the final database.

A database scan lists paths by prefix (in the trigger's order), then package (in
database order), then header order.  Higher priority runs first; every run
gets ``$1 = 0`` and the matching paths on stdin, one a line.  A path matches a prefix
when it starts with it.
"""

from __future__ import annotations

from collections.abc import Sequence

from importers.model import PackageMeta, Script
from layering.errors import ScriptError
from layering.scripts import ScriptRun

IN, TRANS_IN = "filetriggerin", "transfiletriggerin"
BOUND = 10000  # rpm's TRIGGER_PRIORITY_BOUND: higher file triggers run before %post


def _triggers(pkgs: Sequence[PackageMeta], kind: str) -> list[tuple[PackageMeta, Script]]:
    """(package, trigger) of ``kind`` in ``pkgs``, highest priority first, else in order."""
    found = [(p, s) for p in pkgs for s in p.scripts if s.name == kind and s.prefixes]
    return sorted(found, key=lambda t: -t[1].priority)


def _matches(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path.startswith(p) for p in prefixes)


def _in_package(pkg: PackageMeta, prefixes: tuple[str, ...]) -> list[str]:
    return [f"/{f.path}" for f in pkg.files if _matches(f"/{f.path}", prefixes)]


def _in_db(db: Sequence[PackageMeta], prefixes: tuple[str, ...]) -> list[str]:
    return [path for prefix in prefixes for p in db for f in p.files
            if (path := f"/{f.path}").startswith(prefix)]


def _run(pkg: PackageMeta, script: Script, paths: list[str]) -> ScriptRun:
    label = f"%{script.name}"
    interp = script.interpreter or "/bin/sh"
    if interp.startswith("<lua>"):
        raise ScriptError(f"{label} of {pkg.name} is a lua scriptlet, which strata cannot run")
    return ScriptRun(pkg.name, label, script.body, interp, ("0",),
                     stdin="".join(f"{p}\n" for p in paths))


def around_post(db: Sequence[PackageMeta], pkg: PackageMeta, *, before: bool) -> list[ScriptRun]:
    """The file triggers that run before (``before``) or after ``pkg``'s ``%post``; ``db``
    is the database with ``pkg`` just added (and file lists)."""
    runs = []
    for owner, s in _triggers(db, IN):
        if (s.priority >= BOUND) == before and (paths := _in_package(pkg, s.prefixes)):
            runs.append(_run(owner, s, paths))
    others = [p for p in db if p is not pkg]
    for _own, s in _triggers([pkg], IN):
        if (s.priority >= BOUND) == before and (paths := _in_db(others, s.prefixes)):
            runs.append(_run(pkg, s, paths))
    return runs


def base_trans_in(db: Sequence[PackageMeta], added: Sequence[PackageMeta]) -> list[ScriptRun]:
    """``runFileTriggers(ts, NULL, ...)``: the ``%transfiletriggerin`` of the packages not
    in the transaction, by priority then database order, over the ``added`` files."""
    new = {id(p) for p in added}
    return [_run(pkg, s, paths) for pkg, s in _triggers([p for p in db if id(p) not in new],
                                                        TRANS_IN)
            if (paths := _in_db(added, s.prefixes))]


def own_trans_in(db: Sequence[PackageMeta], added: Sequence[PackageMeta]) -> list[ScriptRun]:
    """``runTransScripts(ts, PKG_TRANSFILETRIGGERIN)``: each added package's own, in
    transaction order (by priority within one), over the whole database's files."""
    return [_run(pkg, s, paths) for pkg in added for _p, s in _triggers([pkg], TRANS_IN)
            if (paths := _in_db(db, s.prefixes))]
