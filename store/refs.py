"""Refs: one-line files under ``refs/heads``, ``refs/remotes/REMOTE`` and ``refs/mirrors``.

A local ref ``a/b`` lives at ``refs/heads/a/b``; a remote ref ``origin:a/b``
at ``refs/remotes/origin/a/b``.  Each file holds ``<sha256>\\n``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from store.errors import RefError
from store.fsutil import atomic_write, fsync_dir
from store.objects import is_checksum

_FRAGMENT = re.compile(r"[-._\w]+")
_REMOTE = re.compile(r"[-._\w]+")


def validate_ref(name: str) -> None:
    """Raise RefError unless ``name`` is a valid OSTree ref (``frag(/frag)*``, no checksum)."""
    frags = name.split("/")
    if (not name or any(not _FRAGMENT.fullmatch(f) or f in (".", "..") for f in frags)
            or name.isascii() is False):
        raise RefError(f"invalid ref name '{name}'")
    if is_checksum(name):
        raise RefError(f"invalid ref name '{name}': looks like a checksum")


def validate_remote_name(name: str) -> None:
    """Raise RefError unless ``name`` is usable as a remote name."""
    if not _REMOTE.fullmatch(name) or name in (".", ".."):
        raise RefError(f"invalid remote name '{name}'")


def split_refspec(refspec: str) -> tuple[str | None, str]:
    """``remote:ref`` -> (remote, ref); a plain ref -> (None, ref)."""
    if ":" in refspec:
        remote, ref = refspec.split(":", 1)
        return remote, ref
    return None, refspec


def ref_path(repo_path: Path, refspec: str, *, mirror: bool = False) -> Path:
    """Where ``refspec`` is stored; validates the names."""
    remote, ref = split_refspec(refspec)
    validate_ref(ref)
    if remote is not None:
        validate_remote_name(remote)
        return repo_path / "refs" / "remotes" / remote / ref
    return repo_path / "refs" / ("mirrors" if mirror else "heads") / ref


def read_ref_file(path: Path) -> str | None:
    """The checksum stored in a ref file, or None when absent."""
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    if not is_checksum(text):
        raise RefError(f"ref file {path} does not hold a checksum")
    return text


def write_ref(repo_path: Path, refspec: str, csum: str | None, *, sync: bool = True) -> None:
    """Point ``refspec`` at ``csum`` atomically, or delete it when ``csum`` is None."""
    path = ref_path(repo_path, refspec)
    if csum is None:
        try:
            path.unlink()
        except FileNotFoundError:
            return
        kind = "heads" if split_refspec(refspec)[0] is None else "remotes"
        _prune_empty_parents(path.parent, repo_path / "refs" / kind)
        return
    if not is_checksum(csum):
        raise RefError(f"not a checksum: {csum}")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, f"{csum}\n".encode(), sync=sync)


def _prune_empty_parents(d: Path, stop: Path) -> None:
    """Remove now-empty ref directories between ``d`` and ``stop`` (exclusive)."""
    while d != stop and stop in d.parents:
        try:
            d.rmdir()
        except OSError:
            break
        d = d.parent
    fsync_dir(d)


def list_refs(repo_path: Path) -> dict[str, str]:
    """All refs: local as ``name``, remote as ``remote:name``, sorted by name."""
    out: dict[str, str] = {}
    heads = repo_path / "refs" / "heads"
    for name, csum in _walk(heads):
        out[name] = csum
    remotes = repo_path / "refs" / "remotes"
    if remotes.is_dir():
        for remote in sorted(os.listdir(remotes)):
            for name, csum in _walk(remotes / remote):
                out[f"{remote}:{name}"] = csum
    return dict(sorted(out.items()))


def list_mirrors(repo_path: Path) -> dict[str, str]:
    """Refs under ``refs/mirrors`` (written by ``pull --mirror`` of collection refs)."""
    return dict(_walk(repo_path / "refs" / "mirrors"))


def _walk(base: Path) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if not base.is_dir():
        return found
    for dirpath, _dirs, files in os.walk(base):
        for f in files:
            if f.startswith("."):
                continue
            p = Path(dirpath) / f
            csum = read_ref_file(p)
            if csum is not None:
                found.append((p.relative_to(base).as_posix(), csum))
    return sorted(found)
