"""An OSTree-format repository on disk: layout, config, refs and object reading.

::

    REPO/
      config            [core] repo_version=1, mode=bare|bare-user|archive-z2; [remote "x"]
      objects/ab/cdef…  .file|.filez .dirtree .dirmeta .commit .commitmeta
      refs/heads/NAME   refs/remotes/REMOTE/NAME   refs/mirrors/
      tmp/              staging-* (one per open transaction), cache/
      state/            CSUM.commitpartial for incomplete pulls
      .lock             flock: shared for writers and readers, exclusive for prune

Writing goes through :meth:`Repo.transaction` (see :mod:`store.txn`).
"""

from __future__ import annotations

import configparser
import contextlib
import fcntl
import io
import os
import stat
import time
import zlib
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from store import refs as refs_mod
from store.errors import CorruptObject, ObjectNotFound, RefError, RepoError
from store.fsutil import atomic_write, read_xattrs, rmtree
from store.gvariant import Variant, decode
from store.lock import file_lock
from store.objects import (
    METADATA_SIG,
    Commit,
    DirMeta,
    DirTree,
    FileMeta,
    ObjectType,
    decode_dirmeta_variant,
    is_checksum,
    loose_path,
    parse_header,
)
from store.treecheck import check_dirmeta, check_dirtree

if TYPE_CHECKING:
    from store.txn import Transaction

OSTREEMETA_XATTR = "user.ostreemeta"


class RepoMode(StrEnum):
    """Repository storage modes, spelled as in ``config``."""

    BARE = "bare"
    BARE_USER = "bare-user"
    ARCHIVE = "archive-z2"

    @classmethod
    def parse(cls, text: str) -> RepoMode:
        """Accept the CLI spelling (``archive``) as well as the config one."""
        if text == "archive":
            return cls.ARCHIVE
        try:
            return cls(text)
        except ValueError:
            raise RepoError(f"unsupported repository mode '{text}'") from None


def new_config() -> configparser.ConfigParser:
    """A config parser that reads and writes GKeyFile-style ``config`` files faithfully."""
    cp = configparser.ConfigParser(interpolation=None, delimiters=("=",), strict=False)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    return cp


DIRMETA_CACHE = 4096  # parsed dirmetas kept per open repository
WRITTEN_DIRTREE_CACHE = 16384  # dirtrees written by this process, kept per open repository
LOADED_DIRTREE_CACHE = 16384  # dirtrees read and checked, kept per open repository
STARTING_STAGING_MAX_AGE = 3600.0  # seconds; older ``.staging-*`` dirs were left by a kill
LOCKED_PREFIXES = ("staging-", "scripts-")  # tmp/ dirs whose live user locks their .lock
STARTING_PREFIXES = tuple(f".{p}" for p in LOCKED_PREFIXES)


