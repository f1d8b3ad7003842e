"""apt's choices, emulated over a libsolv pool: what ``apt-get install`` would mark.

libsolv alone answers "is there a solution"; apt answers "which one" with a
greedy walk that users know: for each package it marks, every Pre-Depends and
Depends group not yet satisfied gets the *first* alternative whose candidate
(the newest version, or the installed one) can be marked with its own
dependencies; providers of a virtual alternative are tried after the real
package of that name.  Recommends are walked the same way after the Depends,
and one that cannot be marked is skipped (apt does not fail on them).
Conflicts and Breaks against installed or marked packages make a candidate
uninstallable.  A name requested directly that only virtual packages provide
is refused when several packages provide it, as apt does.

The result is the set of packages apt would add; :mod:`layering.resolve`
hands it to libsolv as exact install jobs, so libsolv still proves it
consistent.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import solv

from layering.errors import DepsolveError

_ATOM = re.compile(r"^(\S+?)(?::(?:any|native))?(?: (<<|<=|=|>=|>>|<|>) (\S+))?$")
_REL_FLAGS = {"<<": solv.REL_LT, "<": solv.REL_LT, "<=": solv.REL_LT | solv.REL_EQ,
              "=": solv.REL_EQ, ">=": solv.REL_GT | solv.REL_EQ, ">>": solv.REL_GT,
              ">": solv.REL_GT}
MAX_DEPTH = 200  # dependency chains of a distribution are far shorter


def _norm(group: str) -> str:
    """A relation group as a comparable key: ``a (<< 1) [amd64] | b:any`` -> ``a<<1|b``."""
    group = re.sub(r"\[[^\]]*\]|:any|:native|[()\s]", "", group)
    return group


def _positions(field_text: str) -> dict[str, int]:
    """Group key -> its position in a relation field."""
    out: dict[str, int] = {}
    for i, g in enumerate(field_text.split(",")):
        out.setdefault(_norm(g), i)
    return out


@dataclass
class AptMarker:
    """The packages apt would mark for installation, walked over ``pool``.

    ``installed`` are the solvables that stay installed (the locked base minus removals).
    """

    pool: solv.Pool
    installed: set[int]
    arch: str
    recommends: bool = True
    fields: Callable[[solv.XSolvable], tuple[str, ...] | None] | None = None
    marked: list[solv.XSolvable] = field(default_factory=list)
    _marked_ids: set[int] = field(default_factory=set)
    _alts: dict[int, list[tuple[str, int]]] = field(default_factory=dict)
    _cand: dict[str, solv.XSolvable | None] = field(default_factory=dict)
    _conflict_cache: dict[int, set[int]] = field(default_factory=dict)

    # ---- the candidate of a name (apt's policy with default pins: the newest) ------------

    def candidate(self, name: str) -> solv.XSolvable | None:
        """The installed package of that name, else its newest available version."""
        if name not in self._cand:
            self._cand[name] = self._find_candidate(name)
        return self._cand[name]

    def _find_candidate(self, name: str, *, upgrade: bool = False) -> solv.XSolvable | None:
        best = None
        for s in self.pool.whatprovides(self.pool.str2id(name)):
            if s.name != name or s.arch not in (self.arch, "all", "noarch"):
                continue
            if s.id in self.installed and not upgrade:
                return s
            if s.repo == self.pool.installed:
                continue
            if best is None or s.evrcmp(best) > 0:
                best = s
        return best

    def providers(self, name: str) -> list[solv.XSolvable]:
        """Candidates of the packages that provide ``name`` (the real one included)."""
        out = {}
        for s in self.pool.whatprovides(self.pool.str2id(name)):
            cand = self.candidate(s.name)
            if cand is not None and cand.id == s.id:
                out[s.id] = s
        return sorted(out.values(), key=lambda s: s.name)

    # ---- dependency groups ----------------------------------------------------------------

    def alternatives(self, dep: solv.Dep) -> list[tuple[str, int]]:
        """(name, dep id) of each atom of an ``A | B | C`` group, in the package's order."""
        found = self._alts.get(dep.id)
        if found is None:
            found = self._alts[dep.id] = [self._atom(a) for a in str(dep).split(" | ")]
        return found

    def _atom(self, text: str) -> tuple[str, int]:
        m = _ATOM.match(text.strip())
        if m is None:
            return text.strip(), self.pool.str2id(text.strip())
        name = self.pool.str2id(m.group(1))
        if m.group(2) is None:
            return m.group(1), name
        return m.group(1), self.pool.rel2id(name, self.pool.str2id(m.group(3)),
                                            _REL_FLAGS[m.group(2)])

    def _present(self, s: solv.XSolvable) -> bool:
        return s.id in self.installed or s.id in self._marked_ids

    def satisfied(self, dep: solv.Dep) -> bool:
        """Whether an installed or marked package already satisfies the group."""
        return any(self._present(s) for _, a in self.alternatives(dep)
                   for s in self.pool.whatprovides(a))

    def _choices(self, dep: solv.Dep) -> list[solv.XSolvable]:
        """Candidates for a group, apt's order: alternatives in order; within one, the real
        package of that name, then the candidates of its providers."""
        out: dict[int, solv.XSolvable] = {}
        for name, a in self.alternatives(dep):
            matching = self.pool.whatprovides(a)
            real = self.candidate(name)
            if real is not None and real.id in self.installed and real.id not in {
                    s.id for s in matching}:
                # apt's candidate is the newest version: an installed package too old for
                # the group is upgraded (an image's base package, dpkg's upgrade)
                newer = self._find_candidate(name, upgrade=True)
                real = newer if newer is not None and newer.evrcmp(real) > 0 else real
            if real is not None and any(s.id == real.id for s in matching):
                out.setdefault(real.id, real)
            for s in sorted((s for s in matching if s.name != name), key=lambda s: s.name):
                cand = self.candidate(s.name)
                if cand is not None and cand.id == s.id:
                    out.setdefault(s.id, s)
        return list(out.values())

    # ---- conflicts --------------------------------------------------------------------------

    def _conflicted(self, t: solv.XSolvable) -> set[int]:
        """The solvables ``t`` conflicts with or breaks (other packages of its name aside)."""
        found = self._conflict_cache.get(t.id)
        if found is None:
            found = self._conflict_cache[t.id] = {
                x.id for dep in t.lookup_deparray(solv.SOLVABLE_CONFLICTS)
                for _, a in self.alternatives(dep) for x in self.pool.whatprovides(a)
                if x.name != t.name}
        return found

    def _conflicts(self, s: solv.XSolvable) -> bool:
        """Whether ``s`` conflicts with (or breaks, or is broken by) a present package."""
        if any(self._present(self.pool.id2solvable(x)) for x in self._conflicted(s)):
            return True
        present = [*self.marked, *(self.pool.id2solvable(i) for i in self.installed)]
        return any(s.id in self._conflicted(t) for t in present)

    # ---- marking ------------------------------------------------------------------------------

    def mark(self, s: solv.XSolvable, depth: int = 0) -> bool:
        """Mark ``s`` and, depth first, what its dependency groups need; on failure
        nothing stays marked.  Return whether it worked."""
        if self._present(s):
            return True
        if depth > MAX_DEPTH or self._conflicts(s):
            return False
        saved = len(self.marked)
        self.marked.append(s)
        self._marked_ids.add(s.id)
        requires, recommends = self._groups(s)
        for dep in requires:
            if not self._satisfy(dep, depth):
                self._rollback(saved)
                return False
        if self.recommends:
            for dep in recommends:
                self._satisfy(dep, depth)
        return True

    def _groups(self, s: solv.XSolvable) -> tuple[list[solv.Dep], list[solv.Dep]]:
        """(Pre-Depends and Depends, Recommends) of ``s`` in the order the package lists them."""
        requires = [*s.lookup_deparray(solv.SOLVABLE_REQUIRES, 1),
                    *s.lookup_deparray(solv.SOLVABLE_REQUIRES)]
        recommends = list(s.lookup_deparray(solv.SOLVABLE_RECOMMENDS))
        fields = self.fields(s) if self.fields is not None else None
        if fields is None:
            return requires, recommends
        order = _positions(f"{fields[0]}, {fields[1]}")
        rec_order = _positions(fields[2])
        requires.sort(key=lambda d: order.get(_norm(str(d)), len(order)))
        recommends.sort(key=lambda d: rec_order.get(_norm(str(d)), len(rec_order)))
        return requires, recommends

    def _satisfy(self, dep: solv.Dep, depth: int) -> bool:
        if self.satisfied(dep):
            return True
        return any(self.mark(c, depth + 1) for c in self._choices(dep))

    def _rollback(self, saved: int) -> None:
        for s in self.marked[saved:]:
            self._marked_ids.discard(s.id)
        del self.marked[saved:]

    # ---- requests -----------------------------------------------------------------------------

    def requested(self, name: str) -> solv.XSolvable | None:
        """What ``apt-get install NAME`` selects: the real package's candidate; for a virtual
        name its only provider; None when an installed package provides it.  Raises
        DepsolveError for a virtual name with several providers, as apt refuses it."""
        real = self.candidate(name)
        if real is not None:
            return real
        provs = self.providers(name)
        if any(s.id in self.installed for s in provs):
            return None
        if len(provs) == 1:
            return provs[0]
        if not provs:
            raise DepsolveError(f"cannot install {name}: no package provides it in the sources")
        listed = ", ".join(f"{s.name} {s.evr}" for s in provs)
        raise DepsolveError(f"cannot install {name}: it is a virtual package provided by "
                            f"{listed}; install one of them explicitly")
