"""Read-only views of commits: history, details, listings, content and tree diffs."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from store.checkout import find_subpath
from store.errors import InputError
from store.gvariant import Variant
from store.objects import Commit, FileMeta
from store.repo import InflateReader, Repo
from store.traverse import commit_history


@dataclass(frozen=True)
class Entry:
    """One line of ``ls``: a file, symlink or directory of a commit."""

    path: str
    mode: int
    uid: int
    gid: int
    size: int
    checksum: str
    symlink: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "mode": self.mode, "uid": self.uid, "gid": self.gid,
                "size": self.size, "checksum": self.checksum, "symlink": self.symlink or None}


def variant_to_json(v: Any) -> Any:
    """A GVariant value as plain JSON data (bytes become hex)."""
    if isinstance(v, Variant):
        return variant_to_json(v.value)
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dict):
        return {str(k): variant_to_json(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [variant_to_json(x) for x in v]
    return v


def commit_to_dict(csum: str, c: Commit) -> dict[str, Any]:
    """A commit's fields for ``show --json`` and ``log --json``."""
    return {"checksum": csum, "parent": c.parent, "subject": c.subject, "body": c.body,
            "timestamp": c.timestamp, "root-tree": c.root_tree, "root-meta": c.root_meta,
            "metadata": {k: variant_to_json(v) for k, v in c.metadata.items()}}


def log(repo: Repo, rev: str) -> list[tuple[str, Commit]]:
    """The commit ``rev`` and its ancestors present in the store, newest first."""
    return [(c, repo.load_commit(c)) for c in commit_history(repo, repo.resolve(rev))]


def file_info(repo: Repo, csum: str) -> tuple[FileMeta, int]:
    """A file object's metadata and content size."""
    meta, stream = repo.open_file(csum)
    if stream is None:
        return meta, 0
    with stream:
        if isinstance(stream, InflateReader):  # archive mode: the header declares it
            return meta, stream.size
        return meta, os.fstat(stream.fileno()).st_size


def ls(repo: Repo, rev: str, path: str = "/", *, recursive: bool = False) -> list[Entry]:
    """Entries of a directory of commit ``rev`` (the entry itself first, as ``ostree ls``)."""
    c = repo.load_commit(repo.resolve(rev))
    obj, meta = find_subpath(repo, c.root_tree, c.root_meta, path)
    norm = "/" + path.strip("/") if path.strip("/") else "/"
    if meta is None:
        return [_file_entry(repo, obj, norm)]
    return [_dir_entry(repo, obj, meta, norm), *_list_dir(repo, obj, norm, recursive)]


def _dir_entry(repo: Repo, tree: str, meta: str, path: str) -> Entry:
    dm = repo.load_dirmeta(meta)
    return Entry(path, dm.mode, dm.uid, dm.gid, 0, tree)


def _file_entry(repo: Repo, csum: str, path: str) -> Entry:
    fm, size = file_info(repo, csum)
    return Entry(path, fm.mode, fm.uid, fm.gid, size, csum, fm.symlink)


def _list_dir(repo: Repo, tree: str, path: str, recursive: bool) -> Iterator[Entry]:
    dt = repo.load_dirtree(tree)
    base = path.rstrip("/")
    items: list[tuple[str, tuple[str, ...]]] = [(n, (c,)) for n, c in dt.files]
    items += [(n, (t, m)) for n, t, m in dt.dirs]
    for name, ref in sorted(items, key=lambda e: e[0].encode()):
        p = f"{base}/{name}"
        if len(ref) == 1:
            yield _file_entry(repo, ref[0], p)
            continue
        yield _dir_entry(repo, ref[0], ref[1], p)
        if recursive:
            yield from _list_dir(repo, ref[0], p, recursive)


def cat(repo: Repo, rev: str, path: str) -> BinaryIO:
    """A stream of the content of the regular file ``path`` in commit ``rev``."""
    c = repo.load_commit(repo.resolve(rev))
    obj, meta = find_subpath(repo, c.root_tree, c.root_meta, path)
    if meta is not None:
        raise InputError(f"'{path}' is a directory in {rev}")
    fm, stream = repo.open_file(obj)
    if stream is None:
        raise InputError(f"'{path}' is a symlink to '{fm.symlink}' in {rev}")
    return stream


def diff(repo: Repo, a: str, b: str) -> list[tuple[str, str]]:
    """Differences from commit ``a`` to ``b`` as sorted (``A``/``D``/``M``, path) pairs."""
    ca, cb = repo.load_commit(repo.resolve(a)), repo.load_commit(repo.resolve(b))
    out: list[tuple[str, str]] = []
    if ca.root_meta != cb.root_meta:
        out.append(("M", "/"))
    _diff_tree(repo, ca.root_tree, cb.root_tree, "", out)
    return sorted(out, key=lambda e: e[1].encode())


def _children(repo: Repo, tree: str) -> dict[str, tuple[str, ...]]:
    dt = repo.load_dirtree(tree)
    kids: dict[str, tuple[str, ...]] = {n: (c,) for n, c in dt.files}
    kids.update({n: (t, m) for n, t, m in dt.dirs})
    return kids


def _diff_tree(repo: Repo, ta: str, tb: str, base: str, out: list[tuple[str, str]]) -> None:
    if ta == tb:
        return
    ka, kb = _children(repo, ta), _children(repo, tb)
    for name in ka.keys() - kb.keys():
        out.append(("D", f"{base}/{name}"))
    for name in kb.keys() - ka.keys():
        out.append(("A", f"{base}/{name}"))
        if len(kb[name]) == 2:
            _added(repo, kb[name][0], f"{base}/{name}", out)
    for name in ka.keys() & kb.keys():
        ea, eb = ka[name], kb[name]
        p = f"{base}/{name}"
        if len(ea) != len(eb):
            out.append(("M", p))
        elif len(ea) == 1:
            if ea != eb:
                out.append(("M", p))
        else:
            if ea[1] != eb[1]:
                out.append(("M", p))
            _diff_tree(repo, ea[0], eb[0], p, out)


def _added(repo: Repo, tree: str, base: str, out: list[tuple[str, str]]) -> None:
    for name, ref in _children(repo, tree).items():
        out.append(("A", f"{base}/{name}"))
        if len(ref) == 2:
            _added(repo, ref[0], f"{base}/{name}", out)


def mode_string(mode: int) -> str:
    """``ostree ls`` style type letter and octal permissions, e.g. ``-00644``."""
    kind = "d" if stat.S_ISDIR(mode) else "l" if stat.S_ISLNK(mode) else "-"
    return f"{kind}0{stat.S_IMODE(mode):04o}"


__all__ = ["Entry", "cat", "commit_to_dict", "diff", "file_info", "log", "ls", "mode_string",
           "variant_to_json"]
