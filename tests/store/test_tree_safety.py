"""Trees that would lead a write outside the target: refused on arrival, by fsck, by checkout.

The hostile objects are made with strata's own encoders (bypassing every check) into
an archive repository served on 127.0.0.1, or put straight into a repository.
"""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store.checkout import checkout_tree, sync_checkout
from store.objects import (
    Commit,
    DirMeta,
    DirTree,
    FileMeta,
    ObjectType,
    _entry,
    _frame,
    _frame_array,
)
from store.repo import Repo, RepoMode
from store.treecheck import MAX_DEPTH
from tests.store.servers import hostile_server
from tests.util import StrataRunner, require_tool

MODE_DIR, MODE_FILE = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o644


def raw_tree(files: list[tuple[str, str]], dirs: list[tuple[str, str, str]] = ()) -> bytes:  # type: ignore[assignment]
    """A dirtree in the given order, names as given (DirTree.to_bytes would sort)."""
    fa = _frame_array([_entry(n, bytes.fromhex(c)) for n, c in files])
    da = _frame_array([_entry(n, bytes.fromhex(t) + bytes.fromhex(m), 32) for n, t, m in dirs])
    return _frame(bytearray(fa + da), [len(fa)])


@dataclass(frozen=True)
class Objs:
    """What a case may use: a good file object, a good dirmeta and an empty dirtree."""

    file: str
    meta: str
    empty: str
    outside: Path


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # the object type the error names
    build: Callable[[Objs, object], tuple[bytes, str | None]]  # (root tree, bad csum or None)
    ostree_rejects: bool  # the real `ostree fsck` has the same rule


def _named(name_of: Callable[[Objs], str]) -> Callable[[Objs, object], tuple[bytes, None]]:
    return lambda o, txn: (raw_tree([(name_of(o), o.file)]), None)


def _dir_named(name_of: Callable[[Objs], str]) -> Callable[[Objs, object], tuple[bytes, None]]:
    return lambda o, txn: (raw_tree([], [(name_of(o), o.empty, o.meta)]), None)


def _bad_dirmeta(o: Objs, txn) -> tuple[bytes, str]:  # type: ignore[no-untyped-def]
    meta = txn.write_metadata(ObjectType.DIR_META, DirMeta(0, 0, MODE_FILE).to_bytes())
    return raw_tree([], [("sub", o.empty, meta)]), meta


def _bad_file(mode: int) -> Callable[[Objs, object], tuple[bytes, str]]:
    def build(o: Objs, txn) -> tuple[bytes, str]:  # type: ignore[no-untyped-def]
        csum = txn.write_file(FileMeta(0, 0, mode), b"")
        return raw_tree([("node", csum)]), csum
    return build


CASES = [
    Case("dotdot-path", "dirtree", _named(lambda o: "../../../../outside/x"), True),
    Case("absolute", "dirtree", _named(lambda o: f"{o.outside}/abs"), True),
    Case("slash", "dirtree", _named(lambda o: "a/b"), True),
    Case("dot", "dirtree", _dir_named(lambda o: "."), True),
    Case("dotdot", "dirtree", _dir_named(lambda o: ".."), True),
    Case("empty", "dirtree", _named(lambda o: ""), False),
    Case("nul", "dirtree", _named(lambda o: "x\0y"), False),
    Case("unsorted", "dirtree", lambda o, txn: (raw_tree([("b", o.file), ("a", o.file)]), None),
         False),
    Case("duplicate", "dirtree", lambda o, txn: (raw_tree([("a", o.file), ("a", o.file)]), None),
         False),
    Case("file-and-dir", "dirtree",
         lambda o, txn: (raw_tree([("a", o.file)], [("a", o.empty, o.meta)]), None), False),
    Case("dirmeta-not-dir", "dirmeta", _bad_dirmeta, True),
    Case("fifo-file", "file", _bad_file(stat.S_IFIFO | 0o644), True),
    Case("chardev-file", "file", _bad_file(stat.S_IFCHR | 0o644), True),
]


