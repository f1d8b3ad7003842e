"""MutableTree: edits of a stored tree reach the written tree."""

from __future__ import annotations

from pathlib import Path

from store.commit import commit_directory
from store.mtree import MutableTree
from store.objects import DirMeta
from store.repo import Repo, RepoMode


def test_a_new_empty_directory_deep_in_a_stored_tree_is_written(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "var/log").mkdir(parents=True)
    (src / "var/log/keep").write_text("x")
    repo = Repo.init(tmp_path / "repo", RepoMode.BARE)
    base = commit_directory(repo, src, branch="b").checksum
    tree = MutableTree.from_commit(repo, base)
    tree.ensure_dir("var/log/nginx", DirMeta(33, 4, 0o40750))
    with repo.transaction() as txn:
        root, meta = tree.write(txn)
    again = MutableTree.from_dirtree(repo, root, meta)
    node = again.lookup("var/log/nginx")
    assert isinstance(node, MutableTree)
    assert (node.meta.uid, node.meta.gid, node.meta.mode) == (33, 4, 0o40750)
    assert not node.files and not node.dirs
    assert "keep" in again.dirs["var"].dirs["log"].files
