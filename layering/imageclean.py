"""What a derived image must not ship, and how a host makes its own at first boot.

A composed image is copied to every machine that deploys it, so it must not
carry per-machine or per-run state, as a distribution's image builder strips
it (Debian's cloud images, mkosi, osbuild):

* SSH host keys (``/etc/ssh/ssh_host_*``): openssh-server's postinst makes them;
  every host would share one identity.  Debian 12's ``ssh.service`` does not
  regenerate missing keys (its ``ExecStartPre=/usr/sbin/sshd -t`` fails), so
  when the image has sshd or had keys, :data:`KEYGEN_UNIT` is shipped and
  enabled: it runs ``ssh-keygen -A`` before ``ssh.service`` when the host has
  no ed25519 key yet.
* the machine ID: ``/etc/machine-id`` is left empty (systemd then treats the
  boot as the first and writes a new one); ``/var/lib/dbus/machine-id`` goes;
* random seeds (``/var/lib/systemd/random-seed``, ``/var/lib/urandom``,
  ``/var/lib/systemd/credential.secret``);
* logs (files under ``/var/log``; directories stay for the packages that own them);
* caches and backups (``/var/cache/apt/*.bin``, ``/var/cache/debconf/*-old``,
  ``/var/cache/ldconfig/aux-cache``, the dpkg database's ``*-old`` files).

Everything works on a :class:`MutableTree` in the image's own layout
(``etc`` or ``usr/etc``), so it is the same on every machine.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from enum import StrEnum

from store.mtree import MutableTree
from store.objects import FileMeta
from store.txn import Transaction

KEYGEN_NAME = "strata-ssh-keygen.service"
UNIT_DIR = "usr/lib/systemd/system"
KEYGEN_UNIT = """\
# Shipped by strata compose: the image carries no SSH host keys, each host makes its own.
[Unit]
Description=Generate this host's SSH host keys
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
ConditionFileIsExecutable=/usr/bin/ssh-keygen
Before=ssh.service sshd.service ssh.socket

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target ssh.service
"""
_WANTED_BY = ("multi-user.target.wants", "ssh.service.wants")
_DB_DIRS = ("usr/lib/sysimage/dpkg", "var/lib/dpkg")


class Removed(StrEnum):
    """The classes of run-dependent content a derived image leaves out."""

    SSH_HOST_KEYS = "SSH host keys"
    MACHINE_ID = "machine ID"
    RANDOM_SEEDS = "random seeds"
    LOGS = "logs"
    CACHES = "caches and backup files"


@dataclass(frozen=True)
class CleanReport:
    """What was left out of the image, per class, as runtime paths (``/etc/...``)."""

    removed: tuple[tuple[Removed, tuple[str, ...]], ...] = ()
    keygen_unit: bool = False

    def lines(self) -> list[str]:
        """One line per class of removed files, for the compose report."""
        out = []
        for what, paths in self.removed:
            shown = ", ".join(paths[:4]) + (f" and {len(paths) - 4} more" if len(paths) > 4 else "")
            out.append(f"left out {what} ({len(paths)}): {shown}{_how(what, self.keygen_unit)}")
        if self.keygen_unit and not any(w is Removed.SSH_HOST_KEYS for w, _ in self.removed):
            out.append(f"added {KEYGEN_NAME}: a host without SSH host keys makes its own "
                       "(ssh-keygen -A) at first boot")
        return out


def _how(what: Removed, unit: bool) -> str:
    if what is Removed.SSH_HOST_KEYS:
        return ("; each host makes its own at first boot (" + KEYGEN_NAME + ": ssh-keygen -A)"
                if unit else "")
    if what is Removed.MACHINE_ID:
        return "; empty, so systemd writes the host's own at first boot"
    return ""


def _runtime(path: str) -> str:
    return "/" + (path[4:] if path.startswith("usr/etc/") else path)


def _files(tree: MutableTree, directory: str, match: object) -> list[str]:
    """Files directly in ``directory`` whose name satisfies ``match`` (a callable)."""
    node = tree.lookup(directory)
    if not isinstance(node, MutableTree):
        return []
    return [f"{directory}/{n}" for n in sorted(node.files) if match(n)]  # type: ignore[operator]


def _files_below(tree: MutableTree, directory: str) -> list[str]:
    node = tree.lookup(directory)
    if not isinstance(node, MutableTree):
        return []
    return [f"{directory}/{p}" for p, n in node.walk() if isinstance(n, str)]


def _candidates(tree: MutableTree, etc_dirs: tuple[str, ...]) -> dict[Removed, list[str]]:
    found: dict[Removed, list[str]] = {w: [] for w in Removed}
    for etc in etc_dirs:
        found[Removed.SSH_HOST_KEYS] += _files(tree, f"{etc}/ssh",
                                               lambda n: n.startswith("ssh_host_"))
    found[Removed.MACHINE_ID] += _files(tree, "var/lib/dbus", lambda n: n == "machine-id")
    found[Removed.RANDOM_SEEDS] += _files(tree, "var/lib/systemd",
                                          lambda n: n in ("random-seed", "credential.secret"))
    found[Removed.RANDOM_SEEDS] += _files_below(tree, "var/lib/urandom")
    found[Removed.LOGS] += _files_below(tree, "var/log")
    found[Removed.CACHES] += _files(tree, "var/cache/apt", lambda n: n.endswith(".bin"))
    found[Removed.CACHES] += _files(tree, "var/cache/debconf", lambda n: n.endswith("-old"))
    # ldconfig's aux-cache records the inode and ctime of each library: a different file
    # on every run (ldconfig remakes it)
    found[Removed.CACHES] += _files(tree, "var/cache/ldconfig", lambda n: n == "aux-cache")
    for db in _DB_DIRS:
        found[Removed.CACHES] += _files(tree, db, lambda n: n.endswith("-old"))
    return found


def clean_image(tree: MutableTree, txn: Transaction) -> CleanReport:
    """Remove the per-machine and per-run files listed in the module docstring from
    ``tree``, empty a non-empty machine-id, and ship :data:`KEYGEN_UNIT` when the image
    has sshd or had host keys.  Deterministic: depends on the tree only."""
    etc_dirs = tuple(d for d in ("usr/etc", "etc") if isinstance(tree.lookup(d), MutableTree))
    found = _candidates(tree, etc_dirs)
    for paths in found.values():
        for p in paths:
            tree.remove(p)
    for etc in etc_dirs:
        if _empty_machine_id(tree, txn, f"{etc}/machine-id"):
            found[Removed.MACHINE_ID].insert(0, f"{etc}/machine-id")
    unit = bool(found[Removed.SSH_HOST_KEYS]) or _has_sshd(tree)
    if unit:
        install_keygen_unit(tree, txn)
    removed = tuple((w, tuple(_runtime(p) for p in paths)) for w, paths in found.items() if paths)
    return CleanReport(removed, unit)


def _empty_machine_id(tree: MutableTree, txn: Transaction, path: str) -> bool:
    csum = tree.lookup(path)
    if not isinstance(csum, str):
        return False
    meta, content = txn.repo.load_file(csum)
    if meta.is_symlink or not content:
        return False
    tree.set_file(path, txn.write_file(FileMeta(meta.uid, meta.gid, meta.mode, "",
                                                meta.xattrs), b""))
    return True


def _has_sshd(tree: MutableTree) -> bool:
    return any(isinstance(tree.lookup(p), str) for p in ("usr/sbin/sshd", "sbin/sshd"))


def install_keygen_unit(tree: MutableTree, txn: Transaction) -> None:
    """Put :data:`KEYGEN_UNIT` in ``/usr/lib/systemd/system`` and enable it there (wants
    links from ``multi-user.target`` and ``ssh.service``)."""
    tree.ensure_dir(UNIT_DIR)
    tree.set_file(f"{UNIT_DIR}/{KEYGEN_NAME}",
                  txn.write_file(FileMeta(0, 0, stat.S_IFREG | 0o644), KEYGEN_UNIT.encode()))
    link = txn.write_file(FileMeta(0, 0, stat.S_IFLNK | 0o777, f"../{KEYGEN_NAME}"), None)
    for wants in _WANTED_BY:
        tree.ensure_dir(f"{UNIT_DIR}/{wants}")
        tree.set_file(f"{UNIT_DIR}/{wants}/{KEYGEN_NAME}", link)