def make_source(path: Path, mode: RepoMode, case: Case, outside: Path) -> tuple[str, str]:
    """A repository whose ``main`` is a commit of the case's root tree: (commit, bad csum)."""
    repo = Repo.init(path, mode)
    with repo.transaction() as txn:
        o = Objs(txn.write_file(FileMeta(0, 0, MODE_FILE), b"pwned\n"),
                 txn.write_metadata(ObjectType.DIR_META, DirMeta(0, 0, MODE_DIR).to_bytes()),
                 txn.write_metadata(ObjectType.DIR_TREE, DirTree().to_bytes()), outside)
        data, bad = case.build(o, txn)
        root = txn.write_metadata(ObjectType.DIR_TREE, data)
        commit = txn.write_metadata(ObjectType.COMMIT,
                                    Commit(root, o.meta, 1700000000, case.name).to_bytes())
        txn.set_ref("main", commit)
    return commit, bad or root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    d = tmp_path / "outside"
    d.mkdir()
    (d / "canary").write_text("untouched\n")
    return d


def assert_untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["canary"]
    assert (outside / "canary").read_text() == "untouched\n"


def one_error(p: subprocess.CompletedProcess[str], pattern: str) -> None:
    assert p.returncode == 1, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_pull_refuses_hostile_tree(case: Case, tmp_path: Path, outside: Path,
                                   strata: StrataRunner) -> None:
    require_tool("ostree")
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    _commit, bad = make_source(work / "src", RepoMode.ARCHIVE, case, outside)
    dst = work / "dst"
    strata("--repo", dst, "init", "--mode", "archive")
    with hostile_server(work / "src") as srv:
        strata("--repo", dst, "remote", "add", "--no-sign-verify", "origin", srv.url)
        p = strata("--repo", dst, "pull", "origin", "main", check=False)
    one_error(p, rf"{case.kind} object {bad} is (invalid|corrupt)")
    assert not (dst / "refs/remotes/origin/main").exists()
    assert not any(c for c, _t in Repo.open(dst).iter_objects() if c == bad)
    assert sorted(p.name for p in (dst / "tmp").iterdir()) == ["cache"]
    assert_untouched(outside)
    subprocess.run(["ostree", "fsck", f"--repo={dst}"], check=True, capture_output=True)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_stored_hostile_tree_is_refused_by_checkout_and_fsck(
        case: Case, tmp_path: Path, outside: Path, strata: StrataRunner) -> None:
    require_tool("ostree")
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    repo = work / "repo"
    # a bare repository keeps a file object as a regular file whatever its header said
    mode = RepoMode.ARCHIVE if case.kind == "file" else RepoMode.BARE
    _commit, bad = make_source(repo, mode, case, outside)
    for extra in ((), ("--copy",)):
        p = strata("--repo", repo, "checkout", *extra, "main", work / "co", check=False)
        one_error(p, rf"{case.kind} object {bad} is (invalid|corrupt)")
        assert not (work / "co").exists()
        assert_untouched(outside)
    p = strata("--repo", repo, "fsck", check=False)
    assert p.returncode == 1
    assert re.search(rf"(invalid|corrupt) {case.kind} object {bad}", p.stdout), p.stdout
    real = subprocess.run(["ostree", "fsck", f"--repo={repo}"], capture_output=True, text=True)
    if case.ostree_rejects:
        assert real.returncode != 0, real.stdout
    if case.name == "slash":
        assert "Invalid / in filename" in real.stderr and "Invalid / in filename" in p.stdout


def _deep(o: Objs, txn) -> tuple[bytes, None]:  # type: ignore[no-untyped-def]
    tree = o.empty
    for _ in range(MAX_DEPTH + 1):
        tree = txn.write_metadata(ObjectType.DIR_TREE, raw_tree([], [("d", tree, o.meta)]))
    return raw_tree([], [("d", tree, o.meta)]), None


def test_tree_nested_too_deep_is_refused(tmp_path: Path, outside: Path,
                                         strata: StrataRunner) -> None:
    repo = tmp_path / "repo"
    _c, root = make_source(repo, RepoMode.BARE, Case("deep", "dirtree", _deep, False), outside)
    p = strata("--repo", repo, "checkout", "main", tmp_path / "co", check=False)
    one_error(p, rf"dirtree object \w+ is nested deeper than {MAX_DEPTH}")
    assert not (tmp_path / "co").exists()
    p = strata("--repo", repo, "fsck", check=False)
    assert p.returncode == 1 and "nested deeper" in p.stdout


def test_pull_of_tree_nested_too_deep_is_refused(tmp_path: Path, outside: Path,
                                                 strata: StrataRunner) -> None:
    _c, root = make_source(tmp_path / "src", RepoMode.ARCHIVE,
                           Case("deep", "dirtree", _deep, False), outside)
    dst = tmp_path / "dst"
    strata("--repo", dst, "init", "--mode", "archive")
    with hostile_server(tmp_path / "src") as srv:
        strata("--repo", dst, "remote", "add", "--no-sign-verify", "origin", srv.url)
        p = strata("--repo", dst, "pull", "origin", "main", check=False)
    one_error(p, rf"dirtree object {root} is nested deeper than {MAX_DEPTH}")
    assert not (dst / "refs/remotes/origin/main").exists()


