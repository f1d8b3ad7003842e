"""The ordering relations rpm 4.18 records between the packages of an install transaction
(``lib/order.c``: ``addRelation``, ``addSingleRelation``; ``lib/rpmal.c``:
``rpmalSatisfiesDepend``), for :mod:`layering.rpmorder`.

Per package, in transaction order, every Requires, Recommends, Suggests, Supplements,
Enhances and OrderWithRequires (in that tag order) is looked up among the transaction's
packages:

- a dependency whose flags make it unordered is skipped (``isUnorderedReq``: only
  ``rpmlib()``, ``config()``, ``Requires(pretrans)``/``(posttrans)``/``(verify)``, meta),
  and so is one the package itself satisfies or no package of the set satisfies;
- a path is first looked up among the packages' files, then among the Provides (whose
  version range must overlap the dependency's: ``rpmdsCompare``); the provider is the
  requiring package itself if it is one, else the first package of the set (in
  transaction order) providing it;
- a rich dependency adds its left operand, and for ``and``/``or`` every operand;
- a relation is strong ("prerequired") when the dependency is ``Requires(pre)`` or
  ``Requires(post)`` (or a legacy PreReq); Requires(preun)/(postun) and plain Requires
  are ordinary relations; weak dependencies (Recommends, Suggests, missing-ok) and
  OrderWithRequires are ordinary relations too; Supplements/Enhances point the other way;
- one relation per pair of packages, its strength the union of the dependencies that made
  it (rpm merges a repeated pair only when it is the last one recorded, as here).

Not modelled: package colours (multilib: rpm prefers a provider of the preferred colour),
the directory fingerprints rpm compares for a path dependency in another directory (a
symlinked ``/bin``: rpm resolves it on the filesystem it runs on, the host's for
``rpm --root``).
"""

from __future__ import annotations

from dataclasses import dataclass

from importers.model import DepKind, Op, PackageMeta, PackageType, Relation
from importers.versions import evrcmp

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
_ERASE_ONLY = SCRIPT_PREUN | SCRIPT_POSTUN
_UNORDERED_ONLY = RPMLIB | CONFIG | PRETRANS | POSTTRANS | SCRIPT_VERIFY | META
_FORCE_ORDER = SCRIPT_PRE | SCRIPT_POST | SCRIPT_PREUN | SCRIPT_POSTUN
# rpmtsOrder's ordertags, in its order
_ORDER_KINDS = (DepKind.DEPENDS, DepKind.RECOMMENDS, DepKind.SUGGESTS, DepKind.SUPPLEMENTS,
                DepKind.ENHANCES, DepKind.ORDER)
RICH_DEPTH = 32  # nesting levels of a rich dependency followed (a header is hostile input)
_RICH_OPS = frozenset({"and", "or", "if", "unless", "else", "with", "without"})
_RICH_CMP = {"<": Op.LT, "<=": Op.LE, "=": Op.EQ, "==": Op.EQ, ">=": Op.GE, ">": Op.GT}
LESS, GREATER, EQUAL = 1 << 1, 1 << 2, 1 << 3
_SENSE = {Op.LT: LESS, Op.LE: LESS | EQUAL, Op.EQ: EQUAL, Op.GE: GREATER | EQUAL,
          Op.GT: GREATER}


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


def strength(flags: int, *, weak: bool, erase: bool = False) -> int:
    """rpm's prerequisite bits of a dependency (0: an ordinary relation): install-side
    (``isInstallPreReq``), or erase-side for an erasure (``isErasePreReq``)."""
    if weak:
        return 0
    out = flags & (_ERASE_ONLY if erase else _INSTALL_ONLY)
    if flags & _ALL_REQUIRES == PREREQ:  # legacy PreReq
        out |= SCRIPT_PREUN if erase else SCRIPT_PRE
    return out


