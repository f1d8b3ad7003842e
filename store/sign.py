"""ed25519 signatures in OSTree's format.

Key files hold base64 keys, one a line: a secret key is libsodium's 64 bytes
(seed ‖ public key), a public key 32 bytes.  A commit's signatures sit in its
detached metadata (``.commitmeta``) under ``ostree.sign.ed25519`` as ``aay``,
one 64-byte signature over the commit object's bytes per element; a
summary's in ``summary.sig`` over the summary's bytes.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from store.errors import InputError, SignatureError
from store.gvariant import Variant

SIGN_KEY = "ostree.sign.ed25519"
TRUSTED_PATHS = ("/etc/ostree/trusted.ed25519", "/usr/share/ostree/trusted.ed25519")


def _b64_lines(path: Path) -> list[bytes]:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise InputError(f"cannot read key file {path}: {e.strerror}") from e
    try:
        return [base64.b64decode(line.strip(), validate=True)
                for line in text.splitlines() if line.strip() and not line.startswith("#")]
    except binascii.Error as e:
        raise InputError(f"key file {path} is not base64") from e


def load_secret_key(path: Path) -> Ed25519PrivateKey:
    """The first secret key in ``path`` (64-byte libsodium form, or a 32-byte seed)."""
    keys = _b64_lines(path)
    if not keys or len(keys[0]) not in (32, 64):
        raise InputError(f"no ed25519 secret key in {path}")
    return Ed25519PrivateKey.from_private_bytes(keys[0][:32])


def load_public_keys(paths: Iterable[Path]) -> list[Ed25519PublicKey]:
    """Every 32-byte public key in the given files."""
    out = []
    for path in paths:
        for raw in _b64_lines(path):
            if len(raw) != 32:
                raise InputError(f"not an ed25519 public key in {path}")
            out.append(Ed25519PublicKey.from_public_bytes(raw))
    return out


def default_public_key_files() -> list[Path]:
    """OSTree's system trust: ``trusted.ed25519`` files and ``trusted.ed25519.d/*``."""
    out: list[Path] = []
    for base in map(Path, TRUSTED_PATHS):
        if base.is_file():
            out.append(base)
        d = base.with_name(base.name + ".d")
        if d.is_dir():
            out.extend(sorted(p for p in d.iterdir() if p.is_file()))
    return out


def public_key_b64(key: Ed25519PrivateKey) -> str:
    """The base64 public key line matching a secret key."""
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def secret_key_b64(key: Ed25519PrivateKey) -> str:
    """The base64 of libsodium's 64-byte secret key (seed ‖ public key), as OSTree reads it."""
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(seed + pub).decode()


def generate_keypair(secret_path: Path, public_path: Path) -> None:
    """Write a new key pair in OSTree's file format (tests and tooling)."""
    key = Ed25519PrivateKey.generate()
    Path(secret_path).write_text(secret_key_b64(key) + "\n")
    Path(public_path).write_text(public_key_b64(key) + "\n")


def sign_bytes(key: Ed25519PrivateKey, data: bytes) -> bytes:
    """A 64-byte ed25519 signature of ``data``."""
    return key.sign(data)


def any_valid(keys: Iterable[Ed25519PublicKey], data: bytes, signatures: Iterable[bytes]) -> bool:
    """True when some signature verifies ``data`` under some key."""
    sigs = [bytes(s) for s in signatures if len(s) == 64]
    for key in keys:
        for sig in sigs:
            try:
                key.verify(sig, data)
                return True
            except InvalidSignature:
                continue
    return False


def signatures_in(metadata: dict[str, Variant]) -> list[bytes]:
    """The ed25519 signatures held in detached metadata (empty when none)."""
    v = metadata.get(SIGN_KEY)
    if v is None:
        return []
    if v.sig != "aay":
        raise SignatureError(f"{SIGN_KEY} has type {v.sig}, expected aay")
    return [bytes(s) for s in v.value]


def with_signature(metadata: dict[str, Variant], signature: bytes) -> dict[str, Variant]:
    """``metadata`` with ``signature`` appended to ``ostree.sign.ed25519`` (as ostree sign does)."""
    sigs = [s for s in signatures_in(metadata) if s != signature] + [signature]
    return {**metadata, SIGN_KEY: Variant("aay", sigs)}


def verify_data(keys: list[Ed25519PublicKey], data: bytes, metadata: dict[str, Variant],
                what: str) -> None:
    """Raise SignatureError naming ``what`` unless a signature in ``metadata`` verifies ``data``."""
    sigs = signatures_in(metadata)
    if not sigs:
        raise SignatureError(f"no ed25519 signature on {what}")
    if not keys:
        raise SignatureError(f"no ed25519 public key to verify {what}")
    if not any_valid(keys, data, sigs):
        raise SignatureError(f"ed25519 signature does not verify for {what}")


def sign_commit(repo_path: Path, ref: str, key_file: Path) -> str:
    """Sign ``ref``'s commit with ``key_file`` (appended to its detached metadata); return it."""
    from store.objects import ObjectType
    from store.repo import Repo

    repo = Repo.open(repo_path)
    key = load_secret_key(key_file)
    with repo.lock():
        csum = repo.resolve(ref)
        data = repo.read_metadata_bytes(csum, ObjectType.COMMIT)
        meta = with_signature(repo.load_detached_metadata(csum), sign_bytes(key, data))
        repo.write_detached_metadata(csum, meta)
    return csum


def verify_commit(repo_path: Path, ref: str, pubkey_file: Path | None = None) -> str:
    """Return the commit of ``ref`` if one of its signatures verifies; else raise SignatureError.

    Without ``pubkey_file`` the system's trusted keys are used, as ``ostree`` does.
    """
    from store.objects import ObjectType
    from store.repo import Repo

    repo = Repo.open(repo_path)
    csum = repo.resolve(ref)
    files = [pubkey_file] if pubkey_file is not None else default_public_key_files()
    data = repo.read_metadata_bytes(csum, ObjectType.COMMIT)
    verify_data(load_public_keys(files), data, repo.load_detached_metadata(csum),
                f"ref {ref} (commit {csum})")
    return csum
