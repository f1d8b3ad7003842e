"""Directory -> commit, and the commit object writer.

Committing a tree that was checked out by hardlinks from the same
repository does not re-read unchanged files: a file whose (device, inode)
is a loose object of this repository reuses that object's checksum, as
OSTree's devino cache does.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from store.errors import InputError
from store.fsutil import read_xattrs
from store.gvariant import Variant, encode
from store.objects import METADATA_SIG, Commit, DirMeta, DirTree, FileMeta, ObjectType
from store.repo import Repo, RepoMode
from store.txn import Transaction

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

AUTO = "auto"


def special_kind(mode: int) -> str:
    """What a file that a commit cannot hold is (``ostree commit`` refuses all of them)."""
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device node"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    return "socket" if stat.S_ISSOCK(mode) else "special file"


@dataclass(frozen=True)
class CommitResult:
    """The new commit and what was left out of it."""

    checksum: str
    skipped: tuple[str, ...] = ()
    files_read: int = 0
    files_reused: int = 0


def write_commit(txn: Transaction, *, root_tree: str, root_meta: str, timestamp: int,
                 parent: str | None = None, subject: str = "", body: str = "",
                 metadata: dict[str, Variant] | None = None,
                 sign_key: Ed25519PrivateKey | None = None) -> str:
    """Write a commit object for an already written root; return its checksum.

    With ``sign_key`` its ed25519 signature is staged in the same transaction
    as its detached metadata, so a ref never points at it unsigned.
    """
    commit = Commit(root_tree=root_tree, root_meta=root_meta, timestamp=timestamp,
                    subject=subject, body=body, parent=parent, metadata=dict(metadata or {}))
    data = commit.to_bytes()
    csum = txn.write_metadata(ObjectType.COMMIT, data)
    if sign_key is not None:
        from store import sign

        detached = sign.with_signature(txn.repo.load_detached_metadata(csum),
                                       sign.sign_bytes(sign_key, data))
        txn.write_raw_object(csum, ObjectType.COMMIT_META, encode(METADATA_SIG, detached))
    return csum


def commit_metadata(pairs: Iterable[tuple[str, str]], branch: str | None,
                    *, bind_ref: bool = True) -> dict[str, Variant]:
    """Metadata as ``ostree commit`` builds it: user strings in order, then the ref binding."""
    md = {k: Variant("s", v) for k, v in pairs}
    if branch and bind_ref:
        md["ostree.ref-binding"] = Variant("as", [branch])
    return md


def build_devino_cache(repo: Repo) -> dict[int, str]:
    """Map inode -> checksum for every loose file object (bare and bare-user repos)."""
    cache: dict[int, str] = {}
    if repo.mode is RepoMode.ARCHIVE:
        return cache
    for sub in os.scandir(repo.objects_dir):
        if len(sub.name) != 2 or not sub.is_dir():
            continue
        for e in os.scandir(sub.path):
            if e.name.endswith(".file"):
                cache[e.inode()] = sub.name + e.name[:-5]
    return cache


@dataclass
class _Walker:
    """Walks a source directory, writing objects; counts what it read and reused."""

    repo: Repo
    txn: Transaction
    owner_uid: int | None
    owner_gid: int | None
    repo_dev: int
    src: str
    skip_special: bool = False
    devino: dict[int, str] | None = None
    seen: dict[tuple[int, int], str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    files_read: int = 0
    files_reused: int = 0

    def owner(self, st: os.stat_result) -> tuple[int, int]:
        uid = st.st_uid if self.owner_uid is None else self.owner_uid
        gid = st.st_gid if self.owner_gid is None else self.owner_gid
        return uid, gid

    def linked_object(self, st: os.stat_result) -> str | None:
        if st.st_nlink < 2 or st.st_dev != self.repo_dev or self.owner_uid is not None \
                or self.owner_gid is not None:
            return None
        if self.devino is None:
            self.devino = build_devino_cache(self.repo)
        return self.devino.get(st.st_ino)

    def file(self, path: str, rel: str, st: os.stat_result) -> str:
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in self.seen:
            return self.seen[key]
        csum = self.linked_object(st)
        if csum is not None:
            self.files_reused += 1
        else:
            self.files_read += 1
            uid, gid = self.owner(st)
            if stat.S_ISLNK(st.st_mode):
                meta = FileMeta(uid, gid, st.st_mode, _readlink(path, rel), read_xattrs(path))
                csum = self.txn.write_file(meta, None)
            else:
                meta = FileMeta(uid, gid, st.st_mode, "", read_xattrs(path))
                csum = self.txn.write_file_from_path(path, meta)
        if st.st_nlink > 1:
            self.seen[key] = csum
        return csum

    def directory(self, path: str, rel: str, st: os.stat_result) -> tuple[str, str]:
        files: list[tuple[str, str]] = []
        dirs: list[tuple[str, str, str]] = []
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: os.fsencode(e.name))
        for e in entries:
            name = _checked_name(e.name, rel)
            erel = f"{rel}/{name}" if rel else name
            est = e.stat(follow_symlinks=False)
            if stat.S_ISDIR(est.st_mode):
                dirs.append((name, *self.directory(e.path, erel, est)))
            elif stat.S_ISREG(est.st_mode) or stat.S_ISLNK(est.st_mode):
                files.append((name, self.file(e.path, erel, est)))
            elif self.skip_special:
                self.skipped.append(erel)
            else:
                raise InputError(f"{special_kind(est.st_mode)} in {self.src}/{erel}: a commit "
                                 "holds only regular files, symlinks and directories (as "
                                 "ostree commit); remove it or pass --skip-special-files")
        uid, gid = self.owner(st)
        meta = DirMeta(uid, gid, st.st_mode, read_xattrs(path))
        tree = DirTree(tuple(files), tuple(dirs))
        return (self.txn.write_metadata(ObjectType.DIR_TREE, tree.to_bytes()),
                self.txn.write_metadata(ObjectType.DIR_META, meta.to_bytes()))


def _checked_name(name: str, rel: str) -> str:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(name).decode("utf-8", "backslashreplace")
        raise InputError(f"file name is not valid UTF-8: '{rel}/{shown}'") from None
    return name


def _readlink(path: str, rel: str) -> str:
    target = os.readlink(path)
    try:
        target.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"symlink target is not valid UTF-8 in '{rel}'") from None
    return target


def write_directory(txn: Transaction, src: Path, *, owner_uid: int | None = None,
                    owner_gid: int | None = None,
                    skip_special: bool = False) -> tuple[str, str, _Walker]:
    """Write every object of the tree at ``src``; return (tree, meta, walk statistics).

    A device node, FIFO or socket raises InputError naming it, unless ``skip_special``:
    then it is left out (its directory stays) and listed in the statistics.
    """
    try:
        st = os.lstat(src)
    except FileNotFoundError:
        raise InputError(f"no such directory: {src}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"not a directory: {src}")
    walker = _Walker(txn.repo, txn, owner_uid, owner_gid, os.stat(txn.repo.objects_dir).st_dev,
                     os.fspath(src).rstrip("/") or "/", skip_special)
    tree, meta = walker.directory(os.fspath(src), "", st)
    return tree, meta, walker


def commit_directory(repo: Repo, src: str | os.PathLike[str], *, branch: str | None,
                     subject: str = "", body: str = "", timestamp: int | None = None,
                     metadata: Iterable[tuple[str, str]] = (), parent: str | None = AUTO,
                     owner_uid: int | None = None, owner_gid: int | None = None,
                     bind_ref: bool = True, sign_key: Path | None = None,
                     skip_special: bool = False) -> CommitResult:
    """Commit the directory ``src`` and move ``branch`` to it, all or nothing.

    ``parent`` is ``"auto"`` (the branch's current head), None, or a revision.
    With ``sign_key`` (an ed25519 secret key file) the commit is signed before
    the branch moves; an unreadable key fails before anything is written.
    A device node, FIFO or socket in the tree fails the commit (InputError naming it,
    nothing written), as ``ostree commit`` fails; with ``skip_special`` it is left out
    and listed in the result's ``skipped``.
    """
    src = Path(src)
    key = None
    if sign_key is not None:
        from store.sign import load_secret_key

        key = load_secret_key(sign_key)
    if branch is not None:
        repo.read_ref(branch)
    if parent == AUTO:
        parent = repo.read_ref(branch) if branch else None
    elif parent is not None:
        parent = repo.resolve(parent)
    ts = int(time.time()) if timestamp is None else timestamp
    md = commit_metadata(metadata, branch, bind_ref=bind_ref)
    with repo.transaction() as txn:
        tree, meta, walk = write_directory(txn, src, owner_uid=owner_uid, owner_gid=owner_gid,
                                           skip_special=skip_special)
        csum = write_commit(txn, root_tree=tree, root_meta=meta, timestamp=ts, parent=parent,
                            subject=subject, body=body, metadata=md, sign_key=key)
        if branch is not None:
            txn.set_ref(branch, csum)
    return CommitResult(csum, tuple(walk.skipped), walk.files_read, walk.files_reused)
