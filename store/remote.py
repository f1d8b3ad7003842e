"""Remotes, kept in the repository's ``config`` exactly as OSTree keeps them.

::

    [remote "origin"]
    url=https://example.org/repo
    gpg-verify=false
    sign-verify=true
    verification-ed25519-file=/etc/keys/origin.pub
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
        tls_ca_path=s.get("tls-ca-path", ""))


def add_remote(repo: Path, name: str, url: str, *, sign_pubkey: Path | None = None,
               sign_verify: bool | None = None) -> Remote:
    """Add a remote; with ``sign_pubkey`` commits (and summaries) must carry ed25519 signatures.

    Raises RemoteError if a remote of that name exists already.
    """
    validate_name(name)
    if "://" not in url:
        raise InputError(f"remote URL must be http://, https:// or file://: {url}")
    try:
        urllib.parse.urlsplit(url).port  # noqa: B018  (ValueError: bad IPv6 host or port)
    except ValueError as e:
        raise InputError(f"invalid remote URL {url!r}: {e}") from None
    if sign_pubkey is not None and not Path(sign_pubkey).is_file():
        raise InputError(f"public key file not found: {sign_pubkey}")
    with _editing(repo) as cp:
        if cp.has_section(section(name)):
            raise RemoteError(f"remote {name} already exists in {repo}")
        cp.add_section(section(name))
        s = cp[section(name)]
        s["url"] = url
        s["gpg-verify"] = "false"
        verify = sign_pubkey is not None if sign_verify is None else sign_verify
        s["sign-verify"] = "true" if verify else "false"
        if sign_pubkey is not None:
            s["sign-verify-summary"] = "true"
            s["verification-ed25519-file"] = str(Path(sign_pubkey).resolve())
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
