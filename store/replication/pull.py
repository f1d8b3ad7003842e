"""Pulling commits from a remote repository (archive mode, served statically).

Order, as ``ostree pull``: ``summary`` (or ``refs/heads/REF`` when there is
none) -> commit -> ``.commitmeta`` (signature check) -> dirtrees and dirmetas
-> ``.filez`` content objects; or a static delta when the summary offers one
from a commit we already have.  Every object is verified against its
checksum before it enters the store, objects already present are skipped,
``state/<csum>.commitpartial`` marks a commit whose objects are not all here,
and the ref moves (in the same transaction that writes the commit object)
only once the whole commit is present.  Objects fetched before a failure are
kept, and verified objects are published every :data:`CHECKPOINT_SECONDS`
while content arrives, so a later pull resumes even after a kill or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from store.errors import CorruptObject, NetworkError, ObjectNotFound, ToolError
from store.filez import filez_cap, store_filez
from store.fsutil import atomic_write
from store.objects import (
    DirMeta,
    DirTree,
    ObjectType,
    checksum_bytes,
    loose_path,
)
from store.progress import ProgressFn, Stage
from store.replication.http import METADATA_CAP, Fetcher, NotFoundError
from store.replication.pullcheck import (
    Floor,
    check_commit,
    decode_commitmeta,
    fetch_summary,
    floors_for,
    parse_commit,
)
from store.replication.pulltarget import Target, parse_request, resolve_targets
from store.replication.remote import Remote, get_remote
from store.replication.summary import Summary
from store.repo import Repo
from store.treecheck import MAX_DEPTH, check_dirtree, check_metadata_bytes
from store.txn import Transaction

CHECKPOINT_SECONDS = 5.0
CONTENT_CAP = 1 << 40  # content objects are capped by the size their header declares


@dataclass(frozen=True)
class PullResult:
    """What a pull did: refs moved, objects and bytes fetched, deltas applied."""

    remote: str
    refs: dict[str, str]
    objects_fetched: int
    bytes_fetched: int
    requests: int
    deltas_used: int
    seconds: float
    commits: tuple[str, ...] = ()  # every commit fetched, with or without a ref

    def summary_line(self) -> str:
        """The one line printed at the end of a pull."""
        mb = self.bytes_fetched / 1e6
        deltas = f", {self.deltas_used} static delta(s)" if self.deltas_used else ""
        what = (f"{len(self.refs)} ref(s)" if self.refs or not self.commits
                else f"{len(self.commits)} commit(s)")
        return (f"{what} from {self.remote}: {self.objects_fetched} objects, "
                f"{mb:.1f} MB fetched in {self.seconds:.1f}s{deltas}")


@dataclass
class PullState:
    """What one pull shares between its steps: repository, remote, fetchers, counters."""

    repo: Repo
    remote: Remote
    fetcher: Fetcher  # objects and deltas: ``contenturl``, else ``url``
    index: Fetcher  # summary, its signature and refs: ``url``
    progress: ProgressFn | None
    started: float = field(default_factory=time.monotonic)
    fetched: int = 0
    wanted: int = 0
    deltas: int = 0
    stage: Stage | None = None  # the stage being reported: pull-metadata, -delta or -content
    stage_bytes: int = 0  # bytes fetched before the stage started
    last_checkpoint: float = field(default_factory=time.monotonic)
    allow_downgrade: bool = False
    target: Target | None = None  # the commit being pulled now
    floors: tuple[Floor, ...] = ()  # what the target must not be older than

    def verify_commit_signature(self, csum: str, data: bytes, meta: bytes | None,
                                ref: str = "") -> None:
        """Raise unless the commit may enter the repository: SignatureError unless no signature
        is needed or ``meta`` holds a good one; then, as
        :mod:`store.replication.pullcheck`, BindingError for bindings that do not fit and,
        for the target commit, DowngradeError when it is older than a floor."""
        check_commit(self, csum, data, meta, ref)

    def checkpoint(self, txn: Transaction) -> None:
        """Publish the verified objects when CHECKPOINT_SECONDS have passed since the last time."""
        now = time.monotonic()
        if now - self.last_checkpoint >= CHECKPOINT_SECONDS:
            txn.checkpoint()
            self.last_checkpoint = now

    def bytes(self) -> int:
        """Bytes fetched so far by both fetchers."""
        return self.fetcher.stats.bytes + self.index.stats.bytes

    def want(self, n: int, phase: str) -> None:
        """Count ``n`` more objects to fetch in stage ``pull-<phase>`` (ending the stage
        before when it was another)."""
        self.wanted += n
        name = f"pull-{phase}"
        if self.stage is not None and self.stage.name == name:
            self.stage.grow(n)
            return
        self.finish_stage()
        self.stage_bytes = self.bytes()
        self.stage = Stage(self.progress, name, n)

    def tick(self, n: int = 1) -> None:
        """Count ``n`` objects fetched (each counted by :meth:`want` before)."""
        self.fetched += n
        if self.stage is not None:
            self.stage.advance(n, bytes_now=self.bytes() - self.stage_bytes)

    def finish_stage(self) -> None:
        """Report the end of the current stage, if any."""
        if self.stage is not None:
            self.stage.finish(bytes_now=self.bytes() - self.stage_bytes)
            self.stage = None


def pull(repo_path: Path, remote_name: str, refs: Iterable[str] = (), *, depth: int = 0,
         mirror: bool = False, disable_static_deltas: bool = False,
         progress: ProgressFn | None = None, allow_downgrade: bool = False,
         not_older_than: Floor | None = None) -> PullResult:
    """Fetch ``refs`` of ``remote_name`` into the repository: ``REF``, ``REF@CHECKSUM`` or a
    ``CHECKSUM`` (no ref moves), all the summary's refs when empty.

    Guarantees: each ref moves only after its commit and everything it
    references are in the store and verified (signature, ref and collection
    binding, and, unless ``allow_downgrade``, not older than the ref's current
    commit nor than ``not_older_than``); on any error no ref moves and the
    error names the object or URL at fault.
    """
    requests = [parse_request(item) for item in refs]
    repo = Repo.open(repo_path)
    remote = get_remote(repo_path, remote_name)
    ca = remote.tls_ca_path or None
    with Fetcher(remote.content_url, ca_certs=ca) as fetcher, \
            Fetcher(remote.url, ca_certs=ca, max_in_flight=1) as index, repo.lock():
        st = PullState(repo, remote, fetcher, index, progress, allow_downgrade=allow_downgrade)
        summary = fetch_summary(st)
        targets = resolve_targets(st, summary, requests)
        moved, partial = _pull_all(st, summary, targets, remote_name, mirror=mirror, depth=depth,
                                   use_deltas=not disable_static_deltas, floor=not_older_than)
        for c in partial:
            with contextlib.suppress(FileNotFoundError):
                _partial_marker(repo, c).unlink()
        st.finish_stage()
        stats, istats = fetcher.stats, index.stats
        return PullResult(remote_name, moved, st.fetched, stats.bytes + istats.bytes,
                          stats.requests + istats.requests, st.deltas,
                          time.monotonic() - st.started, tuple(t.csum for t in targets))


def _pull_all(st: PullState, summary: Summary | None, targets: list[Target], remote_name: str,
              *, mirror: bool, depth: int, use_deltas: bool,
              floor: Floor | None) -> tuple[dict[str, str], list[str]]:
    """Fetch every target commit in one transaction that also moves the refs.

    Returns the refs moved and the commits whose partial markers may now go.
    On a fetch failure the objects already verified are still published (a
    retry resumes), no ref moves, and the failure is re-raised.
    """
    moved: dict[str, str] = {}
    partial: list[str] = []
    failure: ToolError | None = None
    with st.repo.transaction() as txn:
        try:
            for target in targets:
                local = None if target.ref is None else (
                    target.ref if mirror else f"{remote_name}:{target.ref}")
                st.target = target
                st.floors = floors_for(st.repo, local, floor)
                partial += _pull_commit(st, txn, summary, target.ref or "", local, target.csum,
                                        depth=depth, use_deltas=use_deltas)
                if local is not None:
                    moved[local] = target.csum
        except (NetworkError, CorruptObject, ObjectNotFound) as e:
            failure = e
        if failure is None:
            for local, csum in moved.items():
                if st.repo.read_ref(local) != csum:  # a no-op pull writes and syncs nothing
                    txn.set_ref(local, csum)
    if failure is not None:
        raise failure
    return moved, partial


def _partial_marker(repo: Repo, csum: str) -> Path:
    return repo.path / "state" / f"{csum}.commitpartial"


def mark_partial(repo: Repo, csum: str) -> None:
    """Record that ``csum``'s objects are being fetched (``state/<csum>.commitpartial``).

    Not synced: strata publishes a commit object only with all its objects, so
    the marker is a courtesy to other tools, never needed for consistency.
    """
    (repo.path / "state").mkdir(exist_ok=True)
    atomic_write(_partial_marker(repo, csum), b"", sync=False)


def is_complete(repo: Repo, csum: str) -> bool:
    """True when the commit is stored and not marked partial."""
    return repo.has(csum, ObjectType.COMMIT) and not _partial_marker(repo, csum).exists()


def _pull_commit(st: PullState, txn: Transaction, summary: Summary | None, ref: str,
                 local: str | None, csum: str, *, depth: int, use_deltas: bool) -> list[str]:
    """Stage ``csum`` (and ``depth`` ancestors) with everything they reference; return the
    commits marked partial.  ``local`` is the ref that will move (None: none)."""
    repo = st.repo
    if is_complete(repo, csum) and depth == 0:
        _verify_local_signature(st, txn, ref, csum)
        return []
    known = _complete_root(repo, local) if local is not None else None
    prefetched: dict[str, tuple[bytes, bytes | None]] = {}
    if (use_deltas and local is not None and summary is not None and summary.deltas
            and not is_complete(repo, csum)):
        from store.replication.delta_pull import try_delta

        got = try_delta(st, txn, summary, local, csum)
        if got is not None:
            st.deltas += 1
            prefetched[csum] = got
            txn.flush_soon()  # the delta's objects reach the disk while its tree is checked
    chain = _commit_chain(st, ref, csum, depth, prefetched)
    marked = [c for c, _data, _meta in chain if not is_complete(repo, c)]
    for c in marked:
        mark_partial(repo, c)
    _fetch_trees_and_write(st, txn, chain, known)
    return marked


def _complete_root(repo: Repo, local: str) -> str | None:
    """The root dirtree of the complete commit ``local`` points at: everything under it is
    here, so the walk of a new commit skips the subtrees it shares."""
    current = repo.read_ref(local)
    if current is None or not is_complete(repo, current):
        return None
    return repo.load_commit(current).root_tree


def _commit_chain(st: PullState, ref: str, csum: str, depth: int,
                  prefetched: dict[str, tuple[bytes, bytes | None]]
                  ) -> list[tuple[str, bytes, bytes | None]]:
    """The commit and up to ``depth`` ancestors (-1: all): (csum, bytes, commitmeta bytes)."""
    out = []
    current: str | None = csum
    level = 0
    while current is not None:
        optional = level > 0
        try:
            data, meta = prefetched.get(current) or _get_commit(st, ref, current)
        except NotFoundError as e:
            if optional:
                break
            of_ref = f" of ref {ref}" if ref else ""
            raise ObjectNotFound(f"commit {current}{of_ref} is missing on remote "
                                 f"{st.remote.name}: {e}") from e
        out.append((current, data, meta))
        if depth >= 0 and level >= depth:
            break
        current = parse_commit(data, current).parent
        level += 1
    return out


def _get_commit(st: PullState, ref: str, csum: str) -> tuple[bytes, bytes | None]:
    repo = st.repo
    if repo.has(csum, ObjectType.COMMIT):
        data = repo.read_metadata_bytes(csum, ObjectType.COMMIT)
        meta = (repo.read_metadata_bytes(csum, ObjectType.COMMIT_META)
                if repo.has(csum, ObjectType.COMMIT_META) else None)
        if st.remote.sign_verify and not meta:
            meta = st.fetcher.get_optional(_obj_url(csum, ObjectType.COMMIT_META))
    else:
        st.want(1, "metadata")  # counted before it is fetched: ``done`` never passes ``total``
        data = _fetch_meta(st, csum, ObjectType.COMMIT)
        meta = st.fetcher.get_optional(_obj_url(csum, ObjectType.COMMIT_META))
        st.tick()
    st.verify_commit_signature(csum, data, meta, ref)
    return data, meta


def _verify_local_signature(st: PullState, txn: Transaction, ref: str, csum: str) -> None:
    """Check a commit already here as one just fetched (signature, bindings, timestamp);
    keep the detached metadata fetched for it."""
    _data, meta = _get_commit(st, ref, csum)
    if meta is not None and not st.repo.has(csum, ObjectType.COMMIT_META):
        txn.write_raw_object(csum, ObjectType.COMMIT_META, meta)


def _obj_url(csum: str, objtype: ObjectType) -> str:
    return "objects/" + loose_path(csum, objtype, archive=True)


def _fetch_meta(st: PullState, csum: str, objtype: ObjectType) -> bytes:
    """Fetch a metadata object (at most METADATA_CAP bytes) and check its bytes hash to
    its name."""
    url = _obj_url(csum, objtype)
    return _check_meta(st, csum, objtype, url, st.fetcher.get(url, limit=METADATA_CAP))


def _check_meta(st: PullState, csum: str, objtype: ObjectType, url: str,
                data: bytes | Path) -> bytes:
    if not isinstance(data, bytes) or checksum_bytes(data) != csum:
        raise CorruptObject(f"{objtype.value} object {csum} from {st.fetcher.url_for(url)} "
                            f"does not match its checksum")
    check_metadata_bytes(objtype, data, csum)  # a bad dirtree or dirmeta is never stored
    return data


def _fetch_metas(st: PullState, txn: Transaction,
                 need: list[tuple[str, ObjectType]]) -> dict[str, bytes]:
    """Fetch (each at most METADATA_CAP bytes), verify and write metadata objects; return
    the bytes of each by checksum."""
    by_url = {_obj_url(c, t): (c, t) for c, t in need}
    if by_url:
        st.want(len(by_url), "metadata")
    out = {}
    for (c, ot), data in st.fetcher.fetch_many(
            by_url, lambda u, d: (by_url[u], _check_meta(st, *by_url[u], u, d)),
            limit=METADATA_CAP):
        txn.write_metadata(ot, data)
        out[c] = data
        st.tick()
    return out


def _fetch_trees_and_write(st: PullState, txn: Transaction,
                           chain: list[tuple[str, bytes, bytes | None]], known: str | None) -> None:
    """Fetch every missing object of the chain's trees, then stage the commit objects."""
    repo = st.repo
    for c, data, _meta in chain:
        if not is_complete(repo, c):
            commit = parse_commit(data, c)
            _fetch_tree(st, txn, commit.root_tree, commit.root_meta, known)
    for c, data, meta in reversed(chain):
        if not repo.has(c, ObjectType.COMMIT):
            txn.write_metadata(ObjectType.COMMIT, data)
        if meta is not None and not repo.has(c, ObjectType.COMMIT_META):
            decode_commitmeta(meta, c)  # names the object when it is not an a{sv}
            txn.write_raw_object(c, ObjectType.COMMIT_META, meta)


