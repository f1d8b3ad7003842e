"""Delete objects no root needs, as ``ostree prune`` does.

Roots are every commit in the store, or with ``refs_only`` only the commits
refs point at (each followed ``depth`` parents, -1 for all).
``keep_younger_than`` first deletes commits older than a date that no ref
points at directly.  The repository's kept checkout goes too when its tree is
no longer reachable (its hardlinks would keep the freed files' space).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from store.checkoutcache import CheckoutCache
from store.errors import InputError
from store.objects import ObjectType
from store.refs import list_mirrors
from store.repo import Repo
from store.traverse import reachable

_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800,
          "month": 2592000, "year": 31536000}


@dataclass(frozen=True)
class PruneResult:
    """How many objects there were, how many were deleted and the bytes freed."""

    total: int
    deleted: int
    freed: int


def parse_date(text: str, *, now: float | None = None) -> int:
    """Seconds since the epoch for ``@N``, ISO dates/times, or ``N units ago``."""
    text = text.strip()
    now = time.time() if now is None else now
    if text.startswith("@") and text[1:].isdigit():
        return int(text[1:])
    m = re.fullmatch(r"(\d+)\s*(second|minute|hour|day|week|month|year)s?(\s+ago)?", text)
    if m:
        return int(now - int(m.group(1)) * _UNITS[m.group(2)])
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"unrecognized date '{text}'") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


def _delete(repo: Repo, csum: str, objtype: ObjectType) -> int:
    repo.forget_loaded(csum)
    path = repo.object_path(csum, objtype)
    try:
        size = os.lstat(path).st_size
        os.unlink(path)
    except FileNotFoundError:
        return 0
    return size


def prune(repo: Repo, *, refs_only: bool = False, depth: int = -1,
          keep_younger_than: str | None = None) -> PruneResult:
    """Delete unreachable objects under an exclusive lock; return counts and bytes freed."""
    cutoff = parse_date(keep_younger_than) if keep_younger_than else None
    with repo.lock(exclusive=True):
        objects = list(repo.iter_objects())
        commits = [c for c, t in objects if t is ObjectType.COMMIT]
        ref_heads = set(repo.list_refs().values()) | set(list_mirrors(repo.path).values())
        freed = deleted = 0
        if cutoff is not None:
            for c in commits:
                if c not in ref_heads and repo.load_commit(c).timestamp < cutoff:
                    freed += _delete(repo, c, ObjectType.COMMIT)
                    freed += _delete(repo, c, ObjectType.COMMIT_META)
                    deleted += 1
            commits = [c for c in commits if repo.has(c, ObjectType.COMMIT)]
        roots = sorted(ref_heads) if refs_only else commits
        keep = reachable(repo, [r for r in roots if repo.has(r, ObjectType.COMMIT)], depth)
        keep |= _partial_roots(repo)
        for csum, objtype in objects:
            if (csum, objtype) in keep or not repo.has(csum, objtype):
                continue
            if objtype is ObjectType.COMMIT_META and (csum, ObjectType.COMMIT) in keep:
                continue
            freed += _delete(repo, csum, objtype)
            deleted += 1
        _drop_stale_checkout(repo, keep)
    return PruneResult(total=len(objects), deleted=deleted, freed=freed)


def _drop_stale_checkout(repo: Repo, keep: set[tuple[str, ObjectType]]) -> None:
    """The kept checkout links the files of its tree: once that tree is unreachable,
    it would hold on to the space the prune frees."""
    cache = CheckoutCache(repo)
    held = cache.holds()
    if held is None or (held[0], ObjectType.DIR_TREE) not in keep:
        cache.drop()


def _partial_roots(repo: Repo) -> set[tuple[str, ObjectType]]:
    """Objects of commits still being pulled are kept (their commit is under state/)."""
    keep: set[tuple[str, ObjectType]] = set()
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(repo.path / "state"):
            if name.endswith(".commitpartial"):
                keep.add((name.split(".")[0], ObjectType.COMMIT))
    return keep
