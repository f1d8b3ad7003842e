"""A base image whose /usr/etc is a symlink to a host directory, layered with a package whose
postinst writes /etc: the host directory must not be written (bwrap would resolve a bind's
source through the symlink on the host)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from layering.compose import ComposeRequest, compose
from store.commit import commit_directory
from store.errors import ToolError
from tests.layering.conftest import DebWorld


def test_usr_etc_symlink_in_base_is_not_bound_over_host(deb_world: DebWorld,
                                                         tmp_path: Path) -> None:
    from fixtures.images import deb_base_rootfs

    host = tmp_path / "host-etc"
    (host / "hello.d").mkdir(parents=True)
    (host / "canary").write_text("untouched\n")
    rootfs = deb_base_rootfs(tmp_path / "rootfs")
    shutil.rmtree(rootfs / "etc")
    (rootfs / "usr/etc").symlink_to(host)
    base = commit_directory(deb_world.repo, rootfs, branch="base/hostile",
                            subject="hostile base").checksum
    try:
        compose(deb_world.repo, ComposeRequest(base=base, branch="t/hostile",
                                               install=("hello",), sources=(deb_world.source,)))
    except ToolError:
        pass  # refusing is fine; writing the host is not
    assert sorted(p.relative_to(host).as_posix() for p in host.rglob("*")) == [
        "canary", "hello.d"]
    assert (host / "canary").read_text() == "untouched\n"


@pytest.fixture(autouse=True)
def _need_root() -> None:
    import os

    if os.geteuid() != 0:
        pytest.skip("maintainer scripts need root (overlayfs)")
