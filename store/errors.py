"""The one error root of strata and the store's own error types.

Library code raises subclasses of :class:`ToolError`; only the CLI turns them
into ``error: ...`` and an exit status.
"""


class ToolError(Exception):
    """An operation failed for a reason the user can act on."""

    exit_code: int = 1


class RepoError(ToolError):
    """The repository is missing, unreadable or misconfigured."""


class ObjectNotFound(ToolError):
    """An object or file named by the user or by another object is absent."""


class CorruptObject(ToolError):
    """An object's bytes do not match its name or cannot be parsed."""


class RefError(ToolError):
    """A ref name is invalid, unknown or ambiguous."""


class LockedError(ToolError):
    """Another process holds a lock we need."""


class CommandError(ToolError):
    """An external command failed."""

    def __init__(self, argv_text: str, returncode: int, stderr_tail: str) -> None:
        self.argv_text = argv_text
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        tail = f": {stderr_tail}" if stderr_tail else ""
        super().__init__(f"command failed (exit {returncode}): {argv_text}{tail}")


class InputError(ToolError):
    """Input given to an operation (a path, a tree, an option) is unusable."""


class NetworkError(ToolError):
    """A remote could not be reached or answered wrongly."""


class SignatureError(ToolError):
    """A signature is missing, malformed or does not verify."""
