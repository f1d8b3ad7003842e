"""Streaming a package payload into store objects and a :class:`MutableTree`.

Directories the archive lists keep its mode and owner; directories it only
implies are 0755 root.  Each file's content goes through ``txn.write_file``
one block at a time.  For deb the archive's owner names are mapped through
the target's tables when known (as dpkg does), else its numeric ids are kept;
for rpm the header's names, modes and link targets are authoritative.
"""

from __future__ import annotations

import stat
from dataclasses import replace
from typing import Any

from importers.caps import XATTR as CAPS_XATTR
from importers.caps import caps_xattr
from importers.deb import DebPackage
from importers.errors import PackageFormatError
from importers.model import FileEntry, FileKind, PackageMeta
from importers.owners import OwnerMap
from importers.payload import ContentReader, Member
from importers.rpm import RpmPackage, hardlink_groups
from store.mtree import MutableTree
from store.objects import DirMeta, FileMeta
from store.repo import Repo

IMPLIED_DIR = DirMeta(uid=0, gid=0, mode=stat.S_IFDIR | 0o755)
SMALL = 8 << 20


def _content(reader: ContentReader, size: int) -> ContentReader | bytearray:
    """Small members whole (one write), larger ones as a stream (bounded memory)."""
    return reader.read_small() if size <= SMALL else reader


class TreeBuilder:
    """A MutableTree plus path -> checksum bookkeeping for hardlinks."""

    def __init__(self) -> None:
        self.root = MutableTree(IMPLIED_DIR)
        self.csums: dict[str, str] = {}

    def dir(self, path: str) -> MutableTree:
        """The directory at ``path``, creating implied parents 0755 root."""
        node = self.root
        for part in [p for p in path.split("/") if p]:
            child = node.dirs.get(part)
            node = child if child is not None else node.ensure_dir(part, IMPLIED_DIR)
        return node

    def set_dir_meta(self, path: str, meta: DirMeta) -> None:
        """Give a directory (created if needed) the archive's mode and owner."""
        self.dir(path).meta = meta

    def set_file(self, path: str, csum: str) -> None:
        """Place a file object, remembering it for later hardlinks."""
        parent, _, name = path.rpartition("/")
        self.dir(parent).set_file(name, csum)
        self.csums[path] = csum


def _deb_owner(m: Member, owners: OwnerMap) -> tuple[int, int]:
    uid = owners.users.get(m.uname, m.uid) if m.uname else m.uid
    gid = owners.groups.get(m.gname, m.gid) if m.gname else m.gid
    return uid, gid


def write_deb_tree(txn: Any, pkg: DebPackage, owners: OwnerMap,
                   cap: int) -> tuple[tuple[str, str], PackageMeta]:
    """Stream data.tar into the store; return (tree, dirmeta) checksums and the full record."""
    tb = TreeBuilder()
    digests = {e.path: e.digest for e in pkg.meta.files}
    entries: list[FileEntry] = []
    with pkg.open_data(cap=cap) as members:
        for m, reader in members:
            uid, gid = _deb_owner(m, owners)
            if m.kind == FileKind.DIR:
                tb.set_dir_meta(m.path, DirMeta(uid=uid, gid=gid, mode=m.mode))
            elif m.kind == FileKind.HARDLINK:
                tb.set_file(m.path, tb.csums[m.link])
            else:
                fmeta = FileMeta(uid=uid, gid=gid, mode=m.mode, symlink=m.link)
                content = _content(reader, m.size) if reader is not None else (
                    None if m.link else b"")
                tb.set_file(m.path, txn.write_file(fmeta, content, size=m.size if reader else 0))
            if m.path:
                entries.append(FileEntry(
                    path=m.path, kind=m.kind, mode=m.mode, size=m.size, user=m.uname or str(uid),
                    group=m.gname or str(gid), link=m.link, digest=digests.get(m.path, ""),
                    config=m.path in pkg.meta.conffiles))
    return tb.root.write(txn), replace(pkg.meta, files=tuple(entries))


def write_rpm_tree(repo: Repo, txn: Any, pkg: RpmPackage, owners: OwnerMap,
                   cap: int) -> tuple[tuple[str, str], PackageMeta]:
    """Stream the cpio payload into the store using the header's file metadata."""
    tb = TreeBuilder()
    by_path = {e.path: e for e in pkg.meta.files}
    groups = hardlink_groups(pkg.header)
    label = pkg.label
    with pkg.open_payload(cap=cap) as members:
        for m, reader in members:
            if not m.path:
                continue
            entry = by_path.get(m.path)
            if entry is None or entry.ghost:
                raise PackageFormatError(
                    f"payload member '{m.path}' not in the header of {label}")
            _rpm_member(repo, txn, tb, m, entry, reader, groups, by_path, owners)
    for e in pkg.meta.files:
        if e.kind == FileKind.DIR and not e.ghost and e.path not in tb.csums:
            tb.set_dir_meta(e.path, _rpm_dirmeta(e, owners))
    _check_complete(tb, pkg)
    return tb.root.write(txn), pkg.meta


def _rpm_filemeta(e: FileEntry, owners: OwnerMap) -> FileMeta:
    caps = caps_xattr(e.caps, where=f"of '{e.path}'") if e.caps else b""
    return FileMeta(uid=owners.uid(e.user), gid=owners.gid(e.group), mode=e.mode,
                    symlink=e.link if e.kind == FileKind.SYMLINK else "",
                    xattrs=((CAPS_XATTR, caps),) if caps else ())


def _rpm_dirmeta(e: FileEntry, owners: OwnerMap) -> DirMeta:
    return DirMeta(uid=owners.uid(e.user), gid=owners.gid(e.group), mode=e.mode)


def _rpm_member(repo: Repo, txn: Any, tb: TreeBuilder, m: Member, e: FileEntry,
                reader: Any, groups: dict[str, tuple[str, ...]],
                by_path: dict[str, FileEntry], owners: OwnerMap) -> None:
    if e.kind == FileKind.DIR:
        tb.set_dir_meta(m.path, _rpm_dirmeta(e, owners))
        return
    fmeta = _rpm_filemeta(e, owners)
    if e.kind == FileKind.SYMLINK:
        tb.set_file(m.path, txn.write_file(fmeta, None))
        return
    if reader is None and e.size > 0 and m.path in groups:
        return  # content arrives with a later member of the same hardlink set
    content = _content(reader, m.size) if reader is not None else b""
    csum = txn.write_file(fmeta, content, size=m.size)
    tb.set_file(m.path, csum)
    for other in groups.get(m.path, ()):
        if other != m.path and other not in tb.csums:
            tb.set_file(other, _rewrite(repo, txn, csum, fmeta,
                                        _rpm_filemeta(by_path[other], owners)))


def _rewrite(repo: Repo, txn: Any, csum: str, have: FileMeta, want: FileMeta) -> str:
    """The same content under other metadata (rpm hardlinks may differ in mode)."""
    if have == want:
        return csum
    _meta, stream = repo.open_file(csum)
    if stream is None:
        return txn.write_file(want, b"")
    with stream:
        return txn.write_file(want, stream)


def _check_complete(tb: TreeBuilder, pkg: RpmPackage) -> None:
    for e in pkg.meta.files:
        if e.kind != FileKind.DIR and not e.ghost and e.path not in tb.csums:
            raise PackageFormatError(
                f"file '{e.path}' listed in the header is missing from the payload of "
                f"{pkg.label}")
