"""Version comparison per ecosystem, delegated to libsolv (never hand-written).

libsolv's Python binding has no bare ``evrcmp``; two scratch solvables in a
pool of the right dist type compare with ``Solvable.evrcmp``, which is
dpkg's algorithm for DISTTYPE_DEB and rpmvercmp (with epoch and release)
for DISTTYPE_RPM.
"""

from __future__ import annotations

import functools
import threading

import solv

from importers.model import Op, PackageType, Relation

_LOCK = threading.Lock()


@functools.cache
def _pool(kind: PackageType) -> tuple[solv.Pool, solv.XSolvable, solv.XSolvable]:
    pool = solv.Pool()
    pool.setdisttype(solv.Pool.DISTTYPE_DEB if kind == PackageType.DEB else
                     solv.Pool.DISTTYPE_RPM)
    repo = pool.add_repo("evrcmp")
    a, b = repo.add_solvable(), repo.add_solvable()
    return pool, a, b


def evrcmp(kind: PackageType, left: str, right: str) -> int:
    """-1, 0 or 1 as ``left`` sorts before, equal to or after ``right`` ([epoch:]version[-rel])."""
    with _LOCK:
        _pool_, a, b = _pool(kind)
        a.evr, b.evr = left, right
        c = a.evrcmp(b)
    return (c > 0) - (c < 0)


def satisfies(kind: PackageType, rel: Relation, evr: str) -> bool:
    """Whether a package at ``evr`` meets a relation's version constraint (name not checked)."""
    if rel.op is None:
        return True
    c = evrcmp(kind, evr, rel.version)
    return {Op.LT: c < 0, Op.LE: c <= 0, Op.EQ: c == 0, Op.GE: c >= 0, Op.GT: c > 0}[rel.op]
