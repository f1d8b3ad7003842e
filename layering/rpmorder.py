"""The order ``rpm -i`` installs a set of packages in (rpm 4.18's ``rpmtsOrder``,
``lib/order.c``), so that scripts and file triggers run in the same order as rpm's.

The relations (which package requires which, and how strongly) are recorded as rpm does
(:mod:`layering.rpmrelations`). Then, as rpm:

1. Tarjan's algorithm (``detectSCCs``), started from each package in transaction order and
   following the packages requiring it, finds the strongly connected components (the
   dependency loops); each counts the relations it has to packages outside it.
2. A queue ordered by how many packages require a package (more first; a newcomer goes
   before the first queued one with as many or fewer, searching from the one just taken:
   ``addQ``) starts with the packages requiring nothing, in transaction order, then one
   member of each loop requiring nothing outside it.
3. Taking a package (``collectTE``) releases the packages requiring it: one whose last
   requirement it was joins the queue; a loop whose last outside requirement it was joins
   through the package that required it.
4. Taking a loop (``collectSCC``): distances are measured from its members that
   ``Requires(pre)``/``Requires(post)`` another member, along requirements (``dijkstra``);
   the member farthest from them (unreachable ones first; the last in Tarjan's stack order
   on a tie) goes first, then the members it released, in a queue of their own, until the
   loop is done; packages outside the loop it releases join the outer queue.

The packages enter in the order given (``rpm -i *.rpm``: by file name). Not modelled:
multilib colours and directory fingerprints (see rpmrelations).
"""

from __future__ import annotations

from importers.model import PackageMeta
from layering.rpmrelations import Relations, record

_NIL = -1
_INT_MAX = 2**31 - 1


