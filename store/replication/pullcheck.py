"""What a commit must satisfy, besides its signature, before a ref may move to it.

* **Bindings**, as ostree's ``_ostree_repo_verify_bindings``: a commit whose
  ``ostree.ref-binding`` does not list the ref it was fetched for is refused
  (an unbound commit is accepted, unless the remote names a collection ID);
  when the remote names a collection ID the commit must carry both bindings
  and its ``ostree.collection-binding`` must equal that ID.
* **No downgrade**, as ``_ostree_compare_timestamps``: a commit older (by its
  timestamp) than the one it replaces is refused unless the caller allows it;
  an equal timestamp is accepted.
* **Signatures**: a remote that verifies signatures must serve a signed
  ``summary`` (ostree: "no summary.sig found") and signed commits.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from store.errors import CorruptObject, RefError, SignatureError
from store.gvariant import Variant, decode
from store.objects import METADATA_SIG, Commit, ObjectType
from store.replication.http import METADATA_CAP, SUMMARY_CAP
from store.replication.summary import Summary, parse_summary_sig

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from store.replication.pull import PullState
    from store.replication.remote import Remote
    from store.repo import Repo

REF_BINDING = "ostree.ref-binding"
COLLECTION_BINDING = "ostree.collection-binding"


class BindingError(RefError):
    """A commit is not bound to the ref or collection it was fetched for."""


class DowngradeError(RefError):
    """A commit is older than the one it would replace."""


@dataclass(frozen=True)
class Floor:
    """A commit a new one must not be older than, and what it is (for the message)."""

    csum: str
    timestamp: int
    what: str


def _bound_refs(commit: Commit, csum: str) -> list[str] | None:
    v = commit.metadata.get(REF_BINDING)
    if v is None:
        return None
    if v.sig != "as":
        raise BindingError(f"{REF_BINDING} of commit {csum} has type {v.sig}, expected as")
    return list(v.value)


def check_bindings(commit: Commit, csum: str, ref: str | None, collection_id: str,
                   where: str) -> None:
    """Raise BindingError unless ``commit`` may be fetched as ``ref`` (None: by checksum)
    from a remote with ``collection_id`` ("" when it has none); ``where`` names the remote."""
    bound = _bound_refs(commit, csum)
    if bound is None and collection_id:
        raise BindingError(f"commit {csum} from {where} has no ref binding, and the remote "
                           f"has collection ID {collection_id}")
    if bound is not None and ref is not None and ref not in bound:
        listed = ", ".join(bound) if bound else "no refs"
        raise BindingError(f"commit {csum} from {where} has no requested ref {ref} in its ref "
                           f"binding metadata ({listed})")
    if collection_id:
        v = commit.metadata.get(COLLECTION_BINDING)
        if v is None or v.sig != "s":
            raise BindingError(f"commit {csum} from {where} has no collection binding, and the "
                               f"remote has collection ID {collection_id}")
        if v.value != collection_id:
            raise BindingError(f"commit {csum} from {where} has collection ID {v.value} in its "
                               f"collection binding, the remote has {collection_id}")


def _date(ts: int) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))
    except (OverflowError, OSError, ValueError):
        return f"@{ts}"


def check_not_older(floor: Floor | None, csum: str, timestamp: int, what: str) -> None:
    """Raise DowngradeError when ``csum`` (``what``, with ``timestamp``) is older than ``floor``.

    As ostree: a newer or equal timestamp, or the same commit, passes.
    """
    if floor is None or timestamp >= floor.timestamp or csum == floor.csum:
        return
    raise DowngradeError(f"{what} {csum} ({_date(timestamp)}) is older than {floor.what} "
                         f"{floor.csum} ({_date(floor.timestamp)}); use --allow-downgrade to "
                         f"permit")


def parse_commit(data: bytes, csum: str) -> Commit:
    """The commit object ``csum``; CorruptObject when its bytes are not a commit."""
    try:
        return Commit.from_bytes(data)
    except (ValueError, IndexError, CorruptObject) as e:
        raise CorruptObject(f"commit object {csum} is corrupt: {e}") from e


def floors_for(repo: Repo, local: str | None, extra: Floor | None) -> tuple[Floor, ...]:
    """What the commit the ref ``local`` moves to must not be older than: the ref's current
    commit (when it is here) and ``extra``."""
    out = [extra] if extra is not None else []
    current = repo.read_ref(local) if local is not None else None
    if current is not None and repo.has(current, ObjectType.COMMIT):
        out.append(Floor(current, repo.load_commit(current).timestamp,
                         f"the current commit of {local}"))
    return tuple(out)


def remote_keys(remote: Remote) -> list[Ed25519PublicKey]:
    """The remote's ed25519 public keys: its key file (else the system's trusted keys) and
    its inline key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from store import sign

    files = [Path(remote.pubkey_file)] if remote.pubkey_file else sign.default_public_key_files()
    keys = sign.load_public_keys(files)
    if remote.pubkey_inline:
        keys.append(Ed25519PublicKey.from_public_bytes(base64.b64decode(remote.pubkey_inline)))
    return keys


