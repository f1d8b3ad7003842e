"""The ordering relations rpm 4.18 records between the packages of an install transaction
(``lib/order.c``: ``addRelation``, ``addSingleRelation``; ``lib/rpmal.c``:
``rpmalSatisfiesDepend``), for :mod:`layering.rpmorder`.

Per package, in transaction order, every Requires, Recommends, Suggests, Supplements and
Enhances (in that tag order) is looked up among the transaction's packages:

- a dependency whose flags make it unordered is skipped (``isUnorderedReq``: only
  ``rpmlib()``, ``config()``, ``Requires(pretrans)``/``(posttrans)``/``(verify)``, meta),
  and so is one the package itself satisfies or no package of the set satisfies;
- a path is first looked up among the packages' files, then among the Provides; the
  provider is the requiring package itself if it is one, else the first package of the
  set (in transaction order) providing it;
- a rich dependency adds its left operand, and for ``and``/``or`` every operand;
- a relation is strong ("prerequired") when the dependency is ``Requires(pre)`` or
  ``Requires(post)`` (or a legacy PreReq); Requires(preun)/(postun) and plain Requires
  are ordinary relations; weak dependencies (Recommends, Suggests, missing-ok) are
  ordinary relations too; Supplements/Enhances point the other way;
- one relation per pair of packages, its strength the union of the dependencies that made
  it (rpm merges a repeated pair only when it is the last one recorded, as here).

Not modelled: dependency versions (rpm matches a provider's version range; a transaction
that passed the dependency check has a matching provider for each), package colours
(multilib) and ``OrderWithRequires`` (strata's package model does not keep it).
"""

from __future__ import annotations

from dataclasses import dataclass

from importers.model import DepKind, PackageMeta, Relation

# rpmds.h sense bits
PREREQ = 1 << 6
PRETRANS, POSTTRANS = 1 << 7, 1 << 5
INTERP, SCRIPT_PRE, SCRIPT_POST = 1 << 8, 1 << 9, 1 << 10
SCRIPT_PREUN, SCRIPT_POSTUN, SCRIPT_VERIFY = 1 << 11, 1 << 12, 1 << 13
FIND_REQUIRES, MISSINGOK, RPMLIB, KEYRING = 1 << 14, 1 << 19, 1 << 24, 1 << 26
CONFIG, META, SENSEMASK = 1 << 28, 1 << 29, 15
_ALL_REQUIRES = (INTERP | SCRIPT_PRE | SCRIPT_POST | SCRIPT_PREUN | SCRIPT_POSTUN
                 | SCRIPT_VERIFY | FIND_REQUIRES | RPMLIB | KEYRING | PRETRANS | POSTTRANS
                 | PREREQ | META | MISSINGOK)
_INSTALL_ONLY = SCRIPT_PRE | SCRIPT_POST | RPMLIB | KEYRING | PRETRANS | POSTTRANS
_UNORDERED_ONLY = RPMLIB | CONFIG | PRETRANS | POSTTRANS | SCRIPT_VERIFY | META
_FORCE_ORDER = SCRIPT_PRE | SCRIPT_POST | SCRIPT_PREUN | SCRIPT_POSTUN
# rpmtsOrder's ordertags, in its order (RPMTAG_ORDERNAME is not kept by the model)
_ORDER_KINDS = (DepKind.DEPENDS, DepKind.RECOMMENDS, DepKind.SUGGESTS, DepKind.SUPPLEMENTS,
                DepKind.ENHANCES)
_RICH_OPS = frozenset({"and", "or", "if", "unless", "else", "with", "without"})


@dataclass(frozen=True)
class Relations:
    """The recorded graph: ``count[i]`` packages ``i`` requires, ``qcnt[i]`` packages
    requiring ``i``, ``successors[i]`` those (newest first), ``requires[i]`` the (package,
    strength flags) pairs ``i`` requires (newest first); strength 0 is an ordinary relation."""

    count: tuple[int, ...]
    qcnt: tuple[int, ...]
    successors: tuple[tuple[int, ...], ...]
    requires: tuple[tuple[tuple[int, int], ...], ...]


def is_unordered(flags: int) -> bool:
    """rpm's ``isUnorderedReq``: a dependency that never orders packages."""
    return bool(flags & _UNORDERED_ONLY) and not flags & _FORCE_ORDER


def strength(flags: int, *, weak: bool) -> int:
    """rpm's install-side prerequisite bits of a dependency (0: an ordinary relation)."""
    if weak:
        return 0
    out = flags & _INSTALL_ONLY
    if flags & _ALL_REQUIRES == PREREQ:  # legacy PreReq
        out |= SCRIPT_PRE
    return out