def _fetch_tree(st: PullState, txn: Transaction, root_tree: str, root_meta: str,
                known: str | None) -> None:
    """Fetch missing dirtrees/dirmetas level by level, then the missing content objects.

    ``known`` is the root of a complete local tree: a subtree with the same
    checksum at the same path is not walked, and a file whose entry matches the
    known tree's is not looked for.
    """
    repo = st.repo
    level = {(root_tree, root_meta, known)}
    seen_trees: set[str] = set()
    seen_metas: set[str] = set()
    files: set[str] = set()
    depth = 0
    while level:
        if (depth := depth + 1) > MAX_DEPTH + 1:
            raise CorruptObject(f"dirtree object {root_tree} is nested deeper than {MAX_DEPTH} "
                                "directories")
        trees = {(t, old) for t, _m, old in level if t != old and t not in seen_trees}
        metas = {m for _t, m, _old in level} - seen_metas
        seen_trees.update(t for t, _old in trees)
        seen_metas |= metas
        need = [(m, ObjectType.DIR_META) for m in metas if not repo.has(m, ObjectType.DIR_META)]
        need += [(t, ObjectType.DIR_TREE) for t in {t for t, _o in trees}
                 if not repo.has(t, ObjectType.DIR_TREE)]
        fetched = _fetch_metas(st, txn, need)
        for m in metas & fetched.keys():
            _parse_dirmeta(fetched[m], m)
        level = set()
        for t, old in trees:
            tree = _parse_tree(fetched[t], t) if t in fetched else repo.load_dirtree(t)
            old_tree = repo.load_dirtree(old) if old is not None else None
            old_files = dict(old_tree.files) if old_tree else {}
            old_dirs = {n: sub for n, sub, _m in old_tree.dirs} if old_tree else {}
            files.update(c for n, c in tree.files if old_files.get(n) != c)
            level.update((sub, meta, old_dirs.get(n)) for n, sub, meta in tree.dirs)
    _fetch_files(st, txn, files)


