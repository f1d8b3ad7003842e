"""Errors of the layering engine (all subclasses of store.errors.ToolError)."""

from store.errors import ToolError


class DepsolveError(ToolError):
    """The request cannot be satisfied; the message carries libsolv's explanation."""


class FileConflictError(ToolError):
    """Two packages, or a package and the base, deliver different things at one path."""


class ScriptError(ToolError):
    """A maintainer script failed; the message keeps its output."""


class ComposeError(ToolError):
    """The base or the request is unusable for composition."""