def rich_terms(text: str, depth: int = 0) -> list[Relation]:
    """The dependencies rpm orders on in a rich dependency ``(A op B ...)``: the left
    operand, and every operand of an ``and``/``or`` chain; nested operands recursively
    (below :data:`RICH_DEPTH` levels: a deeper one orders nothing)."""
    if depth >= RICH_DEPTH:
        return []
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
    out: list[Relation] = []
    for g in picked:
        if g and g[0].startswith("("):
            out.extend(rich_terms(g[0], depth + 1))
        elif len(g) == 3 and g[1] in _RICH_CMP:
            out.append(Relation(g[0], _RICH_CMP[g[1]], g[2]))
        elif g and not g[0].startswith("rpmlib("):
            out.append(Relation(g[0]))
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
    """rpm's added-packages index: file paths and Provides (with each package's own
    ``name = EVR``) -> packages in transaction order."""

    def __init__(self, pkgs: list[PackageMeta]) -> None:
        self.files: dict[str, list[int]] = {}
        self.provides: dict[str, list[tuple[int, Relation]]] = {}
        for i, p in enumerate(pkgs):
            own = Relation(p.name, Op.EQ, p.evr)
            for prov in [own, *(r for g in p.relations(DepKind.PROVIDES) for r in g)]:
                self.provides.setdefault(prov.name, []).append((i, prov))
            for path in dict.fromkeys("/" + f.path.lstrip("/") for f in p.files):
                self.files.setdefault(path, []).append(i)

    def provider(self, dep: Relation, asking: int) -> int | None:
        """``rpmalSatisfiesDepend``: the package itself if it satisfies ``dep``, else the
        first that does (a path: among files first, versions not compared); ``None`` when
        no package of the set does."""
        found = self.files.get(dep.name, []) if dep.name.startswith("/") else []
        found = found or [i for i, prov in self.provides.get(dep.name, []) if overlap(prov, dep)]
        return asking if asking in found else found[0] if found else None


def overlap(a: Relation, b: Relation) -> bool:
    """rpm's ``rpmdsCompare`` of two relations of the same name: whether their version
    ranges overlap (an unversioned one overlaps everything)."""
    if a.op is None or b.op is None or not a.version or not b.version:
        return True
    (ea, va, ra), (eb, vb, rb) = _evr(a.version), _evr(b.version)
    fa, fb = _SENSE[a.op], _SENSE[b.op]
    sense = _vercmp(ea, eb) if ea and eb else 1 if ea and int(ea) > 0 else \
        -1 if eb and int(eb) > 0 else 0
    if sense == 0:
        sense = _vercmp(va, vb)
        if sense == 0 and ra and rb:
            sense = _vercmp(ra, rb)
        elif sense == 0 and ((ra and fb & EQUAL) or (rb and fa & EQUAL)):
            return True  # the side without a release matches any release when it has =
    if sense < 0:
        return bool(fa & GREATER or fb & LESS)
    if sense > 0:
        return bool(fa & LESS or fb & GREATER)
    return bool(fa & fb & (EQUAL | LESS | GREATER))


def _evr(text: str) -> tuple[str, str, str]:
    """rpmverParse: (epoch, version, release), missing parts empty."""
    head, colon, rest = text.partition(":")
    epoch, rest = (head or "0", rest) if colon and (head.isdigit() or not head) else ("", text)
    version, _, release = rest.rpartition("-") if "-" in rest else (rest, "", "")
    return epoch, version, release


def _vercmp(a: str, b: str) -> int:
    """rpmvercmp of two version (or release, or epoch) strings."""
    return evrcmp(PackageType.RPM, a, b)


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


def record(pkgs: list[PackageMeta], *, erase: bool = False) -> Relations:
    """The relations rpmtsOrder records for installing ``pkgs`` (in transaction order), or
    for erasing them (``erase``: every relation reversed, erase-side strengths)."""
    index, rec = _Index(pkgs), _Recorder(len(pkgs))
    for i, p in enumerate(pkgs):
        for rel, flags, requires, reverse in _deps(p):
            if is_unordered(flags):
                continue
            terms = [rel]
            if rel.name.startswith("("):  # its operands carry its flags but for missing-ok
                terms, flags = rich_terms(rel.name), flags & ~(SENSEMASK | MISSINGOK)
            strong = strength(flags, weak=not requires or bool(flags & MISSINGOK),
                              erase=erase)
            for term in terms:
                q = None if term.name.startswith("rpmlib(") else index.provider(term, i)
                if q is not None and q != i:
                    rec.add(i, q, strong, reverse=reverse != erase)
    return rec.done()
