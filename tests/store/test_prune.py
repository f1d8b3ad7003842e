"""prune deletes exactly what no root needs, under an exclusive lock; ostree agrees."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from store.commit import commit_directory
from store.errors import LockedError
from store.fsck import fsck
from store.objects import ObjectType
from store.prune import parse_date, prune
from store.repo import Repo, RepoMode
from tests.util import require_tool, run


def _history(tmp_path: Path, n: int = 3) -> tuple[Repo, list[str]]:
    r = Repo.init(tmp_path / "repo", RepoMode.ARCHIVE)
    commits = []
    for i in range(n):
        src = tmp_path / f"src{i}"
        src.mkdir()
        (src / "common").write_text("same in all\n")
        (src / f"only{i}").write_text(f"only in {i}\n")
        commits.append(commit_directory(r, src, branch="main", timestamp=1000 * (i + 1)).checksum)
    return r, commits


def test_default_prune_keeps_all_commits(tmp_path: Path) -> None:
    r, commits = _history(tmp_path)
    res = prune(r)
    assert res.deleted == 0
    assert all(r.has(c, ObjectType.COMMIT) for c in commits)


def test_refs_only_depth_zero_drops_history(tmp_path: Path) -> None:
    r, commits = _history(tmp_path)
    res = prune(r, refs_only=True, depth=0)
    assert res.deleted > 0 and res.freed > 0
    assert r.has(commits[-1], ObjectType.COMMIT)
    assert not r.has(commits[0], ObjectType.COMMIT)
    assert fsck(r).ok
    require_tool("ostree")
    run(["ostree", "fsck", f"--repo={r.path}"])


def test_orphans_are_deleted_and_ref_deletion_frees_commit(tmp_path: Path) -> None:
    r, commits = _history(tmp_path, 1)
    with r.transaction() as txn:
        from store.objects import FileMeta

        orphan = txn.write_file(FileMeta(0, 0, 0o100644), b"orphan")
    assert prune(r).deleted == 1 and not r.has(orphan, ObjectType.FILE)
    r.set_ref("main", None)
    res = prune(r, refs_only=True)
    assert res.deleted == res.total == 5  # commit, dirtree, dirmeta, two files
    assert list(r.iter_objects()) == []


def test_keep_younger_than(tmp_path: Path) -> None:
    r, commits = _history(tmp_path)
    prune(r, keep_younger_than="@1500")
    assert not r.has(commits[0], ObjectType.COMMIT)
    assert r.has(commits[1], ObjectType.COMMIT) and r.has(commits[2], ObjectType.COMMIT)
    assert fsck(r).ok


def test_parse_date() -> None:
    assert parse_date("@5") == 5
    assert parse_date("2 days ago", now=1_000_000) == 1_000_000 - 2 * 86400
    assert parse_date("1970-01-02") == 86400


def test_prune_waits_for_writers_then_fails_clearly(tmp_path: Path) -> None:
    r, _ = _history(tmp_path, 1)
    started = threading.Event()
    release = threading.Event()

    def writer() -> None:
        with r.lock():
            started.set()
            release.wait(10)

    t = threading.Thread(target=writer)
    t.start()
    started.wait(5)
    other = Repo.open(r.path)
    with pytest.raises(LockedError, match="is locked"), other.lock(exclusive=True, wait=0.2):
        pass
    release.set()
    t.join()
    t0 = time.monotonic()
    with other.lock(exclusive=True, wait=1):
        assert time.monotonic() - t0 < 1


def test_cli_prune_output(tmp_path: Path, strata) -> None:  # type: ignore[no-untyped-def]
    r, _ = _history(tmp_path)
    out = strata("--repo", r.path, "prune", "--refs-only", "--depth", "0").stdout
    assert out.startswith("Total objects: ") and "Deleted " in out and "bytes freed" in out


def test_a_pruned_dirtree_is_not_served_from_the_loaded_ones(tmp_path: Path) -> None:
    """load_dirtree keeps checked dirtrees; one prune deletes is no longer loadable."""
    from store.errors import ObjectNotFound

    r, commits = _history(tmp_path, 1)
    root = r.load_commit(commits[0]).root_tree
    assert r.load_dirtree(root) is r.load_dirtree(root)  # kept once checked
    r.set_ref("main", None)
    prune(r, refs_only=True)
    with pytest.raises(ObjectNotFound):
        r.load_dirtree(root)
