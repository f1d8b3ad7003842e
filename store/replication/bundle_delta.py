"""Static deltas with inline parts: one file ``ostree static-delta apply-offline`` reads.

An inline delta is an ordinary superblock whose metadata ``a{sv}`` also holds
each part, under the part's relative path, as ostree's ``--inline`` writes it::

    metadata["deltas/<dir>/<i>"]       = (yay)  compression byte, rest of the part file
    metadata["deltas/<dir>/commitmeta"] = a{sv}  the commit's detached metadata (signatures)

The part checksum in the superblock covers the compression byte followed by
the bytes (the part file as it would be on disk).  An inline delta has no
fallbacks: every object travels in a part.

Applying checks each part against its checksum before it is decompressed
(bounded: :data:`store.replication.delta_format.MAX_PART_SIZE`), runs it with the pull's
:class:`store.replication.delta_pull.PartExecutor` (each object verified and its tree
entries checked), then walks the new commit's tree to prove that every object
it references is now here.  The commit object and its detached metadata are
staged last; the caller moves the ref in the same transaction.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from store.errors import CorruptObject, ObjectNotFound
from store.gvariant import Variant, decode
from store.objects import METADATA_SIG, ObjectType
from store.progress import ProgressFn, Stage
from store.replication.delta_format import PartPayload, Superblock, delta_dir, delta_name
from store.replication.delta_generate import MAX_CHUNK_SIZE, build_parts
from store.replication.delta_pull import PartExecutor
from store.repo import Repo
from store.treecheck import MAX_DEPTH as MAX_TREE_DEPTH
from store.treecheck import check_dirmeta
from store.txn import Transaction

NO_FALLBACKS = 1 << 62


@dataclass(frozen=True)
class InlineDelta:
    """A generated inline delta: its bytes, name and number of parts."""

    data: bytes
    name: str
    parts: int


def generate_inline(repo: Repo, from_csum: str | None, to_csum: str, *,
                    max_chunk_size: int = MAX_CHUNK_SIZE,
                    progress: ProgressFn | None = None) -> InlineDelta:
    """The inline static delta FROM -> TO (from scratch when ``from_csum`` is None), with the
    commit's detached metadata; nothing is written to the repository.  ``progress`` hears
    the stage ``delta-objects``."""
    parts, fallbacks = build_parts(repo, from_csum, to_csum, min_fallback_size=NO_FALLBACKS,
                                   max_chunk_size=max_chunk_size, progress=progress)
    assert not fallbacks
    name = delta_name(from_csum, to_csum)
    base = delta_dir(name)
    metadata: dict[str, Variant] = {"ostree.endianness": Variant("y", ord("l"))}
    for i, (data, _meta) in enumerate(parts):
        metadata[f"{base}/{i}"] = Variant("(yay)", (data[0], data[1:]))
    detached = repo.load_detached_metadata(to_csum)
    if detached:
        metadata[f"{base}/commitmeta"] = Variant("a{sv}", detached)
    sb = Superblock(from_csum, to_csum, int(time.time()),
                    repo.read_metadata_bytes(to_csum, ObjectType.COMMIT),
                    tuple(p for _d, p in parts), (), metadata)
    return InlineDelta(sb.to_bytes(), name, len(parts))


def parse_inline(data: bytes, where: str) -> Superblock:
    """The superblock of an inline delta; CorruptObject unless it parses, has no fallbacks
    and carries every part it lists."""
    sb = Superblock.from_bytes(data, where=where)
    if sb.fallbacks:
        raise CorruptObject(f"static delta {where} has fallback objects (not an inline delta)")
    base = delta_dir(delta_name(sb.from_csum, sb.to_csum))
    for i in range(len(sb.parts)):
        v = sb.metadata.get(f"{base}/{i}")
        if v is None or v.sig != "(yay)":
            raise CorruptObject(f"static delta {where} does not carry part {i} inline")
    return sb


def commitmeta_of(sb: Superblock) -> bytes | None:
    """The detached metadata an inline delta carries for its commit (serialized), or None."""
    v = sb.metadata.get(f"{delta_dir(delta_name(sb.from_csum, sb.to_csum))}/commitmeta")
    if v is None:
        return None
    if v.sig != "a{sv}":
        raise CorruptObject(f"static delta commitmeta of {sb.to_csum} is not an a{{sv}}")
    from store.gvariant import encode

    return encode(METADATA_SIG, v.value)


def apply_inline(repo: Repo, txn: Transaction, sb: Superblock, where: str, *,
                 read_part: Callable[[int], bytes] | None = None,
                 progress: ProgressFn | None = None) -> int:
    """Stage every object of ``sb`` (from :func:`parse_inline`) in ``txn``, then the commit and
    its detached metadata; return the objects written.  ``read_part(i)`` gives part ``i``
    (by default taken from the superblock's metadata): with
    :func:`store.replication.inline_read.open_inline`, one part at a time is in memory.
    ``progress`` hears the stage ``bundle-apply`` (parts applied, their bytes).

    Raises ObjectNotFound when the delta starts from a commit this repository lacks or
    leaves an object of the new tree missing, CorruptObject when a part or object does
    not match its checksum or a tree entry is invalid.
    """
    if sb.from_csum is not None and not repo.has(sb.from_csum, ObjectType.COMMIT):
        raise ObjectNotFound(f"static delta {where} starts from commit {sb.from_csum}, "
                             f"which is not in {repo.path}")
    base = delta_dir(delta_name(sb.from_csum, sb.to_csum))
    written = 0
    applying = Stage(progress, "bundle-apply", len(sb.parts))
    for i, part in enumerate(sb.parts):
        raw = read_part(i) if read_part is not None else _inline_part(sb, base, i)
        if hashlib.sha256(raw).hexdigest() != part.checksum:
            raise CorruptObject(f"static delta part {i} in {where} does not match its checksum")
        payload = PartPayload.from_bytes(raw, max_size=part.max_payload)
        del raw  # one part's bytes at a time: the compressed copy goes before it runs
        written += PartExecutor(repo, txn, part, payload, f"{i} in {where}").run()
        applying.advance(1, part.size)
    commit = repo_commit(sb)
    reached = _check_complete(repo, commit.root_tree, commit.root_meta, where)
    for part in sb.parts:
        for objtype, csum in part.objects:
            if (csum, objtype) not in reached:
                raise CorruptObject(f"{objtype.value} object {csum} in {where} is not part of "
                                    f"commit {sb.to_csum}")
    txn.write_metadata(ObjectType.COMMIT, sb.commit_bytes)
    meta = commitmeta_of(sb)
    if meta is not None:
        decode(METADATA_SIG, meta)
        txn.write_raw_object(sb.to_csum, ObjectType.COMMIT_META, meta)
    applying.finish()
    return written


def _inline_part(sb: Superblock, base: str, i: int) -> bytes:
    y, body = sb.metadata[f"{base}/{i}"].value
    return bytes([y]) + bytes(body)


def repo_commit(sb: Superblock):  # type: ignore[no-untyped-def]
    """The parsed commit a superblock leads to."""
    from store.replication.pullcheck import parse_commit

    return parse_commit(sb.commit_bytes, sb.to_csum)


def _check_complete(repo: Repo, root_tree: str, root_meta: str,
                    where: str) -> set[tuple[str, ObjectType]]:
    """Every object under the tree; raise unless each is stored or staged.  Dirtrees are
    checked as they are loaded (:mod:`store.treecheck`), dirmetas here."""
    level = [(root_tree, root_meta)]
    seen: set[str] = set()
    reached: set[tuple[str, ObjectType]] = set()
    depth = 0
    while level:
        depth += 1
        if depth > MAX_TREE_DEPTH + 1:
            raise CorruptObject(f"dirtree object {root_tree} in {where} is nested deeper than "
                                f"{MAX_TREE_DEPTH} directories")
        nxt = []
        for tree, meta in level:
            if (meta, ObjectType.DIR_META) not in reached:
                _need(repo, meta, ObjectType.DIR_META, where)
                check_dirmeta(repo.load_dirmeta(meta), meta)
                reached.add((meta, ObjectType.DIR_META))
            if tree in seen:
                continue
            seen.add(tree)
            _need(repo, tree, ObjectType.DIR_TREE, where)
            reached.add((tree, ObjectType.DIR_TREE))
            dt = repo.load_dirtree(tree)
            for _name, csum in dt.files:
                if (csum, ObjectType.FILE) not in reached:
                    _need(repo, csum, ObjectType.FILE, where)
                    reached.add((csum, ObjectType.FILE))
            nxt += [(t, m) for _n, t, m in dt.dirs]
        level = nxt
    return reached


def _need(repo: Repo, csum: str, objtype: ObjectType, where: str) -> None:
    if not repo.has(csum, objtype):
        raise ObjectNotFound(f"{objtype.value} object {csum} is neither in {where} nor in "
                             f"{repo.path}")
