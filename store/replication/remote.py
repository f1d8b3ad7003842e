"""Remotes, kept in the repository's ``config`` exactly as OSTree keeps them.

::

    [remote "origin"]
    url=https://example.org/repo
    gpg-verify=false
    sign-verify=true
    sign-verify-summary=true
    verification-ed25519-file=/etc/keys/origin.pub
    collection-id=org.example.Os          (optional: commits must be bound to it)

A remote is added either with a public key (commits and summaries must be
signed by it) or explicitly without verification (``sign_verify=False``);
never silently unverified.
"""

from __future__ import annotations

import configparser
import contextlib
import io
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from store.errors import InputError, RepoError
from store.fsutil import atomic_write
from store.lock import file_lock

CONFIG_LOCK = ".config-lock"
CONFIG_LOCK_WAIT = 30.0

_NAME_RE = re.compile(r"^[A-Za-z0-9_][-._A-Za-z0-9]*$")
_COLLECTION_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")


class RemoteError(RepoError):
    """A remote is unknown, already exists or is misconfigured."""


@dataclass(frozen=True)
class Remote:
    """One configured remote."""

    name: str
    url: str
    sign_verify: bool = False
    sign_verify_summary: bool = False
    pubkey_file: str = ""
    pubkey_inline: str = ""
    contenturl: str = ""
    tls_ca_path: str = ""
    collection_id: str = ""

    @property
    def content_url(self) -> str:
        """Where objects and deltas come from (``contenturl`` or ``url``)."""
        return self.contenturl or self.url


def section(name: str) -> str:
    """The config section of a remote: ``remote "NAME"``."""
    return f'remote "{name}"'


def validate_name(name: str) -> None:
    """Raise InputError unless ``name`` is a valid remote name (as ostree_validate_remote_name)."""
    if not _NAME_RE.match(name):
        raise InputError(f"invalid remote name {name!r}")


def validate_collection_id(cid: str) -> None:
    """Raise InputError unless ``cid`` is a reverse-DNS collection ID (as ostree's)."""
    if len(cid) > 255 or not _COLLECTION_RE.fullmatch(cid):
        raise InputError(f"invalid collection ID {cid!r} (a reverse-DNS name like org.example.Os)")


def _load(repo: Path) -> configparser.RawConfigParser:
    cp = configparser.RawConfigParser(delimiters=("=",), comment_prefixes=("#",),
                                      strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    path = repo / "config"
    try:
        cp.read_string(path.read_text())
    except FileNotFoundError as e:
        raise RepoError(f"not a repository (no config): {repo}") from e
    except configparser.Error as e:
        raise RepoError(f"cannot parse {path}: {e}") from e
    return cp


def _save(repo: Path, cp: configparser.RawConfigParser) -> None:
    buf = io.StringIO()
    cp.write(buf, space_around_delimiters=False)
    atomic_write(repo / "config", buf.getvalue().replace("\n\n\n", "\n\n").encode())


@contextlib.contextmanager
def _editing(repo: Path) -> Iterator[configparser.RawConfigParser]:
    """The repository's config, read and written back under the config lock (so that
    concurrent edits never lose one another); not written when the block raises."""
    if not (repo / "config").is_file():
        raise RepoError(f"not a repository (no config): {repo}")
    with file_lock(repo / CONFIG_LOCK, exclusive=True, wait=CONFIG_LOCK_WAIT,
                   what=f"the config of repository {repo}"):
        cp = _load(repo)
        yield cp
        _save(repo, cp)


def _bool(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes")


def _from_section(cp: configparser.RawConfigParser, name: str) -> Remote:
    s = cp[section(name)]
    return Remote(
        name=name, url=s.get("url", ""), sign_verify=_bool(s.get("sign-verify")),
        sign_verify_summary=_bool(s.get("sign-verify-summary")),
        pubkey_file=s.get("verification-ed25519-file", ""),
        pubkey_inline=s.get("verification-ed25519-key", ""), contenturl=s.get("contenturl", ""),
        tls_ca_path=s.get("tls-ca-path", ""), collection_id=s.get("collection-id", ""))


def _check_verification(name: str, sign_pubkey: Path | None, sign_verify: bool | None) -> bool:
    """Whether the new remote verifies signatures (``sign_verify=True`` without a key: with the
    system's trusted keys, as ostree); refuses a remote that would silently not."""
    if sign_pubkey is not None:
        if sign_verify is False:
            raise InputError(f"remote {name}: a public key and no signature verification "
                             f"exclude each other")
        if not Path(sign_pubkey).is_file():
            raise InputError(f"public key file not found: {sign_pubkey}")
        return True
    if sign_verify is None:
        raise InputError(f"remote {name} has no public key to verify its content: give its "
                         f"ed25519 public key (a base64 line) with --sign-pubkey FILE, or "
                         f"--no-sign-verify to accept unsigned content")
    return sign_verify


def add_remote(repo: Path, name: str, url: str, *, sign_pubkey: Path | None = None,
               sign_verify: bool | None = None, collection_id: str = "") -> Remote:
    """Add a remote; with ``sign_pubkey`` commits and summaries must carry ed25519 signatures
    by it; without one, ``sign_verify=False`` must say that nothing is verified.

    Raises InputError for a keyless remote without ``sign_verify=False``, and
    RemoteError if a remote of that name exists already.
    """
    validate_name(name)
    if "://" not in url:
        raise InputError(f"remote URL must be http://, https:// or file://: {url}")
    try:
        urllib.parse.urlsplit(url).port  # noqa: B018  (ValueError: bad IPv6 host or port)
    except ValueError as e:
        raise InputError(f"invalid remote URL {url!r}: {e}") from None
    verify = _check_verification(name, sign_pubkey, sign_verify)
    if collection_id:
        validate_collection_id(collection_id)
    with _editing(repo) as cp:
        if cp.has_section(section(name)):
            raise RemoteError(f"remote {name} already exists in {repo}")
        cp.add_section(section(name))
        s = cp[section(name)]
        s["url"] = url
        s["gpg-verify"] = "false"
        s["sign-verify"] = "true" if verify else "false"
        if verify:
            s["sign-verify-summary"] = "true"
        if sign_pubkey is not None:
            s["verification-ed25519-file"] = str(Path(sign_pubkey).resolve())
        if collection_id:
            s["collection-id"] = collection_id
    return _from_section(cp, name)


def list_remotes(repo: Path) -> list[Remote]:
    """All remotes of the repository, sorted by name."""
    cp = _load(repo)
    names = [m.group(1) for s in cp.sections() if (m := re.fullmatch(r'remote "(.+)"', s))]
    return [_from_section(cp, n) for n in sorted(names)]


def get_remote(repo: Path, name: str) -> Remote:
    """The remote called ``name``; RemoteError when there is none."""
    cp = _load(repo)
    if not cp.has_section(section(name)):
        raise RemoteError(f"remote {name} not found in {repo}/config")
    return _from_section(cp, name)


def delete_remote(repo: Path, name: str) -> None:
    """Remove the remote's section from ``config`` (its refs are kept, as ostree keeps them)."""
    with _editing(repo) as cp:
        if not cp.remove_section(section(name)):
            raise RemoteError(f"remote {name} not found in {repo}/config")
