"""The real ostree and strata read each other's repositories, in all three modes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from store.checkout import checkout
from store.commit import commit_directory
from store.repo import Repo, RepoMode
from tests.store.treeutil import hardlink_groups, make_sample_tree, snapshot
from tests.util import require_tool, run

MODES = ["bare", "bare-user", "archive"]
TS = 1_700_000_000


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample_tree(tmp_path_factory.mktemp("sample") / "tree")


def ostree(*args: str | os.PathLike[str]) -> str:
    require_tool("ostree")
    return run(["ostree", *args]).stdout


def ostree_commit(repo: Path, src: Path, mode: str, *extra: str) -> str:
    ostree("init", f"--repo={repo}", f"--mode={mode}")
    return ostree("commit", f"--repo={repo}", "-b", "main", "-s", "subject line",
                  "--body", "a body\nof two lines", f"--timestamp=@{TS}",
                  "--add-metadata-string=version=1.2", "--add-metadata-string=x=y",
                  *extra, str(src)).strip()


def strata_commit(repo: Path, src: Path, mode: str, **kw: object) -> str:
    r = Repo.init(repo, RepoMode.parse(mode))
    return commit_directory(r, src, branch="main", subject="subject line",
                            body="a body\nof two lines", timestamp=TS,
                            metadata=[("version", "1.2"), ("x", "y")], **kw).checksum  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", MODES)
def test_same_commit_checksum_as_ostree(tmp_path: Path, sample: Path, mode: str) -> None:
    ours = strata_commit(tmp_path / "s", sample, mode)
    theirs = ostree_commit(tmp_path / "o", sample, mode)
    assert ours == theirs


def test_same_checksum_with_owner_override(tmp_path: Path, sample: Path) -> None:
    ours = strata_commit(tmp_path / "s", sample, "archive", owner_uid=42, owner_gid=43)
    theirs = ostree_commit(tmp_path / "o", sample, "archive", "--owner-uid=42", "--owner-gid=43")
    assert ours == theirs


def test_parent_chain_matches_ostree(tmp_path: Path, sample: Path) -> None:
    ours = strata_commit(tmp_path / "s", sample, "archive")
    theirs = ostree_commit(tmp_path / "o", sample, "archive")
    r = Repo.open(tmp_path / "s")
    second = commit_directory(r, sample / "deep", branch="main", subject="two",
                              timestamp=TS + 1).checksum
    second_o = ostree("commit", f"--repo={tmp_path / 'o'}", "-b", "main", "-s", "two",
                      f"--timestamp=@{TS + 1}", str(sample / "deep")).strip()
    assert ours == theirs and second == second_o
    assert r.load_commit(second).parent == ours


@pytest.mark.parametrize("mode", MODES)
def test_ostree_reads_strata_repo(tmp_path: Path, sample: Path, mode: str) -> None:
    csum = strata_commit(tmp_path / "s", sample, mode)
    ostree_commit(tmp_path / "o", sample, mode)
    ostree("fsck", f"--repo={tmp_path / 's'}")
    assert ostree("ls", "-R", "-C", f"--repo={tmp_path / 's'}", csum) == \
        ostree("ls", "-R", "-C", f"--repo={tmp_path / 'o'}", csum)
    assert ostree("cat", f"--repo={tmp_path / 's'}", csum, "/bin/tool") == "#!/bin/sh\necho tool\n"
    user = ["-U"] if mode == "bare-user" else []
    ostree("checkout", f"--repo={tmp_path / 's'}", *user, csum, str(tmp_path / "co"))
    assert snapshot(tmp_path / "co", xattrs=not user, owners=not user) == \
        snapshot(sample, xattrs=not user, owners=not user) or mode == "bare-user"
    if mode != "bare-user":
        assert snapshot(tmp_path / "co") == snapshot(sample)


@pytest.mark.parametrize("mode", MODES)
def test_strata_reads_ostree_repo(tmp_path: Path, sample: Path, strata, mode: str) -> None:  # type: ignore[no-untyped-def]
    csum = ostree_commit(tmp_path / "o", sample, mode)
    repo = ["--repo", str(tmp_path / "o")]
    strata(*repo, "fsck")
    listing = strata(*repo, "ls", "-R", "main").stdout.splitlines()
    assert any(line.endswith(" /bin/tool") and line.startswith("-00755 0 0 ") for line in listing)
    assert any(line.endswith("/lib/link-rel -> ../bin/tool") for line in listing)
    assert strata(*repo, "cat", "main", "/private/secret").stdout == "s3cret"
    assert strata(*repo, "show", "--", "main").stdout.startswith(f"commit {csum}")
    user = ["--user-mode"] if mode == "bare-user" else []
    strata(*repo, "checkout", *user, "main", tmp_path / "co")
    if mode == "bare-user":
        assert (tmp_path / "co/bin/tool").read_bytes() == (sample / "bin/tool").read_bytes()
        assert os.readlink(tmp_path / "co/lib/link-abs") == "/etc/passwd"
    else:
        assert snapshot(tmp_path / "co") == snapshot(sample)


@pytest.mark.parametrize("mode", ["bare", "archive"])
def test_checkout_matches_source(tmp_path: Path, sample: Path, mode: str) -> None:
    strata_commit(tmp_path / "s", sample, mode)
    r = Repo.open(tmp_path / "s")
    checkout(r, "main", tmp_path / "co")
    assert snapshot(tmp_path / "co") == snapshot(sample)
    src_groups = hardlink_groups(sample)
    co_groups = hardlink_groups(tmp_path / "co")
    for g in src_groups:
        assert any(g <= h for h in co_groups) or mode == "archive", g
    if mode == "bare":
        obj = r.object_path(r.load_dirtree(r.load_commit(r.resolve("main")).root_tree).files[0][1],
                            __import__("store.objects").objects.ObjectType.FILE)
        assert os.stat(obj).st_nlink >= 2


def test_checkout_bare_user_user_mode(tmp_path: Path, sample: Path) -> None:
    strata_commit(tmp_path / "s", sample, "bare-user")
    checkout(Repo.open(tmp_path / "s"), "main", tmp_path / "co", user_mode=True)
    co = tmp_path / "co"
    assert os.path.islink(co / "lib/link-rel") and os.readlink(co / "lib/link-rel") == "../bin/tool"
    assert (co / "big").read_bytes() == (sample / "big").read_bytes()
    assert not os.stat(co / "bin/suid").st_mode & 0o4000
    assert os.stat(co / "bin/tool").st_mode & 0o111


def test_checkout_subpath_and_copy(tmp_path: Path, sample: Path) -> None:
    strata_commit(tmp_path / "s", sample, "bare")
    r = Repo.open(tmp_path / "s")
    checkout(r, "main", tmp_path / "sub", subpath="/deep/a")
    assert (tmp_path / "sub/b/c/leaf").read_text() == "leaf\n"
    checkout(r, "main", tmp_path / "cp", copy=True)
    assert os.stat(tmp_path / "cp/bin/tool").st_nlink == 1
    assert snapshot(tmp_path / "cp") == snapshot(sample)


def test_recommit_of_hardlinked_checkout_reuses_objects(tmp_path: Path, sample: Path) -> None:
    first = strata_commit(tmp_path / "s", sample, "bare")
    r = Repo.open(tmp_path / "s")
    checkout(r, "main", tmp_path / "co")
    (tmp_path / "co/new-file").write_text("new\n")
    res = commit_directory(r, tmp_path / "co", branch="main", timestamp=TS)
    assert res.files_read == 1
    assert res.files_reused == sum(1 for e in snapshot(sample).values()
                                   if e[0] in (0o100000, 0o120000)) - 1  # hardlink pair counts once
    assert r.load_commit(res.checksum).parent == first
    shutil.rmtree(tmp_path / "co")


def test_sync_checkout_equals_fresh_checkout(tmp_path: Path, sample: Path) -> None:
    from store.checkout import sync_checkout

    r = Repo.init(tmp_path / "s", RepoMode.BARE)
    a = commit_directory(r, sample, branch="a", timestamp=TS).checksum
    changed = tmp_path / "changed"
    shutil.copytree(sample, changed, symlinks=True)
    shutil.rmtree(changed / "deep/a/b")
    (changed / "deep/a/b").write_text("now a file\n")
    (changed / "bin/tool").write_text("changed tool\n")
    (changed / "lib/link-rel").unlink()
    (changed / "lib/link-rel").mkdir()
    (changed / "newdir/x").parent.mkdir()
    (changed / "newdir/x").write_text("x\n")
    os.chmod(changed / "private", 0o750)
    os.unlink(changed / "mid")
    b = commit_directory(r, changed, branch="b", timestamp=TS).checksum
    ca, cb = r.load_commit(a), r.load_commit(b)
    checkout(r, a, tmp_path / "co")
    sync_checkout(r, tmp_path / "co", (ca.root_tree, ca.root_meta), (cb.root_tree, cb.root_meta))
    checkout(r, b, tmp_path / "fresh")
    assert snapshot(tmp_path / "co") == snapshot(tmp_path / "fresh") == snapshot(changed)
