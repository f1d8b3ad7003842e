"""What maintainer scripts see of the host, and what of it the new commit keeps.

Scripts run on the image being composed, but users and identity belong to the
host: before the scripts, the host's user database (``passwd``, ``group``,
``shadow``, ``gshadow``) and identity files (SSH host keys, ``machine-id``;
:data:`boot.hostfiles.IDENTITY`), read from the default deployment's merged
``/etc``, replace the image's in the tree's configuration directory, so that
``adduser`` picks ids that are free on the host (and keeps the ids of users the
host already has) and ``ssh-keygen`` does not replace existing keys.

After the scripts the image's own files come back, with the entries the
scripts added (new users and groups, new group members); the host's entries
never enter the commit, nor do the host's identity files (identity files the
scripts created do: the host had none).  The deploy's /etc merge then gives
the new deployment the host's database plus those entries, and the host's
identity files unchanged (:mod:`boot.hostfiles`).
"""

from __future__ import annotations

import hashlib
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path

from boot.hostfiles import (
    MEMBERS_FIELD,
    USER_DB,
    entries,
    identity_files,
    members,
    read_regular,
    with_members,
)
from store.mtree import MutableTree
from store.objects import FileMeta
from store.repo import Repo
from store.txn import Transaction

IDENTITY_LIMIT = 1 << 20


@dataclass(frozen=True)
class HostFile:
    """One host file shown to the scripts: path relative to /etc, bytes and metadata."""

    rel: str
    data: bytes
    mode: int
    uid: int
    gid: int


@dataclass(frozen=True)
class HostState:
    """The host's user database and identity files (regular files only, bounded)."""

    user_db: tuple[HostFile, ...] = ()
    identity: tuple[HostFile, ...] = ()

    def digest(self) -> str:
        """sha256 over the user database: a different host may get different ids."""
        h = hashlib.sha256()
        for f in self.user_db:
            h.update(f"{f.rel}\0{len(f.data)}\0".encode() + f.data)
        return h.hexdigest()


def _host_file(etc: Path, rel: str, limit: int) -> HostFile | None:
    data = read_regular(etc / rel, limit)
    if data is None:
        return None
    st = (etc / rel).lstat()
    return HostFile(rel, data, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)


def read_host(etc: Path) -> HostState:
    """The host state under ``etc`` (the default deployment's merged /etc)."""
    users = [f for rel in USER_DB if (f := _host_file(etc, rel, 16 << 20)) is not None]
    ident = [f for rel in identity_files(etc)
             if (f := _host_file(etc, rel, IDENTITY_LIMIT)) is not None]
    return HostState(tuple(users), tuple(ident))


@dataclass
class HostSession:
    """The host as one compose's maintainer scripts see it, run after run: what an earlier
    sandbox run added (an rpm ``%pre``'s or a preinst's ``useradd``) is there for the next."""

    state: HostState


def seen_by_scripts(repo: Repo, tree: MutableTree, view: ScriptView) -> HostState:
    """The host's user database as the scripts left it in ``tree`` (call before
    :func:`restore_image`); the identity files as they were."""
    files = []
    for f in view.host.user_db:
        node = tree.lookup(f"{view.etc_dir}/{f.rel}")
        files.append(replace(f, data=_read(repo, node)[1]) if isinstance(node, str) else f)
    return HostState(tuple(files), view.host.identity)


@dataclass
class ScriptView:
    """The image's own user database files, kept while the scripts see the host's."""

    etc_dir: str
    host: HostState
    image: dict[str, str | None] = field(default_factory=dict)


def _read(repo: Repo, csum: str) -> tuple[FileMeta, bytes]:
    meta, stream = repo.open_file(csum)
    if stream is None:
        return meta, b""
    with stream:
        return meta, stream.read()


def _put(tree: MutableTree, txn: Transaction, path: str, f: HostFile) -> None:
    tree.ensure_dir(path.rpartition("/")[0])
    if isinstance(tree.lookup(path), MutableTree):
        tree.remove(path)
    tree.set_file(path, txn.write_file(FileMeta(f.uid, f.gid, stat.S_IFREG | f.mode), f.data))


def show_host(tree: MutableTree, txn: Transaction, host: HostState, etc_dir: str) -> ScriptView:
    """Put the host's user database and identity files in the tree for the scripts."""
    view = ScriptView(etc_dir, host)
    for f in host.user_db:
        node = tree.lookup(f"{etc_dir}/{f.rel}")
        view.image[f.rel] = node if isinstance(node, str) else None
        _put(tree, txn, f"{etc_dir}/{f.rel}", f)
    for f in host.identity:
        _put(tree, txn, f"{etc_dir}/{f.rel}", f)
    return view


def added_lines(name: str, host: bytes, after: bytes, image: bytes) -> bytes:
    """``image`` with the entries (and group members) the scripts added to ``host``."""
    mine, post, own = entries(host), entries(after), entries(image)
    index = MEMBERS_FIELD.get(name)
    lines = []
    for line in image.splitlines():
        key = line.split(b":", 1)[0]
        if index is not None and key in post and key in mine:
            gained = [m for m in members(post[key], index) if m not in members(mine[key], index)]
            line = with_members(line, gained, index) if gained else line
        lines.append(line)
    lines += [line for key, line in post.items() if key not in mine and key not in own]
    return b"".join(line + b"\n" for line in lines)


def restore_image(repo: Repo, tree: MutableTree, txn: Transaction, view: ScriptView) -> None:
    """After the scripts: the image's user database plus what the scripts added; the host's
    identity files out of the tree unless a script rewrote them."""
    for f in view.host.user_db:
        path = f"{view.etc_dir}/{f.rel}"
        node = tree.lookup(path)
        if not isinstance(node, str):
            continue
        meta, after = _read(repo, node)
        image_csum = view.image.get(f.rel)
        image = _read(repo, image_csum)[1] if image_csum else b""
        if image_csum:
            meta = _read(repo, image_csum)[0]
        tree.set_file(path, txn.write_file(meta, added_lines(f.rel, f.data, after, image)))
    for f in view.host.identity:
        path = f"{view.etc_dir}/{f.rel}"
        node = tree.lookup(path)
        if isinstance(node, str) and _read(repo, node)[1] == f.data:
            tree.remove(path)
