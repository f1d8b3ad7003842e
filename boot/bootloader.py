"""Write a new deployment list as boot configuration and switch to it atomically.

The switch, as OSTree's ``write_deployments`` with a boot-version swap:

1. ``ostree/boot.NBV.NSBV/STATEROOT/BOOTCSUM/BOOTSERIAL`` links to each
   deployment; ``ostree/boot.NBV`` is pointed at that directory (NBV is the
   inactive boot version, so nothing that boots reads it yet).
2. ``boot/loader.NBV/entries/ostree-N-STATEROOT.conf`` written and synced.
3. The commit point: the ``boot/loader`` symlink is replaced to ``loader.NBV``.
4. Afterwards the old boot version's directories are removed.

A crash before 3 leaves the old ``loader`` and everything it reaches intact.
"""

from __future__ import annotations

import configparser
import ctypes
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from boot.bls import BlsEntry
from boot.deployment import Deployment, bootlink_path, bootlink_target
from boot.errors import BootError
from boot.kernel import boot_dirname
from boot.sysroot import Sysroot, SysrootState, with_indices
from store import beneath
from store.errors import ToolError
from store.faults import fail_point
from store.fsutil import atomic_symlink, atomic_write, fsync_dir, rmtree
from store.repo import Repo, new_config

_libc = ctypes.CDLL(None, use_errno=True)


def syncfs(path: Path) -> None:
    """Flush the filesystem holding ``path`` (what ostree does before the swap)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            os.fsync(fd)
    finally:
        os.close(fd)


OS_RELEASE_MAX = 64 * 1024  # bytes of an image's os-release read for the entry title


def _os_release(tree: Path) -> dict[str, str]:
    for rel in ("usr/lib/os-release", "etc/os-release"):
        data = beneath.read_file(tree, rel, OS_RELEASE_MAX)  # the image's: follow no symlink
        if data is not None:
            out = {}
            for line in data.decode(errors="replace").splitlines():
                k, sep, v = line.partition("=")
                if sep and not k.startswith("#"):
                    out[k.strip()] = v.strip().strip("\"'")
            return out
    return {}


BOOTPREFIX_KEY = "bootprefix"  # [sysroot] bootprefix in the repository config


def boot_prefix(sysroot: Sysroot) -> str:
    """``/boot`` when the sysroot repository's config says ``[sysroot] bootprefix=true``, else
    empty: the prefix of the kernel paths in boot entries.

    As newer ostree (bootc and anaconda set the key, for GRUB reading entries from a root
    filesystem that holds /boot): the default paths are relative to the
    filesystem that holds ``boot/``, whether it is a partition of its own or not, and
    ``boot/boot -> .`` makes the prefixed paths valid on a /boot partition too.  ostree
    2022.7 ignores the key and always writes unprefixed paths.
    """
    cfg = sysroot.repo_path / "config"
    try:
        cp = new_config()
        cp.read(cfg, encoding="utf-8")
        value = cp.get("sysroot", BOOTPREFIX_KEY, fallback="false").strip()
    except (OSError, configparser.Error, UnicodeDecodeError) as e:
        raise BootError(f"unreadable config in {cfg}: {e}") from None
    if value not in ("true", "false", "1", "0"):
        raise BootError(f"sysroot.{BOOTPREFIX_KEY} is {value!r}, not a boolean, in {cfg}")
    return "/boot" if value in ("true", "1") else ""


def boot_files(sysroot: Sysroot, d: Deployment, prefix: str = "") -> tuple[str, str | None]:
    """``linux`` and ``initrd`` paths (relative to boot/, after ``prefix``) of the
    deployment's kernel."""
    name = boot_dirname(d.stateroot, d.bootcsum)
    kdir = sysroot.boot / "ostree" / name
    kernels = sorted(p.name for p in kdir.glob("vmlinuz-*")) if kdir.is_dir() else []
    if not kernels:
        raise BootError(f"kernel of deployment {d.dirname} missing: no vmlinuz-* in {kdir}")
    initrds = sorted(p.name for p in kdir.glob("initramfs-*.img"))
    return (f"{prefix}/ostree/{name}/{kernels[0]}",
            f"{prefix}/ostree/{name}/{initrds[0]}" if initrds else None)


def commit_version(sysroot: Sysroot, csum: str) -> str | None:
    """The commit's ``version`` metadata string, None when absent or the commit unreadable."""
    try:
        v = Repo.open(sysroot.repo_path).load_commit(csum).metadata.get("version")
    except ToolError:
        return None
    return v.value if v is not None and v.sig == "s" else None


def make_entry(sysroot: Sysroot, d: Deployment, count: int, bootversion: int, *,
               multi_stateroot: bool = False, prefix: str = "") -> BlsEntry:
    """The BLS entry ostree writes for deployment ``d`` among ``count`` deployments.

    The title is the os-release name, then the commit's ``version`` unless the name holds
    it already; with several stateroots in the list it names the stateroot too.  The
    kernel paths start with ``prefix`` (see :func:`boot_prefix`).
    """
    rel = _os_release(sysroot.deployment_dir(d))
    title = rel.get("PRETTY_NAME") or rel.get("ID") or d.stateroot
    version = commit_version(sysroot, d.checksum)
    if version and version not in title:
        title = f"{title} {version}"
    kargs = d.kargs
    link = bootlink_path(bootversion, d)
    options = kargs.replace(f"ostree={link}") if kargs.values("ostree") else kargs.append(
        f"ostree={link}")
    linux, initrd = boot_files(sysroot, d, prefix)
    tag = f"{d.stateroot}:{d.index}" if multi_stateroot else str(d.index)
    return BlsEntry.of(title=f"{title} (ostree:{tag})", version=str(count - d.index),
                       options=options.to_text(), linux=linux, initrd=initrd)


