"""Downloading source metadata and packages into a cache, revalidated, usable offline.

Cache layout (under the directory the caller gives, e.g. ``repo/tmp/cache``)::

    <cache>/http/<sha256(url)[:2]>/<sha256(url)>         the body
    <cache>/http/<sha256(url)[:2]>/<sha256(url)>.json    {"url", "etag", "last-modified"}

A cached body whose expected checksum is known and matches is used without
asking the server (packages, by-hash indexes); otherwise the server is asked
with ``If-None-Match``/``If-Modified-Since`` and a 304 keeps the cached copy.
Offline, only cached bodies (and ``file://`` URLs) are used.  Bodies are
streamed to a temporary file next to their final name, checked, then renamed.
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

import urllib3
from urllib3.exceptions import HTTPError

from importers.errors import ChecksumMismatch, FetchError
from store.fsutil import atomic_write

CHUNK = 1 << 20


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
    """One connection pool and one cache directory; ``offline`` forbids network access."""

    def __init__(self, cache_dir: Path, *, offline: bool = False, timeout: float = 30.0,
                 retries: int = 3) -> None:
        self.root = Path(cache_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.cache_dir = self.root / "http"
        self.offline = offline
        self.went_offline = False
        self.pool = urllib3.PoolManager(
            num_pools=8, maxsize=4, timeout=urllib3.Timeout(total=None, connect=timeout,
                                                             read=timeout),
            retries=urllib3.Retry(total=retries, backoff_factor=0.2,
                                  status_forcelist=(500, 502, 503, 504)))

    def fetch(self, url: str, *, expected: Expected | None = None, label: str = "") -> Path:
        """A local path holding the body of ``url``, matching ``expected`` when given.

        Guarantees: the returned file is complete (never a partial download) and,
        with ``expected``, has that checksum; a mismatch raises ChecksumMismatch
        and leaves no cached copy.
        """
        if url.startswith("file://"):
            return self._local(url, expected, label)
        body, info = self._paths(url)
        if body.exists() and expected is not None and _matches(body, expected):
            return body
        if self.offline:
            if body.exists() and expected is None:
                return body
            raise FetchError(f"{label or url} is not in the cache and the network is off")
        return self._download(url, body, info, expected, label)

    def fetch_bytes(self, url: str, *, expected: Expected | None = None, label: str = "",
                    limit: int = 256 << 20) -> bytes:
        """The body of a (small) metadata file."""
        path = self.fetch(url, expected=expected, label=label)
        if path.stat().st_size > limit:
            raise FetchError(f"{label or url} is larger than {limit} bytes")
        return path.read_bytes()

    def _paths(self, url: str) -> tuple[Path, Path]:
        key = hashlib.sha256(url.encode()).hexdigest()
        d = self.cache_dir / key[:2]
        return d / key, d / f"{key}.json"

    def _local(self, url: str, expected: Expected | None, label: str) -> Path:
        path = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))
        if not path.is_file():
            raise FetchError(f"{label or url}: no such file")
        if expected is not None and not _matches(path, expected):
            raise ChecksumMismatch(f"{label or url}: {expected.algo} does not match the index")
        return path

    def _download(self, url: str, body: Path, info: Path, expected: Expected | None,
                  label: str) -> Path:
        headers = _conditional_headers(body, info)
        try:
            resp = self.pool.request("GET", url, headers=headers, preload_content=False,
                                     redirect=True)
        except HTTPError as e:
            if body.exists():  # unreachable, but cached: go on offline, as --offline would
                self.offline = self.went_offline = True
                return self._checked(body, expected, label or url)
            raise FetchError(f"cannot fetch {label or url}: {e}") from e
        try:
            if resp.status == 304 and body.exists():
                return self._checked(body, expected, label or url)
            if resp.status != 200:
                raise FetchError(f"cannot fetch {label or url}: HTTP {resp.status}")
            self._store(resp, body, expected, label or url)
        finally:
            resp.release_conn()
        meta = {"url": url, "etag": resp.headers.get("ETag", ""),
                "last-modified": resp.headers.get("Last-Modified", "")}
        atomic_write(info, json.dumps(meta).encode(), sync=False)
        return body

    def _checked(self, body: Path, expected: Expected | None, what: str) -> Path:
        if expected is not None and not _matches(body, expected):
            body.unlink()
            raise ChecksumMismatch(f"{what}: {expected.algo} does not match the index")
        return body

    def _store(self, resp: urllib3.BaseHTTPResponse, body: Path, expected: Expected | None,
               what: str) -> None:
        body.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.new(expected.algo) if expected else None
        fd, tmp = tempfile.mkstemp(prefix=".part-", dir=body.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in resp.stream(CHUNK):
                    f.write(chunk)
                    if h is not None:
                        h.update(chunk)
            if expected is not None and h is not None and h.hexdigest() != expected.digest:
                raise ChecksumMismatch(f"{what}: {expected.algo} does not match the index")
            os.replace(tmp, body)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


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
