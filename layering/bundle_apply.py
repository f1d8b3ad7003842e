"""Applying a bundle (:mod:`layering.bundle`) to a repository, with no network.

Order, so that a bad bundle leaves nothing: the tar is streamed member by
member into a scratch directory under ``repo/tmp`` (only the members the format
names, regular files, no duplicates; each hashed as it is copied); the manifest
is parsed and every member checked against its sha256; the superblock is
parsed and must lead to the manifest's commit; the commit is verified as a
pull verifies it (signature with the key of the remote named by the ref
``REMOTE:REF`` when that remote requires signatures, ref and collection
bindings, not older than the ref's current commit unless ``allow_downgrade``).
Only then are the cache files stored (the fetch cache under their URL, so
``--offline`` finds the indexes and packages where a download would have put
them), and the commit applied in one transaction that also moves the ref; the
packages are imported into the package cache last (cache entries may stay
after a later failure, as ``cli.md`` allows; the ref never moves on a bad
commit).  Memory: the superblock is read part by part from its member file
(:mod:`store.replication.inline_read`); one part is in memory at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from importers.fetch import repo_cache_dir
from layering.bundle import (
    CACHE_MEMBER,
    CHUNK,
    MANIFEST,
    MAX_MANIFEST,
    SUPERBLOCK,
    BundleError,
    CacheEntry,
    Manifest,
)
from store.fsutil import atomic_write, scratch_dir
from store.objects import checksum_bytes
from store.progress import ProgressFn, Stage
from store.replication.bundle_delta import apply_inline, commitmeta_of, repo_commit
from store.replication.delta_format import Superblock
from store.replication.inline_read import InlineFile, open_inline
from store.replication.pullcheck import (
    check_bindings,
    check_not_older,
    decode_commitmeta,
    floors_for,
)
from store.repo import Repo

MAX_SUPERBLOCK = 4 << 30
MAX_MEMBERS = 1 << 16


@dataclass(frozen=True)
class ApplyResult:
    """What a bundle brought: the ref moved (or ""), the commit, objects written, packages."""

    ref: str
    commit: str
    objects: int
    packages: int


@dataclass(frozen=True)
class _Member:
    path: Path
    sha256: str
    size: int


def apply(repo_path: Path, bundle: Path, *, allow_downgrade: bool = False,
          progress: ProgressFn | None = None) -> ApplyResult:
    """Verify and import ``bundle`` into the repository; see the module docstring for the
    guarantees.  Raises BundleError (or the pull's own errors) naming the bundle.
    ``progress`` hears the stages ``bundle-read`` (members extracted and checked, their
    bytes), ``bundle-apply`` (delta parts) and, with packages, ``unpack``."""
    repo = Repo.open(repo_path)
    with scratch_dir(repo.tmp_dir, "bundle-") as scratch:
        members = _extract(bundle, scratch, Stage(progress, "bundle-read"))
        manifest = _manifest(bundle, members)
        where = f"{bundle}:{SUPERBLOCK}"
        sb = _superblock(manifest, members[SUPERBLOCK], where)
        _verify(repo, manifest, sb.superblock, bundle, allow_downgrade=allow_downgrade)
        _store_cache(repo, manifest, members)
        with repo.transaction() as txn:
            written = apply_inline(repo, txn, sb.superblock, where, read_part=sb.read_part,
                                   progress=progress)
            if manifest.ref:
                txn.set_ref(manifest.ref, manifest.commit)
        packages = _import(repo, manifest, members, progress)
    return ApplyResult(manifest.ref, manifest.commit, written, packages)


def _extract(bundle: Path, scratch: Path, reading: Stage) -> dict[str, _Member]:
    """Each member of the tar, copied into ``scratch`` and hashed; BundleError on anything
    that is not a plain ustar regular file the format names, or on a duplicate."""
    out: dict[str, _Member] = {}
    with open(bundle, "rb") as f:
        while (header := _read_header(f, bundle)) is not None:
            name, size = header
            if len(out) >= MAX_MEMBERS:
                raise BundleError(f"bundle {bundle} has more than {MAX_MEMBERS} members")
            _check_member(bundle, name, size, out)
            out[name] = _copy(f, scratch / f"m{len(out)}", size, f"{name} of bundle {bundle}")
            f.read(-size % BLOCK)  # padding to the next block
            reading.advance(1, size)
    reading.finish()
    return out


BLOCK = 512


def _read_header(f: BinaryIO, bundle: Path) -> tuple[str, int] | None:
    """The next member's (name, size), or None at the end-of-archive (zero) block.  Only
    what :mod:`tarfile` writes for a bundle is accepted: ustar headers of regular files
    with a good checksum; no pax or GNU extension headers (whose size would be read into
    memory), links, devices or directories."""
    block = f.read(BLOCK)
    if len(block) != BLOCK:
        raise BundleError(f"bundle {bundle} is not a readable tar: it ends inside a header")
    if block == bytes(BLOCK):
        return None
    try:
        stored = int(block[148:156].strip(b" \0") or b"0", 8)
        size = int(block[124:136].strip(b" \0") or b"0", 8)
        name = block[:100].rstrip(b"\0").decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise BundleError(f"bundle {bundle} is not a readable tar: a header is corrupt") from None
    if stored != sum(block[:148]) + 8 * 32 + sum(block[156:]):
        raise BundleError(f"bundle {bundle} is not a readable tar: a header checksum is wrong")
    if block[156:157] not in (b"0", b"\0") or block[345:500].strip(b"\0"):
        raise BundleError(f"member {name!r} of bundle {bundle} is not a plain regular file")
    return name, size


def _check_member(bundle: Path, name: str, size: int, seen: dict[str, _Member]) -> None:
    if name not in (MANIFEST, SUPERBLOCK) and not CACHE_MEMBER.fullmatch(name):
        raise BundleError(f"bundle {bundle} has an unexpected member {name!r}")
    if name in seen:
        raise BundleError(f"member {name} of bundle {bundle} appears twice")
    limit = MAX_MANIFEST if name == MANIFEST else MAX_SUPERBLOCK if name == SUPERBLOCK else None
    if limit is not None and size > limit:
        raise BundleError(f"member {name} of bundle {bundle} is larger than {limit} bytes")


def _copy(src: BinaryIO, dest: Path, size: int, what: str) -> _Member:
    """``size`` bytes of ``src`` into the new file ``dest``, hashed on the way."""
    h = hashlib.sha256()
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    left = size
    with os.fdopen(fd, "wb") as out:
        while left:
            block = src.read(min(CHUNK, left))
            if not block:
                raise BundleError(f"member {what} is truncated")
            h.update(block)
            out.write(block)
            left -= len(block)
    return _Member(dest, h.hexdigest(), size)


def _manifest(bundle: Path, members: dict[str, _Member]) -> Manifest:
    """The manifest, with every member it names present and matching its sha256."""
    if MANIFEST not in members or SUPERBLOCK not in members:
        raise BundleError(f"bundle {bundle} lacks {MANIFEST} or {SUPERBLOCK}")
    try:
        manifest = Manifest.from_bytes(members[MANIFEST].path.read_bytes())
    except BundleError as e:
        raise BundleError(f"{e} in bundle {bundle}") from None
    sb = members[SUPERBLOCK]
    if sb.sha256 != manifest.superblock_sha256 or sb.size != manifest.superblock_size:
        raise BundleError(f"member {SUPERBLOCK} of bundle {bundle} does not match its sha256")
    names = {e.member for e in manifest.entries}
    extra = set(members) - names - {MANIFEST, SUPERBLOCK}
    if extra:
        raise BundleError(f"member {sorted(extra)[0]} of bundle {bundle} is not in its manifest")
    for entry in manifest.entries:
        m = members.get(entry.member)
        if m is None:
            raise BundleError(f"bundle {bundle} lacks member {entry.member}")
        if m.sha256 != entry.sha256 or m.size != entry.size:
            raise BundleError(f"member {entry.member} of bundle {bundle} does not match its "
                              f"sha256")
    return manifest


def _superblock(manifest: Manifest, member: _Member, where: str) -> InlineFile:
    """The delta, read part by part from its member file; it must lead to the commit."""
    inline = open_inline(member.path, where)
    sb = inline.superblock
    if (sb.to_csum != manifest.commit or sb.from_csum != manifest.from_commit
            or checksum_bytes(sb.commit_bytes) != manifest.commit):
        raise BundleError(f"static delta {where} does not lead to commit {manifest.commit}")
    return inline


def _verify(repo: Repo, manifest: Manifest, sb: Superblock, bundle: Path, *,
            allow_downgrade: bool) -> None:
    """As a pull: signature (when the ref's remote requires one), bindings, no downgrade."""
    from store import sign
    from store.errors import RefError
    from store.refs import ref_path
    from store.replication.pullcheck import remote_keys
    from store.replication.remote import get_remote

    commit = repo_commit(sb)
    csum = manifest.commit
    if manifest.ref:
        try:
            ref_path(repo.path, manifest.ref)
        except RefError as e:
            raise BundleError(f"{e} (the ref of bundle {bundle})") from None
    remote_name, _sep, branch = manifest.ref.rpartition(":")
    collection = ""
    if remote_name:
        remote = get_remote(repo.path, remote_name)
        collection = remote.collection_id
        if remote.sign_verify:
            sign.verify_data(remote_keys(remote), sb.commit_bytes,
                             decode_commitmeta(commitmeta_of(sb), csum),
                             f"ref {manifest.ref} (commit {csum}) of bundle {bundle}")
    check_bindings(commit, csum, branch or None, collection, f"bundle {bundle}")
    if manifest.ref and not allow_downgrade:
        for floor in floors_for(repo, manifest.ref, None):
            check_not_older(floor, csum, commit.timestamp, f"commit of ref {manifest.ref}")


def _store_cache(repo: Repo, manifest: Manifest, members: dict[str, _Member]) -> None:
    """Put each file fetched from a URL where the fetch cache looks for that URL."""
    http = repo_cache_dir(repo.tmp_dir) / "http"
    for e in manifest.entries:
        if not e.url:
            continue
        key = hashlib.sha256(e.url.encode()).hexdigest()
        body = http / key[:2] / key
        body.parent.mkdir(parents=True, exist_ok=True)
        os.replace(members[e.member].path, body)  # same filesystem: repo/tmp
        atomic_write(body.with_name(f"{key}.json"),
                     json.dumps({"url": e.url, "etag": "", "last-modified": ""}).encode(),
                     sync=False)
        members[e.member] = _Member(body, e.sha256, e.size)


def _import(repo: Repo, manifest: Manifest, members: dict[str, _Member],
            progress: ProgressFn | None) -> int:
    """Import the bundle's packages into the package cache, with the image's owners."""
    pkgs = [e for e in manifest.entries if e.package]
    if not pkgs:
        return 0
    from importers.owners import OwnerMap
    from importers.pkgcache import import_packages
    from layering.packages import keep_local

    paths = []
    for e in pkgs:
        path = members[e.member].path
        if not e.url:  # a local package: kept by sha256, as ``install FILE`` keeps it
            path = keep_local(repo, _named(path, e))[1]
        paths.append(path)
    import_packages(repo, paths, owners=OwnerMap.from_commit(repo, manifest.commit),
                    progress=progress)
    return len(pkgs)


def _named(path: Path, e: CacheEntry) -> Path:
    """The member under a name with the package's extension (keep_local keeps the suffix)."""
    with open(path, "rb") as f:
        ext = ".deb" if f.read(8).startswith(b"!<arch>\n") else ".rpm"
    dest = path.with_name(f"{e.sha256}{ext}")
    os.replace(path, dest)
    return dest


__all__ = ["ApplyResult", "BundleError", "CacheEntry", "apply"]
