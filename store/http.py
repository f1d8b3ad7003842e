"""Fetching files of a remote repository over ``http(s)://`` or ``file://``.

One :class:`Fetcher` per remote: a urllib3 pool of reused keep-alive
connections, ``max_in_flight`` requests at once (OSTree uses 8), retries with
exponential backoff on connection errors, truncated bodies and 5xx answers,
a redirect limit, and the ``http_proxy``/``https_proxy``/``no_proxy``
variables honoured.  ``file://`` URLs are read from the local filesystem so
that a repository directory is a remote too.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TypeVar

import urllib3
from urllib3.exceptions import HTTPError, MaxRetryError, ProtocolError, ResponseError

from store.errors import NetworkError

T = TypeVar("T")
R = TypeVar("R")

RETRY_STATUS = frozenset({500, 502, 503, 504})
PIPELINE_DEPTH = 32


class NotFoundError(NetworkError):
    """The server answered 404 (or the ``file://`` path does not exist)."""


@dataclass(frozen=True)
class FetchStats:
    """What a fetcher has transferred so far."""

    requests: int
    bytes: int


class Fetcher:
    """Fetches paths relative to a base URL; safe to call from many threads."""

    def __init__(
        self,
        base_url: str,
        *,
        max_in_flight: int = 8,
        retries: int = 3,
        backoff: float = 0.2,
        max_redirects: int = 5,
        timeout: float = 30.0,
        ca_certs: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.max_in_flight = max_in_flight
        self.retries = int(os.environ.get("STRATA_HTTP_RETRIES", retries))
        self.backoff = backoff
        self.max_redirects = max_redirects
        try:
            parts = urllib.parse.urlsplit(self.base_url)
            parts.port  # noqa: B018  (raises ValueError on a bad port)
        except ValueError as e:
            raise NetworkError(f"invalid URL {base_url!r}: {e}") from None
        self._scheme = parts.scheme
        if self._scheme not in ("http", "https", "file"):
            raise NetworkError(f"unsupported URL scheme in {base_url}")
        self._pool = (None if self._scheme == "file"
                      else _make_pool(self.base_url, max_in_flight, timeout, ca_certs))
        self._retry = urllib3.Retry(total=None, connect=0, read=0, status=0, other=0,
                                    redirect=max_redirects, raise_on_redirect=True,
                                    raise_on_status=False)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._executor: ThreadPoolExecutor | None = None
        self._split = urllib.parse.urlsplit(self.base_url)
        self._timeout = timeout
        self._pipelining = self._scheme == "http" and not _proxy_for(self.base_url)
        self._requests = 0
        self._bytes = 0

    def url_for(self, path: str) -> str:
        """The absolute URL of ``path`` (relative to the base URL)."""
        return self.base_url + path.lstrip("/")

    @property
    def stats(self) -> FetchStats:
        """Requests made and body bytes received so far."""
        with self._lock:
            return FetchStats(self._requests, self._bytes)

    def get(self, path: str) -> bytes:
        """The whole body of ``path``; raises NotFoundError on 404, NetworkError otherwise."""
        url = self.url_for(path)
        with self._lock:
            self._requests += 1
        data = _read_file_url(url) if self._pool is None else self._get_http(url)
        with self._lock:
            self._bytes += len(data)
        return data

    def get_optional(self, path: str) -> bytes | None:
        """Like :meth:`get`, but None when the server says the file does not exist."""
        try:
            return self.get(path)
        except NotFoundError:
            return None

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """Run ``fn`` on every item with ``max_in_flight`` workers; yield results as they finish.

        The first exception stops submitting new work, waits for the running
        calls and is re-raised.
        """
        window = self.max_in_flight * 2
        it = iter(items)
        ex = self._workers()
        pending: set[Future[R]] = {ex.submit(fn, x) for x in itertools.islice(it, window)}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
                for x in itertools.islice(it, window - len(pending)):
                    pending.add(ex.submit(fn, x))
        finally:
            for fut in pending:
                fut.cancel()
            if pending:
                wait(pending)

    def _workers(self) -> ThreadPoolExecutor:
        """The fetcher's worker threads (kept for its lifetime, so connections are reused)."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=self.max_in_flight,
                                                    thread_name_prefix="fetch")
            return self._executor

    def fetch_many(self, paths: Iterable[str], fn: Callable[[str, bytes], R]) -> Iterator[R]:
        """Fetch every path and run ``fn(path, body)`` in a worker; yield results as they finish.

        On plain ``http://`` without a proxy, requests are pipelined
        (``PIPELINE_DEPTH`` ahead on each of ``max_in_flight`` kept-alive
        connections); any answer other than a complete 200 goes through
        :meth:`get` (retries, redirects, typed errors) instead.
        """
        if not self._pipelining:
            yield from self.map_unordered(lambda p: fn(p, self.get(p)), paths)
            return
        items = list(paths)
        depth = max(1, min(PIPELINE_DEPTH, -(-len(items) // self.max_in_flight)))
        batches = [items[i:i + depth] for i in range(0, len(items), depth)]
        for results in self.map_unordered(lambda b: self._batch(b, fn), batches):
            yield from results

    def _batch(self, batch: list[str], fn: Callable[[str, bytes], R]) -> list[R]:
        bodies = self._pipeline(batch) if self._pipelining else {}
        out = []
        for path in batch:
            data = bodies.get(path)
            if data is None:
                data = self.get(path)
            else:
                with self._lock:
                    self._requests += 1
                    self._bytes += len(data)
            out.append(fn(path, data))
        return out

    def _pipeline(self, batch: list[str]) -> dict[str, bytes]:
        """Bodies of the paths the server answered 200 in full on a pipelined connection."""
        conn: _PipeConn | None = getattr(self._local, "conn", None)
        got: dict[str, bytes] = {}
        try:
            if conn is None:
                conn = self._local.conn = _PipeConn(self._split, self._timeout)
            conn.send([self._split.path.rstrip("/") + "/" + p.lstrip("/") for p in batch])
            for i, path in enumerate(batch):
                status, body, close = conn.read_response()
                if status == 200:
                    got[path] = body
                if close:
                    if i == 0 and conn.answered == 1:
                        self._pipelining = False  # an HTTP/1.0 or no-keep-alive server
                    raise _PipeError("server closed the connection")
        except (OSError, _PipeError, ValueError):
            if conn is not None:
                conn.close()
            self._local.conn = None
        return got

    def close(self) -> None:
        """Stop the worker threads and close pooled connections."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if self._pool is not None:
            self._pool.clear()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get_http(self, url: str) -> bytes:
        assert self._pool is not None
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * (2 ** (attempt - 1)))
            try:
                resp = self._pool.urlopen("GET", url, retries=self._retry, redirect=True,
                                          preload_content=True, decode_content=False)
            except MaxRetryError as e:
                if isinstance(e.reason, ResponseError):
                    raise NetworkError(f"too many redirects fetching {url}") from e
                last = _describe(e.reason)
                continue
            except (ProtocolError, HTTPError) as e:
                last = _describe(e)
                continue
            if resp.status == 404 or resp.status == 410:
                raise NotFoundError(f"not found (HTTP {resp.status}): {url}")
            if resp.status in RETRY_STATUS:
                last = f"HTTP {resp.status}"
                continue
            if 300 <= resp.status < 400:
                raise NetworkError(f"too many redirects fetching {url}")
            if resp.status != 200:
                raise NetworkError(f"HTTP {resp.status} fetching {url}")
            return resp.data
        raise NetworkError(f"{last} fetching {url} (after {self.retries + 1} attempts)")


def _describe(exc: BaseException | None) -> str:
    text = str(exc) if exc is not None else "connection error"
    if "IncompleteRead" in text or "incomplete" in text.lower():
        return "truncated response"
    if "refused" in text.lower():
        return "connection refused"
    return text.split(": ", 1)[-1][:200] or type(exc).__name__


def _read_file_url(url: str) -> bytes:
    import urllib.request

    path = urllib.request.url2pathname(urllib.parse.urlsplit(url).path)
    try:
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError) as e:
        raise NotFoundError(f"not found: {url}") from e
    except OSError as e:
        raise NetworkError(f"cannot read {url}: {e.strerror}") from e


