"""Where packages come from: ``--source`` specs and the sources configured inside an image.

An image's sources live under its configuration directory — ``usr/etc`` in an
OSTree-layout commit, ``etc`` in a plain root filesystem::

    apt/sources.list, apt/sources.list.d/*.list     one-line entries
    apt/sources.list.d/*.sources                    deb822 entries
    yum.repos.d/*.repo                              rpm-md repositories
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from importers.aptsource import AptSource, parse_sources
from importers.errors import RepoMetadataError
from importers.treeread import CommitReader
from store import beneath
from store.repo import Repo

if TYPE_CHECKING:  # rpmmd (xml, configparser) loads only where rpm sources are read
    from importers.rpmmd import RpmRepo

CONFIG_DIRS = ("usr/etc", "etc")
SOURCE_FILE_MAX = 1 << 20  # bytes read of one sources file


@dataclass(frozen=True)
class Sources:
    """apt sources and rpm-md repositories together."""

    apt: tuple[AptSource, ...] = field(default_factory=tuple)
    rpmmd: tuple[RpmRepo, ...] = field(default_factory=tuple)

    def __add__(self, other: Sources) -> Sources:
        return Sources(self.apt + other.apt, self.rpmmd + other.rpmmd)


def parse_spec(spec: str) -> Sources:
    """One ``--source`` value: ``rpm-md URL``, a one-line ``deb ...`` entry or deb822 text."""
    text = spec.strip()
    if text.startswith("rpm-md "):
        from importers.rpmmd import parse_source_spec

        return Sources(rpmmd=(parse_source_spec(text),))
    apt = parse_sources(text)
    if not apt:
        raise RepoMetadataError(f"not a package source: {spec!r}")
    return Sources(apt=tuple(apt))


def _read_sources(read: Callable[[str], bytes | None], listdir: Callable[[str], list[str]],
                  etc: str, *, basearch: str, releasever: str) -> Sources:
    """The sources under one configuration directory, through ``read``/``listdir``."""
    apt: list[AptSource] = []
    main = read(f"{etc}/apt/sources.list")
    if main is not None:
        apt += parse_sources(main.decode("utf-8", "replace"), deb822=False)
    for name in listdir(f"{etc}/apt/sources.list.d"):
        if name.endswith((".list", ".sources")):
            data = read(f"{etc}/apt/sources.list.d/{name}") or b""
            apt += parse_sources(data.decode("utf-8", "replace"),
                                 deb822=name.endswith(".sources"))
    rpm: list[RpmRepo] = []
    for name in listdir(f"{etc}/yum.repos.d"):
        if name.endswith(".repo"):
            from importers.rpmmd import parse_repo_file

            data = read(f"{etc}/yum.repos.d/{name}") or b""
            rpm += parse_repo_file(data.decode("utf-8", "replace"), basearch=basearch,
                                   releasever=releasever)
    return Sources(tuple(apt), tuple(rpm))


def sources_from_commit(repo: Repo, rev: str, *, basearch: str = "x86_64",
                        releasever: str = "") -> Sources:
    """The sources configured in commit ``rev`` (its usr/etc, else its etc)."""
    reader = CommitReader(repo, rev)
    etc = next((d for d in CONFIG_DIRS if reader.is_dir(d)), None)
    if etc is None:
        return Sources()
    return _read_sources(reader.read, reader.listdir, etc, basearch=basearch,
                         releasever=releasever)


def sources_from_dir(etc: Path, *, basearch: str = "x86_64", releasever: str = "") -> Sources:
    """The sources configured in a directory laid out like /etc (a deployment's merged /etc)."""

    def read(rel: str) -> bytes | None:  # never through a symlink: /etc is the image's
        return beneath.read_file(etc.parent, rel, SOURCE_FILE_MAX)

    def listdir(rel: str) -> list[str]:
        try:
            root = beneath.open_root(etc.parent)
        except OSError:
            return []
        try:
            fd = beneath.open_dir(root, rel)
        except OSError:
            return []
        finally:
            os.close(root)
        try:
            return sorted(os.listdir(fd))
        finally:
            os.close(fd)

    return _read_sources(read, listdir, etc.name, basearch=basearch, releasever=releasever)
