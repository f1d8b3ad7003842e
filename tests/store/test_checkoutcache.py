"""The kept checkout: leased read-only, brought from tree to tree, taken away whole."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from store.checkout import sync_checkout
from store.checkoutcache import CheckoutCache
from store.commit import commit_directory
from store.repo import Repo, RepoMode
from tests.store.treeutil import hardlink_groups, make_sample_tree, snapshot
from tests.util import require_tool, run

TS = 1_700_000_000


@pytest.fixture()
def two(tmp_path: Path) -> tuple[Repo, tuple[str, str], tuple[str, str], Path]:
    """A bare repository with commits a (the sample) and b (a changed copy, a dir xattr gone)."""
    first = make_sample_tree(tmp_path / "first")
    os.setxattr(first / "deep", "user.marker", b"only in a")
    second = tmp_path / "second"
    shutil.copytree(first, second, symlinks=True)
    os.removexattr(second / "deep", "user.marker")
    (second / "bin/tool").write_text("changed tool\n")
    shutil.rmtree(second / "deep/a/b")
    (second / "added").mkdir()
    (second / "added/file").write_text("new\n")
    r = Repo.init(tmp_path / "repo", RepoMode.BARE)
    ca = r.load_commit(commit_directory(r, first, branch="ref-a", timestamp=TS).checksum)
    cb = r.load_commit(commit_directory(r, second, branch="ref-b", timestamp=TS).checksum)
    return r, (ca.root_tree, ca.root_meta), (cb.root_tree, cb.root_meta), second


def ostree_checkout(repo: Repo, ref: str, dest: Path) -> Path:
    """The oracle.  (Refs must not look like hex: ostree reads "a" as a checksum prefix.)"""
    require_tool("ostree")
    run(["ostree", "checkout", f"--repo={repo.path}", ref, str(dest)])
    return dest


def test_sync_removes_xattrs_the_new_dirmeta_lacks(tmp_path: Path, two: tuple) -> None:
    r, a, b, second = two
    co = ostree_checkout(r, "ref-a", tmp_path / "co")
    assert os.getxattr(co / "deep", "user.marker") == b"only in a"
    sync_checkout(r, co, a, b)
    assert snapshot(co) == snapshot(ostree_checkout(r, "ref-b", tmp_path / "oracle"))


def test_lease_keeps_one_checkout_and_brings_it_to_each_tree(tmp_path: Path, two: tuple) -> None:
    r, a, b, _second = two
    cache = CheckoutCache(r)
    with cache.lease(a, tmp_path) as lower:
        assert lower == cache.path
        assert snapshot(lower) == snapshot(ostree_checkout(r, "ref-a", tmp_path / "oa"))
        inode = (lower / "bin/suid").stat().st_ino
    assert cache.holds() == a
    with cache.lease(b, tmp_path) as lower:
        assert snapshot(lower) == snapshot(ostree_checkout(r, "ref-b", tmp_path / "ob"))
        assert (lower / "bin/suid").stat().st_ino == inode  # untouched entries stay
    assert cache.holds() == b


def test_lease_while_another_holds_the_checkout_makes_a_fresh_one(tmp_path: Path,
                                                                  two: tuple) -> None:
    r, a, b, _second = two
    cache = CheckoutCache(r)
    (tmp_path / "s2").mkdir()
    with cache.lease(a, tmp_path):
        with CheckoutCache(r).lease(b, tmp_path / "s2") as other:
            assert other == tmp_path / "s2/lower"
            assert snapshot(other) == snapshot(ostree_checkout(r, "ref-b", tmp_path / "ob"))
    assert cache.holds() == a


def test_take_moves_the_checkout_brought_to_the_tree(tmp_path: Path, two: tuple) -> None:
    r, a, b, _second = two
    cache = CheckoutCache(r)
    assert not cache.take(b, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
    with cache.lease(a, tmp_path):
        pass
    assert cache.take(b, tmp_path / "dest")
    assert cache.holds() is None and not cache.path.exists()
    assert snapshot(tmp_path / "dest") == snapshot(ostree_checkout(r, "ref-b", tmp_path / "ob"))
    groups = hardlink_groups(tmp_path / "dest")
    assert groups == hardlink_groups(tmp_path / "ob")


def test_prepare_checks_out_in_the_background_only_when_nothing_is_kept(tmp_path: Path,
                                                                        two: tuple) -> None:
    r, a, b, _second = two
    cache = CheckoutCache(r)
    cache.prepare(a)
    cache.wait()
    assert cache.holds() == a
    assert snapshot(cache.path) == snapshot(ostree_checkout(r, "ref-a", tmp_path / "oa"))
    cache.prepare(b)  # something is kept: left alone, a later lease syncs from it
    cache.wait()
    assert cache.holds() == a


def test_a_take_killed_midway_leaves_nothing_kept_and_the_next_lease_rebuilds(
        tmp_path: Path, two: tuple) -> None:
    r, a, b, _second = two
    with CheckoutCache(r).lease(a, tmp_path):
        pass
    code = ("import sys; from pathlib import Path; from store.repo import Repo; "
            "from store.checkoutcache import CheckoutCache; "
            f"CheckoutCache(Repo.open('{r.path}')).take({b!r}, Path('{tmp_path}/dest'))")
    proc = subprocess.run([sys.executable, "-c", code], env={
        **os.environ, "STRATA_TEST_FAIL_AT": "checkout-cache-take"}, cwd=Path(__file__).parents[2])
    assert proc.returncode == 1
    assert not (tmp_path / "dest").exists()
    cache = CheckoutCache(r)
    assert cache.holds() is None
    assert not cache.take(a, tmp_path / "dest")
    with cache.lease(a, tmp_path) as lower:
        assert snapshot(lower) == snapshot(ostree_checkout(r, "ref-a", tmp_path / "oa"))


def test_prepare_while_the_checkout_is_leased_gives_up_harmlessly(tmp_path: Path,
                                                                  two: tuple) -> None:
    r, a, b, _second = two
    cache = CheckoutCache(r)
    with cache.lease(a, tmp_path) as lower:
        other = CheckoutCache(r)
        other.prepare(b)
        assert other._preparing is not None
        assert other._preparing.wait() != 0  # the lock is held: the process gives up
        other.wait()
        assert snapshot(lower) == snapshot(ostree_checkout(r, "ref-a", tmp_path / "oa"))
    assert cache.holds() == a


def test_prune_drops_the_kept_checkout_once_its_tree_is_unreachable(tmp_path: Path,
                                                                    two: tuple) -> None:
    from store.prune import prune

    r, a, b, _second = two
    cache = CheckoutCache(r)
    with cache.lease(a, tmp_path):
        pass
    prune(r, refs_only=True)
    assert cache.holds() == a  # ref-a still reaches it
    r.set_ref("ref-a", None)
    res = prune(r, refs_only=True)
    assert res.deleted > 0
    assert cache.holds() is None and not cache.path.exists()
    require_tool("ostree")
    run(["ostree", "fsck", f"--repo={r.path}"])


def test_cancel_stops_the_background_checkout_and_a_lease_still_works(tmp_path: Path,
                                                                     two: tuple) -> None:
    r, a, _b, _second = two
    cache = CheckoutCache(r)
    cache.prepare(a)
    proc = cache._preparing
    assert proc is not None
    cache.cancel()
    assert proc.returncode is not None and cache._preparing is None
    if proc.returncode != 0:  # stopped before it was done: nothing is kept
        assert cache.holds() is None
    with cache.lease(a, tmp_path) as lower:
        assert snapshot(lower) == snapshot(ostree_checkout(r, "ref-a", tmp_path / "oa"))


def test_the_background_checkout_dies_with_a_killed_caller(two: tuple) -> None:
    import time

    r, a, _b, _second = two
    code = ("import os; from store.repo import Repo; from store.checkoutcache import "
            f"CheckoutCache; c = CheckoutCache(Repo.open('{r.path}')); c.prepare({a!r}); "
            "print(c._preparing.pid, flush=True); os.kill(os.getpid(), 9)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).parents[2])
    assert proc.returncode == -9
    child = int(proc.stdout.split()[0])

    def alive() -> bool:
        try:
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state != "Z"

    deadline = time.monotonic() + 10
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive()
    assert CheckoutCache(r).holds() is None  # it stopped instead of finishing unobserved
