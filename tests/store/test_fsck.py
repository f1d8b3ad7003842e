"""fsck finds flipped bytes, missing objects and truncated objects, naming each."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from store.commit import commit_directory
from store.fsck import fsck
from store.objects import ObjectType
from store.repo import Repo, RepoMode


def _repo(tmp_path: Path, mode: str) -> tuple[Repo, str]:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d/file").write_bytes(b"content that matters\n" * 100)
    (src / "other").write_bytes(b"other\n")
    r = Repo.init(tmp_path / "repo", RepoMode.parse(mode))
    return r, commit_directory(r, src, branch="main", timestamp=1).checksum


def _file_obj(r: Repo, csum: str, name: str) -> str:
    root = r.load_dirtree(r.load_commit(csum).root_tree)
    d = next(t for n, t, _m in root.dirs if n == "d")
    return dict(r.load_dirtree(d).files)[name]


@pytest.mark.parametrize("mode", ["bare", "bare-user", "archive"])
def test_clean_repo_passes(tmp_path: Path, mode: str, strata) -> None:  # type: ignore[no-untyped-def]
    r, _ = _repo(tmp_path, mode)
    assert fsck(r).ok
    assert strata("--repo", r.path, "fsck").returncode == 0


@pytest.mark.parametrize("mode", ["bare", "bare-user", "archive"])
def test_flipped_byte(tmp_path: Path, mode: str, strata) -> None:  # type: ignore[no-untyped-def]
    r, c = _repo(tmp_path, mode)
    obj = _file_obj(r, c, "file")
    path = r.object_path(obj, ObjectType.FILE)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    proc = strata("--repo", r.path, "fsck", check=False)
    assert proc.returncode == 1
    assert obj in proc.stderr and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1


def test_missing_object(tmp_path: Path, strata) -> None:  # type: ignore[no-untyped-def]
    r, c = _repo(tmp_path, "bare")
    obj = _file_obj(r, c, "file")
    os.unlink(r.object_path(obj, ObjectType.FILE))
    proc = strata("--repo", r.path, "fsck", check=False)
    assert proc.returncode == 1
    assert f"missing file object {obj}" in proc.stderr
    assert "/d/file" in proc.stdout


def test_missing_dirtree(tmp_path: Path) -> None:
    r, c = _repo(tmp_path, "archive")
    tree = r.load_commit(c).root_tree
    os.unlink(r.object_path(tree, ObjectType.DIR_TREE))
    report = fsck(r)
    assert any(f"missing dirtree object {tree}" in p for p in report.problems)


def test_truncated_archive_object(tmp_path: Path, strata) -> None:  # type: ignore[no-untyped-def]
    r, c = _repo(tmp_path, "archive")
    obj = _file_obj(r, c, "file")
    path = r.object_path(obj, ObjectType.FILE)
    path.write_bytes(path.read_bytes()[:-10])
    proc = strata("--repo", r.path, "fsck", check=False)
    assert proc.returncode == 1 and obj in proc.stderr


def test_truncated_commit_and_ref_to_missing_commit(tmp_path: Path) -> None:
    r, c = _repo(tmp_path, "bare")
    p = r.object_path(c, ObjectType.COMMIT)
    p.write_bytes(p.read_bytes()[:20])
    problems = fsck(r).problems
    assert any(f"corrupt commit object {c}" in x for x in problems)
    os.unlink(p)
    assert any(f"ref main points at missing commit {c}" in x for x in fsck(r).problems)
