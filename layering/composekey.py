"""The compose key: a rerun of an image compose with nothing changed stops at once.

A compose's result is a function of its inputs; the key is a sha256 over all of
them, computed without resolving, downloading or unpacking anything:

- strata's own code (sha256 over its modules' sources), the Python version and the
  libsolv module (its file's size and time): a new strata or solver may build otherwise;
- the base commit's checksum (its tree, package database, apt/yum configuration,
  pinning and architecture all come from it);
- the request, normalised: branch, packages to install and remove (in the order given),
  the sha256 of each local and replacing package file, no-scripts, no-recommends,
  version, subject, kargs and ``SOURCE_DATE_EPOCH``;
- each package source (``sources``, else the base's own configuration): its entry and
  the sha256 of its verified Release text (apt, InRelease or Release) or repomd.xml
  (rpm-md), fetched with a conditional GET. Release and repomd.xml carry the checksum
  of every index, and the indexes those of every package, so the same bytes mean the
  same catalogue; the signature is verified on every run, as the full compose does.

After a compose commits (or finds its commit by input hash) on a branch, the key is
recorded beside the repository's download cache; the compose read the same Release
and repomd.xml texts the key hashed (one fetcher, each read once)::

    <repo>/tmp/cache/compose/<sha256(branch)>.json   {"branch", "key", "commit"}

The key is not in the commit: it holds per-run facts (a Release's date, strata's
version) that must not change an image's checksum. A later compose whose key equals
the record's, while the branch still points at the recorded commit, is unchanged.
Host layers (``client_layer``, the host's users), dry runs and download-only runs are
never keyed; a source that cannot be fetched, or a network that went away, makes the
compose take its full path (which reports the cause).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from importers.aptsource import release_text
from importers.fetch import Fetcher, repo_cache_dir
from importers.pkgindex import file_sha256
from layering.composerequest import image_inputs, source_list
from store.errors import ToolError
from store.fsutil import atomic_write
from store.progress import ProgressFn
from store.repo import Repo

if TYPE_CHECKING:
    from layering.compose import ComposeResult
    from layering.composerequest import ComposeRequest

LEFT_OUT_KEY = "strata.left-out"  # the compose report's lines on removed run-dependent files
RECORD_MAX = 4096  # bytes read of a record
_CODE = ("store", "importers", "boot", "layering")


@dataclass(frozen=True)
class Unchanged:
    """A compose that would rebuild what ``branch`` already holds: ``checksum``."""

    branch: str
    checksum: str
    left_out: tuple[str, ...] = ()


def compose_image(repo: Repo, request: ComposeRequest, *, progress: ProgressFn | None = None,
                  keyed: bool = True) -> ComposeResult | Unchanged:
    """:func:`layering.compose.compose`, unless the compose key shows that nothing changed
    since the branch's commit was composed (then :class:`Unchanged`, before anything is
    resolved, downloaded or written). With ``keyed`` False, always the full compose.

    The key and the compose read each source's Release (repomd.xml) through one fetcher,
    once: the key recorded after the compose names the very metadata it was built from."""
    with Fetcher(repo_cache_dir(repo.tmp_dir), offline=request.offline,
                 read_only=request.dry_run) as fetcher:
        key = compose_key(repo, request, fetcher) if keyed else None
        if key is not None and request.branch is not None:
            found = _unchanged(repo, request.branch, key)
            if found is not None:
                return found
        # imported here: the unchanged path stays clear of libsolv, deb822 and the assembler
        from layering.compose import compose

        result = compose(repo, request, progress=progress, fetcher=fetcher)
    if key is not None and request.branch and result.checksum is not None:
        _record(repo, request.branch, key, result.checksum)
    return result


def compose_key(repo: Repo, request: ComposeRequest, fetcher: Fetcher) -> str | None:
    """The request's compose key (see the module docstring), or None when it has none: a
    host layer, a dry or download-only run, no branch, or an input that cannot be read
    (a missing file, an unreachable source: the full compose reports it)."""
    if (request.client_layer or request.host_etc is not None or request.dry_run
            or request.download_only or request.reuse is not None or not request.branch):
        return None
    try:
        base = repo.resolve(request.base)
        doc = {"strata": code_fingerprint(), "python": sys.version, "libsolv": _solv_stamp(),
               "base": base, "request": _request_doc(request),
               "sources": _source_digests(repo, base, request, fetcher)}
    except (ToolError, OSError):
        return None
    if doc["sources"] is None:
        return None
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _request_doc(request: ComposeRequest) -> dict[str, object]:
    return {"branch": request.branch, "install": list(request.install),
            "remove": list(request.remove),
            "local": [file_sha256(p) for p in request.install_local],
            "replace": [file_sha256(p) for p in request.replace_local],
            "no-scripts": request.no_scripts, "no-recommends": request.no_recommends,
            **image_inputs(request)}


def _source_digests(repo: Repo, base: str, request: ComposeRequest,
                    fetcher: Fetcher) -> list[str] | None:
    """An entry and metadata digest per source; None when the network went away (the
    cached metadata served, which the full compose reports)."""
    sources = source_list(repo, base, request)
    out: list[str] = []
    for apt in sources.apt:
        text = release_text(apt, fetcher).encode()
        out.append(f"{apt!r} {hashlib.sha256(text).hexdigest()}")
    for rpm in sources.rpmmd:
        from importers.rpmmd import fetch_repomd

        live = rpm.enabled and rpm.baseurls
        data = fetch_repomd(rpm, fetcher) if live else b""
        out.append(f"{rpm!r} {hashlib.sha256(data).hexdigest()}")
    return None if fetcher.went_offline else out


@functools.cache
def code_fingerprint() -> str:
    """sha256 over the path, inode, size and change time of every module of strata's
    packages: any write to a module changes its ctime, which no tool sets back."""
    h = hashlib.sha256()
    top = Path(__file__).resolve().parent.parent
    for pkg in _CODE:
        for path in sorted((top / pkg).rglob("*.py")):
            st = path.stat()
            h.update(f"{path.relative_to(top)}\0{st.st_ino} {st.st_size} {st.st_ctime_ns}\0"
                     .encode())
    return h.hexdigest()


def _solv_stamp() -> str:
    spec = importlib.util.find_spec("solv")
    if spec is None or not spec.origin:
        return ""
    st = os.stat(spec.origin)
    return f"{spec.origin} {st.st_size} {st.st_mtime_ns}"


def _record_path(repo: Repo, branch: str) -> Path:
    name = hashlib.sha256(branch.encode()).hexdigest()
    return repo_cache_dir(repo.tmp_dir) / "compose" / f"{name}.json"


def _record(repo: Repo, branch: str, key: str, checksum: str) -> None:
    path = _record_path(repo, branch)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"branch": branch, "key": key, "commit": checksum}
    atomic_write(path, json.dumps(data, sort_keys=True).encode(), sync=False)


def _unchanged(repo: Repo, branch: str, key: str) -> Unchanged | None:
    """The branch's head when the record says it was composed from ``key``."""
    try:
        with open(_record_path(repo, branch), "rb") as f:
            rec = json.loads(f.read(RECORD_MAX))
    except (OSError, ValueError):
        return None
    head = repo.read_ref(branch)
    if not isinstance(rec, dict) or rec.get("branch") != branch or rec.get("key") != key \
            or head is None or rec.get("commit") != head:
        return None
    left_out = repo.load_commit(head).meta_value(LEFT_OUT_KEY, [])
    return Unchanged(branch, head, tuple(left_out))
