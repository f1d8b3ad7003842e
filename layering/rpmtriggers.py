"""rpm's file triggers in a layering transaction, as rpm 4.18 runs them for ``rpm -i``
(checked against it by tests/layering/test_rpm_oracle.py).

- After each added package's ``%post``: its own ``%filetriggerin`` over the matching
  files of the database at that moment (the base's packages, those added before it,
  its own), then the ``%filetriggerin`` of every package already in the database
  over this package's matching files (in its header's order).
- After every ``%posttrans``: the ``%transfiletriggerin`` of each package added, over
  all the matching files of the final database, and of each base package, over the
  matching files of the added packages (when there are any).

A database scan lists paths by directory (``/a/`` before ``/a/b/``), then package, then
header order, as rpm's dirnames index does.  Higher priority runs first; every run
gets ``$1 = 0`` and the matching paths on stdin, one a line.  A path matches a prefix
when it starts with it.
"""

from __future__ import annotations

from collections.abc import Sequence

from importers.model import PackageMeta, Script
from layering.errors import ScriptError
from layering.scripts import ScriptRun

IN, TRANS_IN = "filetriggerin", "transfiletriggerin"


def _triggers(pkgs: Sequence[PackageMeta], kind: str) -> list[tuple[PackageMeta, Script]]:
    """(package, trigger) of ``kind`` in ``pkgs``, highest priority first, else in order."""
    found = [(p, s) for p in pkgs for s in p.scripts if s.name == kind and s.prefixes]
    return sorted(found, key=lambda t: -t[1].priority)


def _matches(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path.startswith(p) for p in prefixes)


def _in_package(pkg: PackageMeta, prefixes: tuple[str, ...]) -> list[str]:
    return [f"/{f.path}" for f in pkg.files if _matches(f"/{f.path}", prefixes)]


def _in_db(db: Sequence[PackageMeta], prefixes: tuple[str, ...]) -> list[str]:
    found = [(path.rpartition("/")[0] + "/", pos, i, path)
             for pos, p in enumerate(db) for i, f in enumerate(p.files)
             if _matches(path := f"/{f.path}", prefixes)]
    return [t[3] for t in sorted(found)]


def _run(pkg: PackageMeta, script: Script, paths: list[str]) -> ScriptRun:
    label = f"%{script.name}"
    interp = script.interpreter or "/bin/sh"
    if interp.startswith("<lua>"):
        raise ScriptError(f"{label} of {pkg.name} is a lua scriptlet, which strata cannot run")
    return ScriptRun(pkg.name, label, script.body, interp, ("0",),
                     stdin="".join(f"{p}\n" for p in paths))


def after_post(db: Sequence[PackageMeta], pkg: PackageMeta) -> list[ScriptRun]:
    """The file triggers that run after ``pkg``'s ``%post``; ``db`` is the database with
    ``pkg`` just added (and file lists)."""
    runs = []
    for _own, s in _triggers([pkg], IN):
        if paths := _in_db(db, s.prefixes):
            runs.append(_run(pkg, s, paths))
    for other, s in _triggers([p for p in db if p is not pkg], IN):
        if paths := _in_package(pkg, s.prefixes):
            runs.append(_run(other, s, paths))
    return runs


def after_transaction(db: Sequence[PackageMeta], added: Sequence[PackageMeta]) -> list[ScriptRun]:
    """The ``%transfiletriggerin`` runs after the transaction (``db``: the final database)."""
    new = {id(p) for p in added}
    runs = []
    for pkg, s in _triggers(db, TRANS_IN):
        if paths := _in_db(db if id(pkg) in new else added, s.prefixes):
            runs.append(_run(pkg, s, paths))
    return runs
