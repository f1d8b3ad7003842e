"""The ``strata`` command: argument parsing and error mapping only.

Each family of sub-commands lives in its own module (``repo``, ``remote``,
``pkg``, ``compose``, ``admin``, ``client``), imported by the root group
(:class:`layering.cli.context.LazyGroup`) when one of its commands runs.
Failures become one ``error: ...`` line (the traceback only with ``-v``):
library errors (:class:`store.errors.ToolError`) their exit code, an
``OSError`` its reason and path with exit 1, Ctrl-C exit 130, usage errors
exit 2, a reader that left the pipe (``| head``) exit 1 quietly.  Anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import sys

import click

from layering.cli.context import Context, cli
from store.errors import ToolError

__all__ = ["Context", "cli", "main", "oserror_message"]

INTERRUPTED_EXIT = 130
_DENIED = (errno.EACCES, errno.EPERM)


def oserror_message(e: OSError, command: str | None = None, where: str | None = None) -> str:
    """``<reason>: <path>`` for an OSError (``<reason> in <where>`` when it names no path);
    a permission error when not root says that strata needs root (for ``command``)."""
    path = os.fspath(e.filename) if e.filename is not None else ""
    if e.filename2 is not None:
        path = f"{path} -> {os.fspath(e.filename2)}"
    if e.errno in _DENIED and os.geteuid() != 0:
        what = f" for {command}" if command else ""
        return f"permission denied: {path or where or '?'} (strata needs root{what})"
    reason = e.strerror or str(e) or type(e).__name__
    reason = reason[:1].lower() + reason[1:]
    if path:
        return f"{reason}: {path}"
    return f"{reason} in {where}" if where else reason


def _where(command: str | None) -> str | None:
    """The repository or sysroot the running command works on, for errors without a path."""
    from layering.cli.context import COMMAND_MODULES, current

    c = current()
    if c is None:
        return None
    if command in COMMAND_MODULES["admin"] + COMMAND_MODULES["client"]:
        return f"sysroot {c.sysroot}"
    return f"repository {c.repo}"


def _fail(message: str, status: int, *, verbose: bool) -> None:
    if verbose:
        import traceback

        traceback.print_exc()
    try:
        click.echo(f"error: {message}", err=True)
    finally:
        sys.exit(status)


def _quiet_stdout() -> None:
    """After EPIPE on stdout: point it at /dev/null so the interpreter's last flush is silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


_GROUPS = ("remote", "override", "static-delta", "db", "bundle")


def _command_of(argv: list[str]) -> str | None:
    """The sub-command named in ``argv`` (``remote add`` for a group), for messages."""
    from layering.cli.context import COMMAND_MODULES

    names = {n for group in COMMAND_MODULES.values() for n in group}
    i = next((i for i, a in enumerate(argv) if a in names), None)
    if i is None:
        return None
    words = argv[i:i + 2] if argv[i] in _GROUPS else argv[i:i + 1]
    return " ".join(w for w in words if not w.startswith("-"))


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script; exits with strata's status codes."""
    args = list(argv if argv is not None else sys.argv[1:])
    verbose = "-v" in args or "--verbose" in args
    try:
        cli.main(args=args, prog_name="strata", standalone_mode=False)
    except ToolError as e:
        _fail(str(e), e.exit_code, verbose=verbose)
    except (KeyboardInterrupt, click.exceptions.Abort):
        _fail("interrupted", INTERRUPTED_EXIT, verbose=verbose)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(2 if isinstance(e, click.UsageError) else e.exit_code)
    except BrokenPipeError:
        _quiet_stdout()  # the reader left (``| head``): exit 1 quietly, as click does itself
        sys.exit(1)
    except OSError as e:
        command = _command_of(args)
        _fail(oserror_message(e, command, _where(command)), 1, verbose=verbose)
    sys.exit(0)