def _parse_dirmeta(data: bytes, csum: str) -> DirMeta:
    try:
        return DirMeta.from_bytes(data)
    except CorruptObject as e:
        raise CorruptObject(f"dirmeta object {csum} is corrupt: {e}") from None


def _parse_tree(data: bytes, csum: str) -> DirTree:
    try:
        tree = DirTree.from_bytes(data)
    except (ValueError, IndexError, CorruptObject) as e:
        raise CorruptObject(f"dirtree object {csum} is corrupt: {e}") from e
    return check_dirtree(tree, csum)


def fetch_loose(st: PullState, txn: Transaction, items: list[tuple[str, ObjectType]]) -> None:
    """Fetch, verify and write loose objects (static-delta fallbacks)."""
    _fetch_metas(st, txn, [(c, t) for c, t in items if t.is_meta])
    _fetch_files(st, txn, {c for c, t in items if not t.is_meta})


SCAN_THRESHOLD = 2000  # more candidate files than this: one scan of objects/ beats a stat each


def _stored_files(repo: Repo) -> set[str]:
    """Checksums of the file objects already in ``objects/`` (one directory scan, no stat)."""
    ext = ".filez" if repo.is_archive else ".file"
    out: set[str] = set()
    with contextlib.suppress(FileNotFoundError):
        for sub in os.scandir(repo.objects_dir):
            if len(sub.name) == 2:
                out.update(sub.name + e.name[:62] for e in os.scandir(sub.path)
                           if e.name.endswith(ext) and len(e.name) == 62 + len(ext))
    return out


def _fetch_files(st: PullState, txn: Transaction, files: set[str]) -> None:
    """Fetch, verify and write content objects; workers write into the transaction.

    A body may be no longer than its header's declared size allows (filez_cap); one
    over SPILL_SIZE is streamed into the transaction's directory, and none is
    inflated beyond its declared size (store.filez)."""
    repo = st.repo
    present = _stored_files(repo) if len(files) > SCAN_THRESHOLD else set()
    by_url = {_obj_url(c, ObjectType.FILE): c for c in sorted(files)
              if c not in present and not repo.has(c, ObjectType.FILE)}
    if by_url:
        st.want(len(by_url), "content")

    def store(url: str, body: bytes | Path) -> None:
        store_filez(txn, by_url[url], body, st.fetcher.url_for(url))

    for _ in st.fetcher.fetch_many(by_url, store, limit=CONTENT_CAP, spill_dir=txn.dir,
                                   head_limit=filez_cap):
        st.tick()
        st.checkpoint(txn)
