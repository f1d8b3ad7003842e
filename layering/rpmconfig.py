"""What ``rpm -U`` does with a config file an upgrade replaces (rpm 4.18
``rpmfilesDecideFate`` in lib/rpmfi.c, for a file that the old or the new version marks
``%config``; checked by tests/layering/test_rpm_upgrade_oracle.py):

- the image's copy is the new version's, or the old version's unchanged: replaced;
- else, the new version's file is no longer ``%config``: the image's copy is saved as
  ``NAME.rpmsave`` and the new file put in place;
- else, both versions ship the same content: the image's copy stays;
- else ``%config(noreplace)``: the new file goes to ``NAME.rpmnew`` beside it; plain
  ``%config``: the image's copy is saved as ``NAME.rpmsave``.

An erased package's ``%config`` file changed in the image is saved as ``NAME.rpmsave``
(:func:`modified`).

Only regular files are compared (rpm compares symlink targets too: a symlink is replaced).
"""

from __future__ import annotations

import hashlib
import hmac
from enum import StrEnum

from importers.model import FileEntry, FileKind
from store.repo import Repo

_CHUNK = 1 << 16


class Fate(StrEnum):
    """Where the new version's file goes."""

    REPLACE = "replace"  # over the image's copy
    KEEP = "keep"  # nowhere: the image's copy stays
    RPMNEW = "rpmnew"  # to NAME.rpmnew
    RPMSAVE = "rpmsave"  # over it, the image's copy moved to NAME.rpmsave


def _digest(repo: Repo, csum: str, algo: str) -> str:
    """The hex digest (rpm's ``algo``) of the content of file object ``csum``, read in
    chunks; "" for a symlink or an algorithm hashlib does not have."""
    meta, stream = repo.open_file(csum)
    if stream is None or algo not in hashlib.algorithms_available:
        if stream is not None:
            stream.close()
        return ""
    h = hashlib.new(algo)
    with stream:
        while chunk := stream.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _same(a: str, b: str) -> bool:
    return bool(a) and hmac.compare_digest(a, b)


def modified(repo: Repo, entry: FileEntry, disk: str) -> bool:
    """``rpmfilesConfigConflict``: whether ``entry`` is a ``%config`` regular file whose
    copy in the image (file object ``disk``) differs from the package's; ``rpm -e`` saves
    such a copy as ``NAME.rpmsave``."""
    if not entry.config or entry.ghost or entry.kind is not FileKind.FILE:
        return False
    algo, _, want = entry.digest.partition(":")
    here = _digest(repo, disk, algo)
    return bool(here) and not _same(here, want)


def upgrade_fate(repo: Repo, old: FileEntry, new: FileEntry, disk: str) -> Fate:
    """The fate of ``new`` (the upgrade's file) over the image's file object ``disk`` that
    ``old`` (the installed version's entry for the path) describes."""
    if not (old.config or new.config) or old.kind is not FileKind.FILE:
        return Fate.REPLACE
    algo, _, old_hex = old.digest.partition(":")
    here = _digest(repo, disk, algo)
    if not here or _same(here, old_hex):
        return Fate.REPLACE
    if new.kind is FileKind.FILE and new.digest.partition(":")[0] == algo \
            and _same(here, new.digest.partition(":")[2]):
        return Fate.REPLACE
    if not new.config:
        return Fate.RPMSAVE
    if new.kind is FileKind.FILE and old.digest and old.digest == new.digest:
        return Fate.KEEP
    return Fate.RPMNEW if new.noreplace else Fate.RPMSAVE
