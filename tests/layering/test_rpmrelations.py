"""The ordering relations rpm records (layering.rpmrelations), as rpm 4.18's lib/order.c,
lib/rpmal.c and include/rpm/rpmds.h define them."""

from __future__ import annotations

from importers.model import DepKind, PackageMeta, PackageType, Relation
from layering.rpmrelations import (
    MISSINGOK,
    POSTTRANS,
    PREREQ,
    RPMLIB,
    SCRIPT_POST,
    SCRIPT_POSTUN,
    SCRIPT_PRE,
    is_unordered,
    record,
    rich_terms,
    strength,
)


def test_dependency_strengths() -> None:
    assert strength(SCRIPT_PRE, weak=False) == SCRIPT_PRE
    assert strength(SCRIPT_POST | SCRIPT_POSTUN, weak=False) == SCRIPT_POST
    assert strength(SCRIPT_POSTUN, weak=False) == 0
    assert strength(PREREQ, weak=False) == SCRIPT_PRE  # legacy PreReq
    assert strength(SCRIPT_PRE, weak=True) == 0
    assert is_unordered(RPMLIB) and is_unordered(POSTTRANS)
    assert not is_unordered(POSTTRANS | SCRIPT_POST) and not is_unordered(SCRIPT_POSTUN)
    assert not is_unordered(MISSINGOK) and not is_unordered(0)


def test_rich_dependency_operands() -> None:
    assert rich_terms("(a or b or c)") == ["a", "b", "c"]
    assert rich_terms("(a >= 1.0 and (b or c(x86-64)))") == ["a", "b", "c(x86-64)"]
    assert rich_terms("(a if b else c)") == ["a"]  # rpm 4.18 never orders on the else part
    assert rich_terms("(a with b)") == ["a"]
    assert rich_terms("(a unless (b and c))") == ["a"]


def _pkg(name: str, **deps: tuple[Relation, ...]) -> PackageMeta:
    return PackageMeta(PackageType.RPM, name, "1", "noarch",
                       deps={DepKind(k): tuple((r,) for r in v) for k, v in deps.items()})


def test_provider_is_the_package_itself_or_the_first() -> None:
    # rpmalSatisfiesDepend: a self-provided dependency orders nothing; else the first
    # provider of the transaction is taken, not every one
    a = _pkg("a", depends=(Relation("virt"),), provides=(Relation("virt"),))
    b = _pkg("b", provides=(Relation("virt"),))
    c = _pkg("c", depends=(Relation("virt"),))
    rel = record([a, b, c])
    assert rel.count == (0, 0, 1)
    assert rel.requires[2] == ((0, 0),)


def test_reverse_and_weak_relations() -> None:
    # Supplements points back at the supplementing package; Recommends is an ordinary relation
    a = _pkg("a", supplements=(Relation("b"),))
    b = _pkg("b", recommends=(Relation("a", flags=SCRIPT_PRE),))
    rel = record([a, b])
    assert rel.requires[1] == ((0, 0),)  # b after a, once, never strong
    assert rel.count == (0, 1)
