"""Find a tree's kernel and initramfs and install them under ``boot/ostree``.

Layout read (as OSTree's ``usr/lib/modules`` kernel layout)::

    usr/lib/modules/KVER/vmlinuz
    usr/lib/modules/KVER/initramfs.img     (optional)

Installed as ``boot/ostree/STATEROOT-BOOTCSUM/{vmlinuz-KVER,initramfs-KVER.img}``,
where BOOTCSUM is the SHA-256 of the kernel bytes followed by the initramfs
bytes, exactly as ``ostree admin deploy`` names the directory.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from boot.errors import KernelError
from store.fsutil import fsync_dir, rmtree

MODULES = "usr/lib/modules"


@dataclass(frozen=True)
class Kernel:
    """A kernel found in a deployment tree."""

    kver: str
    vmlinuz: Path
    initramfs: Path | None
    bootcsum: str

    @property
    def linux_name(self) -> str:
        return f"vmlinuz-{self.kver}"

    @property
    def initramfs_name(self) -> str | None:
        return f"initramfs-{self.kver}.img" if self.initramfs else None


def _hash_into(h: hashlib._Hash, path: Path) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)


def find_kernel(tree: Path) -> Kernel:
    """The kernel of ``tree`` (first KVER in sorted order); KernelError when there is none."""
    mods = tree / MODULES
    kvers = sorted(d.name for d in mods.iterdir()
                   if (d / "vmlinuz").is_file()) if mods.is_dir() else []
    if not kvers:
        raise KernelError(f"no kernel in {tree}: expected {MODULES}/KVER/vmlinuz")
    kdir = mods / kvers[0]
    initramfs = kdir / "initramfs.img"
    h = hashlib.sha256()
    _hash_into(h, kdir / "vmlinuz")
    if initramfs.is_file():
        _hash_into(h, initramfs)
    return Kernel(kvers[0], kdir / "vmlinuz", initramfs if initramfs.is_file() else None,
                  h.hexdigest())


def boot_dirname(stateroot: str, bootcsum: str) -> str:
    """``STATEROOT-BOOTCSUM``, the kernel directory name under ``boot/ostree``."""
    return f"{stateroot}-{bootcsum}"


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hardlink when on the same filesystem (as ostree does), else copy and fsync."""
    try:
        os.link(src, dst)
        return
    except OSError:
        pass
    shutil.copyfile(src, dst)
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def install_kernel(boot: Path, stateroot: str, kernel: Kernel) -> Path:
    """Hardlink or copy kernel and initramfs to ``boot/ostree/STATEROOT-BOOTCSUM`` unless there.

    The directory appears complete or not at all (written beside, fsynced, renamed).
    """
    final = boot / "ostree" / boot_dirname(stateroot, kernel.bootcsum)
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp-{final.name}")
    rmtree(tmp)
    tmp.mkdir()
    files = [(kernel.vmlinuz, kernel.linux_name)]
    if kernel.initramfs and kernel.initramfs_name:
        files.append((kernel.initramfs, kernel.initramfs_name))
    for src, name in files:
        _link_or_copy(src, tmp / name)
    fsync_dir(tmp)
    os.rename(tmp, final)
    fsync_dir(final.parent)
    return final
