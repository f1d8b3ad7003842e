"""Sample trees for store tests and a faithful snapshot of a tree for comparisons."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

SYMLINK_TARGETS = {"lib/link-rel": "../bin/tool", "lib/link-abs": "/etc/passwd",
                   "lib/dangling": "no/such/file"}


def make_sample_tree(root: Path) -> Path:
    """A small tree exercising everything a commit must keep (run as root)."""
    (root / "bin").mkdir(parents=True)
    (root / "lib").mkdir()
    (root / "empty").mkdir()
    (root / "deep/a/b/c").mkdir(parents=True)
    (root / "private").mkdir(mode=0o700)
    (root / "bin/tool").write_bytes(b"#!/bin/sh\necho tool\n")
    os.chmod(root / "bin/tool", 0o755)
    (root / "bin/suid").write_bytes(b"suid")
    os.chmod(root / "bin/suid", 0o4755)
    (root / "bin/sgid").write_bytes(b"sgid")
    os.chmod(root / "bin/sgid", 0o2755)
    (root / "empty-file").write_bytes(b"")
    (root / "deep/a/b/c/leaf").write_bytes(b"leaf\n")
    (root / "private/secret").write_bytes(b"s3cret")
    os.chmod(root / "private/secret", 0o400)
    (root / "big").write_bytes(os.urandom(5 << 20))
    (root / "mid").write_bytes(os.urandom(300_000))
    (root / "ünïcødé-名前.txt").write_text("utf-8 name\n")
    (root / "owned").write_bytes(b"owned by 1000\n")
    os.chown(root / "owned", 1000, 1001)
    os.chown(root / "private", 1000, 1000)
    for rel, target in SYMLINK_TARGETS.items():
        os.symlink(target, root / rel)
    os.link(root / "bin/tool", root / "lib/tool-hardlink")
    (root / "xattr-file").write_bytes(b"with xattrs\n")
    os.setxattr(root / "xattr-file", "user.strata.test", b"value\x00binary")
    os.setxattr(root / "xattr-file", "trusted.other", b"t")
    os.setxattr(root / "deep", "user.dirattr", b"d")
    os.chmod(root, 0o755)
    return root


def snapshot(root: Path, *, xattrs: bool = True, owners: bool = True) -> dict[str, tuple]:
    """Every entry below ``root``: type, mode, owner, content hash or link target, xattrs."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames + ([""] if dirpath == str(root) else []):
            p = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISLNK(st.st_mode):
                body = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                body = hashlib.sha256(Path(p).read_bytes()).hexdigest()
            else:
                body = ""
            xa = ()
            if xattrs and not stat.S_ISLNK(st.st_mode):
                xa = tuple(sorted((n, os.getxattr(p, n, follow_symlinks=False))
                                  for n in os.listxattr(p, follow_symlinks=False)))
            owner = (st.st_uid, st.st_gid) if owners else ()
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), owner, body, xa)
    return out


def hardlink_groups(root: Path) -> list[set[str]]:
    """Sets of paths below ``root`` that share an inode (only groups of two or more)."""
    by_ino: dict[int, set[str]] = {}
    for dirpath, _d, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                by_ino.setdefault(st.st_ino, set()).add(os.path.relpath(p, root))
    return [g for g in by_ino.values() if len(g) > 1]