def _tarjan(rel: Relations, scc: list[int]) -> list[list[int]]:
    """``detectSCCs``: sets ``scc[i]`` to 1 (no loop) or to its loop's number (from 2);
    returns the loops' members in stack order, at their numbers (0 and 1 empty)."""
    loops: list[list[int]] = [[], []]
    low, stack, index = [0] * len(scc), [], 0
    for root in range(len(scc)):
        if scc[root]:
            continue
        index -= 1
        scc[root] = low[root] = index
        stack.append(root)
        work = [(root, 0)]
        while work:
            v, k = work[-1]
            if k < len(rel.successors[v]):
                work[-1] = (v, k + 1)
                w = rel.successors[v][k]
                if scc[w] == 0:
                    index -= 1
                    scc[w] = low[w] = index
                    stack.append(w)
                    work.append((w, 0))
                elif scc[w] < 0:
                    low[v] = max(low[v], scc[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = max(low[work[-1][0]], low[v])
            if low[v] == scc[v]:
                _close(v, stack, scc, loops)
    return loops


def _close(v: int, stack: list[int], scc: list[int], loops: list[list[int]]) -> None:
    """Pop the component rooted at ``v``: a lone package is marked 1, a loop numbered."""
    if stack[-1] == v:
        scc[stack.pop()] = 1
        return
    at = len(stack) - 1 - stack[::-1].index(v)
    members = stack[at:]
    del stack[at:]
    for m in members:
        scc[m] = len(loops)
    loops.append(members)


def _outside_count(rel: Relations, loop: list[int], scc: list[int]) -> int:
    """How many relations the loop's members have to packages outside it."""
    inside = sum(1 for m in loop for s in rel.successors[m] if s != m and scc[s] == scc[m])
    return sum(rel.count[m] for m in loop) - inside


class _Order:
    """rpmtsOrder's state: counts, loop numbers and the ``tsi_suc`` links of its queues
    (three extra slots hold queue heads: the start queue, the outer queue saved while a
    loop is collected, the loop's inner queue)."""

    def __init__(self, rel: Relations) -> None:
        n = len(rel.count)
        self.rel, self.count = rel, list(rel.count)
        self.scc = [0] * n
        self.loops = _tarjan(rel, self.scc)
        self.loop_count = [_outside_count(rel, m, self.scc) for m in self.loops]
        self.suc = [_NIL] * (n + 3)
        self.start, self.outer, self.inner = n, n + 1, n + 2
        self.dist = [0] * n
        self.out: list[int] = []

    def add_q(self, p: int, head: int) -> None:
        """``addQ``: insert ``p`` before the first package after ``head`` required by as
        many or fewer packages."""
        prev, q = head, self.suc[head]
        while q != _NIL and self.rel.qcnt[q] > self.rel.qcnt[p]:
            prev, q = q, self.suc[q]
        self.suc[p], self.suc[prev] = q, p

    def collect_te(self, q: int, outer: int | None) -> None:
        """``collectTE``: take ``q`` and release the packages and loops requiring it."""
        self.out.append(q)
        sq = self.scc[q]
        for p in self.rel.successors[q]:
            sp = self.scc[p]
            if sp == 0 or p == q:
                continue
            self.count[p] -= 1
            if self.count[p] == 0:
                self.add_q(p, outer if sq > 1 and sq != sp and outer is not None else q)
            if sp > 1 and sp != sq:
                self.loop_count[sp] -= 1
                if self.loop_count[sp] == 0:
                    self.add_q(p, outer if outer is not None else q)
        self.scc[q] = 0

    def distances(self, nr: int) -> None:
        """``dijkstra``: each member's distance (in requirements) from the members that
        prerequire another member; ``_INT_MAX`` for those none reaches."""
        members, queue = self.loops[nr], []
        for m in members:
            self.dist[m] = _INT_MAX
            if any(f and self.scc[s] == nr for s, f in self.rel.requires[m]):
                self.dist[m] = 0
                queue.append(m)
        for t in queue:  # the list grows while read: a FIFO
            for s, _f in self.rel.requires[t]:
                if self.scc[s] == nr and self.dist[s] > self.dist[t] + 1:
                    self.dist[s] = self.dist[t] + 1
                    queue.append(s)

    def best(self, nr: int) -> int | None:
        """The loop's next start: the last member not taken yet at the largest distance."""
        best, score = None, 0
        for m in self.loops[nr]:
            if self.scc[m] != 0 and self.dist[m] >= score:
                best, score = m, self.dist[m]
        return best

    def collect_scc(self, p: int) -> None:
        """``collectSCC``: take the loop ``p`` stands for, the outer queue kept after it."""
        nr = self.scc[p]
        self.suc[self.outer], self.suc[p] = self.suc[p], _NIL
        self.distances(nr)
        while (best := self.best(nr)) is not None:
            self.suc[self.inner] = _NIL
            self.add_q(best, self.inner)
            t = self.suc[self.inner]
            while t != _NIL:
                self.collect_te(t, self.outer)
                t = self.suc[t]
        self.suc[p] = self.suc[self.outer]

    def run(self) -> list[int]:
        """The whole order (``rpmtsOrder``'s install pass)."""
        for e, c in enumerate(self.count):
            if c == 0:
                self.add_q(e, self.start)
        for nr in range(2, len(self.loops)):
            if self.loop_count[nr] == 0:
                self.add_q(self.loops[nr][0], self.start)
        q = self.suc[self.start]
        while q != _NIL:
            if self.scc[q] > 1:
                self.collect_scc(q)
            else:
                self.collect_te(q, None)
            q = self.suc[q]
        return self.out


def install_order(pkgs: list[PackageMeta]) -> list[PackageMeta]:
    """``pkgs`` (in rpm's transaction order) in the order rpm 4.18 installs them, dependency
    loops included; every package exactly once."""
    order = _Order(record(pkgs)).run()
    return [pkgs[i] for i in order]


def erase_order(pkgs: list[PackageMeta]) -> list[PackageMeta]:
    """``pkgs`` (in rpm's transaction order: ``rpm -e``'s arguments) in the order rpm
    erases them: the same sort over every relation reversed (``addSingleRelation``:
    "Erasures are reversed installs", with Requires(preun)/(postun) the strong ones), so
    a package goes before those it requires."""
    order = _Order(record(pkgs, erase=True)).run()
    return [pkgs[i] for i in order]
