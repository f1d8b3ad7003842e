"""Turning a plain root filesystem (as mmdebstrap makes) into OSTree's image layout.

- ``etc/`` becomes ``usr/etc/`` (deploy builds ``/etc`` from it);
- package databases move under ``/usr``, because deploy keeps a stateroot's
  ``/var`` and would hide a new image's database: ``var/lib/dpkg`` ->
  ``usr/lib/sysimage/dpkg`` and ``var/lib/rpm`` -> ``usr/lib/sysimage/rpm``,
  each with a symlink left at the old place so the tools still find them in a
  checkout, and a ``usr/lib/tmpfiles.d/strata-pkgdb.conf`` line (``L+``) that
  makes the same symlink in a booted system's ``/var`` (the stateroot's, where
  the commit's ``/var`` is never seen), replacing an older database there.
"""

from __future__ import annotations

import stat

from store.mtree import MutableTree
from store.objects import FileMeta
from store.txn import Transaction

PKGDB_TMPFILES = "usr/lib/tmpfiles.d/strata-pkgdb.conf"
DB_MOVES = (("var/lib/dpkg", "usr/lib/sysimage/dpkg", "../../usr/lib/sysimage/dpkg"),
            ("var/lib/rpm", "usr/lib/sysimage/rpm", "../../usr/lib/sysimage/rpm"))


def to_ostree_layout(tree: MutableTree, txn: Transaction) -> list[str]:
    """Convert ``tree`` in place where needed; return a description of each change made."""
    changes = []
    etc = tree.lookup("etc")
    if isinstance(etc, MutableTree) and tree.lookup("usr/etc") is None:
        tree.ensure_dir("usr")
        tree.set_dir("usr/etc", etc)
        tree.remove("etc")
        changes.append("moved /etc to /usr/etc")
    for old, new, link in DB_MOVES:
        node = tree.lookup(old)
        if isinstance(node, MutableTree) and tree.lookup(new) is None:
            tree.ensure_dir(new.rpartition("/")[0])
            tree.set_dir(new, node)
            tree.remove(old)
            csum = txn.write_file(FileMeta(0, 0, stat.S_IFLNK | 0o777, link), None)
            tree.set_file(old, csum)
            changes.append(f"moved /{old} to /{new}")
    if _write_pkgdb_tmpfiles(tree, txn):
        changes.append(f"wrote /{PKGDB_TMPFILES}")
    return changes


def _write_pkgdb_tmpfiles(tree: MutableTree, txn: Transaction) -> bool:
    """Describe each moved database's ``/var`` symlink for systemd-tmpfiles; True if
    the snippet was (re)written."""
    lines = [f"L+ /{old} - - - - {link}\n" for old, new, link in DB_MOVES
             if isinstance(tree.lookup(new), MutableTree)]
    if not lines:
        return False
    body = ("# package databases travel under /usr; /var is the stateroot's (strata)\n"
            + "".join(lines)).encode()
    csum = txn.write_file(FileMeta(0, 0, stat.S_IFREG | 0o644), body)
    if tree.lookup(PKGDB_TMPFILES) == csum:
        return False
    tree.ensure_dir(PKGDB_TMPFILES.rpartition("/")[0])
    tree.set_file(PKGDB_TMPFILES, csum)
    return True


def config_dir(tree: MutableTree) -> str:
    """The image's configuration directory: ``usr/etc`` when present, else ``etc``."""
    return "usr/etc" if isinstance(tree.lookup("usr/etc"), MutableTree) else "etc"
