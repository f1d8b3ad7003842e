"""Reading HTTP bodies within a cap, and HTTP failures in plain words (for store.replication.http).

A body goes into a :class:`Sink` through a :class:`BodyReader`, which refuses
it (TooLargeError) as soon as it passes the caller's cap, or the cap its own
first bytes declare.  :class:`SpillSink` keeps a body in memory up to
SPILL_SIZE and in a temporary file beyond.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from store.errors import NetworkError

SPILL_SIZE = 4 << 20  # fetch_many keeps bodies up to this in memory, bigger ones go to a file
HEAD = 1 << 16  # how much of a body a HeadLimit sees

HeadLimit = Callable[[bytes], int]


class TooLargeError(NetworkError):
    """A body is larger than the caller's cap."""


class RetryableError(Exception):
    """An attempt failed in a way worth trying again; the text says why."""


class Sink(Protocol):
    """Where :meth:`Fetcher.get_into` writes a body; ``reset`` forgets a failed attempt."""

    def write(self, data: bytes, /) -> object: ...

    def reset(self) -> None: ...


class FileSink:
    """A sink writing into an open binary file (truncated again on a retry)."""

    def __init__(self, f: object) -> None:
        self.f = f

    def write(self, data: bytes, /) -> object:
        return self.f.write(data)  # type: ignore[attr-defined]

    def reset(self) -> None:
        self.f.seek(0)  # type: ignore[attr-defined]
        self.f.truncate()  # type: ignore[attr-defined]


class MemorySink:
    """A sink holding the body in memory."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def write(self, data: bytes, /) -> object:
        self.buf += data
        return None

    def reset(self) -> None:
        self.buf = bytearray()


class BodyReader:
    """Feeds a body into a sink, enforcing the cap (and the cap its first bytes declare)."""

    def __init__(self, url: str, sink: Sink, limit: int, head_limit: HeadLimit | None,
                 declared: int | None) -> None:
        if declared is not None and declared > limit:
            raise TooLargeError(f"{url} is larger than {limit} bytes ({declared} announced)")
        self.url, self.sink, self.limit, self.declared = url, sink, limit, declared
        self.head_limit = head_limit
        self.head = b""
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if self.total > self.limit:
            raise TooLargeError(f"{self.url} is larger than {self.limit} bytes")
        if self.head_limit is not None:
            self.head += chunk
            if len(self.head) >= HEAD:
                self._apply_head()
        self.sink.write(chunk)

    def _apply_head(self) -> None:
        assert self.head_limit is not None
        self.limit = min(self.limit, self.head_limit(self.head))
        self.head_limit, self.head = None, b""
        if self.total > self.limit:
            raise TooLargeError(f"{self.url} is larger than its header allows ({self.limit} "
                                f"bytes)")

    def finish(self) -> None:
        if self.head_limit is not None:
            self._apply_head()
        if self.declared is not None and self.total != self.declared:
            raise RetryableError(f"truncated response fetching {self.url}")


class SpillSink:
    """Holds a body in memory up to SPILL_SIZE, then in a temporary file in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.buf = bytearray()
        self.file: tempfile._TemporaryFileWrapper[bytes] | None = None

    def write(self, data: bytes, /) -> object:
        if self.file is None and len(self.buf) + len(data) <= SPILL_SIZE:
            self.buf += data
            return None
        if self.file is None:
            self.file = tempfile.NamedTemporaryFile(dir=self.directory, prefix="fetch-",
                                                    delete=False)
            self.file.write(self.buf)
            self.buf = bytearray()
        return self.file.write(data)

    def reset(self) -> None:
        self.discard()
        self.buf = bytearray()

    def result(self) -> bytes | Path:
        if self.file is None:
            return bytes(self.buf)
        self.file.flush()
        return Path(self.file.name)

    def discard(self) -> None:
        if self.file is not None:
            self.file.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.file.name)
            self.file = None


def fits(body: bytes, head_limit: HeadLimit | None) -> bool:
    """Whether a pipelined body passes its header's cap (if not, the ordinary path
    fetches it again and raises the proper error)."""
    return head_limit is None or len(body) <= head_limit(body[:HEAD])


def content_length(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        return None
    return n if n >= 0 else None


_REASONS = (
    ("refused", "connection refused"),
    ("name or service not known", "host not found"),
    ("nodename nor servname", "host not found"),
    ("failed to resolve", "host not found"),
    ("temporary failure in name resolution", "host not found"),
    ("no route to host", "no route to host"),
    ("network is unreachable", "network unreachable"),
    ("timed out", "timed out"),
    ("incompleteread", "truncated response"),
    ("incomplete", "truncated response"),
    ("reset by peer", "connection reset"),
    ("remotedisconnected", "connection closed by the server"),
    ("remote end closed", "connection closed by the server"),
    ("certificate", "TLS certificate not trusted"),
    ("ssl", "TLS error"),
)


def describe(exc: BaseException | None) -> str:
    """The reason of a urllib3/socket error in a few plain words."""
    seen: list[str] = []
    while isinstance(exc, BaseException) and len(seen) < 5:
        seen.append(f"{type(exc).__name__} {exc}".lower())
        exc = getattr(exc, "reason", None) or exc.__cause__ or exc.__context__
    if isinstance(exc, str):
        seen.append(exc.lower())
    text = " ".join(seen)
    for needle, words in _REASONS:
        if needle in text:
            return words
    return "connection lost"


