"""Kernels under ``boot/ostree`` as deployments change, a /boot filesystem of its own, and
the ``sysroot.bootprefix`` entry paths, each checked against the real ``ostree admin``."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from boot.admin import cleanup, rollback
from boot.bls import BlsEntry
from boot.deploy import deploy, os_init
from boot.errors import BootError
from boot.kernel import find_kernel
from boot.sysroot import Sysroot
from tests.boot.conftest import make_tree, ostree_admin, ostree_commit, ostree_sysroot

pytestmark = pytest.mark.integration


def _kernel_tree(work: Path, v: int, kver: str, kernel: bytes) -> Path:
    return make_tree(work / f"tree{v}", version=str(v), kernel=kernel,
                     initramfs=b"initramfs of " + kernel, kver=kver)


def _kernel_dirs(s: Sysroot) -> set[str]:
    return {p.name for p in (s.boot / "ostree").iterdir()}


def _entries(s: Sysroot) -> list[BlsEntry]:
    """The current entries, default first."""
    out = [BlsEntry.parse(p.read_text()) for p in (s.boot / "loader/entries").glob("*.conf")]
    return sorted(out, key=lambda e: -int(e.get("version") or 0))


def test_each_kernel_has_its_dir_until_no_deployment_uses_it(work: Path) -> None:
    s = Sysroot(work / "sysroot")
    os_init(s, "testos")
    trees = {1: _kernel_tree(work, 1, "6.1.0-1-test", b"kernel one"),
             2: _kernel_tree(work, 2, "6.1.0-2-test", b"kernel two"),
             3: _kernel_tree(work, 3, "6.1.0-2-test", b"kernel two"),  # v2's kernel again
             4: _kernel_tree(work, 4, "6.12.0-1-test", b"kernel three")}
    dirs = {v: f"testos-{find_kernel(t).bootcsum}" for v, t in trees.items()}
    for v in (1, 2):
        ostree_commit(s.repo_path, trees[v], "os/x", 1700000000 + v)
        deploy(s, refspec="os/x")
    assert _kernel_dirs(s) == {dirs[1], dirs[2]}
    assert [e.get("linux") for e in _entries(s)] == [
        f"/ostree/{dirs[2]}/vmlinuz-6.1.0-2-test", f"/ostree/{dirs[1]}/vmlinuz-6.1.0-1-test"]
    rollback(s)
    assert [e.get("initrd") for e in _entries(s)] == [
        f"/ostree/{dirs[1]}/initramfs-6.1.0-1-test.img",
        f"/ostree/{dirs[2]}/initramfs-6.1.0-2-test.img"]
    ostree_commit(s.repo_path, trees[3], "os/x", 1700000003)
    deploy(s, refspec="os/x")  # keeps v1 (the merge deployment), drops v2: its kernel is v3's
    assert _kernel_dirs(s) == {dirs[1], dirs[2]}
    ostree_commit(s.repo_path, trees[4], "os/x", 1700000004)
    deploy(s, refspec="os/x")  # drops v1, the last user of kernel one
    assert _kernel_dirs(s) == {dirs[3], dirs[4]}
    assert (s.boot / "ostree" / dirs[4] / "vmlinuz-6.12.0-1-test").read_bytes() == b"kernel three"
    ostree_admin("cleanup", f"--sysroot={s.path}")  # ostree agrees: nothing more to remove
    assert _kernel_dirs(s) == {dirs[3], dirs[4]}
    cleanup(s, rollback=True)  # v3 goes, and the last user of kernel two with it
    assert _kernel_dirs(s) == {dirs[4]}
    assert [e.get("linux") for e in _entries(s)] == [f"/ostree/{dirs[4]}/vmlinuz-6.12.0-1-test"]


@pytest.fixture
def bootfs() -> Iterator[list[Path]]:
    """Mount a small ext4 image over a sysroot's ``boot`` (append the sysroot path)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a /boot filesystem needs root")
    mounted: list[Path] = []
    yield mounted
    for s in mounted:
        subprocess.run(["umount", str(s / "boot")], check=True)


def _mount_boot(sysroot: Path, bootfs: list[Path]) -> None:
    img = sysroot.with_name(sysroot.name + "-boot.img")
    subprocess.run(["truncate", "-s", "64M", str(img)], check=True)
    subprocess.run(["mkfs.ext4", "-q", str(img)], check=True)
    (sysroot / "boot").mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-o", "loop", str(img), str(sysroot / "boot")], check=True)
    bootfs.append(sysroot)


def _boot_listing(boot: Path) -> dict[str, str]:
    """Path -> type, mode and (for files) content or (for symlinks) target, under boot/."""
    out = {}
    for p in sorted(boot.rglob("*")):
        rel = str(p.relative_to(boot))
        if rel.startswith("lost+found"):
            continue
        st = p.lstat()
        kind = (f"-> {os.readlink(p)}" if p.is_symlink() else
                "dir" if p.is_dir() else p.read_bytes().decode(errors="replace"))
        out[rel] = f"{stat.filemode(st.st_mode)} {kind}"
    return out


