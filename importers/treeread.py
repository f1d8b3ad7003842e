"""Reading files of a commit straight from the store, without a checkout.

Symlinks inside the commit are followed (absolute ones relative to the
commit's root, at most 40 hops), so ``var/lib/dpkg -> ../../usr/share/dpkg``
style layouts resolve as they would on the booted system.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import BinaryIO

from importers.errors import PackageDbError
from store.mtree import MutableTree
from store.repo import Repo

MAX_HOPS = 40


class CommitReader:
    """Lookups and reads of paths in one commit."""

    def __init__(self, repo: Repo, rev: str) -> None:
        self.repo = repo
        self.rev = rev
        self.root = MutableTree.from_commit(repo, rev)

    def resolve(self, path: str) -> tuple[str, MutableTree | str] | None:
        """(canonical path, subtree or file checksum) with symlinks followed, or None."""
        parts = [p for p in path.strip("/").split("/") if p not in ("", ".")]
        done: list[str] = []
        node: MutableTree | str = self.root
        hops = 0
        while parts:
            name = parts.pop(0)
            if name == "..":
                done = done[:-1]
                node = self._dir_at(done)
                continue
            if not isinstance(node, MutableTree):
                return None
            child = node.dirs.get(name) or node.files.get(name)
            if child is None:
                return None
            if isinstance(child, str):
                meta, stream = self.repo.open_file(child)
                if stream is not None:
                    stream.close()
                if meta.symlink:
                    hops += 1
                    if hops > MAX_HOPS:
                        raise PackageDbError(f"too many symlinks resolving '{path}' in {self.rev}")
                    target = meta.symlink
                    base = [] if target.startswith("/") else done
                    parts = [p for p in target.split("/") if p not in ("", ".")] + parts
                    done = list(base)
                    node = self._dir_at(done)
                    continue
            done.append(name)
            node = child
        return "/".join(done), node

    def _dir_at(self, parts: list[str]) -> MutableTree:
        node = self.root.lookup("/".join(parts)) if parts else self.root
        if not isinstance(node, MutableTree):
            raise PackageDbError(f"'{'/'.join(parts)}' is not a directory in {self.rev}")
        return node

    def is_dir(self, path: str) -> bool:
        """Whether ``path`` resolves to a directory."""
        found = self.resolve(path)
        return found is not None and isinstance(found[1], MutableTree)

    def listdir(self, path: str) -> list[str]:
        """Sorted entry names of a directory ([] when absent)."""
        found = self.resolve(path)
        if found is None or not isinstance(found[1], MutableTree):
            return []
        return sorted(set(found[1].files) | set(found[1].dirs))

    def open(self, path: str) -> BinaryIO | None:
        """A stream of a regular file's content, or None when absent."""
        found = self.resolve(path)
        if found is None or not isinstance(found[1], str):
            return None
        _meta, stream = self.repo.open_file(found[1])
        return stream

    def read(self, path: str, *, limit: int = 512 << 20) -> bytes | None:
        """A small file's whole content (None when absent; larger than ``limit`` raises)."""
        stream = self.open(path)
        if stream is None:
            return None
        with stream:
            data = stream.read(limit + 1)
        if len(data) > limit:
            raise PackageDbError(f"'{path}' in {self.rev} is larger than {limit} bytes")
        return data

    def copy_to(self, path: str, dest: Path) -> bool:
        """Copy a file's content to ``dest``; False when absent."""
        stream = self.open(path)
        if stream is None:
            return False
        with stream, open(dest, "wb") as out:
            shutil.copyfileobj(stream, out, 1 << 20)
        return True
