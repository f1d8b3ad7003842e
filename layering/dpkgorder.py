"""The order in which apt 2.6 and dpkg 1.21 configure newly unpacked Debian packages.

apt unpacks with ``dpkg --unpack`` and configures a package at once only when a
package it is about to unpack pre-depends on it: before that unpack it runs
``dpkg --configure`` on the pre-depended package and the added packages it needs,
in the order it unpacked them (a depth-first walk of the relation fields).  The
rest it leaves to one ``dpkg --configure --pending`` at the end.  dpkg fills its
queue (``src/main/packages.c``: ``enqueue_specified``, ``enqueue_pending``), the
latter by walking its package hash table (``lib/dpkg/pkg-hash.c``: 65521 bins
indexed by the FNV-1a hash of the name, ``lib/dpkg/strhash.c``).  ``process_queue``
pops each package; ``deferred_configure`` (``configure.c``) puts it back at the end
of the queue while a dependency is still in the queue (``dependencies_ok``,
``deppossi_ok_found``); when a whole round makes no progress, ``dependtry`` rises
and from ``DEPEND_TRY_CYCLES`` on each pop first breaks one dependency cycle
(``findbreakcycle``, ``depcon.c``), preferring a link from a package without a
postinst.  Not modelled: trigger processing (strata runs the image's dpkg for it
last), awaited triggers, versioned dependencies satisfied only by one provider
version, and, within one hash bin (two names out of 65521), dpkg's insertion order
(here: by name).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

from importers.model import DepKind, PackageMeta, Relation

BINS = 65521
FNV_OFFSET, FNV_PRIME = 2166136261, 16777619
DEPEND_TRY_CYCLES = 2
DEPEND_TRY_FORCE = 5  # dpkg gives up (internal error) past its last try; this forces
MAX_STEPS = 2_000_000  # links walked looking for cycles, before configuring in queue order
NONE, DEFER, OK = 0, 1, 3  # dpkg's found_status
Link = tuple[str, int, int]  # (package, group index, alternative index): one deppossi


def fnv1a(name: str) -> int:
    """dpkg's ``str_fnv_hash`` of ``name`` (32 bits)."""
    h = FNV_OFFSET
    for byte in name.encode("utf-8", "surrogateescape"):
        h = ((h ^ byte) * FNV_PRIME) & 0xFFFFFFFF
    return h


def hash_order(names: Collection[str]) -> list[str]:
    """``names`` in the order dpkg's package hash table iterates them (bin by bin; two
    names in one bin by name, where dpkg keeps the order it first met them)."""
    return sorted(names, key=lambda n: (fnv1a(n.lower()) % BINS, n))


@dataclass(frozen=True)
class Graph:
    """The dependency graph dpkg walks: each package's Depends then Pre-Depends groups
    (the order of its status file) as alternatives' names, who provides what (last
    parsed first, as dpkg's reverse lists), and which packages have a postinst."""

    deps: dict[str, tuple[tuple[str, ...], ...]]
    npre: dict[str, int]
    providers: dict[str, tuple[str, ...]]
    postinst: frozenset[str]

    @classmethod
    def of(cls, added: Sequence[PackageMeta], base: Sequence[PackageMeta]) -> Graph:
        """The graph of ``base`` (installed; their scripts are not known) and ``added``."""
        pkgs = {p.name: p for p in base} | {p.name: p for p in added}
        deps = {n: tuple(tuple(r.name for r in g) for kind in (DepKind.DEPENDS, DepKind.PRE_DEPENDS)
                         for g in p.relations(kind)) for n, p in pkgs.items()}
        providers: dict[str, list[str]] = {}
        for n in sorted(pkgs, reverse=True):
            for group in pkgs[n].relations(DepKind.PROVIDES):
                for rel in group:
                    providers.setdefault(rel.name, []).append(n)
        npre = {n: len(p.relations(DepKind.PRE_DEPENDS)) for n, p in pkgs.items()}
        post = frozenset(p.name for p in added if any(s.name == "postinst" for s in p.scripts))
        return cls(deps, npre, {k: tuple(v) for k, v in providers.items()}, post)


