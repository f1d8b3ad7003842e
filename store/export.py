"""A commit's tree as a tar stream, read straight from the repository's objects.

What ``ostree export`` writes (libarchive, GNU format), with what it leaves out
added so that ``podman import``/``docker import`` get the whole tree: the root
as ``./`` and every other entry without a leading ``./``, numeric owners (no
user or group names), the full mode (setuid, setgid, sticky), symlink targets,
every file and directory stamped with the commit's timestamp.  In addition the
extended attributes go in PAX ``SCHILY.xattr.*`` records (GNU tar, libarchive
and the container tools read them), and a regular-file object met again is
written as a hardlink to its first path, as a hardlink checkout shares one
inode.  Each file object is hashed as it is copied and refused (the export
fails) when it does not match its name.  Nothing is checked out: file contents
are streamed from the objects in chunks, so memory stays bounded by the number
of files (the first path of each object), not by their size.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from collections.abc import Iterator
from typing import BinaryIO

from store.errors import CorruptObject, ToolError
from store.objects import DirMeta, FileMeta, Xattrs, checksum_file_bytes, file_header
from store.repo import Repo
from store.treecheck import MAX_DEPTH, check_file_meta


class ExportError(ToolError):
    """The tree holds something a tar cannot carry."""


CHUNK = 1024 * 1024  # bytes copied at a time from an object into the tar


def export_tar(repo: Repo, rev: str, out: BinaryIO) -> int:
    """Write commit ``rev``'s tree to ``out`` as a PAX tar stream; return the number of
    entries.  ``out`` only needs ``write`` (a pipe is fine).  A corrupt or missing object
    raises with its checksum; what was written to ``out`` by then is incomplete."""
    commit = repo.load_commit(repo.resolve(rev))
    writer = _TarWriter(repo, out, commit.timestamp)
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT,
                      bufsize=tarfile.RECORDSIZE) as tar:
        writer.tar = tar
        for path, tree, meta in _walk_dirs(repo, commit.root_tree, commit.root_meta):
            writer.directory(path, meta)
            for name, csum in repo.load_dirtree(tree).files:
                writer.file(f"{path}/{name}" if path != "." else name, csum)
    return writer.count


def _walk_dirs(repo: Repo, tree: str, meta: str) -> Iterator[tuple[str, str, DirMeta]]:
    """Every directory, parents first, in the dirtrees' (sorted) order: its path (``.``
    for the root), dirtree checksum and metadata.  Depth is bounded as ostree bounds it."""
    stack = [(".", tree, meta, 0)]
    while stack:
        path, t, m, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise CorruptObject(f"dirtree object {t} is nested more than {MAX_DEPTH} deep")
        yield path, t, repo.load_dirmeta(m)
        subdirs = repo.load_dirtree(t).dirs
        for name, st, sm in reversed(subdirs):
            stack.append((name if path == "." else f"{path}/{name}", st, sm, depth + 1))


class _TarWriter:
    """Adds entries to a tar stream, remembering each regular file object's first path."""

    def __init__(self, repo: Repo, out: BinaryIO, mtime: int) -> None:
        self.repo = repo
        self.out = out
        self.mtime = mtime
        self.tar: tarfile.TarFile | None = None
        self.first_path: dict[str, str] = {}
        self.count = 0

    def _info(self, name: str, uid: int, gid: int, mode: int, xattrs: Xattrs) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.uid, info.gid, info.mode = uid, gid, stat.S_IMODE(mode)
        info.mtime, info.uname, info.gname = self.mtime, "", ""
        info.pax_headers = {f"SCHILY.xattr.{_xattr_name(k, name)}":
                            v.decode("utf-8", "surrogateescape") for k, v in xattrs}
        return info

    def _add(self, info: tarfile.TarInfo, content: BinaryIO | None = None) -> None:
        assert self.tar is not None
        self.tar.addfile(info, content)
        self.count += 1

    def directory(self, path: str, meta: DirMeta) -> None:
        info = self._info(path, meta.uid, meta.gid, meta.mode, meta.xattrs)
        info.type = tarfile.DIRTYPE
        self._add(info)

    def file(self, path: str, csum: str) -> None:
        meta, stream = self.repo.open_file(csum)
        try:
            check_file_meta(meta, csum)
            info = self._info(path, meta.uid, meta.gid, meta.mode, meta.xattrs)
            if stream is None:
                if checksum_file_bytes(meta, b"") != csum:
                    raise CorruptObject(f"file object {csum} does not match its checksum")
                info.type, info.linkname = tarfile.SYMTYPE, meta.symlink
                self._add(info)
            elif csum in self.first_path:
                info.type, info.linkname = tarfile.LNKTYPE, self.first_path[csum]
                self._add(info)
            else:
                self._regular(info, meta, stream, csum)
                self.first_path[csum] = path
        finally:
            if stream is not None:
                stream.close()

    def _regular(self, info: tarfile.TarInfo, meta: FileMeta, stream: BinaryIO,
                 csum: str) -> None:
        info.type, info.size = tarfile.REGTYPE, _size(stream)
        reader = _HashingReader(stream, meta)
        try:
            self._add(info, reader)  # type: ignore[arg-type]
        except OSError as e:
            if "unexpected end of data" in str(e):
                raise CorruptObject(f"file object {csum} is shorter than it was") from None
            raise
        if reader.hash.hexdigest() != csum:
            raise CorruptObject(f"file object {csum} does not match its checksum")


class _HashingReader:
    """Reads a content stream for tarfile, hashing the object (header and content) on the
    way, so that a corrupt object is refused as ``fsck`` would refuse it."""

    def __init__(self, stream: BinaryIO, meta: FileMeta) -> None:
        self.stream = stream
        self.hash = hashlib.sha256(file_header(meta))

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(min(n, CHUNK) if n >= 0 else CHUNK)
        self.hash.update(data)
        return data


def _xattr_name(name: bytes, path: str) -> str:
    """An xattr name as a PAX keyword can carry it: printable ASCII without ``=`` (which
    ends a keyword); any other name would be misread, so the export stops instead."""
    if not all(0x20 < c < 0x7F and c != ord("=") for c in name):
        raise ExportError(f"xattr name {name!r} of {path} cannot be written in a tar")
    return name.decode()


def _size(stream: BinaryIO) -> int:
    """A content stream's length: an archive object's declared size, else the file's."""
    size = getattr(stream, "size", None)
    return size if isinstance(size, int) else os.fstat(stream.fileno()).st_size