class Repo:
    """An open repository.  Cheap to create; holds no file descriptors."""

    def __init__(self, path: Path, mode: RepoMode) -> None:
        self.path = path
        self.mode = mode
        self.objects_dir = path / "objects"
        self.tmp_dir = path / "tmp"
        self._txn: Transaction | None = None
        self._dirmetas: dict[str, DirMeta] = {}
        self._written_dirtrees: dict[str, DirTree] = {}
        self._written_checked: set[str] = set()
        self._loaded_dirtrees: dict[str, DirTree] = {}

    # ---- creation and opening ----------------------------------------------------------

    @classmethod
    def init(cls, path: str | os.PathLike[str], mode: RepoMode = RepoMode.BARE) -> Repo:
        """Create a repository at ``path`` (empty or absent); an existing one of this mode is ok."""
        path = Path(path)
        cfg_path = path / "config"
        if cfg_path.exists():
            repo = cls.open(path)
            if repo.mode != mode:
                raise RepoError(f"{path} is already a repository in mode {repo.mode}")
            return repo
        if path.exists() and any(path.iterdir()):
            raise RepoError(f"{path} is not empty and not a repository")
        for sub in ("objects", "refs/heads", "refs/remotes", "refs/mirrors", "tmp/cache",
                    "state", "extensions"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        cp = new_config()
        cp["core"] = {"repo_version": "1", "mode": mode.value}
        cls._write_config_to(path, cp)
        return cls(path, mode)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, clean: bool = True) -> Repo:
        """Open an existing repository, removing staging left by killed transactions
        (unless ``clean`` is false)."""
        path = Path(path)
        cp = new_config()
        try:
            with open(path / "config", encoding="utf-8") as f:
                cp.read_file(f)
        except FileNotFoundError:
            raise RepoError(f"no repository at {path} (missing config)") from None
        except (configparser.Error, UnicodeDecodeError) as e:
            raise RepoError(f"unreadable config in {path}: {e}") from None
        if cp.get("core", "repo_version", fallback="") != "1":
            raise RepoError(f"unsupported repo_version in {path}/config")
        repo = cls(path, RepoMode.parse(cp.get("core", "mode", fallback="bare")))
        if clean and (repo.mode is RepoMode.ARCHIVE or os.access(path / "tmp", os.W_OK)):
            clean_stale_staging(repo)
        return repo

    # ---- config ------------------------------------------------------------------------

    def read_config(self) -> configparser.ConfigParser:
        """The parsed ``config`` file."""
        cp = new_config()
        with open(self.path / "config", encoding="utf-8") as f:
            cp.read_file(f)
        return cp

    def write_config(self, cp: configparser.ConfigParser) -> None:
        """Replace ``config`` atomically."""
        self._write_config_to(self.path, cp)

    @staticmethod
    def _write_config_to(path: Path, cp: configparser.ConfigParser) -> None:
        buf = io.StringIO()
        cp.write(buf, space_around_delimiters=False)
        atomic_write(path / "config", buf.getvalue().rstrip("\n").encode() + b"\n")

    @property
    def is_archive(self) -> bool:
        return self.mode is RepoMode.ARCHIVE

    # ---- locking and transactions ------------------------------------------------------

    def lock(self, *, exclusive: bool = False,
             wait: float = 30.0) -> contextlib.AbstractContextManager[None]:
        """Shared lock for readers and writers, exclusive for prune."""
        return file_lock(self.path / ".lock", exclusive=exclusive, wait=wait,
                         what=f"repository {self.path}")

    def transaction(self) -> Transaction:
        """A new write transaction; use as a context manager."""
        from store.txn import Transaction

        return Transaction(self)

    # ---- refs --------------------------------------------------------------------------

    def read_ref(self, refspec: str) -> str | None:
        """The checksum a ref points at, or None."""
        return refs_mod.read_ref_file(refs_mod.ref_path(self.path, refspec))

    def list_refs(self) -> dict[str, str]:
        """Every ref (``name`` or ``remote:name``) and its checksum."""
        return refs_mod.list_refs(self.path)

    def set_ref(self, refspec: str, csum: str | None) -> None:
        """Point a ref at a commit that is already in the store (or delete it)."""
        if csum is not None and not self.has(csum, ObjectType.COMMIT):
            raise ObjectNotFound(f"commit {csum} not in repository {self.path}")
        refs_mod.write_ref(self.path, refspec, csum)

    def resolve(self, rev: str) -> str:
        """Resolve a branch, ``remote:branch``, checksum or 8+ digit prefix (``^``: parent)."""
        base, ups = rev, 0
        while base.endswith("^"):
            base, ups = base[:-1], ups + 1
        csum = self._resolve_plain(base)
        for _ in range(ups):
            parent = self.load_commit(csum).parent
            if parent is None:
                raise RefError(f"commit {csum} of '{rev}' has no parent")
            csum = parent
        return csum

    def _resolve_plain(self, rev: str) -> str:
        if is_checksum(rev):
            return rev
        if ":" not in rev:
            found = refs_mod.read_ref_file(self.path / "refs" / "heads" / rev) if rev else None
            if found is None and rev and ".." not in rev.split("/"):
                found = refs_mod.read_ref_file(self.path / "refs" / "mirrors" / rev)
            if found:
                return found
            if 8 <= len(rev) < 64 and all(c in "0123456789abcdef" for c in rev):
                return self._resolve_prefix(rev)
        else:
            try:
                found = self.read_ref(rev)
            except RefError:
                found = None
            if found:
                return found
        raise RefError(f"ref '{rev}' not found in repository {self.path}")

    def _resolve_prefix(self, prefix: str) -> str:
        d = self.objects_dir / prefix[:2]
        matches = []
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(d):
                if name.endswith(".commit") and (prefix[:2] + name).startswith(prefix):
                    matches.append(prefix[:2] + name[: -len(".commit")])
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise RefError(f"checksum prefix '{prefix}' is ambiguous")
        raise RefError(f"ref '{prefix}' not found in repository {self.path}")

    # ---- object access -----------------------------------------------------------------

    def object_path(self, csum: str, objtype: ObjectType) -> Path:
        """Path of a loose object (it may not exist)."""
        return self.objects_dir / loose_path(csum, objtype, archive=self.is_archive)

    def has(self, csum: str, objtype: ObjectType) -> bool:
        """True when the object is stored (or staged in the open transaction)."""
        if self._txn is not None and self._txn.has_staged(csum, objtype):
            return True
        rel = loose_path(csum, objtype, archive=self.is_archive)
        return os.path.lexists(f"{self.objects_dir}/{rel}")

    def _find(self, csum: str, objtype: ObjectType) -> Path:
        if self._txn is not None:
            staged = self._txn.staged_path(csum, objtype)
            if staged is not None:
                return staged
        p = self.object_path(csum, objtype)
        if not os.path.lexists(p):
            raise ObjectNotFound(f"{objtype.value} object {csum} not found in {self.path}")
        return p

    def read_metadata_bytes(self, csum: str, objtype: ObjectType) -> bytes:
        """Raw GVariant bytes of a metadata object."""
        try:
            return self._find(csum, objtype).read_bytes()
        except OSError as e:
            raise ObjectNotFound(f"{objtype.value} object {csum}: {e.strerror}") from None

    def load_commit(self, csum: str) -> Commit:
        """The parsed commit object ``csum``."""
        return _parse(Commit.from_bytes, self.read_metadata_bytes(csum, ObjectType.COMMIT),
                      "commit", csum)

    def load_dirtree(self, csum: str) -> DirTree:
        """The parsed dirtree object ``csum``, checked as ostree does (each name one path
        component, sorted, unique: see :mod:`store.treecheck`) since it may be written out.
        Kept once checked: objects never change, and a compose reads the same ones often."""
        tree = self._written_dirtrees.get(csum)
        if tree is not None:  # built in memory: sorted only in its serialized form
            if csum not in self._written_checked:
                check_dirtree(tree, csum, ordered=False)
                self._written_checked.add(csum)
            return tree
        tree = self._loaded_dirtrees.get(csum)
        if tree is None:
            tree = check_dirtree(_parse(DirTree.from_bytes, self.read_metadata_bytes(
                csum, ObjectType.DIR_TREE), "dirtree", csum), csum)
            if len(self._loaded_dirtrees) >= LOADED_DIRTREE_CACHE:
                self._loaded_dirtrees.clear()
            self._loaded_dirtrees[csum] = tree
        return tree

    def remember_written(self, csum: str, tree: DirTree) -> None:
        """Keep a dirtree this process has just staged: a compose reads back the package trees
        it has imported.  Forgotten when a transaction fails (its objects never exist)."""
        if len(self._written_dirtrees) >= WRITTEN_DIRTREE_CACHE:
            self.forget_written()
        self._written_dirtrees[csum] = tree

    def forget_loaded(self, csum: str) -> None:
        """Drop a dirtree :meth:`load_dirtree` kept (its object is being deleted)."""
        self._loaded_dirtrees.pop(csum, None)

    def forget_written(self) -> None:
        """Drop the dirtrees kept by :meth:`remember_written`."""
        self._written_dirtrees.clear()
        self._written_checked.clear()

    def load_dirmeta(self, csum: str) -> DirMeta:
        """The parsed dirmeta object ``csum``, kept for reuse: a tree has few distinct dirmetas
        and objects never change."""
        meta = self._dirmetas.get(csum)
        if meta is None:
            meta = _parse(DirMeta.from_bytes, self.read_metadata_bytes(csum, ObjectType.DIR_META),
                          "dirmeta", csum)
            check_dirmeta(meta, csum)
            if len(self._dirmetas) >= DIRMETA_CACHE:
                self._dirmetas.clear()
            self._dirmetas[csum] = meta
        return meta

    def load_detached_metadata(self, csum: str) -> dict[str, Variant]:
        """The commit's detached metadata (signatures), empty when there is none."""
        if not self.has(csum, ObjectType.COMMIT_META):
            return {}
        data = self.read_metadata_bytes(csum, ObjectType.COMMIT_META)
        return _parse(lambda b: decode(METADATA_SIG, b), data, "commitmeta", csum)

    def write_detached_metadata(self, csum: str, metadata: dict[str, Variant]) -> None:
        """Replace a commit's detached metadata (it is not content-addressed)."""
        from store.gvariant import encode

        if not self.has(csum, ObjectType.COMMIT):
            raise ObjectNotFound(f"commit {csum} not found in {self.path}")
        path = self.object_path(csum, ObjectType.COMMIT_META)
        atomic_write(path, encode(METADATA_SIG, metadata))

    def open_file(self, csum: str) -> tuple[FileMeta, BinaryIO | None]:
        """A file object's metadata and a stream of its content (None for a symlink)."""
        path = self._find(csum, ObjectType.FILE)
        try:
            if self.mode is RepoMode.ARCHIVE:
                return _open_archive(path)
            if self.mode is RepoMode.BARE_USER:
                return _open_bare_user(path)
            return _open_bare(path)
        except OSError as e:
            raise ObjectNotFound(f"file object {csum}: {e.strerror}") from None

    def load_file(self, csum: str) -> tuple[FileMeta, bytes]:
        """A file object's metadata and whole content (b"" for a symlink)."""
        meta, stream = self.open_file(csum)
        if stream is None:
            return meta, b""
        with stream:
            return meta, stream.read()

    def iter_objects(self) -> Iterator[tuple[str, ObjectType]]:
        """Every loose object in the store, in directory order."""
        ext_map = {ot.value: ot for ot in ObjectType}
        ext_map["filez"] = ObjectType.FILE
        with contextlib.suppress(FileNotFoundError):
            for sub in sorted(os.listdir(self.objects_dir)):
                if len(sub) != 2:
                    continue
                for name in os.listdir(self.objects_dir / sub):
                    stem, _, ext = name.partition(".")
                    if ext in ext_map and len(stem) == 62:
                        yield sub + stem, ext_map[ext]