def entry_filename(d: Deployment, count: int) -> str:
    """``ostree-N-STATEROOT.conf`` with N = count - index (ostree 2022.7 naming)."""
    return f"ostree-{count - d.index}-{d.stateroot}.conf"


def _write_bootlinks(sysroot: Sysroot, bv: int, deployments: list[Deployment]) -> int:
    sbv = 1 - sysroot.subbootversion(bv)
    top = sysroot.path / "ostree" / f"boot.{bv}.{sbv}"
    rmtree(top)
    for d in deployments:
        parent = top / d.stateroot / d.bootcsum
        parent.mkdir(parents=True, exist_ok=True)
        os.symlink(bootlink_target(d), parent / str(d.bootserial))
    atomic_symlink(f"boot.{bv}.{sbv}", sysroot.path / "ostree" / f"boot.{bv}")
    return sbv


def _write_loader(sysroot: Sysroot, bv: int, deployments: list[Deployment]) -> None:
    prefix = boot_prefix(sysroot)  # a bad config fails before anything is written
    loader = sysroot.boot / f"loader.{bv}"
    rmtree(loader)
    (loader / "entries").mkdir(parents=True)
    n = len(deployments)
    multi = len({d.stateroot for d in deployments}) > 1
    for d in deployments:
        entry = make_entry(sysroot, d, n, bv, multi_stateroot=multi, prefix=prefix)
        atomic_write(loader / "entries" / entry_filename(d, n), entry.to_text().encode(),
                     sync=False)
    fsync_dir(loader / "entries")
    fsync_dir(loader)


class BootloaderKind(StrEnum):
    """Boot configuration formats strata writes."""

    BLS = "bls"


class Bootloader(Protocol):
    """Writes boot configuration for a boot version (ostree's OstreeBootloaderInterface)."""

    @property
    def kind(self) -> BootloaderKind: ...

    def write_config(self, sysroot: Sysroot, bootversion: int,
                     deployments: list[Deployment]) -> None: ...

    def is_atomic(self) -> bool: ...


@dataclass(frozen=True)
class BlsBootloader:
    """Boot Loader Specification entries under ``boot/loader.N/entries``; the
    ``boot/loader`` symlink swap makes it atomic (systemd-boot, grub with BLS)."""

    kind: BootloaderKind = BootloaderKind.BLS

    def write_config(self, sysroot: Sysroot, bootversion: int,
                     deployments: list[Deployment]) -> None:
        _write_loader(sysroot, bootversion, deployments)

    def is_atomic(self) -> bool:
        return True


_BOOTLOADERS: dict[BootloaderKind, type[BlsBootloader]] = {BootloaderKind.BLS: BlsBootloader}


def get_bootloader(kind: BootloaderKind = BootloaderKind.BLS) -> Bootloader:
    """The writer for ``kind``; only BLS exists (the format ostree itself always writes)."""
    return _BOOTLOADERS[kind]()


def write_deployments(sysroot: Sysroot, state: SysrootState, deployments: list[Deployment],
                      *, bootloader: Bootloader | None = None) -> SysrootState:
    """Make ``deployments`` (default first) the boot configuration, atomically.

    Every deployment directory and kernel must already exist and be synced.
    Returns the new state; the old boot version's files are removed afterwards.
    """
    deps = with_indices(deployments)
    bv = 1 - state.bootversion
    boot_link = sysroot.boot / "boot"
    if not os.path.lexists(boot_link):
        os.symlink(".", boot_link)
    sbv = _write_bootlinks(sysroot, bv, deps)
    (bootloader or get_bootloader()).write_config(sysroot, bv, deps)
    syncfs(sysroot.boot)
    syncfs(sysroot.path / "ostree")
    fail_point("before-swap")
    atomic_symlink(f"loader.{bv}", sysroot.boot / "loader")
    fail_point("after-swap")
    new = SysrootState(bv, sbv, tuple(deps), state.booted)
    cleanup_boot_versions(sysroot, new)
    return new


def cleanup_boot_versions(sysroot: Sysroot, state: SysrootState) -> None:
    """Remove the inactive boot version's loader and bootlinks (ostree's cleanup)."""
    old = 1 - state.bootversion
    if not state.deployments and not os.path.lexists(sysroot.boot / "loader"):
        return
    rmtree(sysroot.boot / f"loader.{old}")
    ostree = sysroot.path / "ostree"
    rmtree(ostree / f"boot.{old}")
    for sbv in (0, 1):
        rmtree(ostree / f"boot.{old}.{sbv}")
    rmtree(ostree / f"boot.{state.bootversion}.{1 - state.subbootversion}")
    for stray in (*sysroot.boot.glob(".loader.tmp-*"), *ostree.glob(".boot.*.tmp-*")):
        stray.unlink(missing_ok=True)
