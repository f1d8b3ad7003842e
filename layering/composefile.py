"""A file that describes a derived image, for ``strata compose --file IMAGE.toml``.

Every key is optional but ``base`` and ``branch``; unknown keys and wrong types
are refused with one line naming the file and the key::

    base = "origin:debian/12/x86_64"       # refspec of the base commit
    branch = "acme/web/x86_64"             # the ref the image is committed as
    packages = ["nginx", "curl"]           # from the sources (resolved like apt/dnf)
    local-packages = ["debs/acme-tools_1.2_amd64.deb"]   # relative to this file
    remove = ["nano"]                      # base packages to remove
    replace = ["debs/libfoo_2.0-1_amd64.deb"]  # local files replacing base packages
    sources = ["deb [trusted=yes] http://deb.example/ stable main"]
    no-recommends = false
    no-scripts = false
    version = "2026.12.1"                  # the commit's ``version`` metadata
    subject = "ACME web image"
    kargs = ["console=ttyS0", "quiet"]     # kernel arguments of its deployments
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boot.kargs import KargsError, check_arg
from layering.composerequest import ComposeRequest
from layering.errors import ComposeError

MAX_SIZE = 1 << 20  # a compose file is a few hundred bytes; refuse anything huge


class ComposeFileError(ComposeError):
    """A compose file that cannot be read, is not TOML, or has a bad or unknown key."""


_STR_KEYS = ("base", "branch", "version", "subject")
_LIST_KEYS = ("packages", "local-packages", "remove", "replace", "sources", "kargs")
_BOOL_KEYS = ("no-recommends", "no-scripts")
_REQUIRED = ("base", "branch")


@dataclass(frozen=True)
class ComposeFile:
    """The parsed file; paths already resolved against the file's directory."""

    path: Path
    base: str
    branch: str
    packages: tuple[str, ...] = ()
    local_packages: tuple[Path, ...] = ()
    remove: tuple[str, ...] = ()
    replace: tuple[Path, ...] = ()
    sources: tuple[str, ...] = ()
    no_recommends: bool = False
    no_scripts: bool = False
    version: str = ""
    subject: str = ""
    kargs: tuple[str, ...] = ()

    def request(self, *, offline: bool = False, dry_run: bool = False) -> ComposeRequest:
        """The compose request this file describes (the same one the equivalent flags give)."""
        return ComposeRequest(
            base=self.base, branch=self.branch, install=self.packages,
            install_local=self.local_packages, remove=self.remove, replace_local=self.replace,
            sources=self.sources, no_scripts=self.no_scripts, offline=offline,
            no_recommends=self.no_recommends, dry_run=dry_run, subject=self.subject,
            version=self.version, kargs=self.kargs)


def load(path: Path) -> ComposeFile:
    """Parse ``path``; ComposeFileError (one line naming the file, and the key when one
    is at fault) on an unreadable or oversized file, bad TOML, an unknown key, a value
    of the wrong type, a missing ``base``/``branch`` or an invalid kernel argument."""
    doc = _read(path)
    for key in doc:
        if key not in (*_STR_KEYS, *_LIST_KEYS, *_BOOL_KEYS):
            raise ComposeFileError(f"unknown key {key!r} in {path}")
    for key in _REQUIRED:
        if key not in doc:
            raise ComposeFileError(f"missing key {key!r} in {path}")
    values: dict[str, Any] = {k.replace("-", "_"): _value(path, k, v) for k, v in doc.items()}
    here = path.resolve().parent
    for key in ("local_packages", "replace"):
        if key in values:
            values[key] = tuple(here / p for p in values[key])
    for arg in values.get("kargs", ()):
        try:
            check_arg(arg)
        except KargsError as e:
            raise ComposeFileError(f"key 'kargs': {e} in {path}") from e
    return ComposeFile(path=path, **values)


def _read(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SIZE + 1)
    except OSError as e:
        raise ComposeFileError(f"cannot read the compose file: {e.strerror} in {path}") from e
    if len(data) > MAX_SIZE:
        raise ComposeFileError(f"compose file larger than {MAX_SIZE} bytes in {path}")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ComposeFileError(f"not a valid TOML file ({e}) in {path}") from e


def _value(path: Path, key: str, v: object) -> object:
    """``v`` checked against the key's type; a list becomes a tuple."""
    if key in _STR_KEYS:
        ok, want = isinstance(v, str) and (v != "" or key not in _REQUIRED), "a non-empty string"
    elif key in _BOOL_KEYS:
        ok, want = isinstance(v, bool), "true or false"
    else:
        ok = isinstance(v, list) and all(isinstance(x, str) and x for x in v)
        want = "a list of non-empty strings"
    if not ok:
        raise ComposeFileError(f"key {key!r} must be {want}, not {_shown(v)} in {path}")
    return tuple(v) if isinstance(v, list) else v


def _shown(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."
