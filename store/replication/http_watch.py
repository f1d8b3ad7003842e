"""Time limits of HTTP requests: a low-speed limit and an overall deadline, as libcurl's.

ostree sets ``CURLOPT_LOW_SPEED_LIMIT`` 1000 bytes/s and ``CURLOPT_LOW_SPEED_TIME``
30 s: a transfer slower than that for that long is abandoned.  A socket timeout
alone does not do this (a server that sends one byte a second never lets a read
time out), so one watchdog thread per process looks at every running request
each fraction of a second and, when one is too slow or past its deadline, shuts
its sockets down: the blocked read returns at once and the request fails with
the reason the watch recorded.  The limits come from the environment, so tests
can shorten them:

* ``STRATA_HTTP_LOW_SPEED_LIMIT`` (bytes/s, default 1000) and
  ``STRATA_HTTP_LOW_SPEED_TIME`` (seconds, default 30; 0 disables the check);
* ``STRATA_HTTP_DEADLINE`` (seconds for one response, default 1800; 0 disables);
* ``STRATA_HTTP_RETRIES`` (attempts after the first, default 3).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """How slow and how long one request may be, and how often it is retried."""

    low_speed_limit: int = 1000
    low_speed_time: float = 30.0
    deadline: float = 1800.0
    retries: int = 3

    @classmethod
    def from_env(cls, *, retries: int = 3) -> Limits:
        """The defaults, overridden by the ``STRATA_HTTP_*`` environment variables."""
        env = os.environ
        return cls(int(env.get("STRATA_HTTP_LOW_SPEED_LIMIT", cls.low_speed_limit)),
                   float(env.get("STRATA_HTTP_LOW_SPEED_TIME", cls.low_speed_time)),
                   float(env.get("STRATA_HTTP_DEADLINE", cls.deadline)),
                   int(env.get("STRATA_HTTP_RETRIES", retries)))


class Watch:
    """One request's clocks; when it expires, its sockets are shut down."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.expired = ""  # why the watchdog gave up, once it has
        self.done = False
        self._socks: list[socket.socket] = []
        self.restart()

    def restart(self) -> None:
        """Start the clocks again (the next response on a pipelined connection)."""
        now = time.monotonic()
        self.window_start, self.window_bytes = now, 0
        self.deadline = now + self.limits.deadline if self.limits.deadline > 0 else float("inf")

    def attach(self, sock: socket.socket) -> None:
        """Shut ``sock`` down too when this watch expires."""
        with _dog.lock:
            if self.expired:
                _shutdown(sock)
            self._socks.append(sock)

    def progress(self, n: int) -> None:
        """Count ``n`` bytes received."""
        self.window_bytes += n

    def check(self, now: float) -> None:
        """Expire when past the deadline or under the low-speed limit for a whole window
        (called by the watchdog with its lock held)."""
        lim = self.limits
        if now > self.deadline:
            self._expire(f"no complete answer within {lim.deadline:g} s")
        elif lim.low_speed_time > 0 and now - self.window_start >= lim.low_speed_time:
            if self.window_bytes < lim.low_speed_limit * lim.low_speed_time:
                self._expire(f"transfer too slow (under {lim.low_speed_limit} bytes/s "
                             f"for {lim.low_speed_time:g} s)")
            self.window_start, self.window_bytes = now, 0

    def _expire(self, reason: str) -> None:
        self.expired = reason
        for s in self._socks:
            _shutdown(s)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """The one thread that checks every running request's watch a few times a second."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.watches: set[Watch] = set()
        self.thread: threading.Thread | None = None

    def add(self, w: Watch) -> None:
        with self.lock:
            self.watches.add(w)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="http-watchdog",
                                               daemon=True)
                self.thread.start()

    def remove(self, w: Watch) -> None:
        with self.lock:
            w.done = True
            w._socks.clear()  # noqa: SLF001 - the watch is over: never shut a reused socket
            self.watches.discard(w)

    def _run(self) -> None:
        """Look at every watch each tick (never woken by add: requests come by the thousand)."""
        with self.lock:
            while True:
                self.wake.wait(self._tick())
                now = time.monotonic()
                for w in list(self.watches):
                    if not w.expired:
                        w.check(now)

    def _tick(self) -> float:
        times = [w.limits.low_speed_time for w in self.watches if w.limits.low_speed_time > 0]
        return max(0.05, min([0.5, *(t / 8 for t in times)]))  # an idle process: 2 wake-ups/s


_dog = _Watchdog()
_current = threading.local()


def _reset_after_fork() -> None:
    """A forked child has none of the parent's threads: start from a fresh watchdog (its
    lock may have been held by the parent's watchdog thread at the fork)."""
    global _dog
    _dog = _Watchdog()


os.register_at_fork(after_in_child=_reset_after_fork)


@contextlib.contextmanager
def watching(limits: Limits) -> Iterator[Watch]:
    """A watch for the request made inside the block; connections opened or used in this
    thread meanwhile attach their sockets to it."""
    w = Watch(limits)
    _dog.add(w)
    _current.watch = w
    try:
        yield w
    finally:
        _current.watch = None
        _dog.remove(w)


def expire_all(reason: str) -> None:
    """Expire every running request of this process now (a Ctrl-C: the threads blocked
    reading a stalled server return at once)."""
    with _dog.lock:
        for w in list(_dog.watches):
            if not w.expired:
                w._expire(reason)  # noqa: SLF001 - the watchdog's own


def attach_current(sock: socket.socket | None) -> None:
    """Put ``sock`` under the watch of the request running in this thread, if any."""
    w: Watch | None = getattr(_current, "watch", None)
    if w is not None and sock is not None:
        w.attach(sock)
