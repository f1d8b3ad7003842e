"""Transactions publish all or nothing; a killed commit leaves a consistent repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from store.commit import commit_directory
from store.errors import InputError
from store.fsck import fsck
from store.objects import FileMeta
from store.repo import Repo, RepoMode


def _src(tmp_path: Path, text: str) -> Path:
    src = tmp_path / f"src-{text}"
    src.mkdir()
    (src / "f").write_text(text)
    return src


@pytest.mark.parametrize("point", ["before-publish", "before-refs"])
def test_killed_commit_leaves_ref_and_repo_consistent(tmp_path: Path, strata, point: str) -> None:  # type: ignore[no-untyped-def]
    repo = tmp_path / "repo"
    strata("--repo", repo, "init")
    first = strata("--repo", repo, "commit", "-b", "main", _src(tmp_path, "one")).stdout.strip()
    proc = strata("--repo", repo, "commit", "-b", "main", _src(tmp_path, "two"), check=False,
                  env={"STRATA_TEST_FAIL_AT": point})
    assert proc.returncode != 0
    assert (repo / "refs/heads/main").read_text().strip() == first
    assert any(n.startswith("staging-") for n in os.listdir(repo / "tmp"))
    r = Repo.open(repo)
    assert not any(n.startswith("staging-") for n in os.listdir(repo / "tmp"))
    assert fsck(r).ok
    again = strata("--repo", repo, "commit", "-b", "main", _src(tmp_path, "again")).stdout.strip()
    assert Repo.open(repo).load_commit(again).parent == first


def test_exception_in_transaction_publishes_nothing(tmp_path: Path) -> None:
    r = Repo.init(tmp_path / "repo", RepoMode.BARE)
    with pytest.raises(RuntimeError), r.transaction() as txn:
        txn.write_file(FileMeta(0, 0, 0o100644), b"data")
        raise RuntimeError("boom")
    assert list(r.iter_objects()) == []
    assert os.listdir(tmp_path / "repo/tmp") == ["cache"]


def test_commit_of_missing_directory_writes_nothing(tmp_path: Path) -> None:
    r = Repo.init(tmp_path / "repo", RepoMode.ARCHIVE)
    with pytest.raises(InputError):
        commit_directory(r, tmp_path / "nope", branch="main")
    assert list(r.iter_objects()) == [] and r.list_refs() == {}


def test_large_file_streams_in_every_mode(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    blob = os.urandom(9 << 20)
    (src / "big").write_bytes(blob)
    for mode in RepoMode:
        r = Repo.init(tmp_path / mode.value, mode)
        c = commit_directory(r, src, branch="b").checksum
        csum = dict(r.load_dirtree(r.load_commit(c).root_tree).files)["big"]
        assert r.load_file(csum)[1] == blob
        assert fsck(r).ok


def test_a_starting_transaction_is_never_taken_for_stale(tmp_path: Path) -> None:
    """A transaction locks its directory before naming it ``staging-``: another process's
    clean-up leaves a directory being set up alone, and removes one a kill left long ago."""
    import subprocess
    import sys
    import time

    r = Repo.init(tmp_path / "repo", RepoMode.BARE)
    starting, old = r.tmp_dir / ".staging-now", r.tmp_dir / ".staging-old"
    starting.mkdir()
    old.mkdir()
    hours_ago = time.time() - 2 * 3600
    os.utime(old, (hours_ago, hours_ago))
    with r.transaction() as txn:
        txn.write_file(FileMeta(0, 0, 0o100644), b"data")
        assert txn.dir.name.startswith("staging-") and (txn.dir / ".lock").exists()
        subprocess.run([sys.executable, "-c", f"from store.repo import Repo; Repo.open('{r.path}')"],
                       check=True, cwd=Path(__file__).parents[2])
        assert txn.dir.is_dir()
    assert starting.is_dir() and not old.exists()
    assert len(list(r.iter_objects())) == 1


def test_dirtrees_of_a_failed_transaction_are_not_loadable(tmp_path: Path) -> None:
    from store.errors import ObjectNotFound
    from store.mtree import MutableTree
    from store.objects import DirMeta

    r = Repo.init(tmp_path / "repo", RepoMode.BARE)
    tree = MutableTree(DirMeta(0, 0, 0o40755))
    with pytest.raises(RuntimeError), r.transaction() as txn:
        tree.set_file("f", txn.write_file(FileMeta(0, 0, 0o100644), b"data"))
        csum, _meta = tree.write(txn)
        assert r.load_dirtree(csum).files  # kept while the transaction runs
        raise RuntimeError("boom")
    with pytest.raises(ObjectNotFound):
        r.load_dirtree(csum)


def test_a_directory_made_deep_in_a_stored_tree_is_written(tmp_path: Path) -> None:
    """ensure_dir under stored ancestors marks them changed (a script's new empty
    directory in /var/lib was lost from the commit when nothing else changed there)."""
    from store.mtree import MutableTree
    from store.objects import DirMeta

    r = Repo.init(tmp_path / "repo", RepoMode.BARE)
    with r.transaction() as txn:
        tree = MutableTree(DirMeta(0, 0, 0o40755))
        tree.ensure_dir("var/lib/dpkg")
        stored = MutableTree.from_dirtree(r, *tree.write(txn))
        stored.ensure_dir("var/lib/owner", DirMeta(5, 5, 0o42750))
        again = MutableTree.from_dirtree(r, *stored.write(txn))
        assert again.lookup("var/lib/owner").meta == DirMeta(5, 5, 0o42750)  # type: ignore[union-attr]


def test_ctrl_c_while_the_flush_thread_starts_aborts_cleanly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C that lands inside ``Thread.start`` of the background flush: the abort that
    follows raises the KeyboardInterrupt, not "cannot join thread before it is started"."""
    import threading

    r = Repo.init(tmp_path / "repo", RepoMode.BARE)

    def interrupted(self: threading.Thread) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), r.transaction() as txn:
        txn.write_file(FileMeta(0, 0, 0o100644), b"data")
        monkeypatch.setattr(threading.Thread, "start", interrupted)
        txn.flush_soon()
    monkeypatch.undo()
    assert list(r.iter_objects()) == []
    assert not [p for p in r.tmp_dir.iterdir() if p.name.startswith("staging-")]