class DpkgRun:
    """``dpkg --configure`` runs of one apt-get: ``done`` are the configured packages (the
    base's and earlier runs'), ``present`` the unpacked ones whose relations dpkg knows."""

    def __init__(self, graph: Graph, done: set[str], present: Collection[str]) -> None:
        self.graph, self.done, self.present = graph, done, present
        self.queued: set[str] = set()
        self.broken: set[Link] = set()
        self.steps = 0

    def configure(self, queue: Sequence[str]) -> list[str]:
        """The packages of ``queue`` in the order one dpkg process configures them (then in
        ``done``).  Packages with pending triggers (dpkg's queue has them too, waiting until
        its third try) are left out: they change the order only where a cycle is broken."""
        q = deque(queue)
        self.queued = set(queue)
        out: list[str] = []
        sincenothing, dependtry = 0, 1
        while q:
            pkg = q.popleft()
            sincenothing += 1
            if sincenothing - 1 > len(q) * 3 + 2 or sincenothing > len(q) * 2 + 2:
                dependtry, sincenothing = dependtry + 1, 0
            if self.steps > MAX_STEPS:
                dependtry = DEPEND_TRY_FORCE  # bounded time on a hostile web of cycles
            elif dependtry >= DEPEND_TRY_CYCLES and self.break_cycle(pkg):
                sincenothing = 0
            if self.found(pkg) == DEFER and dependtry < DEPEND_TRY_FORCE:
                q.append(pkg)
                continue
            self.queued.discard(pkg)
            self.done.add(pkg)
            out.append(pkg)
            sincenothing = 0
        return out

    def _status(self, name: str) -> int:
        return OK if name in self.done else DEFER if name in self.queued else NONE

    def found(self, pkg: str) -> int:
        """``dependencies_ok``: OK, DEFER (a dependency waits in the queue) or NONE."""
        result = OK
        for gi, group in enumerate(self.graph.deps.get(pkg, ())):
            found = NONE
            for ai, name in enumerate(group):
                if (pkg, gi, ai) in self.broken:
                    found = OK
                    break
                found = max(found, self._status(name))
                for prov in self.graph.providers.get(name, ()):
                    if found == OK:
                        break
                    this = self._status(prov)
                    found = max(found, OK if this == DEFER and prov == pkg else this)
                if found == OK:
                    break
            # NONE (dpkg would stop): a dependency strata's model cannot see; not a wait
            result = min(result, OK if found == NONE else found)
        return result

    def _edges(self, pkg: str) -> Iterator[tuple[Link, str]]:
        """``findbreakcyclerecursive``'s links out of ``pkg``: each alternative's package,
        then its providers that are in the queue."""
        if pkg not in self.present and pkg not in self.done:
            return
        for gi, group in enumerate(self.graph.deps.get(pkg, ())):
            for ai, name in enumerate(group):
                if (pkg, gi, ai) in self.broken:
                    continue
                if name in self.graph.deps:
                    yield (pkg, gi, ai), name
                for prov in self.graph.providers.get(name, ()):
                    if prov in self.queued:
                        yield (pkg, gi, ai), prov

    def break_cycle(self, start: str) -> bool:
        """``findbreakcycle``: break the first dependency cycle met depth-first from
        ``start``, at a link from a package without a postinst if the cycle has one, else
        at the link into the package where the cycle was found; whether one was broken."""
        black: set[str] = set()
        stack: list[tuple[str, Iterator[tuple[Link, str]]]] = [(start, self._edges(start))]
        links: list[Link | None] = [None]
        below = Counter([start])  # packages on the stack
        while stack:
            pkg, edges = stack[-1]
            nxt = next(edges, None)
            self.steps += 1
            if nxt is None:
                black.add(pkg)
                stack.pop()
                links.pop()
                below[pkg] -= 1
                continue
            links[-1], target = nxt
            if below[target] - (target == pkg) <= 0:  # not in the search path below
                if target not in black:
                    stack.append((target, self._edges(target)))
                    links.append(None)
                    below[target] += 1
                continue
            j = len(stack) - 1
            while not (j != len(stack) - 1 and stack[j][0] == target):
                if stack[j][0] not in self.graph.postinst:
                    break
                j -= 1
            link = links[j]
            assert link is not None
            self.broken.add(link)
            return True
        return False


def apt_configure_order(added: Sequence[PackageMeta], base: Sequence[PackageMeta],
                        walk: Sequence[PackageMeta]) -> list[str]:
    """The names of ``added`` in the order apt and dpkg configure them: before each package
    of ``walk`` (``added`` in unpack order) that pre-depends on added packages not yet
    configured, one dpkg run over those and the added packages they need (depth-first,
    in field order); then ``dpkg --configure --pending`` over the rest in hash order."""
    graph = Graph.of(added, base)
    names = {p.name for p in added}
    done = {p.name for p in base} - names
    run = DpkgRun(graph, done, names)
    out: list[str] = []
    for pkg in walk:
        for group in pkg.relations(DepKind.PRE_DEPENDS):
            for target in _targets(group, graph, names):
                if target not in done:
                    out += run.configure(_closure(target, graph, names, done))
    return out + run.configure([n for n in hash_order(names) if n not in done])


def _targets(group: Sequence[Relation], graph: Graph, names: Collection[str]) -> list[str]:
    """The added package one Pre-Depends group names (itself or through a provider)."""
    for rel in group:
        hit = [c for c in _candidates(rel.name, graph) if c in names]
        if hit:
            return hit[:1]
    return []


def _candidates(name: str, graph: Graph) -> list[str]:
    return [name, *graph.providers.get(name, ())]


def _closure(target: str, graph: Graph, names: Collection[str], done: Collection[str]) -> list[str]:
    """``target`` and the added, unconfigured packages it needs, depth-first in the order
    of its Pre-Depends then Depends fields, each after what it needs (apt's unpack walk)."""
    out: list[str] = []
    seen = {target}
    stack: list[tuple[str, Iterator[str]]] = [(target, _needs(target, graph, names, done))]
    while stack:
        pkg, it = stack[-1]
        nxt = next(it, None)
        if nxt is None:
            stack.pop()
            out.append(pkg)
        elif nxt not in seen:
            seen.add(nxt)
            stack.append((nxt, _needs(nxt, graph, names, done)))
    return out


def _needs(pkg: str, graph: Graph, names: Collection[str], done: Collection[str]) -> Iterator[str]:
    """The added, unconfigured packages ``pkg`` needs: per group the first alternative that
    is added, unless an earlier one is configured already."""
    deps = graph.deps.get(pkg, ())
    cut = len(deps) - graph.npre.get(pkg, 0)
    for group in (*deps[cut:], *deps[:cut]):
        for name in group:
            cands = _candidates(name, graph)
            hit = [c for c in cands if c in names and c not in done]
            if hit:
                yield hit[0]
                break
            if any(c in done for c in cands):
                break