def clean_stale_staging(repo: Repo) -> None:
    """Remove staging directories (``tmp/staging-*``) whose transaction is no longer alive:
    a live transaction holds a lock on the directory's ``.lock``.  A transaction takes that
    lock before its directory gets the ``staging-`` name (see :class:`Transaction`), so a
    directory is never taken for stale while its transaction starts.  The script
    sandbox's scratch directories (``tmp/scripts-*``) follow the same scheme."""
    try:
        names = os.listdir(repo.tmp_dir)
    except FileNotFoundError:
        return
    for name in names:
        d = repo.tmp_dir / name
        if name.startswith(STARTING_PREFIXES):  # starting, or killed while it started
            with contextlib.suppress(OSError):
                if time.time() - d.stat().st_mtime > STARTING_STAGING_MAX_AGE:
                    rmtree(d)
            continue
        if not name.startswith(LOCKED_PREFIXES):
            continue
        try:
            fd = os.open(d / ".lock", os.O_RDONLY)
        except FileNotFoundError:
            rmtree(d)
            continue
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue
        finally:
            os.close(fd)
        rmtree(d)


def _parse(fn, data: bytes, what: str, csum: str):  # type: ignore[no-untyped-def]
    try:
        return fn(data)
    except CorruptObject as e:
        raise CorruptObject(f"{what} object {csum} is corrupt: {e}") from None


