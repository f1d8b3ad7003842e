"""Downloading source metadata and packages into a cache, revalidated, usable offline.

Cache layout (under the directory the caller gives, e.g. ``repo/tmp/cache``)::

    <cache>/http/<sha256(url)[:2]>/<sha256(url)>         the body
    <cache>/http/<sha256(url)[:2]>/<sha256(url)>.json    {"url", "etag", "last-modified"}

A cached body whose expected checksum is known and matches is used without
asking the server (packages, by-hash indexes); otherwise the server is asked
with ``If-None-Match``/``If-Modified-Since`` and a 304 keeps the cached copy.
Offline, only cached bodies (and ``file://`` URLs) are used.  Bodies are
streamed to a temporary file next to their final name, checked, then renamed.

All transport is :class:`store.replication.http.Fetcher` (one proxy handling, one retry
policy, the low-speed limit and deadline); every download is capped: by the
size the index declares when there is one, else by the caller's ``limit``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from importers.errors import ChecksumMismatch, FetchError
from store.errors import NetworkError
from store.fsutil import atomic_write, rmtree, writable
from store.replication.http import Fetcher as HttpFetcher
from store.replication.http import FileSink, NotFoundError, TooLargeError

CHUNK = 1 << 20
DOWNLOAD_CAP = 4 << 30  # a download whose size no index declares
SMALL_CAP = 16 << 20  # fetch_bytes: Release, repomd.xml, signatures


def repo_cache_dir(repo_tmp_dir: Path) -> Path:
    """The cache directory of a repository, given its ``tmp/``: ``tmp/cache``."""
    return Path(repo_tmp_dir) / "cache"


@dataclass(frozen=True)
class Expected:
    """A checksum a download must match: algorithm name as hashlib knows it, hex digest."""

    algo: str
    digest: str
    size: int | None = None


class Fetcher:
    """One HTTP client and one cache directory; ``offline`` forbids network access.

    ``read_only`` (a dry run): when ``cache_dir`` may not be written (an unprivileged
    user), cached copies are still read from it, and whatever is fetched goes to a
    private temporary directory (``$TMPDIR/strata-cache-*/cache``) removed by
    :meth:`close`; ``root`` is then that directory and ``shared`` the cache it reads.
    """

    def __init__(self, cache_dir: Path, *, offline: bool = False, timeout: float = 30.0,
                 retries: int = 3, read_only: bool = False) -> None:
        self.shared: Path | None = None
        if read_only and not writable(Path(cache_dir)):
            self.shared = Path(cache_dir)
            self.root = Path(tempfile.mkdtemp(prefix="strata-cache-")) / cache_dir.name
            self.root.mkdir()
        else:
            self.root = Path(cache_dir)
            self.root.mkdir(parents=True, exist_ok=True)
        self.cache_dir = self.root / "http"
        self.offline = offline
        self.went_offline = False
        # verified Release/repomd.xml per source, read once per command: every step of one
        # command (the compose key, the resolution) sees the same snapshot of a source
        self.snapshot: dict[str, bytes] = {}
        self.http = HttpFetcher(max_in_flight=4, timeout=timeout, retries=retries)

    def close(self) -> None:
        """Close the pooled connections; remove the private cache of a read-only fetcher."""
        self.http.close()
        if self.shared is not None:
            rmtree(self.root.parent)

    def read_dirs(self, name: str) -> tuple[Path, ...]:
        """Where cached files of kind ``name`` (``http``, ``solv``) are looked for: this
        fetcher's own cache, then the shared one it may only read."""
        return (self.root / name, *((self.shared / name,) if self.shared else ()))

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fetch(self, url: str, *, expected: Expected | None = None, label: str = "",
              limit: int = DOWNLOAD_CAP) -> Path:
        """A local path holding the body of ``url``, matching ``expected`` when given.

        Guarantees: the returned file is complete (never a partial download) and,
        with ``expected``, has that checksum; a mismatch raises ChecksumMismatch
        and leaves no cached copy.  The download stops, with FetchError, beyond
        ``expected.size`` (when known) or ``limit`` bytes.
        """
        if url.startswith("file://"):
            return self._local(url, expected, label)
        body, info = self._cached(url)
        if body.exists() and expected is not None and _matches(body, expected):
            return body
        if self.offline:
            if body.exists() and expected is None:
                return body
            raise FetchError(f"{label or url} is not in the cache and the network is off")
        if expected is not None and expected.algo not in hashlib.algorithms_available:
            raise ChecksumMismatch(f"{label or url}: unsupported checksum type {expected.algo}")
        cap = expected.size if expected is not None and expected.size is not None else limit
        return self._download(url, (body, info), expected, label, cap)

    def fetch_bytes(self, url: str, *, expected: Expected | None = None, label: str = "",
                    limit: int = SMALL_CAP) -> bytes:
        """The body of a small metadata file, at most ``limit`` bytes (else FetchError)."""
        path = self.fetch(url, expected=expected, label=label, limit=limit)
        with open(path, "rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise FetchError(f"{label or url} is larger than {limit} bytes")
        return data

    def _paths(self, url: str, cache_dir: Path | None = None) -> tuple[Path, Path]:
        key = hashlib.sha256(url.encode()).hexdigest()
        d = (cache_dir or self.cache_dir) / key[:2]
        return d / key, d / f"{key}.json"

    def _cached(self, url: str) -> tuple[Path, Path]:
        """The (body, info) paths of the cached copy of ``url``: in this fetcher's cache, else
        in the shared one (read only), else where a download will go."""
        for d in self.read_dirs("http"):
            body, info = self._paths(url, d)
            if body.exists():
                return body, info
        return self._paths(url)

    def _local(self, url: str, expected: Expected | None, label: str) -> Path:
        path = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))
        if not path.is_file():
            raise FetchError(f"{label or url}: no such file")
        if expected is not None and not _matches(path, expected):
            raise ChecksumMismatch(f"{label or url}: {expected.algo} does not match the index")
        return path

    def _download(self, url: str, old: tuple[Path, Path], expected: Expected | None,
                  label: str, cap: int) -> Path:
        """Fetch ``url`` into this fetcher's cache, conditionally on the cached copy ``old``
        (body, info) when there is one; a 304 or an unreachable server keeps ``old``."""
        what = label or url
        body, info = self._paths(url)
        cached, cached_info = old
        body.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".part-", dir=body.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                sink = _HashingSink(f, expected.algo if expected else None)
                try:
                    reply = self.http.get_into(url, sink, limit=cap,
                                               headers=_conditional_headers(cached, cached_info))
                except TooLargeError as e:
                    if expected is not None and expected.size == cap:
                        raise ChecksumMismatch(f"{what}: {expected.algo} does not match the index "
                                               f"(larger than the {cap} bytes it declares)") from e
                    raise FetchError(_name(what, url, e)) from e
                except NotFoundError as e:
                    raise FetchError(_name(what, url, e)) from e
                except NetworkError as e:
                    if cached.exists():  # unreachable, but cached: go on offline as --offline
                        self.offline = self.went_offline = True
                        return self._checked(cached, expected, what)
                    raise FetchError(_name(what, url, e)) from e
            if reply.status == 304 and cached.exists():
                return self._checked(cached, expected, what)
            if reply.status != 200:
                raise FetchError(f"cannot fetch {what}: HTTP {reply.status}")
            if expected is not None and sink.hexdigest() != expected.digest:
                raise ChecksumMismatch(f"{what}: {expected.algo} does not match the index")
            os.replace(tmp, body)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        meta = {"url": url, "etag": _header(reply.headers, "ETag"),
                "last-modified": _header(reply.headers, "Last-Modified")}
        atomic_write(info, json.dumps(meta).encode(), sync=False)
        return body

    def _checked(self, body: Path, expected: Expected | None, what: str) -> Path:
        if expected is not None and not _matches(body, expected):
            if body.is_relative_to(self.root):  # the shared cache of a read-only one stays
                body.unlink()
            raise ChecksumMismatch(f"{what}: {expected.algo} does not match the index")
        return body


