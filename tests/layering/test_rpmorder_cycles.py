"""rpm's install order through dependency loops (layering.rpmorder),
against the orders the real ``rpm -i`` (4.18.0) gave for the sets of tests/layering/rpmshapes.py
(tests/layering/test_rpmorder_oracle.py checks them against rpm again)."""

from __future__ import annotations

import pytest

from importers.model import PackageMeta
from layering.rpmorder import install_order
from tests.layering.rpmshapes import RPM_ORDERS, SHAPES, metas


def _names(pkgs: list[PackageMeta]) -> list[str]:
    return [p.name for p in pkgs]


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_the_order_rpm_gave(shape: str) -> None:
    assert _names(install_order(metas(SHAPES[shape]))) == RPM_ORDERS[shape]


def test_a_prerequisite_in_a_loop_is_kept() -> None:
    # a Requires(pre) c inside the loop a <- b <- c <- a: c goes first though a sorts first
    order = _names(install_order(metas(SHAPES["pre-in-cycle"])))
    assert order.index("c") < order.index("a")
    order = _names(install_order(metas(SHAPES["distro-like"])))
    assert order.index("setup") < order.index("filesystem")  # filesystem's %pre needs setup
    assert order.index("bash") < order.index("glibc")  # glibc's %post needs /bin/sh


def test_prerequisites_kept_in_any_input_order() -> None:
    pkgs = metas(SHAPES["distro-like"])
    for rot in range(len(pkgs)):
        order = _names(install_order(pkgs[rot:] + pkgs[:rot]))
        assert sorted(order) == sorted(_names(pkgs))
        assert order.index("setup") < order.index("filesystem")
        assert order.index("bash") < order.index("glibc")