def _two_trees(repo: Repo) -> tuple[tuple[str, str], tuple[str, str]]:
    with repo.transaction() as txn:
        f1 = txn.write_file(FileMeta(0, 0, MODE_FILE), b"one\n")
        f2 = txn.write_file(FileMeta(0, 0, MODE_FILE), b"two\n")
        meta = txn.write_metadata(ObjectType.DIR_META, DirMeta(0, 0, MODE_DIR).to_bytes())
        usr1 = txn.write_metadata(ObjectType.DIR_TREE, DirTree((("a", f1),)).to_bytes())
        usr2 = txn.write_metadata(ObjectType.DIR_TREE,
                                  DirTree((("a", f1), ("b", f2))).to_bytes())
        old = txn.write_metadata(ObjectType.DIR_TREE, DirTree((), (("usr", usr1, meta),)).to_bytes())
        new = txn.write_metadata(ObjectType.DIR_TREE, DirTree((), (("usr", usr2, meta),)).to_bytes())
    return (old, meta), (new, meta)


def test_sync_of_tampered_checkout_does_not_follow_symlink(tmp_path: Path,
                                                           outside: Path) -> None:
    """A kept checkout whose usr became a symlink: syncing it fails instead of writing there."""
    repo = Repo.init(tmp_path / "repo", RepoMode.BARE)
    old, new = _two_trees(repo)
    dest = tmp_path / "co"
    checkout_tree(repo, *old, dest)
    shutil.rmtree(dest / "usr")
    (dest / "usr").symlink_to(outside)
    with pytest.raises(OSError):
        sync_checkout(repo, dest, old, new)
    assert_untouched(outside)


@pytest.mark.parametrize("case", [c for c in CASES if c.kind != "file"], ids=lambda c: c.name)
def test_static_delta_with_hostile_tree_is_refused(case: Case, tmp_path: Path, outside: Path,
                                                   strata: StrataRunner) -> None:
    """The real ``ostree static-delta generate`` packs the hostile objects into a delta part
    (it refuses to for the file modes); the pull refuses them before they are stored."""
    require_tool("ostree")
    src, dst = tmp_path / "src", tmp_path / "dst"
    commit, bad = make_source(src, RepoMode.ARCHIVE, case, outside)
    for args in (("static-delta", "generate", "--empty", "--to", commit), ("summary", "-u")):
        subprocess.run(["ostree", args[0], f"--repo={src}", *args[1:]], check=True,
                       capture_output=True)
    strata("--repo", dst, "init", "--mode", "bare")
    with hostile_server(src) as srv:
        strata("--repo", dst, "remote", "add", "--no-sign-verify", "origin", srv.url)
        p = strata("--repo", dst, "pull", "origin", "main", check=False)
        assert any("/deltas/" in r for r in srv.requests)
    one_error(p, rf"{case.kind} object {bad} is (invalid|corrupt)")
    assert not (dst / "refs/remotes/origin/main").exists()
    assert not any(c for c, _t in Repo.open(dst).iter_objects() if c == bad)
    assert_untouched(outside)
    subprocess.run(["ostree", "fsck", f"--repo={dst}"], check=True, capture_output=True)


def _names_problem_entry_by_entry(names: list[str], ordered: bool) -> str | None:
    """The reference: each name checked, then the order, one entry after another."""
    from store.treecheck import name_problem

    prev = None
    for name in names:
        if name_problem(name):
            return name_problem(name)
        if ordered and prev is not None and name <= prev:
            return "order"
        prev = name
    return "dup" if len(set(names)) != len(names) else None


@settings(max_examples=3000, deadline=None)
@given(names=st.lists(st.sampled_from(["", ".", "..", "a", "b", "a/b", "c\0", "é", "z", ".x"])
                      | st.text(max_size=6), max_size=8),
       ordered=st.booleans())
def test_the_fast_name_check_finds_exactly_what_the_entry_by_entry_one_does(
        names: list[str], ordered: bool) -> None:
    from store.treecheck import _names_problem

    assert (_names_problem(names, ordered=ordered) is None) == (
        _names_problem_entry_by_entry(names, ordered) is None)
