"""Progress of long commands: a live display on a terminal, JSON lines on ``--progress-fd``.

The library reports :class:`store.progress.ProgressEvent` records through a
callback; this module turns them into

- a rich progress display on stderr (stage, bar, count, bytes, rate, ETA),
  only when stderr is a terminal and ``-q`` is not given; it refreshes only
  when an event arrives (no refresh thread, so a ``fork()`` during a package
  import copies no running display);
- one JSON object a line on file descriptor N with ``--progress-fd N``:
  ``{"stage", "done", "total", "bytes"}``.

A process forked by the library (the two-process unpack) never reports: the
sinks are switched off in a forked child.  A command opts in with the
:func:`progress_option` decorator and passes :func:`cli_progress` to the
library call.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from store.errors import InputError
from store.progress import ProgressEvent, ProgressFn

REFRESH = 0.1  # seconds between two redraws of the terminal display
F = TypeVar("F", bound=Callable[..., Any])


class JsonLines:
    """Writes each event as one JSON line to a file descriptor it does not own.

    A reader that goes away (EPIPE) stops the lines, never the operation.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.alive = True

    def __call__(self, event: ProgressEvent) -> None:
        if not self.alive:
            return
        line = (json.dumps(event.to_dict(), separators=(",", ":")) + "\n").encode()
        try:
            while line:
                line = line[os.write(self.fd, line):]
        except OSError:
            self.alive = False

    def close(self) -> None:
        """Nothing to release: the descriptor belongs to whoever passed it."""


class Display:
    """A rich progress display on stderr, one row per stage, redrawn only on events."""

    def __init__(self) -> None:
        self.progress: Any = None
        self.tasks: dict[str, Any] = {}
        self.last_draw = 0.0

    def _start(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description:<15}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[size]:>9}"), TextColumn("{task.fields[rate]:>11}"),
            TimeRemainingColumn(), console=Console(file=sys.stderr),
            auto_refresh=False, redirect_stdout=sys.stdout.isatty(), redirect_stderr=True)
        self.progress.start()

    def __call__(self, event: ProgressEvent) -> None:
        from rich.filesize import decimal

        if self.progress is None:
            self._start()
        task = self.tasks.get(event.stage)
        if task is None:
            task = self.tasks[event.stage] = self.progress.add_task(
                event.stage, total=event.total, size="", rate="")
        elapsed = self.progress.tasks[task].elapsed or 0.0
        rate = f"{decimal(int(event.bytes / elapsed))}/s" if event.bytes and elapsed > 0 else ""
        self.progress.update(task, completed=event.done, total=event.total,
                             size=decimal(event.bytes) if event.bytes else "", rate=rate)
        now = time.monotonic()
        ended = event.total is not None and event.done >= event.total
        if ended or event.done == 0 or now - self.last_draw >= REFRESH:
            self.last_draw = now
            self.progress.refresh()

    def close(self) -> None:
        """Draw the last state and give the terminal back."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class Sinks:
    """The callback handed to the library: every event to each sink, from one thread at a
    time, and nothing at all in a process forked meanwhile."""

    def __init__(self, sinks: list[Any]) -> None:
        self.sinks = sinks
        self.pid = os.getpid()
        self.lock = threading.Lock()

    def __call__(self, event: ProgressEvent) -> None:
        if os.getpid() != self.pid:
            return  # a forked child: only the parent reports
        with self.lock:
            for sink in self.sinks:
                sink(event)

    def close(self) -> None:
        """Stop every sink (the display draws its last state)."""
        for sink in self.sinks:
            sink.close()


_current: list[Sinks] = []


def cli_progress() -> ProgressFn | None:
    """The progress callback of the running command (None: nobody watches)."""
    return _current[0] if _current else None


def check_fd(fd: int) -> int:
    """``fd`` if it is an open descriptor this process may write; InputError otherwise."""
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except (OSError, OverflowError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else "out of range"
        raise InputError(f"--progress-fd {fd}: {reason[:1].lower()}{reason[1:]}") from None
    if flags & os.O_ACCMODE == os.O_RDONLY:
        raise InputError(f"--progress-fd {fd}: descriptor is open for reading only")
    return fd


def _sinks(fd: int | None) -> Sinks | None:
    from layering.cli.context import current

    c = current()
    out: list[Any] = []
    if fd is not None:
        out.append(JsonLines(check_fd(fd)))
    if not (c is not None and c.quiet) and sys.stderr.isatty():
        out.append(Display())
    return Sinks(out) if out else None


def progress_option(f: F) -> F:
    """Add ``--progress-fd N`` to a command and report its progress while it runs (see the
    module docstring); the command passes :func:`cli_progress` to the library."""

    @click.option("--progress-fd", type=int, default=None, metavar="N",
                  help="Write progress as JSON lines {stage, done, total, bytes} to fd N.")
    @functools.wraps(f)
    def wrapper(*args: Any, progress_fd: int | None, **kwargs: Any) -> Any:
        sinks = _sinks(progress_fd)
        _current[:] = [sinks] if sinks is not None else []
        try:
            return f(*args, **kwargs)
        finally:
            _current[:] = []
            if sinks is not None:
                sinks.close()

    return wrapper  # type: ignore[return-value]
