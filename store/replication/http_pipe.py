"""HTTP/1.1 pipelining for :class:`store.replication.http.Fetcher`: many GETs on one
kept-alive connection.

Only plain ``http://`` without a proxy, only complete ``200`` answers with a
``Content-Length`` no larger than the caller's in-memory limit; anything else
raises :class:`PipeError` and the caller fetches the rest the ordinary way.
Every body is read in pieces, each counted by the request's watch (the
low-speed limit and deadline of :mod:`store.replication.http_watch`).
"""

from __future__ import annotations

import contextlib
import io
import socket
import urllib.parse
from typing import cast

from store.replication.http_watch import Watch

READ_PIECE = 1 << 16


class PipeError(Exception):
    """The pipelined connection can no longer be trusted; use the pooled path."""


class PipeConn:
    """One kept-alive HTTP/1.1 connection carrying pipelined GETs (static files only)."""

    def __init__(self, url: urllib.parse.SplitResult, timeout: float) -> None:
        self.host = url.netloc
        self.sock = socket.create_connection((url.hostname or "", url.port or 80),
                                             timeout=min(timeout, 10.0))
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # a BufferedReader; typeshed says IOBase for any buffering but -1 or 1
        self.reader = cast(io.BufferedReader, self.sock.makefile("rb", buffering=1 << 16))
        self.answered = 0

    def send(self, paths: list[str]) -> None:
        self.sock.sendall(b"".join(
            f"GET {urllib.parse.quote(p, safe='/+')} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"User-Agent: strata\r\n\r\n".encode() for p in paths))

    def read_response(self, watch: Watch, limit: int) -> tuple[int, bytes, bool]:
        """(status, body, server will close) of the next response; a body over ``limit``
        bytes raises PipeError before it is read."""
        status, length, close = self._read_head()
        if length < 0:
            raise PipeError("no content-length")
        if length > limit:
            raise PipeError("body over the in-memory limit")
        pieces, got = [], 0
        while got < length:
            piece = self.reader.read1(min(READ_PIECE, length - got))
            if not piece:
                raise PipeError("truncated body")
            pieces.append(piece)
            got += len(piece)
            watch.progress(len(piece))
        body = b"".join(pieces)
        self.answered += 1
        return status, body, close

    def _read_head(self) -> tuple[int, int, bool]:
        line = self.reader.readline(65537)
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise PipeError("bad status line")
        status, length, close = int(parts[1]), -1, parts[0] == b"HTTP/1.0"
        for _ in range(200):
            h = self.reader.readline(65537)
            if h in (b"\r\n", b"\n"):
                return status, length, close
            if not h:
                raise PipeError("connection closed in headers")
            name, _, value = h.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                close = b"close" in value.lower()
            elif name == b"transfer-encoding":
                raise PipeError("chunked response")
        raise PipeError("too many header lines")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.reader.close()
            self.sock.close()
