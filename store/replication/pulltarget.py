"""What a pull fetches, as ``ostree pull`` reads its arguments.

``REF`` is looked up in the remote's summary (or ``refs/heads/REF`` when the
remote has none and does not require a signed summary) and the local ref
moves to it; ``REF@CHECKSUM`` fetches that commit and moves the ref to it
without consulting the summary; a bare ``CHECKSUM`` fetches the commit and
moves no ref.  Every target's commit is then checked as :mod:`store.replication.pullcheck`
says: ``REF`` and ``REF@CHECKSUM`` against the ref binding of ``REF``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from store.errors import CorruptObject, InputError, RefError
from store.objects import is_checksum
from store.refs import validate_ref
from store.replication.http import NotFoundError

if TYPE_CHECKING:
    from store.replication.pull import PullState
    from store.replication.summary import Summary


@dataclass(frozen=True)
class Target:
    """One commit a pull fetches: for ``ref`` (which moves to it), or by checksum (ref None)."""

    ref: str | None
    csum: str


def parse_request(item: str) -> tuple[str | None, str | None]:
    """``REF`` -> (REF, None); ``REF@CSUM`` -> (REF, CSUM); ``CSUM`` -> (None, CSUM).

    Raises RefError or InputError on a malformed item.
    """
    if is_checksum(item):
        return None, item
    ref, at, csum = item.rpartition("@")
    if not at:
        validate_ref(item)
        return item, None
    if not is_checksum(csum):
        raise InputError(f"'{item}' is not REF@CHECKSUM (a checksum is 64 lowercase hex digits)")
    validate_ref(ref)
    return ref, csum


def resolve_targets(st: PullState, summary: Summary | None,
                    requests: list[tuple[str | None, str | None]]) -> list[Target]:
    """The commits to fetch for ``requests`` (from :func:`parse_request`; every ref of the
    summary when empty)."""
    if not requests:
        if summary is None:
            raise RefError(f"remote {st.remote.name} has no summary; name the refs to pull")
        return [Target(name, e.csum) for name, e in sorted(summary.refs.items())]
    out = []
    for ref, csum in requests:
        if csum is None:
            assert ref is not None
            csum = _lookup(st, summary, ref)
        out.append(Target(ref, csum))
    return out


def _lookup(st: PullState, summary: Summary | None, ref: str) -> str:
    if summary is not None:
        if ref not in summary.refs:
            raise RefError(f"ref {ref} not found in the summary of remote {st.remote.name}")
        return summary.refs[ref].csum
    try:
        text = st.index.get(f"refs/heads/{ref}").decode(errors="replace").strip()
    except NotFoundError as e:
        raise RefError(f"ref {ref} not found on remote {st.remote.name}: {e}") from e
    if not is_checksum(text):
        raise CorruptObject(f"ref {ref} on remote {st.remote.name} does not hold a checksum")
    return text
