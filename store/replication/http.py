"""The one HTTP(S) client of strata: fetching files over ``http(s)://`` or ``file://``.

A :class:`Fetcher` serves paths relative to a base URL (a remote repository)
or absolute URLs (package sources).  Every read is bounded:

* size: each call names a cap (``limit``); a body is never read beyond
  ``limit + 1`` bytes, and a ``Content-Length`` over the cap fails before
  the body is read.  Small bodies come back as bytes; big ones stream into a
  caller's file (:meth:`Fetcher.get_into`) or a temporary file
  (:meth:`Fetcher.fetch_many` with ``spill_dir``);
* time: a low-speed limit and a deadline for every response
  (:mod:`store.replication.http_watch`, ``STRATA_HTTP_*`` variables), connect timeout 10 s;
* retries: at most ``STRATA_HTTP_RETRIES`` (3) more attempts, with backoff,
  after a connection error, a truncated body or a 5xx answer; never after a
  too-slow or too-large answer.

Requests use a urllib3 pool of kept-alive connections (``max_in_flight`` at
once, ostree uses 8) and, on plain ``http://`` without a proxy, pipelining
(:mod:`store.replication.http_pipe`).  Proxies come from ``http_proxy``/``https_proxy``/
``no_proxy``, decided per URL.  Redirects are followed by hand (at most 5,
only to ``http(s)``).  Failures raise :class:`~store.errors.NetworkError`
with the URL and the reason in plain words.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from store.errors import NetworkError
from store.replication.http_io import (
    SPILL_SIZE,
    BodyReader,
    FileSink,
    HeadLimit,
    MemorySink,
    RetryableError,
    Sink,
    SpillSink,
    TooLargeError,
    content_length,
    describe,
    fits,
)
from store.replication.http_pipe import PipeConn, PipeError
from store.replication.http_watch import Limits, Watch, expire_all, watching

if TYPE_CHECKING:
    import urllib3

T = TypeVar("T")
R = TypeVar("R")

METADATA_CAP = 10 << 20  # ostree's historic OSTREE_MAX_METADATA_SIZE
SUMMARY_CAP = 32 << 20
CHUNK = 1 << 16
__all__ = ["METADATA_CAP", "SUMMARY_CAP", "SPILL_SIZE", "Fetcher", "FetchStats", "FileSink",
           "NetworkError", "NotFoundError", "Reply", "Sink", "TooLargeError"]
RETRY_STATUS = frozenset({500, 502, 503, 504})
REDIRECTS = frozenset({301, 302, 303, 307, 308})
PIPELINE_DEPTH = 32


class NotFoundError(NetworkError):
    """The server answered 404 (or the ``file://`` path does not exist)."""


@dataclass(frozen=True)
class FetchStats:
    """What a fetcher has transferred so far."""

    requests: int
    bytes: int


@dataclass(frozen=True)
class Reply:
    """The status (200, or 304 for a conditional request) and headers of an answer."""

    status: int
    headers: Mapping[str, str]


class Fetcher:
    """Fetches paths relative to a base URL (or absolute URLs); safe to call from many threads."""

    def __init__(self, base_url: str = "", *, max_in_flight: int = 8, retries: int = 3,
                 backoff: float = 0.2, max_redirects: int = 5, timeout: float = 30.0,
                 ca_certs: str | None = None) -> None:
        self.base_url = base_url.rstrip("/") + "/" if base_url else ""
        self.max_in_flight = max_in_flight
        self.limits = Limits.from_env(retries=retries)
        self.retries = self.limits.retries
        self.backoff = backoff
        self.max_redirects = max_redirects
        self._split = _split(self.base_url) if base_url else None
        if self._split is not None and self._split.scheme not in ("http", "https", "file"):
            raise NetworkError(f"unsupported URL scheme in {base_url}")
        self._timeout = timeout
        self._ca_certs = ca_certs
        self._pools: dict[str, urllib3.PoolManager] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._executor: ThreadPoolExecutor | None = None
        self._interrupted = threading.Event()  # set by interrupt(): a Ctrl-C
        self._pipelining = (self._split is not None and self._split.scheme == "http"
                            and not _proxy_for(self.base_url))
        self._requests = 0
        self._bytes = 0

    def url_for(self, path: str) -> str:
        """The absolute URL of ``path`` (relative to the base URL unless it is absolute)."""
        if "://" in path:
            return path
        return self.base_url + path.lstrip("/")

    @property
    def stats(self) -> FetchStats:
        """Requests made and body bytes received so far."""
        with self._lock:
            return FetchStats(self._requests, self._bytes)

    def _count(self, requests: int, nbytes: int) -> None:
        with self._lock:
            self._requests += requests
            self._bytes += nbytes

    def get(self, path: str, *, limit: int = METADATA_CAP) -> bytes:
        """The whole body of ``path``, at most ``limit`` bytes (else TooLargeError); raises
        NotFoundError on 404, NetworkError otherwise."""
        sink = MemorySink()
        self.get_into(path, sink, limit=limit)
        return bytes(sink.buf)

    def get_optional(self, path: str, *, limit: int = METADATA_CAP) -> bytes | None:
        """Like :meth:`get`, but None when the server says the file does not exist."""
        try:
            return self.get(path, limit=limit)
        except NotFoundError:
            return None

    def get_into(self, path: str, sink: Sink, *, limit: int,
                 headers: Mapping[str, str] | None = None,
                 head_limit: HeadLimit | None = None) -> Reply:
        """Write the body of ``path`` into ``sink``, never more than ``limit`` bytes.

        ``head_limit`` is called with the body's first 64 KiB (or all of a smaller
        body) and may lower the cap (a ``.filez`` header declares its size).
        Returns the reply; with conditional ``headers`` it may be 304 (nothing
        written).  Raises NotFoundError, TooLargeError or NetworkError; after a
        failed attempt the sink is reset before the next.
        """
        url = self.url_for(path)
        if url.startswith("file:"):
            return self._get_file(url, sink, limit, head_limit)
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * (2 ** (attempt - 1)))
                sink.reset()
            try:
                return self._attempt(url, sink, limit, headers, head_limit)
            except RetryableError as e:
                last = str(e)
        raise NetworkError(f"{last} (after {self.retries + 1} attempts)" if self.retries else last)

    def _get_file(self, url: str, sink: Sink, limit: int, head_limit: HeadLimit | None) -> Reply:
        self._count(1, 0)
        path = _file_path(url)
        try:
            with open(path, "rb") as f:
                reader = BodyReader(url, sink, limit, head_limit, None)
                while block := f.read(1 << 20):
                    reader.feed(block)
                reader.finish()
        except (FileNotFoundError, NotADirectoryError) as e:
            raise NotFoundError(f"not found: {url}") from e
        except IsADirectoryError as e:
            raise NotFoundError(f"not found (a directory): {url}") from e
        except OSError as e:
            raise NetworkError(f"cannot read {url}: {e.strerror}") from e
        self._count(0, reader.total)
        return Reply(200, {})

    def _attempt(self, url: str, sink: Sink, limit: int, headers: Mapping[str, str] | None,
                 head_limit: HeadLimit | None) -> Reply:
        """One request (following redirects): the reply, or RetryableError / a typed error."""
        with self._watching(url) as watch:
            resp, where = self._open(url, headers, watch)
            done = False
            try:
                reply = self._check_status(resp, where)
                if reply.status == 200:
                    self._read_body(resp, where, sink, limit, head_limit, watch)
                done = True
                return reply
            finally:
                if not done:
                    resp.close()  # never hand a half-read connection back to the pool
                resp.release_conn()

    def _open(self, url: str, headers: Mapping[str, str] | None,
              watch: Watch) -> tuple[urllib3.BaseHTTPResponse, str]:
        """Send the request, following redirects by hand; the final response (headers
        read) and its URL."""
        target = url
        for _hop in range(self.max_redirects + 1):
            resp = self._send(target, headers, watch)
            loc = resp.headers.get("Location")
            if resp.status not in REDIRECTS or not loc:
                return resp, target
            resp.close()
            resp.release_conn()
            target = urllib.parse.urljoin(target, loc)
            if _split(target).scheme not in ("http", "https"):
                raise NetworkError(f"redirect to a non-HTTP URL fetching {url}")
        raise NetworkError(f"too many redirects fetching {url}")

    def _send(self, url: str, headers: Mapping[str, str] | None,
              watch: Watch) -> urllib3.BaseHTTPResponse:
        self._count(1, 0)
        pool = self._pool_for(url)
        from urllib3.exceptions import (
            ConnectTimeoutError,
            HTTPError,
            LocationValueError,
            NewConnectionError,
        )

        try:
            return pool.urlopen(
                "GET", url, headers={"User-Agent": "strata", **(headers or {})},
                retries=False, redirect=False, preload_content=False, decode_content=False)
        except (LocationValueError, ValueError) as e:
            raise NetworkError(f"invalid URL {url}: {e}") from e
        except (HTTPError, OSError) as e:
            if watch.expired:
                raise NetworkError(f"{watch.expired} fetching {url}") from e
            if isinstance(e, NewConnectionError | ConnectTimeoutError):
                raise RetryableError(f"cannot reach {url}: {describe(e)}") from e
            raise RetryableError(f"{describe(e)} fetching {url}") from e

    def _check_status(self, resp: urllib3.BaseHTTPResponse, url: str) -> Reply:
        status = resp.status
        if status in (404, 410):
            raise NotFoundError(f"not found (HTTP {status}): {url}")
        if status in RETRY_STATUS:
            raise RetryableError(f"HTTP {status} fetching {url}")
        if status in REDIRECTS:
            raise NetworkError(f"redirect without a Location fetching {url}")
        if status not in (200, 304):
            raise NetworkError(f"HTTP {status} fetching {url}")
        return Reply(status, dict(resp.headers))

    def _read_body(self, resp: urllib3.BaseHTTPResponse, url: str, sink: Sink, limit: int,
                   head_limit: HeadLimit | None, watch: Watch) -> None:
        from urllib3.exceptions import HTTPError

        declared = content_length(resp.headers.get("Content-Length"))
        reader = BodyReader(url, sink, limit, head_limit, declared)
        try:
            while chunk := resp.read1(CHUNK):
                watch.progress(len(chunk))
                reader.feed(chunk)
        except (HTTPError, OSError) as e:
            if watch.expired:
                raise NetworkError(f"{watch.expired} fetching {url}") from e
            raise RetryableError(f"{describe(e)} fetching {url}") from e
        finally:
            self._count(0, reader.total)
        if watch.expired:  # a socket shut down by the watchdog reads as the end of a body
            raise NetworkError(f"{watch.expired} fetching {url}")
        reader.finish()

    def _pool_for(self, url: str) -> urllib3.PoolManager:
        proxy = _proxy_for(url) or ""
        with self._lock:
            pool = self._pools.get(proxy)
            if pool is None:
                from store.replication.http_pools import make_pool  # loads urllib3

                pool = self._pools[proxy] = make_pool(proxy, self.max_in_flight, self._timeout,
                                                      self._ca_certs)
            return pool

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Generator[R, None, None]:
        """Run ``fn`` on every item with ``max_in_flight`` workers; yield results as they finish.

        The first exception stops submitting new work, waits for the running
        calls and is re-raised; a Ctrl-C first stops the running requests (a stalled
        server would otherwise hold the interrupted command until its time limits).
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
        except (KeyboardInterrupt, SystemExit):
            self.interrupt()
            raise
        finally:
            for fut in pending:
                fut.cancel()
            if pending:
                wait(pending)

    def interrupt(self) -> None:
        """For a Ctrl-C: every running request of this process fails now, and this
        fetcher starts no new one (a stalled server would otherwise hold the
        interrupted command until its time limits)."""
        self._interrupted.set()
        expire_all("interrupted")

    @contextlib.contextmanager
    def _watching(self, url: str) -> Iterator[Watch]:
        """:func:`watching` for one request or pipelined batch, refused once this fetcher is
        interrupted (a watch made after :func:`expire_all` ran would never expire)."""
        with watching(self.limits) as watch:
            if self._interrupted.is_set():
                raise NetworkError(f"interrupted fetching {url}")
            yield watch

    def _workers(self) -> ThreadPoolExecutor:
        """The fetcher's worker threads (kept for its lifetime, so connections are reused)."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=self.max_in_flight,
                                                    thread_name_prefix="fetch")
            return self._executor

    def fetch_many(self, paths: Iterable[str], fn: Callable[[str, bytes | Path], R], *,
                   limit: int = METADATA_CAP, spill_dir: Path | None = None,
                   head_limit: HeadLimit | None = None) -> Iterator[R]:
        """Fetch every path and run ``fn(path, body)`` in a worker; yield results as they finish.

        Each body is capped at ``limit`` (and by ``head_limit``, see :meth:`get_into`).
        With ``spill_dir``, a body over SPILL_SIZE is streamed into a temporary
        file there and ``fn`` gets its Path (removed once ``fn`` returns);
        otherwise ``fn`` gets bytes.  On plain ``http://`` without a proxy,
        requests are pipelined (``PIPELINE_DEPTH`` ahead on each of
        ``max_in_flight`` kept-alive connections); any answer other than a
        complete 200 that fits in memory goes through the ordinary path
        (retries, redirects, typed errors) instead.
        """
        opts = _ManyOpts(limit, spill_dir, head_limit)
        if not self._pipelining:
            yield from self.map_unordered(lambda p: self._one(p, fn, opts), paths)
            return
        items = list(paths)
        depth = max(1, min(PIPELINE_DEPTH, -(-len(items) // self.max_in_flight)))
        batches = [items[i:i + depth] for i in range(0, len(items), depth)]
        for results in self.map_unordered(lambda b: self._batch(b, fn, opts), batches):
            yield from results

    def _one(self, path: str, fn: Callable[[str, bytes | Path], R], opts: _ManyOpts) -> R:
        """Fetch one body of fetch_many (in memory, or spilled to a file) and run ``fn``."""
        if opts.spill_dir is None:
            return fn(path, self._get_capped(path, opts))
        sink = SpillSink(opts.spill_dir)
        try:
            self.get_into(path, sink, limit=opts.limit, head_limit=opts.head_limit)
            return fn(path, sink.result())
        finally:
            sink.discard()

    def _get_capped(self, path: str, opts: _ManyOpts) -> bytes:
        sink = MemorySink()
        self.get_into(path, sink, limit=opts.limit, head_limit=opts.head_limit)
        return bytes(sink.buf)

    def _batch(self, batch: list[str], fn: Callable[[str, bytes | Path], R],
               opts: _ManyOpts) -> list[R]:
        in_memory = opts.limit if opts.spill_dir is None else min(opts.limit, SPILL_SIZE)
        bodies = self._pipeline(batch, in_memory, opts.head_limit) if self._pipelining else {}
        out = []
        for path in batch:
            data = bodies.pop(path, None)
            out.append(self._one(path, fn, opts) if data is None else fn(path, data))
        return out

    def _pipeline(self, batch: list[str], limit: int,
                  head_limit: HeadLimit | None) -> dict[str, bytes]:
        """Bodies of the paths the server answered 200 in full on a pipelined connection."""
        assert self._split is not None
        conn: PipeConn | None = getattr(self._local, "conn", None)
        got: dict[str, bytes] = {}
        current = batch[0]
        with self._watching(self.url_for(current)) as watch:
            try:
                if conn is None:
                    conn = self._local.conn = PipeConn(self._split, self._timeout)
                watch.attach(conn.sock)
                conn.send([self._split.path.rstrip("/") + "/" + p.lstrip("/") for p in batch])
                for i, path in enumerate(batch):
                    current = path
                    watch.restart()
                    status, body, close = conn.read_response(watch, limit)
                    self._count(1, len(body))
                    if status == 200 and fits(body, head_limit):
                        got[path] = body
                    if close:
                        if i == 0 and conn.answered == 1:
                            self._pipelining = False  # an HTTP/1.0 or no-keep-alive server
                        raise PipeError("server closed the connection")
            except (OSError, PipeError, ValueError):
                if conn is not None:
                    conn.close()
                self._local.conn = None
                if watch.expired:
                    raise NetworkError(f"{watch.expired} fetching "
                                       f"{self.url_for(current)}") from None
        return got

    def close(self) -> None:
        """Stop the worker threads and close pooled connections."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        for pool in self._pools.values():
            pool.clear()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class _ManyOpts:
    limit: int
    spill_dir: Path | None
    head_limit: HeadLimit | None


def _split(url: str) -> urllib.parse.SplitResult:
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        raise NetworkError(f"invalid URL {url}: {e}") from e
    return parts


def _file_path(url: str) -> str:
    """The local path of a ``file://`` URL (what POSIX urllib.request.url2pathname gives,
    without loading urllib.request and with it http.client and ssl)."""
    return urllib.parse.unquote(_split(url).path)


def _proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url`` (honouring ``no_proxy``), or None."""
    if not any(name.lower().endswith("_proxy") for name in os.environ):
        return None  # what getproxies() would find, without importing urllib.request
    import urllib.request

    parts = _split(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        return proxy
    return None
