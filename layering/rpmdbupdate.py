"""Keeping an image's rpm database true after layering, with the real ``rpm --justdb``.

The database directory of the tree is copied into a scratch root, ``rpm``
records the added packages and forgets the removed ones there (no files
written, no scripts), and the resulting database files replace the tree's.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from store.fsutil import scratch_dir
from store.mtree import MutableTree
from store.objects import FileMeta
from store.repo import Repo
from store.run import run
from store.txn import Transaction

JUSTDB = ["--justdb", "--nodeps", "--noscripts", "--notriggers"]


def update(repo: Repo, txn: Transaction, tree: MutableTree, db_dir: str, *,
           add: list[Path], remove: list[str]) -> None:
    """Record ``add`` (package files) and drop ``remove`` (names) in the tree's rpmdb."""
    node = tree.lookup(db_dir)
    if not isinstance(node, MutableTree):
        return
    with scratch_dir(repo.tmp_dir, "rpmdb-") as root:
        local = root / db_dir
        local.mkdir(parents=True)
        for name, csum in node.files.items():
            (local / name).write_bytes(repo.load_file(csum)[1])
        base = ["rpm", "--root", str(root), "--dbpath", f"/{db_dir}"]
        if remove:
            run([*base, "-e", *JUSTDB, "--allmatches", *remove])
        if add:
            run([*base, "-i", *JUSTDB, "--nosignature", "--nodigest", "--ignorearch",
                 "--ignoreos", "--ignoresize", "--replacefiles", "--replacepkgs",
                 *map(str, add)])
        for name in list(node.files):
            if not (local / name).exists():
                node_path = f"{db_dir}/{name}"
                tree.remove(node_path)
        for entry in sorted(os.listdir(local)):
            path = local / entry
            if path.is_file() and not entry.endswith(("-shm", ".lock")):
                csum = txn.write_file(FileMeta(0, 0, stat.S_IFREG | 0o644), path.read_bytes())
                tree.set_file(f"{db_dir}/{entry}", csum)
