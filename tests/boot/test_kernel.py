"""Kernel discovery, bootcsum and installation under boot/ostree."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from boot.errors import KernelError
from boot.kernel import find_kernel, install_kernel
from tests.boot.conftest import make_tree


def test_bootcsum_is_sha256_of_kernel_then_initramfs(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "t", kernel=b"K" * 1000, initramfs=b"I" * 10)
    k = find_kernel(tree)
    assert k.kver == "6.1.0-test"
    assert k.bootcsum == hashlib.sha256(b"K" * 1000 + b"I" * 10).hexdigest()
    assert (k.linux_name, k.initramfs_name) == ("vmlinuz-6.1.0-test", "initramfs-6.1.0-test.img")


def test_kernel_without_initramfs(tmp_path: Path) -> None:
    k = find_kernel(make_tree(tmp_path / "t", kernel=b"K", initramfs=None))
    assert k.initramfs is None and k.bootcsum == hashlib.sha256(b"K").hexdigest()
    d = install_kernel(tmp_path / "boot", "os", k)
    assert sorted(p.name for p in d.iterdir()) == ["vmlinuz-6.1.0-test"]


def test_missing_kernel_is_an_error_naming_the_tree(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "t")
    (tree / "usr/lib/modules/6.1.0-test/vmlinuz").unlink()
    with pytest.raises(KernelError, match="no kernel in .*usr/lib/modules/KVER/vmlinuz"):
        find_kernel(tree)


def test_install_is_idempotent_and_leaves_no_temp(tmp_path: Path) -> None:
    k = find_kernel(make_tree(tmp_path / "t"))
    boot = tmp_path / "boot"
    d = install_kernel(boot, "os", k)
    assert d.name == f"os-{k.bootcsum}"
    assert (d / "vmlinuz-6.1.0-test").read_bytes() == b"kernel-1\n"
    assert install_kernel(boot, "os", k) == d
    assert [p.name for p in (boot / "ostree").iterdir()] == [d.name]


def test_newest_of_several_kernels_is_taken(tmp_path: Path) -> None:
    """A tree updated by apt keeps the old kernel beside the new one: the newest version
    (compared as numbers, not as text) is the one deployed."""
    tree = make_tree(tmp_path / "t", kver="6.1.0-50-cloud-amd64", kernel=b"old")
    for kver in ("6.1.0-57-cloud-amd64", "6.1.0-9-cloud-amd64"):
        make_tree(tree, kver=kver, kernel=kver.encode())
    k = find_kernel(tree)
    assert k.kver == "6.1.0-57-cloud-amd64" and k.vmlinuz.read_bytes() == b"6.1.0-57-cloud-amd64"
    d = install_kernel(tmp_path / "boot", "os", k)
    assert sorted(p.name for p in d.iterdir()) == ["initramfs-6.1.0-57-cloud-amd64.img",
                                                   "vmlinuz-6.1.0-57-cloud-amd64"]


def test_install_on_the_same_filesystem_hardlinks(tmp_path: Path) -> None:
    """As ostree's install_into_boot: on the tree's filesystem kernel and initramfs are the
    tree's files (its repository objects), not copies (they were always copied: os.link
    without a directory fd calls link(2), which does not follow /proc/self/fd/N)."""
    k = find_kernel(make_tree(tmp_path / "t"))
    d = install_kernel(tmp_path / "boot", "os", k)
    for rel, name in k.sources():
        assert (d / name).stat().st_ino == (k.tree / rel).stat().st_ino, name
