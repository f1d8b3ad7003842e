"""Progress events: how long operations say what they are doing, without printing.

The library never prints.  A long operation (pull, package import, compose,
deploy, static-delta generation) takes an optional ``progress`` callback and
calls it with :class:`ProgressEvent` records: one when a stage starts
(``done`` 0), then as work is counted (at most every :data:`INTERVAL` seconds),
and one when the stage ends (``done == total`` for a counted stage).  The CLI
turns them into a terminal display or JSON lines (``--progress-fd``).

Every layer may import this module (``store`` uses nothing of ours).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

INTERVAL = 0.05  # seconds between two reports of the same stage (start and end always report)


@dataclass(frozen=True)
class ProgressEvent:
    """Where a stage stands: ``done`` of ``total`` items (None: not counted), ``bytes`` moved.

    Guarantees ``0 <= done`` and, when ``total`` is known, ``done <= total``.
    """

    stage: str
    done: int
    total: int | None
    bytes: int = 0

    def to_dict(self) -> dict[str, object]:
        """The event as the JSON object ``--progress-fd`` writes."""
        return asdict(self)


ProgressFn = Callable[[ProgressEvent], None]


def no_progress(_event: ProgressEvent) -> None:
    """The default callback: ignores every event."""


class Stage:
    """The counters of one running stage, reported through ``fn`` cheaply.

    :meth:`advance` costs one addition and one clock read when nobody listens
    less than :data:`INTERVAL` after the last report; ``done`` never passes
    ``total`` (the total grows first when more work is found).
    """

    __slots__ = ("fn", "name", "done", "total", "bytes", "_last")

    def __init__(self, fn: ProgressFn | None, name: str, total: int | None = None,
                 nbytes: int = 0) -> None:
        self.fn = fn if fn is not None else no_progress
        self.name, self.done, self.total, self.bytes = name, 0, total, nbytes
        self._last = 0.0
        self.report()

    def grow(self, n: int) -> None:
        """Count ``n`` more items to do (a total learnt as the work goes)."""
        self.total = (self.total or 0) + n

    def advance(self, n: int = 1, nbytes: int = 0, *, bytes_now: int | None = None) -> None:
        """Count ``n`` items done and ``nbytes`` more bytes (or ``bytes_now`` in all); report
        when :data:`INTERVAL` has passed since the last report."""
        self.done += n
        if self.total is not None and self.done > self.total:
            self.total = self.done
        self.bytes = bytes_now if bytes_now is not None else self.bytes + nbytes
        if self.fn is not no_progress and time.monotonic() - self._last >= INTERVAL:
            self.report()

    def report(self) -> None:
        """Report the counters now."""
        if self.fn is no_progress:
            return
        self._last = time.monotonic()
        self.fn(ProgressEvent(self.name, self.done, self.total, self.bytes))

    def finish(self, *, bytes_now: int | None = None) -> None:
        """Report the end of the stage: a counted stage ends with ``done == total``."""
        if self.total is None:
            self.total = self.done
        self.done = self.total
        if bytes_now is not None:
            self.bytes = bytes_now
        self.report()