def test_boot_partition_of_its_own_as_ostree_has_it(work: Path, bootfs: list[Path]) -> None:
    """/boot on a filesystem of its own: kernels are copied (mode kept), entries and the
    loader swap are the same as ``ostree admin deploy``'s for the same commits, and
    rollback and retention leave nothing behind."""
    ours = Sysroot(work / "ours")
    ours.path.mkdir()
    _mount_boot(ours.path, bootfs)
    os_init(ours, "testos")
    theirs = work / "theirs"
    _mount_boot(theirs, bootfs)
    ostree_sysroot(theirs)
    for v in (1, 2, 3):
        tree = _kernel_tree(work, v, f"6.1.0-{v}-test", f"kernel {v}".encode())
        (tree / f"usr/lib/modules/6.1.0-{v}-test/initramfs.img").chmod(0o600)  # as dracut's
        for root in (theirs, ours.path):
            ostree_commit(root / "ostree/repo", tree, "os/x", 1700000000 + v)
        ostree_admin("deploy", f"--sysroot={theirs}", "--os=testos", "os/x")
        deploy(ours, refspec="os/x")
        assert _boot_listing(ours.boot) == _boot_listing(theirs / "boot"), f"after deploy {v}"
    want = _boot_listing(theirs / "boot")
    default = [e.get("linux") for e in _entries(ours)]
    rollback(ours)  # ostree 2022.7 has no rollback: compare its view, and after a second one
    assert [e.get("linux") for e in _entries(ours)] == default[::-1]
    status = ostree_admin("status", f"--sysroot={ours.path}").stdout
    assert status.index(ours.load().deployments[0].checksum) < status.index(
        ours.load().deployments[1].checksum)
    rollback(ours)
    assert _boot_listing(ours.boot) == want
    listing = _boot_listing(ours.boot)
    assert {k for k in listing if "/" not in k} == {"boot", "loader", "loader.1", "ostree"}
    assert len(_kernel_dirs(ours)) == 2 and all(
        (e.get("linux") or "").startswith("/ostree/testos-") for e in _entries(ours))
    kdir = next((ours.boot / "ostree").iterdir())
    initrd = next(kdir.glob("initramfs-*"))
    assert initrd.stat().st_nlink == 1 and stat.S_IMODE(initrd.stat().st_mode) == 0o600
    assert initrd.stat().st_dev != ours.repo_path.stat().st_dev


def test_bootprefix_config_prefixes_entry_paths(work: Path, bootfs: list[Path]) -> None:
    """``[sysroot] bootprefix=true`` (newer ostree, bootc): entries name ``/boot/ostree/...``,
    valid through ``boot/boot -> .`` on a /boot partition; a non-boolean is refused and the
    boot configuration is left as it was."""
    s = Sysroot(work / "s")
    s.path.mkdir()
    _mount_boot(s.path, bootfs)
    os_init(s, "testos")
    cfg = s.repo_path / "config"
    cfg.write_text(cfg.read_text() + "\n[sysroot]\nbootprefix=true\n")
    ostree_commit(s.repo_path, _kernel_tree(work, 1, "6.1.0-1-test", b"k1"), "os/x", 1700000001)
    deploy(s, refspec="os/x")
    (entry,) = _entries(s)
    for key in ("linux", "initrd"):
        path = entry.get(key) or ""
        assert path.startswith("/boot/ostree/testos-"), entry.to_text()
        assert (s.boot / path.lstrip("/")).is_file()
    before = _boot_listing(s.boot)
    cfg.write_text(cfg.read_text().replace("bootprefix=true", "bootprefix=yes"))
    ostree_commit(s.repo_path, _kernel_tree(work, 2, "6.1.0-2-test", b"k2"), "os/x", 1700000002)
    with pytest.raises(BootError, match="sysroot.bootprefix is 'yes', not a boolean, in "):
        deploy(s, refspec="os/x")
    assert _boot_listing(s.boot) == before
    assert len(list((s.stateroot_dir("testos") / "deploy").iterdir())) == 2  # tree + origin


@pytest.mark.parametrize("version", ["42.1", "1"])  # "1" is in PRETTY_NAME "Test OS 1"
def test_entry_title_carries_the_commit_version_as_ostree(work: Path, version: str) -> None:
    """ostree appends the commit's ``version`` metadata to the title unless the os-release
    name holds it already: the entries of both tools are the same bytes."""
    theirs = ostree_sysroot(work / "theirs")
    ours = Sysroot(work / "ours")
    os_init(ours, "testos")
    tree = make_tree(work / "tree")
    for root in (theirs, ours.path):
        subprocess.run(["ostree", f"--repo={root}/ostree/repo", "commit", "-b", "os/x",
                        "--timestamp=@1700000000", f"--add-metadata-string=version={version}",
                        str(tree)], check=True, capture_output=True)
    ostree_admin("deploy", f"--sysroot={theirs}", "--os=testos", "os/x")
    deploy(ours, refspec="os/x")
    (want,) = (theirs / "boot/loader/entries").iterdir()
    assert (ours.boot / "loader/entries" / want.name).read_text() == want.read_text()
    assert ("42.1 (ostree:0)" in want.read_text()) is (version == "42.1")
