"""Real Debian 12 packages layered onto a real minbase the way dpkg would leave them:
empty directories kept, removals through merged-/usr symlinks with prerm/postrm run,
Essential packages never removed."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures.images import apt_repo, ostree_layout
from layering.compose import ComposeRequest, compose
from layering.errors import DepsolveError
from store.commit import commit_directory
from store.mtree import MutableTree
from store.repo import Repo, RepoMode
from tests.layering.realworld import build_minbase, cached_debs
from tests.store.servers import http_server
from tests.util import require_tool

pytestmark = pytest.mark.slow

# what apt-get install -s adds to a minbase for these (Debian 12)
NANO_VIM = ["nano", "libncursesw6", "libgpm2", "vim-tiny", "vim-common", "xxd"]
NGINX_COMMON = ["nginx-common"]


@dataclass
class World:
    repo: Repo
    base: str
    source: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require_tool("mmdebstrap", "apt-get", "apt-ftparchive", "bwrap")
    tmp = tmp_path_factory.mktemp("dpkgworld")
    rootfs = ostree_layout(build_minbase(tmp / "rootfs"))  # as a deployed image has it
    repo = Repo.init(tmp / "repo", RepoMode.BARE)
    base = commit_directory(repo, rootfs, branch="minbase").checksum
    subprocess.run(["rm", "-rf", "--one-file-system", str(rootfs)], check=True)
    apt_repo(tmp / "apt", cached_debs(NANO_VIM + NGINX_COMMON))
    with http_server(tmp / "apt") as served:
        yield World(repo, base, f"deb [trusted=yes] {served.url} stable main")


def _shipped_dir(deb: Path, path: str) -> tuple[int, int, int]:
    """(mode, uid, gid) of a directory as the .deb ships it (dpkg-deb's own listing)."""
    out = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True,
                         check=True).stdout
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(out)) as tf:
        names = tf.getnames()
        m = tf.getmember(f"./{path}/" if f"./{path}/" in names else f"./{path}")
    return stat.S_IFDIR | m.mode, m.uid, m.gid


def _dir(repo: Repo, commit: str, path: str) -> MutableTree:
    node = MutableTree.from_commit(repo, commit).lookup(path)
    assert isinstance(node, MutableTree), f"/{path} missing from {commit}"
    return node


def test_nginx_common_keeps_its_empty_log_directory(world: World) -> None:
    deb = cached_debs(NGINX_COMMON)[0]
    r = compose(world.repo, ComposeRequest(base=world.base, branch="nginx-noscripts",
                                           install=("nginx-common",), sources=(world.source,),
                                           no_scripts=True))
    assert r.checksum is not None
    node = _dir(world.repo, r.checksum, "var/log/nginx")
    assert not node.files and not node.dirs
    assert (node.meta.mode, node.meta.uid, node.meta.gid) == _shipped_dir(deb, "var/log/nginx")


def test_nginx_common_postinst_finds_its_log_directory(world: World) -> None:
    """The postinst chowns /var/log/nginx to www-data:adm (it failed before on a missing
    directory, and in a sandbox that mapped only uid 0)."""
    r = compose(world.repo, ComposeRequest(base=world.base, branch="nginx",
                                           install=("nginx-common",), sources=(world.source,)))
    assert r.checksum is not None
    node = _dir(world.repo, r.checksum, "var/log/nginx")
    assert (node.meta.uid, node.meta.gid) != (0, 0)  # chowned to www-data:adm


def _alternative(repo: Repo, commit: str, name: str) -> str | None:
    csum = MutableTree.from_commit(repo, commit).lookup(f"usr/etc/alternatives/{name}")
    if not isinstance(csum, str):
        return None
    meta, _ = repo.load_file(csum)
    return meta.symlink


def test_removing_nano_follows_merged_usr_and_runs_its_prerm(world: World) -> None:
    with_nano = compose(world.repo, ComposeRequest(
        base=world.base, branch="nano", install=("nano", "vim-tiny"), sources=(world.source,)))
    assert with_nano.checksum is not None
    assert isinstance(MutableTree.from_commit(world.repo, with_nano.checksum)
                      .lookup("usr/bin/nano"), str)
    assert _alternative(world.repo, with_nano.checksum, "editor") == "/bin/nano"
    gone = compose(world.repo, ComposeRequest(base=with_nano.checksum, branch="no-nano",
                                              remove=("nano",), sources=(world.source,)))
    assert gone.checksum is not None and [p.name for p in gone.resolution.remove] == ["nano"]
    tree = MutableTree.from_commit(world.repo, gone.checksum)
    assert tree.lookup("usr/bin/nano") is None and tree.lookup("usr/bin/rnano") is None
    assert tree.lookup("usr/share/doc/nano") is None
    # nano's prerm ran update-alternatives --remove: editor falls back to vim.tiny
    assert _alternative(world.repo, gone.checksum, "editor") == "/usr/bin/vim.tiny"
    assert [e[0] for e in gone.script_log.entries if e[0] != "strata sandbox"] == ["nano prerm"]  # no postrm


def test_an_essential_package_is_never_removed(world: World) -> None:
    with pytest.raises(DepsolveError, match="bash: it is an Essential package"):
        compose(world.repo, ComposeRequest(base=world.base, branch="nobash", remove=("bash",),
                                           sources=(world.source,), dry_run=True))
    with pytest.raises(DepsolveError, match=r"cannot remove libc6: the Essential package \S+ depends on it"):
        compose(world.repo, ComposeRequest(base=world.base, branch="nolibc", remove=("libc6",),
                                           sources=(world.source,), dry_run=True))
    assert world.repo.read_ref("nobash") is None
    assert not os.path.exists(world.repo.path / "refs/heads/nolibc")


def test_removing_vim_runs_prerm_and_postrm_in_dpkg_order(world: World) -> None:
    with_vim = compose(world.repo, ComposeRequest(
        base=world.base, branch="nano-vim", install=("nano", "vim-tiny"), sources=(world.source,)))
    assert with_vim.checksum is not None
    gone = compose(world.repo, ComposeRequest(base=with_vim.checksum, branch="no-vim",
                                              remove=("vim-tiny", "vim-common"),
                                              sources=(world.source,)))
    assert gone.checksum is not None
    assert [e[0] for e in gone.script_log.entries if e[0] != "strata sandbox"] == [
        "vim-tiny prerm", "vim-common postrm"]
    tree = MutableTree.from_commit(world.repo, gone.checksum)
    assert tree.lookup("usr/bin/vim.tiny") is None
    assert _alternative(world.repo, gone.checksum, "editor") == "/bin/nano"
    assert _alternative(world.repo, gone.checksum, "vi") is None