def _open_bare(path: Path) -> tuple[FileMeta, BinaryIO | None]:
    st = os.lstat(path)
    xattrs = read_xattrs(path)
    if stat.S_ISLNK(st.st_mode):
        return FileMeta(st.st_uid, st.st_gid, st.st_mode, os.readlink(path), xattrs), None
    return FileMeta(st.st_uid, st.st_gid, st.st_mode, "", xattrs), open(path, "rb")


def _open_bare_user(path: Path) -> tuple[FileMeta, BinaryIO | None]:
    raw = os.getxattr(path, OSTREEMETA_XATTR, follow_symlinks=False)
    uid, gid, mode, xattrs = decode_dirmeta_variant(raw)
    if stat.S_ISLNK(mode):
        target = path.read_bytes().rstrip(b"\0").decode()
        return FileMeta(uid, gid, mode, target, xattrs), None
    return FileMeta(uid, gid, mode, "", xattrs), open(path, "rb")


def _open_archive(path: Path) -> tuple[FileMeta, BinaryIO | None]:
    f = open(path, "rb")
    head = f.read(8)
    if len(head) < 8:
        f.close()
        raise CorruptObject(f"archive object {path.name} is truncated")
    n = int.from_bytes(head[:4], "big")
    meta, size, hlen = parse_header(head + f.read(n), archive=True)
    if meta.is_symlink:
        f.close()
        return meta, None
    return meta, cast(BinaryIO, InflateReader(f, size))  # a RawIOBase: BinaryIO is nominal


class InflateReader(io.RawIOBase):
    """A read-only stream of raw-DEFLATE content, checked against the declared size."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f = f
        self._z = zlib.decompressobj(-15)
        self.size = size
        self._out = 0
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        want = len(b)
        while len(self._buf) < want and not self._z.eof:
            data = self._z.unconsumed_tail or self._f.read(65536)
            if not data:
                break
            self._buf += self._z.decompress(data, max(want - len(self._buf), 65536))
        n = min(want, len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        self._out += n
        if n == 0 and self._out != self.size:
            raise CorruptObject(f"compressed object ends after {self._out} of {self.size} bytes")
        if self._out > self.size:
            raise CorruptObject("compressed object is longer than its header says")
        return n

    def close(self) -> None:
        self._f.close()
        super().close()