class _HashingSink(FileSink):
    """Writes a body into a file, hashing it as it goes (when an algorithm is given)."""

    def __init__(self, f: IO[bytes], algo: str | None) -> None:
        super().__init__(f)
        self.algo = algo
        self.h = hashlib.new(algo) if algo else None

    def write(self, data: bytes, /) -> object:
        if self.h is not None:
            self.h.update(data)
        return super().write(data)

    def reset(self) -> None:
        super().reset()
        self.h = hashlib.new(self.algo) if self.algo else None

    def hexdigest(self) -> str:
        return self.h.hexdigest() if self.h is not None else ""


def _name(what: str, url: str, e: Exception) -> str:
    """The fetcher's message, with the caller's label in front when the URL is not in it."""
    text = str(e)
    return text if what == url or what in text else f"{what}: {text}"


def _header(headers: object, name: str) -> str:
    for k, v in dict(headers).items():  # type: ignore[call-overload]
        if k.lower() == name.lower():
            return str(v)
    return ""


def _conditional_headers(body: Path, info: Path) -> dict[str, str]:
    if not (body.exists() and info.exists()):
        return {}
    try:
        meta = json.loads(info.read_text())
    except (OSError, ValueError):
        return {}
    headers = {}
    if meta.get("etag"):
        headers["If-None-Match"] = meta["etag"]
    if meta.get("last-modified"):
        headers["If-Modified-Since"] = meta["last-modified"]
    return headers


def _matches(path: Path, expected: Expected) -> bool:
    if expected.size is not None and path.stat().st_size != expected.size:
        return False
    h = hashlib.new(expected.algo)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest() == expected.digest
