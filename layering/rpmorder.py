"""The order ``rpm -i`` installs a set of packages in (rpm 4.18's ``rpmtsOrder``), so that
scripts and file triggers run in the same order as rpm's.

A package comes after the packages of the set it requires (by name, Provides or file
path; ``rpmlib(...)`` ignored; a ``Requires(postun)`` counts too, as rpm showed).
Kahn's algorithm over that graph, where rpm's queue keeps packages by how many packages
of the set require them (more first): a package joining the queue goes before the first
queued one that has no more dependents than it has, searching from the one just taken.
The packages enter in the order given (``rpm -i *.rpm``: by file name); a cycle is
broken by appending what is left in that order (rpm breaks loops its own way: the
order in a cycle may differ).
"""

from __future__ import annotations

from importers.model import DepKind, PackageMeta


def _requires(pkgs: list[PackageMeta]) -> list[set[int]]:
    """For each package, the indexes of the packages of the set it requires."""
    provider: dict[str, set[int]] = {}
    for i, p in enumerate(pkgs):
        provider.setdefault(p.name, set()).add(i)
        for group in p.relations(DepKind.PROVIDES):
            for rel in group:
                provider.setdefault(rel.name, set()).add(i)
        for f in p.files:
            provider.setdefault(f"/{f.path}", set()).add(i)
    out = []
    for i, p in enumerate(pkgs):
        wanted = {rel.name for kind in (DepKind.PRE_DEPENDS, DepKind.DEPENDS)
                  for group in p.relations(kind) for rel in group
                  if not rel.name.startswith("rpmlib(")}
        out.append({j for w in wanted for j in provider.get(w, set()) if j != i})
    return out


def _add(queue: list[int], start: int, p: int, qcnt: list[int]) -> None:
    """Insert ``p`` before the first queued package from ``start`` on with qcnt <= its."""
    at = next((k for k in range(start, len(queue)) if qcnt[queue[k]] <= qcnt[p]), len(queue))
    queue.insert(at, p)


def install_order(pkgs: list[PackageMeta]) -> list[PackageMeta]:
    """``pkgs`` (in rpm's transaction order) in the order rpm installs them."""
    return _kahn(pkgs, _requires(pkgs))


def erase_order(pkgs: list[PackageMeta]) -> list[PackageMeta]:
    """``pkgs`` (in rpm's transaction order: ``rpm -e``'s arguments) in the order rpm
    erases them: the same sort with every relation reversed (``addSingleRelation``:
    "Erasures are reversed installs"), so a package goes before those it requires."""
    reqs = _requires(pkgs)
    return _kahn(pkgs, [{j for j, r in enumerate(reqs) if i in r} for i in range(len(pkgs))])


def _kahn(pkgs: list[PackageMeta], reqs: list[set[int]]) -> list[PackageMeta]:
    """``pkgs`` with each after the ones ``reqs`` names for it, rpm's queue order."""
    count = [len(r) for r in reqs]
    dependents: list[list[int]] = [[] for _ in pkgs]
    for i, r in enumerate(reqs):
        for j in sorted(r):
            dependents[j].append(i)
    qcnt = [len(d) for d in dependents]
    queue: list[int] = []
    for i in range(len(pkgs)):
        if count[i] == 0:
            _add(queue, 0, i, qcnt)
    pos = 0
    while pos < len(queue):
        for s in reversed(dependents[queue[pos]]):  # rpm's relation list: newest first
            count[s] -= 1
            if count[s] == 0:
                _add(queue, pos + 1, s, qcnt)
        pos += 1
    done = set(queue)
    return [pkgs[i] for i in queue] + [p for i, p in enumerate(pkgs) if i not in done]
