"""Pending/rollback/merge selection on a state with and without a booted deployment."""

from __future__ import annotations

from boot.admin import pending_and_rollback
from boot.deployment import Deployment
from boot.sysroot import SysrootState, with_indices


def dep(csum_char: str, stateroot: str = "os", serial: int = 0) -> Deployment:
    return Deployment(stateroot, csum_char * 64, serial, "b" * 64)


def test_scratch_sysroot_reference_is_the_default() -> None:
    a, b, c = dep("1"), dep("2"), dep("3")
    state = SysrootState(0, 0, tuple(with_indices([a, b, c])))
    pending, rollback = pending_and_rollback(state)
    assert pending is None and rollback is not None and rollback.same(b)
    assert state.merge_deployment("os").same(a)  # type: ignore[union-attr]


def test_booted_host_pending_and_rollback() -> None:
    new, booted, old, other = dep("1"), dep("2"), dep("3"), dep("4", "alt")
    deps = tuple(with_indices([new, other, booted, old]))
    state = SysrootState(1, 0, deps, booted=deps[2])
    pending, rollback = pending_and_rollback(state)
    assert pending is not None and pending.same(new)
    assert rollback is not None and rollback.same(old)
    assert state.merge_deployment("os").same(booted)  # type: ignore[union-attr]
    assert state.merge_deployment("alt").same(other)  # type: ignore[union-attr]


def test_bootserials_count_equal_kernels_in_order() -> None:
    deps = with_indices([dep("1"), dep("2"), Deployment("os", "3" * 64, 0, "c" * 64), dep("4")])
    assert [(d.index, d.bootserial) for d in deps] == [(0, 0), (1, 1), (2, 0), (3, 2)]