def _proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url`` (honouring ``no_proxy``), or None."""
    if not any(name.lower().endswith("_proxy") for name in os.environ):
        return None  # what getproxies() would find, without importing urllib.request
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        return proxy
    return None


def _make_pool(base_url: str, maxsize: int, timeout: float,
               ca_certs: str | None) -> urllib3.PoolManager:
    """A pool manager, through a proxy when the environment names one for this host."""
    kw = dict(num_pools=4, maxsize=maxsize, block=True,
              timeout=urllib3.Timeout(connect=min(timeout, 10.0), read=timeout))
    if ca_certs:
        kw["ca_certs"] = ca_certs
    proxy = _proxy_for(base_url)
    if proxy:
        return urllib3.ProxyManager(proxy, **kw)  # type: ignore[arg-type]
    return urllib3.PoolManager(**kw)  # type: ignore[arg-type]


class _PipeError(Exception):
    """The pipelined connection can no longer be trusted; use the pooled path."""


class _PipeConn:
    """One kept-alive HTTP/1.1 connection carrying pipelined GETs (static files only)."""

    def __init__(self, url: urllib.parse.SplitResult, timeout: float) -> None:
        self.host = url.netloc
        self.sock = socket.create_connection((url.hostname or "", url.port or 80),
                                             timeout=min(timeout, 10.0))
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb", buffering=1 << 16)
        self.answered = 0

    def send(self, paths: list[str]) -> None:
        self.sock.sendall(b"".join(
            f"GET {urllib.parse.quote(p, safe='/+')} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"User-Agent: strata\r\n\r\n".encode() for p in paths))

    def read_response(self) -> tuple[int, bytes, bool]:
        """(status, body, server will close) of the next response."""
        line = self.reader.readline(65537)
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise _PipeError("bad status line")
        status, length, close = int(parts[1]), -1, parts[0] == b"HTTP/1.0"
        while True:
            h = self.reader.readline(65537)
            if h in (b"\r\n", b"\n"):
                break
            if not h:
                raise _PipeError("connection closed in headers")
            name, _, value = h.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                close = b"close" in value.lower()
            elif name == b"transfer-encoding":
                raise _PipeError("chunked response")
        if length < 0:
            raise _PipeError("no content-length")
        body = self.reader.read(length)
        if len(body) != length:
            raise _PipeError("truncated body")
        self.answered += 1
        return status, body, close

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.reader.close()
            self.sock.close()
