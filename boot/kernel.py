"""Find a tree's kernel and initramfs and install them under ``boot/ostree``.

Layout read (as OSTree's ``usr/lib/modules`` kernel layout)::

    usr/lib/modules/KVER/vmlinuz
    usr/lib/modules/KVER/initramfs.img     (optional)

Installed as ``boot/ostree/STATEROOT-BOOTCSUM/{vmlinuz-KVER,initramfs-KVER.img}``,
where BOOTCSUM is the SHA-256 of the kernel bytes followed by the initramfs
bytes, exactly as ``ostree admin deploy`` names the directory.

The tree is an image's: every component of those paths must be a real
directory or regular file, reached through fds that follow no symlink (see
:mod:`store.beneath`).  A symlinked ``KVER`` or ``vmlinuz`` is not a kernel;
nothing on the host is read through it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from boot.errors import KernelError
from store import beneath
from store.fsutil import fsync_dir, rmtree

MODULES = "usr/lib/modules"


@dataclass(frozen=True)
class Kernel:
    """A kernel found in a deployment tree (``tree``; the paths below are inside it)."""

    kver: str
    vmlinuz: Path
    initramfs: Path | None
    bootcsum: str
    tree: Path

    @property
    def linux_name(self) -> str:
        return f"vmlinuz-{self.kver}"

    @property
    def initramfs_name(self) -> str | None:
        return f"initramfs-{self.kver}.img" if self.initramfs else None

    def sources(self) -> list[tuple[str, str]]:
        """(path inside the tree, name under boot) of the kernel and the initramfs."""
        out = [(f"{MODULES}/{self.kver}/vmlinuz", self.linux_name)]
        if self.initramfs_name:
            out.append((f"{MODULES}/{self.kver}/initramfs.img", self.initramfs_name))
        return out


def _is_regular(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def _kvers(root: int) -> list[str]:
    """KVERs whose directory and vmlinuz are real (no symlink), sorted."""
    try:
        mods = beneath.open_dir(root, MODULES)
    except OSError as e:
        if e.errno in beneath.ABSENT:
            return []
        raise
    out = []
    try:
        for name in sorted(os.listdir(mods)):
            try:
                kdir = os.open(name, beneath.DIR_FLAGS, dir_fd=mods)
            except OSError:
                continue  # not a directory, or a symlink: no kernel here
            try:
                if _is_regular(kdir, "vmlinuz"):
                    out.append(name)
            finally:
                os.close(kdir)
    finally:
        os.close(mods)
    return out


def _hash_into(h: hashlib._Hash, root: int, rel: str) -> None:
    with open(beneath.open_file(root, rel), "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)


def kver_key(kver: str) -> tuple[str | int, ...]:
    """Sort key ordering kernel versions as numbers where they are digits
    (``6.1.0-9`` < ``6.1.0-57`` < ``6.12.0-1``)."""
    return tuple(int(p) if i % 2 else p for i, p in enumerate(re.split(r"(\d+)", kver)))


def find_kernel(tree: Path) -> Kernel:
    """The kernel of ``tree``, the newest KVER when there are several; KernelError when there
    is none.

    A Debian tree that took a kernel update through apt keeps the old kernel package
    beside the new one; the new one is what the image means to boot (Debian points
    ``/vmlinuz`` at it).  ostree takes the first in directory order.
    """
    try:
        root = beneath.open_root(tree)
    except OSError as e:
        raise KernelError(f"no kernel in {tree}: {e.strerror}") from None
    try:
        kvers = _kvers(root)
        if not kvers:
            raise KernelError(f"no kernel in {tree}: expected {MODULES}/KVER/vmlinuz "
                              "(a regular file, not through a symlink)")
        kver = max(kvers, key=kver_key)
        kdir = f"{MODULES}/{kver}"
        h = hashlib.sha256()
        _hash_into(h, root, f"{kdir}/vmlinuz")
        st = beneath.lstat(root, f"{kdir}/initramfs.img")
        has_initramfs = st is not None and stat.S_ISREG(st.st_mode)
        if has_initramfs:
            _hash_into(h, root, f"{kdir}/initramfs.img")
    finally:
        os.close(root)
    return Kernel(kver, tree / kdir / "vmlinuz",
                  tree / kdir / "initramfs.img" if has_initramfs else None, h.hexdigest(), tree)


def boot_dirname(stateroot: str, bootcsum: str) -> str:
    """``STATEROOT-BOOTCSUM``, the kernel directory name under ``boot/ostree``."""
    return f"{stateroot}-{bootcsum}"


def _link_fd(src: int, dst: Path) -> None:
    """Hardlink the open file ``src`` (not a name that may have changed) as ``dst``.

    linkat(2) with AT_SYMLINK_FOLLOW on ``/proc/self/fd/N``.  It takes a directory fd:
    ``os.link`` without one calls link(2), which never follows the magic link and fails
    with EXDEV, so every kernel and initramfs was copied even on the repository's
    filesystem (where ostree hardlinks them: 39.9 MB more per kernel in bench/deploy.py).
    """
    fds = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(str(src), dst, src_dir_fd=fds, follow_symlinks=True)
    finally:
        os.close(fds)


def _link_or_copy(src: int, dst: Path) -> None:
    """Hardlink the open file ``src`` when on the same filesystem, else (a /boot partition of
    its own) copy it with its owner and mode and fsync it, as ostree's install_into_boot."""
    try:
        _link_fd(src, dst)
        return
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EMLINK, errno.EPERM):
            raise
    st = os.fstat(src)
    out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.lseek(src, 0, os.SEEK_SET)
        with open(out, "wb", closefd=False) as f, open(src, "rb", closefd=False) as fin:
            shutil.copyfileobj(fin, f, 1 << 20)
        os.fchown(out, st.st_uid, st.st_gid)
        os.fchmod(out, stat.S_IMODE(st.st_mode))
        os.fsync(out)
    finally:
        os.close(out)


def install_kernel(boot: Path, stateroot: str, kernel: Kernel) -> Path:
    """Hardlink or copy kernel and initramfs to ``boot/ostree/STATEROOT-BOOTCSUM`` unless there.

    The directory appears complete or not at all (written beside, fsynced, renamed).
    The files are read from the tree without following any symlink.
    """
    final = boot / "ostree" / boot_dirname(stateroot, kernel.bootcsum)
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp-{final.name}")
    rmtree(tmp)
    tmp.mkdir()
    root = beneath.open_root(kernel.tree)
    try:
        for rel, name in kernel.sources():
            fd = beneath.open_file(root, rel)
            try:
                _link_or_copy(fd, tmp / name)
            finally:
                os.close(fd)
    finally:
        os.close(root)
    fsync_dir(tmp)
    os.rename(tmp, final)
    fsync_dir(final.parent)
    return final
