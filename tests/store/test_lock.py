"""store.lock: the holder is named, the policy decides how long to wait, a process does not
wait for itself, the sysroot lock is re-entrant."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest

from store.errors import LockedError
from store.lock import LockKind, LockPolicy, file_lock, get_policy, set_policy


@pytest.fixture(autouse=True)
def _default_policy() -> Iterator[None]:
    old = get_policy()
    yield
    set_policy(old)


def _hold(path: str, exclusive: bool, kind: str, ready: Event, release: Event) -> None:
    set_policy(LockPolicy(holder="strata install hello"))
    with file_lock(path, exclusive=exclusive, kind=LockKind(kind)):
        ready.set()
        release.wait(30)


def _holder(path: Path, *, exclusive: bool = True, kind: LockKind = LockKind.FLOCK):
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold, args=(str(path), exclusive, kind.value, ready, release))
    p.start()
    assert ready.wait(30)
    return p, release


@pytest.mark.parametrize("kind", list(LockKind))
def test_waiter_names_the_holder_and_gives_up_after_the_policy_timeout(
        tmp_path: Path, kind: LockKind) -> None:
    lock = tmp_path / "lock"
    told: list[str] = []
    set_policy(LockPolicy(timeout=0.3, notify=told.append))
    p, release = _holder(lock, kind=kind)
    try:
        with pytest.raises(LockedError) as e, file_lock(lock, exclusive=True, wait=600,
                                                        what="sysroot /x", kind=kind):
            pass
    finally:
        release.set()
        p.join()
    msg = str(e.value)
    assert f"sysroot /x is locked by another process, pid {p.pid} (strata install hello)" in msg
    assert "gave up after 0.3 s" in msg
    assert len(told) == 1 and f"pid {p.pid} (strata install hello)" in told[0]
    assert lock.read_text() == ""  # the holder emptied its record when it let go
    with file_lock(lock, exclusive=True, wait=1):
        assert lock.read_text().startswith(f"{os.getpid()} ")


def test_try_lock_stays_a_try_lock_under_a_policy(tmp_path: Path) -> None:
    set_policy(LockPolicy(timeout=float("inf")))
    p, release = _holder(tmp_path / "lock")
    try:
        with pytest.raises(LockedError), file_lock(tmp_path / "lock", exclusive=True):
            pass
    finally:
        release.set()
        p.join()


def test_shared_holders_named_from_proc_locks(tmp_path: Path) -> None:
    p, release = _holder(tmp_path / "lock", exclusive=False)
    try:
        with pytest.raises(LockedError, match=f"pid {p.pid} "), \
                file_lock(tmp_path / "lock", exclusive=True, wait=0.1):
            pass
        with file_lock(tmp_path / "lock", exclusive=False, wait=0.1):
            pass  # shared with shared
    finally:
        release.set()
        p.join()


def test_reentrant_and_self_conflict(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    with file_lock(lock, exclusive=True, wait=1, kind=LockKind.OFD, reentrant=True):
        with file_lock(lock, exclusive=True, wait=1, kind=LockKind.OFD, reentrant=True):
            pass
        ctx = multiprocessing.get_context("fork")
        q = ctx.Queue()
        proc = ctx.Process(target=_try_in_child, args=(str(lock), q))
        proc.start()
        assert q.get(timeout=30) == "locked"  # still held after the inner block ended
        proc.join()
    with file_lock(lock, exclusive=False, wait=1), pytest.raises(LockedError, match="already"):
        with file_lock(lock, exclusive=True, wait=600):  # would wait for itself
            pass


def _try_in_child(path: str, q: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    try:
        with file_lock(path, exclusive=True, kind=LockKind.OFD, reentrant=True):
            q.put("got it")
    except LockedError:
        q.put("locked")


def test_a_stale_or_hostile_record_is_not_echoed(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    p, release = _holder(lock, exclusive=False)  # shared: writes no record of its own
    lock.write_text(f"{os.getpid()} evil\x1b]0;title\x07\x1b[2J\n")
    try:
        with pytest.raises(LockedError) as e, file_lock(lock, exclusive=True, wait=0.1):
            pass
        assert "\x1b" not in str(e.value) and "\x07" not in str(e.value)
        lock.write_text("999999999 long gone\n")  # a dead pid: /proc/locks names the holder
        with pytest.raises(LockedError, match=f"pid {p.pid} "), \
                file_lock(lock, exclusive=True, wait=0.1):
            pass
    finally:
        release.set()
        p.join()
