"""Verify a repository: every ref's commit present, every reachable object re-hashed."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from store.errors import CorruptObject, ObjectNotFound, ToolError
from store.objects import Commit, DirMeta, DirTree, ObjectType, checksum_bytes, file_header
from store.repo import Repo
from store.treecheck import MAX_DEPTH, dirmeta_problem, dirtree_problem, file_mode_problem

T = TypeVar("T")


@dataclass
class FsckReport:
    """What fsck checked and every problem it found, one line each."""

    commits: int = 0
    objects: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def file_checksum(repo: Repo, csum: str) -> str:
    """Recompute a stored file object's checksum from its metadata and content; CorruptObject
    when its mode is not a regular file's or a symlink's (see :mod:`store.treecheck`)."""
    meta, stream = repo.open_file(csum)
    problem = file_mode_problem(meta)
    if problem is not None:
        if stream is not None:
            stream.close()
        raise CorruptObject(problem)
    h = hashlib.sha256(file_header(meta))
    if stream is not None:
        with stream:
            while chunk := stream.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


class _Checker:
    def __init__(self, repo: Repo, report: FsckReport) -> None:
        self.repo = repo
        self.report = report
        self.done: set[tuple[str, ObjectType]] = set()
        self.partial = _partial_commits(repo)

    def problem(self, text: str) -> None:
        self.report.problems.append(text)

    def meta_object(self, csum: str, objtype: ObjectType, where: str) -> bytes | None:
        key = (csum, objtype)
        if key in self.done:
            return None
        self.done.add(key)
        self.report.objects += 1
        try:
            data = self.repo.read_metadata_bytes(csum, objtype)
        except ObjectNotFound:
            self.problem(f"missing {objtype.value} object {csum}{where}")
            return None
        if checksum_bytes(data) != csum:
            self.problem(f"corrupt {objtype.value} object {csum}: checksum mismatch{where}")
            return None
        return data

    def file_object(self, csum: str, where: str) -> None:
        key = (csum, ObjectType.FILE)
        if key in self.done:
            return
        self.done.add(key)
        self.report.objects += 1
        try:
            actual = file_checksum(self.repo, csum)
        except ObjectNotFound:
            self.problem(f"missing file object {csum}{where}")
            return
        except (CorruptObject, OSError, ToolError) as e:
            self.problem(f"corrupt file object {csum}: {e}{where}")
            return
        if actual != csum:
            self.problem(f"corrupt file object {csum}: content hashes to {actual}{where}")

    def parse(self, fn: Callable[[bytes], T], data: bytes, csum: str, what: str) -> T | None:
        try:
            return fn(data)
        except CorruptObject as e:
            self.problem(f"corrupt {what} object {csum}: {e}")
            return None

    def tree(self, tree: str, meta: str, path: str, commit: str, depth: int = 0) -> None:
        where = f" (at /{path} in commit {commit})"
        if depth > MAX_DEPTH:
            self.problem(f"invalid dirtree object {tree}: nested deeper than {MAX_DEPTH} "
                         f"directories{where}")
            return
        data = self.meta_object(meta, ObjectType.DIR_META, where)
        dm = None if data is None else self.parse(DirMeta.from_bytes, data, meta, "dirmeta")
        if dm is not None and (problem := dirmeta_problem(dm)) is not None:
            self.problem(f"invalid dirmeta object {meta}: {problem}{where}")
        data = self.meta_object(tree, ObjectType.DIR_TREE, where)
        dt = None if data is None else self.parse(DirTree.from_bytes, data, tree, "dirtree")
        if dt is None:
            return
        if (problem := dirtree_problem(dt)) is not None:
            self.problem(f"invalid dirtree object {tree}: {problem}{where}")
            return
        for name, f in dt.files:
            self.file_object(f, f" (at /{path}/{name} in commit {commit})".replace("//", "/"))
        for name, st, sm in dt.dirs:
            self.tree(st, sm, f"{path}/{name}" if path else name, commit, depth + 1)

    def commit(self, csum: str) -> None:
        data = self.meta_object(csum, ObjectType.COMMIT, "")
        if data is None:
            return
        self.report.commits += 1
        commit = self.parse(Commit.from_bytes, data, csum, "commit")
        if commit is None or csum in self.partial:
            return
        self.tree(commit.root_tree, commit.root_meta, "", csum)


def _partial_commits(repo: Repo) -> set[str]:
    try:
        names = os.listdir(repo.path / "state")
    except FileNotFoundError:
        return set()
    return {n.split(".")[0] for n in names if n.endswith(".commitpartial")}


def fsck(repo: Repo) -> FsckReport:
    """Check every ref and every commit in the store, re-hashing every object they reach."""
    report = FsckReport()
    checker = _Checker(repo, report)
    with repo.lock():
        for ref, csum in repo.list_refs().items():
            if not repo.has(csum, ObjectType.COMMIT):
                checker.problem(f"ref {ref} points at missing commit {csum}")
        commits = sorted(c for c, t in repo.iter_objects() if t is ObjectType.COMMIT)
        for c in commits:
            checker.commit(c)
    return report