def rich_terms(text: str) -> list[str]:
    """The names rpm orders on in a rich dependency ``(A op B ...)``: the left operand, and
    every operand of an ``and``/``or`` chain; nested operands recursively."""
    words = _split_top(text[1:-1] if text.startswith("(") and text.endswith(")") else text)
    groups: list[list[str]] = [[]]
    ops: list[str] = []
    for w in words:
        if w in _RICH_OPS:
            ops.append(w)
            groups.append([])
        else:
            groups[-1].append(w)
    first = ops[0] if ops else ""
    picked = groups if first in ("and", "or") else [] if first == "else" else groups[:1]
    out: list[str] = []
    for g in picked:
        if g and g[0].startswith("("):
            out.extend(rich_terms(g[0]))
        elif g and not g[0].startswith("rpmlib("):
            out.append(g[0])
    return out


def _split_top(text: str) -> list[str]:
    """Whitespace-separated words of ``text``, a parenthesised part kept as one word."""
    words, cur, depth = [], "", 0
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch.isspace() and depth == 0:
            if cur:
                words.append(cur)
            cur = ""
        else:
            cur += ch
    return words + [cur] if cur else words


class _Index:
    """rpm's added-packages index: file paths and Provides (with each package's own name)
    -> packages in transaction order."""

    def __init__(self, pkgs: list[PackageMeta]) -> None:
        self.files: dict[str, list[int]] = {}
        self.provides: dict[str, list[int]] = {}
        for i, p in enumerate(pkgs):
            names = [p.name, *(r.name for g in p.relations(DepKind.PROVIDES) for r in g)]
            for name in dict.fromkeys(names):
                self.provides.setdefault(name, []).append(i)
            for path in dict.fromkeys("/" + f.path.lstrip("/") for f in p.files):
                self.files.setdefault(path, []).append(i)

    def provider(self, name: str, asking: int) -> int | None:
        """``rpmalSatisfiesDepend``: the package itself if it provides ``name``, else the
        first provider; ``None`` when the set has none."""
        found = self.files.get(name, []) if name.startswith("/") else []
        found = found or self.provides.get(name, [])
        return asking if asking in found else found[0] if found else None


class _Recorder:
    """``addSingleRelation`` over growing lists (newest first, as rpm prepends)."""

    def __init__(self, n: int) -> None:
        self.count, self.qcnt = [0] * n, [0] * n
        self.successors: list[list[int]] = [[] for _ in range(n)]
        self.requires: list[list[list[int]]] = [[] for _ in range(n)]

    def add(self, p: int, q: int, flags: int, *, reverse: bool) -> None:
        """Record "``p`` requires ``q``" (``q`` requires ``p`` when ``reverse``)."""
        if reverse:
            p, q = q, p
            head = self.requires[q][0] if self.requires[q] else None
            if head is not None and head[0] == p:  # rpm merges into q's newest requirement
                head[1] |= flags
                return
        elif self.successors[q] and self.successors[q][0] == p:
            next(r for r in self.requires[p] if r[0] == q)[1] |= flags
            return
        self.count[p] += 1
        self.qcnt[q] += 1
        self.successors[q].insert(0, p)
        self.requires[p].insert(0, [q, flags])

    def done(self) -> Relations:
        """The frozen graph."""
        return Relations(tuple(self.count), tuple(self.qcnt),
                         tuple(tuple(s) for s in self.successors),
                         tuple(tuple((q, f) for q, f in r) for r in self.requires))


def _deps(p: PackageMeta) -> list[tuple[Relation, int, bool, bool]]:
    """(dependency, flags, is a Requires, reversed) of ``p`` in rpmtsOrder's tag order; a
    Debian-style pre-dependency counts as a legacy PreReq."""
    out = [(r, r.flags if r.flags & _ALL_REQUIRES else r.flags | PREREQ, True, False)
           for g in p.relations(DepKind.PRE_DEPENDS) for r in g]
    for kind in _ORDER_KINDS:
        out.extend((r, r.flags, kind is DepKind.DEPENDS,
                    kind in (DepKind.SUPPLEMENTS, DepKind.ENHANCES))
                   for g in p.relations(kind) for r in g)
    return out


def record(pkgs: list[PackageMeta]) -> Relations:
    """The relations rpmtsOrder records for installing ``pkgs`` (in transaction order)."""
    index, rec = _Index(pkgs), _Recorder(len(pkgs))
    for i, p in enumerate(pkgs):
        for rel, flags, requires, reverse in _deps(p):
            if is_unordered(flags):
                continue
            names = [rel.name]
            if rel.name.startswith("("):  # its operands carry its flags but for missing-ok
                names, flags = rich_terms(rel.name), flags & ~(SENSEMASK | MISSINGOK)
            strong = strength(flags, weak=not requires or bool(flags & MISSINGOK))
            for name in names:
                q = None if name.startswith("rpmlib(") else index.provider(name, i)
                if q is not None and q != i:
                    rec.add(i, q, strong, reverse=reverse)
    return rec.done()
