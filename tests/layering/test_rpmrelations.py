"""The ordering relations rpm records (layering.rpmrelations), as rpm 4.18's lib/order.c,
lib/rpmal.c and include/rpm/rpmds.h define them."""

from __future__ import annotations

from importers.model import DepKind, Op, PackageMeta, PackageType, Relation
from layering.rpmrelations import (
    MISSINGOK,
    POSTTRANS,
    PREREQ,
    RPMLIB,
    SCRIPT_POST,
    SCRIPT_POSTUN,
    SCRIPT_PRE,
    is_unordered,
    overlap,
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


def _names_of(text: str) -> list[str]:
    return [r.name for r in rich_terms(text)]


def test_rich_dependency_operands() -> None:
    assert _names_of("(a or b or c)") == ["a", "b", "c"]
    assert _names_of("(a >= 1.0 and (b or c(x86-64)))") == ["a", "b", "c(x86-64)"]
    assert rich_terms("(a >= 1.0 or b)")[0] == Relation("a", Op.GE, "1.0")
    assert _names_of("(a if b else c)") == ["a"]  # rpm 4.18 never orders on the else part
    assert _names_of("(a with b)") == ["a"]
    assert _names_of("(a unless (b and c))") == ["a"]
    assert _names_of("(rpmlib(RichDependencies) or a)") == ["a"]
    deep = "(" * 5000 + "a" + ")" * 5000  # a hostile header: bounded, no RecursionError
    assert rich_terms(deep) == []
    assert rich_terms("((a or b") == []  # unbalanced: nothing


def test_version_ranges_overlap_as_rpmdscompare() -> None:
    def ov(a: str, b: str) -> bool:
        (na, oa, va), (nb, ob, vb) = a.split(), b.split()
        return overlap(Relation(na, Op(oa), va), Relation(nb, Op(ob), vb))

    assert ov("v = 2", "v >= 2") and not ov("v = 1", "v >= 2")
    assert ov("v = 1.0-3", "v = 1.0")  # no release on one side: any release
    assert not ov("v = 1.0-3", "v < 1.0")
    assert not ov("v = 1.0-3", "v = 1.0-4") and ov("v = 1.0-3", "v <= 1.0-4")
    assert ov("v = 1:0.5", "v > 2") and not ov("v = 0.5", "v > 2")  # epoch wins
    assert ov("v = 2", "v > 1:1") is False  # a missing epoch is below epoch 1
    assert ov("v >= 1", "v < 2") and not ov("v > 2", "v < 2")
    assert overlap(Relation("v"), Relation("v", Op.LT, "0"))  # unversioned: always


def _pkg(name: str, **deps: tuple[Relation, ...]) -> PackageMeta:
    return PackageMeta(PackageType.RPM, name, "1", "noarch",
                       deps={DepKind(k): tuple((r,) for r in v) for k, v in deps.items()})


def test_provider_is_the_package_itself_or_the_first() -> None:
    # rpmalSatisfiesDepend: a self-provided dependency orders nothing; else the first
    # provider of the transaction whose version matches is taken, not every one
    a = _pkg("a", depends=(Relation("virt"),), provides=(Relation("virt", Op.EQ, "1"),))
    b = _pkg("b", provides=(Relation("virt", Op.EQ, "2"),))
    c = _pkg("c", depends=(Relation("virt"),))
    d = _pkg("d", depends=(Relation("virt", Op.GE, "2"), Relation("c", Op.LT, "1")))
    rel = record([a, b, c, d])
    assert rel.count == (0, 0, 1, 1)
    assert rel.requires[2] == ((0, 0),)
    assert rel.requires[3] == ((1, 0),)  # c is at version 1: not < 1


def test_reverse_and_weak_relations() -> None:
    # Supplements points back at the supplementing package; Recommends is an ordinary relation
    a = _pkg("a", supplements=(Relation("b"),))
    b = _pkg("b", recommends=(Relation("a", flags=SCRIPT_PRE),))
    rel = record([a, b])
    assert rel.requires[1] == ((0, 0),)  # b after a, once, never strong
    assert rel.count == (0, 1)
