"""The package cache's index: hints that let a re-import skip hashing files and reading commits.

``repo/tmp/cache/pkgcache-index.json``::

    {"version": 2,
     "files":    {"DEV:INO:SIZE:MTIME_NS:CTIME_NS": SHA256, ...},
     "packages": {SHA256: [REF, COMMIT, UNPACK_VERSION, OWNERS_DIGEST], ...}}

``files`` is git's stat cache: a package file whose device, inode, size and
times are unchanged still has the checksum it had.  An entry is recorded only
for a file last changed more than :data:`RACY_NS` before it was hashed (git's
"racy clean" rule), so a rewrite within one tick of the filesystem clock is never
mistaken for the old file.

``packages`` records a verified cache hit.  A commit is immutable, so while
REF still points at COMMIT its metadata gives the same answer and need not be
read again.  Both maps are hints: lost, stale or corrupt, the index is rebuilt
from the package files and the refs.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from store.fsutil import atomic_write

if TYPE_CHECKING:
    from store.repo import Repo

INDEX_NAME = "pkgcache-index.json"
VERSION = 2
RACY_NS = 2_000_000_000
MAX_FILES = 8192


def file_sha256(path: Path) -> str:
    """sha256 hex of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _stat_key(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


@dataclass(frozen=True)
class CacheHit:
    """A verified cache entry: package file sha256 -> ref -> commit, under one unpack version
    and owner map."""

    ref: str
    commit: str
    unpack_version: int
    owners: str


@dataclass
class PackageIndex:
    """The loaded index of one repository; :meth:`save` writes it back atomically if changed."""

    path: Path
    files: dict[str, str] = field(default_factory=dict)
    packages: dict[str, CacheHit] = field(default_factory=dict)
    dirty: bool = False

    @classmethod
    def load(cls, repo: Repo) -> PackageIndex:
        """The repository's index; empty when missing, unreadable or of another version."""
        index = cls(repo.tmp_dir / "cache" / INDEX_NAME)
        try:
            data = json.loads(index.path.read_bytes())
        except (OSError, ValueError):
            return index
        if not isinstance(data, dict) or data.get("version") != VERSION:
            return index
        files, packages = data.get("files"), data.get("packages")
        if isinstance(files, dict):
            index.files = {k: v for k, v in files.items() if isinstance(v, str)}
        if isinstance(packages, dict):
            index.packages = {k: CacheHit(*v) for k, v in packages.items() if _valid_hit(v)}
        return index

    def sha256_of(self, path: Path) -> str:
        """The file's sha256: from the stat cache when its identity and times are unchanged,
        else hashed (and remembered once the file is old enough to be safe from racy rewrites)."""
        st = os.stat(path)
        key = _stat_key(st)
        sha = self.files.get(key)
        if sha is not None:
            return sha
        sha = file_sha256(path)
        if max(st.st_mtime_ns, st.st_ctime_ns) < time.time_ns() - RACY_NS:
            self.files[key] = sha
            self.dirty = True
        return sha

    def hit(self, sha: str) -> CacheHit | None:
        """The recorded hit for a package file checksum (unverified), if any."""
        return self.packages.get(sha)

    def remember(self, sha: str, hit: CacheHit) -> None:
        """Record a verified hit."""
        if self.packages.get(sha) != hit:
            self.packages[sha] = hit
            self.dirty = True

    def save(self) -> None:
        """Write the index back if it changed (no fsync: it is only a hint)."""
        if not self.dirty:
            return
        files = dict(list(self.files.items())[-MAX_FILES:])
        data = {"version": VERSION, "files": files,
                "packages": {k: [h.ref, h.commit, h.unpack_version, h.owners]
                             for k, h in self.packages.items()}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(data).encode(), sync=False)
        self.dirty = False


def _valid_hit(value: object) -> bool:
    return (isinstance(value, list) and len(value) == 4
            and all(isinstance(v, str) for v in (value[0], value[1], value[3]))
            and isinstance(value[2], int))
