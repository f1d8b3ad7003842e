"""The OSTree ``summary`` file (and ``summary.sig``) that makes a repository servable.

``summary`` is the GVariant ``(a(s(taya{sv}))a{sv})``: refs sorted by name,
each with the commit object's size, its checksum and
``{ostree.commit.timestamp: t (BE), ostree.commit.version: s}``; then
repository metadata: ``ostree.static-deltas`` (``FROM-TO`` or ``TO`` hex name ->
superblock checksum), ``ostree.summary.last-modified`` (BE), ``.mode``,
``.tombstone-commits``.  ``summary.sig`` is an ``a{sv}`` whose
``ostree.sign.ed25519`` signs the summary bytes.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from store.errors import CorruptObject
from store.fsutil import atomic_write
from store.gvariant import Variant, decode, encode
from store.objects import Commit, ObjectType, bswap64, check_meta_types, is_checksum

if TYPE_CHECKING:
    from store.repo import Repo

SUMMARY_SIG = "(a(s(taya{sv}))a{sv})"
DELTAS_KEY = "ostree.static-deltas"


@dataclass(frozen=True)
class RefEntry:
    """One ref as the summary lists it."""

    name: str
    csum: str
    size: int
    timestamp: int | None = None
    version: str | None = None


@dataclass(frozen=True)
class Summary:
    """A parsed summary: refs by name, deltas by name, and the raw repository metadata."""

    refs: dict[str, RefEntry]
    deltas: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Variant] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """The summary in GVariant normal form."""
        entries = []
        for name in sorted(self.refs, key=str.encode):
            r = self.refs[name]
            meta: dict[str, Variant] = {}
            if r.version is not None:
                meta["ostree.commit.version"] = Variant("s", r.version)
            if r.timestamp is not None:
                meta["ostree.commit.timestamp"] = Variant("t", bswap64(r.timestamp))
            entries.append((name, (r.size, bytes.fromhex(r.csum), meta)))
        return encode(SUMMARY_SIG, (entries, self.metadata))

    @classmethod
    def from_bytes(cls, data: bytes) -> Summary:
        """Parse summary bytes; CorruptObject (naming the entry) unless they are a summary in
        normal form with refs sorted and unique, 32-byte checksums, valid delta names and
        the types ostree gives its well-known keys."""
        try:
            entries, metadata = decode(SUMMARY_SIG, data)
        except CorruptObject as e:
            raise CorruptObject(f"summary is not a valid GVariant: {e}") from None
        refs: dict[str, RefEntry] = {}
        for name, (size, csum, meta) in entries:
            if refs and name.encode() <= next(reversed(refs)).encode():
                raise CorruptObject(f"summary refs are not sorted or not unique at {name[:80]!r}")
            refs[name] = _ref_entry(name, size, csum, meta)
        check_meta_types(metadata, SUMMARY_META_TYPES, "summary metadata")
        dv = metadata.get(DELTAS_KEY)
        return cls(refs, _deltas(dv.value) if dv is not None else {}, metadata)


SUMMARY_META_TYPES = {DELTAS_KEY: "a{sv}", "ostree.summary.last-modified": "t",
                      "ostree.summary.expires": "t", "ostree.summary.mode": "s",
                      "ostree.summary.tombstone-commits": "b",
                      "ostree.summary.collection-id": "s"}
REF_META_TYPES = {"ostree.commit.timestamp": "t", "ostree.commit.version": "s"}


def _ref_entry(name: str, size: int, csum: bytes, meta: dict[str, Variant]) -> RefEntry:
    where = f"summary entry {name[:80]!r}"
    if len(csum) != 32:
        raise CorruptObject(f"{where} has a checksum of {len(csum)} bytes")
    check_meta_types(meta, REF_META_TYPES, where)
    ts = meta.get("ostree.commit.timestamp")
    ver = meta.get("ostree.commit.version")
    return RefEntry(name, csum.hex(), size, bswap64(ts.value) if ts is not None else None,
                    ver.value if ver is not None else None)


def _deltas(value: dict[str, Variant]) -> dict[str, str]:
    """``ostree.static-deltas``: delta name -> hex checksum of its superblock."""
    out = {}
    for name, v in value.items():
        if not is_delta_name(name):
            raise CorruptObject(f"summary lists an invalid static delta name {name[:140]!r}")
        if v.sig != "ay" or len(v.value) != 32:
            raise CorruptObject(f"summary: static delta {name} has no 32-byte checksum")
        out[name] = v.value.hex()
    return out


def list_delta_names(repo_path: Path) -> list[str]:
    """Deltas present under ``deltas/``, as ``FROM-TO`` or ``TO`` hex names."""
    from store.replication.delta_format import delta_name_from_dir

    base = repo_path / "deltas"
    out = []
    if base.is_dir():
        for prefix in sorted(os.listdir(base)):
            for rest in sorted(os.listdir(base / prefix)):
                if (base / prefix / rest / "superblock").is_file():
                    name = delta_name_from_dir(prefix, rest)
                    if name is not None:
                        out.append(name)
    return out


def build_summary(repo: Repo, *, now: int | None = None) -> Summary:
    """The summary describing the repository's local refs and deltas as they are now."""
    refs = {}
    for name, csum in repo.list_refs().items():
        if ":" in name:
            continue
        data = repo.read_metadata_bytes(csum, ObjectType.COMMIT)
        commit = Commit.from_bytes(data)
        version = commit.meta_value("version")
        refs[name] = RefEntry(name, csum, len(data), commit.timestamp,
                              version if isinstance(version, str) else None)
    deltas = {}
    from store.replication.delta_format import delta_dir

    for name in list_delta_names(repo.path):
        sb = (repo.path / delta_dir(name) / "superblock").read_bytes()
        deltas[name] = hashlib.sha256(sb).hexdigest()
    metadata: dict[str, Variant] = {
        "ostree.summary.mode": Variant("s", str(repo.mode)),
        "ostree.summary.last-modified": Variant("t", bswap64(int(time.time() if now is None
                                                                  else now))),
        "ostree.summary.tombstone-commits": Variant("b", False),
    }
    if deltas:
        metadata[DELTAS_KEY] = Variant("a{sv}", {k: Variant("ay", bytes.fromhex(v))
                                                for k, v in sorted(deltas.items())})
    return Summary(refs, deltas, metadata)


def update_summary(repo: Repo, *, sign_key: Path | None = None) -> Summary:
    """Write ``summary`` (and ``summary.sig`` when ``sign_key`` is given) atomically.

    A stale ``summary.sig`` is removed when no key is given, so a summary is
    never served with a signature over other bytes.
    """
    summary = build_summary(repo)
    data = summary.to_bytes()
    sig_path = repo.path / "summary.sig"
    if sign_key is not None:
        from store import sign

        key = sign.load_secret_key(sign_key)
        sigmeta = sign.with_signature({}, sign.sign_bytes(key, data))
        atomic_write(sig_path, encode("a{sv}", sigmeta))
    elif sig_path.exists():
        sig_path.unlink()
    atomic_write(repo.path / "summary", data)
    return summary


def parse_summary_sig(data: bytes) -> dict[str, Variant]:
    """The ``a{sv}`` of a ``summary.sig``; CorruptObject unless it is one in normal form."""
    try:
        return decode("a{sv}", data)
    except CorruptObject as e:
        raise CorruptObject(f"summary.sig is not a valid GVariant: {e}") from None


def is_delta_name(name: str) -> bool:
    """True for ``TO`` or ``FROM-TO`` hex delta names."""
    parts = name.split("-")
    return 1 <= len(parts) <= 2 and all(is_checksum(p) for p in parts)
