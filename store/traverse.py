"""Reachability: which objects a commit (and its history) needs."""

from __future__ import annotations

from store.objects import ObjectType
from store.repo import Repo

ObjKey = tuple[str, ObjectType]


def commit_history(repo: Repo, csum: str, depth: int = -1) -> list[str]:
    """``csum`` and up to ``depth`` ancestors (-1: all) that are present in the store."""
    out = [csum]
    while depth < 0 or len(out) <= depth:
        if not repo.has(out[-1], ObjectType.COMMIT):
            break
        parent = repo.load_commit(out[-1]).parent
        if parent is None or not repo.has(parent, ObjectType.COMMIT):
            break
        out.append(parent)
    return out


def tree_objects(repo: Repo, tree: str, meta: str, into: set[ObjKey]) -> None:
    """Add a dirtree, its dirmeta and everything below them to ``into``."""
    stack = [(tree, meta)]
    while stack:
        t, m = stack.pop()
        into.add((m, ObjectType.DIR_META))
        if (t, ObjectType.DIR_TREE) in into:
            continue
        into.add((t, ObjectType.DIR_TREE))
        if not repo.has(t, ObjectType.DIR_TREE):
            continue
        dt = repo.load_dirtree(t)
        for _name, f in dt.files:
            into.add((f, ObjectType.FILE))
        for _name, st, sm in dt.dirs:
            stack.append((st, sm))


def reachable(repo: Repo, roots: list[str], depth: int = -1) -> set[ObjKey]:
    """Every object needed by ``roots`` and ``depth`` levels of their history."""
    out: set[ObjKey] = set()
    for root in roots:
        for c in commit_history(repo, root, depth):
            if (c, ObjectType.COMMIT) in out:
                continue
            out.add((c, ObjectType.COMMIT))
            out.add((c, ObjectType.COMMIT_META))
            commit = repo.load_commit(c)
            tree_objects(repo, commit.root_tree, commit.root_meta, out)
    return out
