"""Fixtures for sysroot tests: a loop-mounted ext4 scratch area, fake OS trees, real ostree.

``ostree admin deploy`` syncs and freezes the filesystem holding the sysroot,
so every sysroot lives on a private loop-mounted ext4 image (falling back to
tmp_path when mounting is not possible).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.util import require_tool, run

_counter = itertools.count()


def _try_mount(base: Path) -> Path | None:
    img, mnt = base / "fs.img", base / "mnt"
    mnt.mkdir()
    try:
        subprocess.run(["truncate", "-s", "4G", str(img)], check=True)
        subprocess.run(["mkfs.ext4", "-q", str(img)], check=True, capture_output=True)
        subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        img.unlink(missing_ok=True)
        return None
    return mnt


@pytest.fixture(scope="session")
def scratch_fs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A loop-mounted ext4 directory for sysroots (unmounted at the end of the session)."""
    base = tmp_path_factory.mktemp("bootfs")
    mnt = _try_mount(base) if os.geteuid() == 0 else None
    if mnt is None:
        yield base
        return
    try:
        yield mnt
    finally:
        subprocess.run(["chattr", "-R", "-i", str(mnt)], capture_output=True)
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        (base / "fs.img").unlink(missing_ok=True)


@pytest.fixture
def work(scratch_fs: Path) -> Iterator[Path]:
    """A fresh directory on the scratch filesystem, removed after the test."""
    d = scratch_fs / f"t{next(_counter)}-{os.getpid()}"
    d.mkdir()
    yield d
    subprocess.run(["chattr", "-R", "-i", str(d)], capture_output=True)
    shutil.rmtree(d, ignore_errors=True)


def write_files(root: Path, files: dict[str, bytes | str | None]) -> None:
    """Create files under root; a value of None creates a directory; '->x' a symlink."""
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            p.mkdir(parents=True, exist_ok=True)
        elif isinstance(data, str) and data.startswith("->"):
            p.symlink_to(data[2:])
        else:
            p.write_bytes(data.encode() if isinstance(data, str) else data)


def make_tree(root: Path, *, version: str = "1", etc: dict[str, bytes | str | None] | None = None,
              files: dict[str, bytes | str | None] | None = None, kernel: bytes = b"kernel-1\n",
              initramfs: bytes | None = b"initramfs-1\n", kver: str = "6.1.0-test") -> Path:
    """An OSTree-layout OS tree with a fake kernel, os-release and usr/etc."""
    root.mkdir(parents=True, exist_ok=True)
    base: dict[str, bytes | str | None] = {
        "usr/lib/os-release": f'NAME=Test\nID=test\nVERSION_ID={version}\n'
                              f'PRETTY_NAME="Test OS {version}"\n',
        f"usr/lib/modules/{kver}/vmlinuz": kernel,
        "usr/bin/tool": f"tool {version}\n",
        "usr/etc/motd": "welcome\n",
        "var/lib/app/state": "image var\n",
    }
    if initramfs is not None:
        base[f"usr/lib/modules/{kver}/initramfs.img"] = initramfs
    write_files(root, {**base, **(etc and {f"usr/etc/{k}": v for k, v in etc.items()} or {}),
                       **(files or {})})
    return root


def ostree_commit(repo: Path, tree: Path, branch: str, timestamp: int = 1700000000) -> str:
    """Commit with the real ostree (the fixture maker strata must read)."""
    require_tool("ostree")
    out = run(["ostree", f"--repo={repo}", "commit", "-b", branch,
               f"--timestamp=@{timestamp}", "--no-bindings", str(tree)])
    return out.stdout.strip()


def ostree_admin(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    require_tool("ostree")
    return run(["ostree", "admin", *map(os.fspath, args)])


def ostree_sysroot(path: Path, stateroot: str = "testos") -> Path:
    """A sysroot made by the real ``ostree admin init-fs`` + ``os-init``."""
    path.mkdir(parents=True, exist_ok=True)
    ostree_admin("init-fs", path)
    ostree_admin("os-init", f"--sysroot={path}", stateroot)
    return path