def fetch_summary(st: PullState) -> Summary | None:
    """The remote's summary (None when it has none), verified when the remote requires it:
    then a missing summary or ``summary.sig`` is refused, as ostree refuses it."""
    data = st.index.get_optional("summary", limit=SUMMARY_CAP)
    if not st.remote.sign_verify_summary:
        return _parse_summary(st, data) if data is not None else None
    where = f"remote {st.remote.name} ({st.index.url_for('summary')})"
    if data is None:
        raise SignatureError(f"signature verification is on, but {where} has no summary "
                             f"(sign-verify-summary=false in the remote's config disables this)")
    sig = st.index.get_optional("summary.sig", limit=METADATA_CAP)
    if sig is None:
        raise SignatureError(f"signature verification is on, but {where} has no summary.sig "
                             f"(sign-verify-summary=false in the remote's config disables this)")
    from store import sign

    sign.verify_data(remote_keys(st.remote), data, parse_summary_sig(sig), f"summary of {where}")
    return _parse_summary(st, data)


def _parse_summary(st: PullState, data: bytes) -> Summary:
    try:
        return Summary.from_bytes(data)
    except CorruptObject as e:
        raise CorruptObject(f"{e} in {st.index.url_for('summary')}") from None


def decode_commitmeta(meta: bytes | None, csum: str) -> dict[str, Variant]:
    """The detached metadata ``meta`` of commit ``csum`` as a dict; CorruptObject naming
    the object when it is not an ``a{sv}`` in normal form."""
    if meta is None:
        return {}
    try:
        return decode(METADATA_SIG, meta)
    except (ValueError, IndexError, CorruptObject) as e:
        raise CorruptObject(f"commitmeta object {csum} is corrupt: {e}") from e


def check_commit(st: PullState, csum: str, data: bytes, meta: bytes | None, ref: str) -> None:
    """Raise unless the commit ``csum`` may enter the repository in this pull.

    SignatureError unless the remote needs no signature or ``meta`` holds a good
    one; BindingError when its bindings do not fit (the ref binding is checked
    for the pull's current target only, as ostree checks it for the commit it
    looked up by ref); DowngradeError when the target is older than one of
    ``st.floors`` and downgrades are not allowed.
    """
    if st.remote.sign_verify:
        what = f"ref {ref} (commit {csum})" if ref else f"commit {csum}"
        from store import sign

        sign.verify_data(remote_keys(st.remote), data, decode_commitmeta(meta, csum),
                         f"{what} of remote {st.remote.name}")
    commit = parse_commit(data, csum)
    target = st.target if st.target is not None and st.target.csum == csum else None
    check_bindings(commit, csum, target.ref if target else None, st.remote.collection_id,
                   f"remote {st.remote.name}")
    if target is not None and not st.allow_downgrade:
        what = f"commit of ref {target.ref}" if target.ref else "commit"
        for floor in st.floors:
            check_not_older(floor, csum, commit.timestamp, what)
