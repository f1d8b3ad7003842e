"""Errors raised by the importers; every message names the package and the member at fault."""

from __future__ import annotations

from store.errors import InputError, NetworkError, SignatureError


class PackageFormatError(InputError):
    """A package file is malformed, truncated or not what it claims to be."""


class UnsafePayloadError(PackageFormatError):
    """A payload member would escape the package tree or is not allowed (device, bomb)."""


class RepoMetadataError(InputError):
    """A source's index (Release, Packages, repomd.xml, primary.xml) is malformed."""


class ChecksumMismatch(RepoMetadataError):
    """Downloaded bytes do not match the checksum the source's index declares."""


class SourceSignatureError(SignatureError):
    """A source's Release file does not verify against its keyring."""


class FetchError(NetworkError):
    """A URL could not be fetched and no usable cached copy exists."""


class PackageDbError(InputError):
    """An image's package database (dpkg status, rpmdb.sqlite) cannot be read."""
