"""Advisory locks for repositories and sysroots: the one lock helper.

A lock is a file locked with ``flock`` (repositories, caches) or with an OFD
record lock (the sysroot's ``ostree/lock``, the lock ``ostree admin`` takes).
Whoever holds a lock exclusively writes ``PID COMMAND`` into the lock file and
empties it again before letting go, so that a process waiting for it can name
the holder (``/proc/locks`` names flock holders the record misses).

How long to wait is the caller's ``wait`` (0: try once), unless the program
has set a :class:`LockPolicy` (the CLI's ``--lock-timeout``): its timeout then
replaces every wait longer than 0.  The library never prints: a wait that
cannot start at once is reported once through the policy's ``notify``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import math
import os
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from store.errors import LockedError

_F_OFD_SETLK = 37
_FLOCK_STRUCT = "hhqqi4x"
_POLL = 0.05
_MAX_POLL = 0.5
_HOLDER_MAX = 200


class LockKind(StrEnum):
    """The locking call: ``flock`` or an OFD (open file description) record lock."""

    FLOCK = "flock"
    OFD = "ofd"


@dataclass(frozen=True)
class LockPolicy:
    """Process-wide lock settings, chosen by the program (the CLI), never by the library.

    ``timeout``: seconds to wait for any lock a caller would wait for (``math.inf``:
    as long as it takes; None: each caller's own wait).  ``notify``: told once,
    with a message naming the holder, when a wait begins.  ``holder``: how this
    process names itself in the lock files it holds.
    """

    timeout: float | None = None
    notify: Callable[[str], None] | None = None
    holder: str | None = None


@dataclass(eq=False)
class _Held:
    """One hold of a lock by this process (a thread of it)."""

    pid: int
    thread: int
    exclusive: bool
    depth: int
    reentrant: bool


_policy = LockPolicy()
_held: dict[str, list[_Held]] = {}
_held_guard = threading.Lock()


def set_policy(policy: LockPolicy) -> None:
    """Make ``policy`` apply to every lock this process takes from now on."""
    global _policy
    _policy = policy


def get_policy() -> LockPolicy:
    """The policy in force."""
    return _policy


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text.strip())[:_HOLDER_MAX]


def _self_name() -> str:
    if _policy.holder:
        return _printable(_policy.holder)
    return _cmdline(os.getpid()) or _printable(" ".join(sys.argv))


def _try_lock(fd: int, kind: LockKind, exclusive: bool) -> bool:
    try:
        if kind is LockKind.OFD:
            typ = fcntl.F_WRLCK if exclusive else fcntl.F_RDLCK
            fcntl.fcntl(fd, _F_OFD_SETLK, struct.pack(_FLOCK_STRUCT, typ, 0, 0, 0, 0))
        else:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
        return False
    return True


def _write_holder(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {_self_name()}\n".encode(), 0)


def _clear_holder(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return _printable(raw.replace(b"\0", b" ").decode(errors="replace"))


def _flock_pids(fd: int) -> list[int]:
    """Pids /proc/locks gives for flock locks on the file open at ``fd``."""
    st = os.fstat(fd)
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids: list[int] = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/locks").read_text().splitlines():
            f = line.split()
            if len(f) > 5 and f[1] == "FLOCK" and f[5] == dev and f[4].isdigit():
                pids.append(int(f[4]))
    return [p for p in dict.fromkeys(pids) if p != os.getpid()]


def describe_holder(fd: int) -> str:
    """``pid N (COMMAND)`` of a lock's holder, as far as it can be told, else ''.

    The record in the lock file when its pid is alive, else what /proc/locks says.
    """
    try:
        text = os.pread(fd, _HOLDER_MAX + 32, 0).decode(errors="replace")
    except OSError:
        text = ""
    pid, _, cmd = text.partition("\n")[0].partition(" ")
    if pid.isdigit() and os.path.exists(f"/proc/{pid}"):
        return f"pid {pid} ({_printable(cmd)})" if cmd.strip() else f"pid {pid}"
    return ", ".join(f"pid {p} ({c})" if (c := _cmdline(p)) else f"pid {p}"
                     for p in _flock_pids(fd))


def _effective_wait(wait: float) -> float:
    if wait > 0 and _policy.timeout is not None:
        return _policy.timeout
    return wait


def _acquire(fd: int, kind: LockKind, exclusive: bool, wait: float, what: str) -> None:
    wait = _effective_wait(wait)
    deadline = time.monotonic() + wait
    told, pause = False, _POLL
    while not _try_lock(fd, kind, exclusive):
        holder = describe_holder(fd)
        by = " by another process" + (f", {holder}" if holder else "")
        if time.monotonic() >= deadline:
            after = f"; gave up after {wait:g} s" if wait > 0 else ""
            raise LockedError(f"{what} is locked{by}{after}; retry when it is done")
        if not told and _policy.notify is not None:
            limit = "" if math.isinf(wait) else f" (at most {wait:g} s)"
            _policy.notify(f"waiting for {what}, locked{by}{limit}")
            told = True
        time.sleep(pause)
        pause = min(pause * 1.5, _MAX_POLL)


def _mine(h: _Held) -> bool:
    return h.pid == os.getpid() and h.thread == threading.get_ident()


def _reenter(key: str, exclusive: bool, what: str) -> _Held | None:
    """This process's re-entrant hold of ``key`` (one level deeper) when it has one."""
    with _held_guard:
        h = next((h for h in _held.get(key, ()) if h.reentrant and h.pid == os.getpid()), None)
        if h is None:
            return None
        if exclusive and not h.exclusive:
            raise LockedError(f"{what} is held shared by this process, which cannot also "
                              "lock it exclusively")
        h.depth += 1
        return h


def _check_self(key: str, exclusive: bool, what: str) -> None:
    """LockedError at once when this very thread holds ``key`` in a conflicting mode (it
    would wait for itself)."""
    with _held_guard:
        if any(_mine(h) and (h.exclusive or exclusive) for h in _held.get(key, ())):
            raise LockedError(f"{what} is locked by this process already")


def _register(key: str, exclusive: bool, reentrant: bool) -> _Held:
    h = _Held(os.getpid(), threading.get_ident(), exclusive, 1, reentrant)
    with _held_guard:
        _held.setdefault(key, []).append(h)
    return h


def _leave(key: str, h: _Held) -> None:
    with _held_guard:
        h.depth -= 1
        if h.depth == 0:
            _held[key].remove(h)
            if not _held[key]:
                del _held[key]


def _open(path: str | os.PathLike[str], reader: bool, mode: int) -> int | None:
    """The lock file opened to lock it; for a ``reader`` who may not write it, read-only
    (None: it cannot even be read)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
    except OSError as e:
        if not reader or e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, PermissionError):  # not even readable: a lock cannot be had
        return None


@contextlib.contextmanager
def file_lock(
    path: str | os.PathLike[str], *, exclusive: bool, wait: float = 0.0, what: str = "",
    kind: LockKind = LockKind.FLOCK, reentrant: bool = False, mode: int = 0o644,
    reader: bool = False,
) -> Iterator[None]:
    """Hold a shared or exclusive lock on ``path`` (created if absent) for the block.

    ``reader`` (a shared lock of someone who only reads): a process that may not write
    the lock file opens it read-only, and goes without a lock when it may neither
    create nor read it (a lock file that is absent or private to its owner).  Other
    shared locks (writers that may run side by side) need write access.

    Waits up to ``wait`` seconds (or the policy's timeout, see the module), then
    raises :class:`LockedError` naming ``what`` and the holder.  With ``reentrant``
    a process that holds the lock already passes straight in (the lock is let go
    when the outermost block ends).
    """
    what = what or str(path)
    key = os.path.realpath(path)
    held = _reenter(key, exclusive, what) if reentrant else None
    if held is not None:
        try:
            yield
        finally:
            _leave(key, held)
        return
    if wait > 0:
        _check_self(key, exclusive, what)
    fd = _open(path, reader and not exclusive, mode)
    if fd is None:  # a reader who may neither create nor read the lock file
        yield
        return
    try:
        _acquire(fd, kind, exclusive, wait, what)
        if exclusive:
            _write_holder(fd)
        held = _register(key, exclusive, reentrant)
        try:
            yield
        finally:
            _leave(key, held)
            if exclusive:
                _clear_holder(fd)
    finally:
        os.close(fd)
