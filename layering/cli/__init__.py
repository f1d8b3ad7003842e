"""The ``strata`` command: argument parsing and error mapping only.

Each family of sub-commands lives in its own module (``repo``, ``remote``,
``pkg``, ``compose``, ``admin``, ``client``), imported by the root group
(:class:`layering.cli.context.LazyGroup`) when one of its commands runs.  Library errors
(:class:`store.errors.ToolError`) become one ``error: ...`` line and their
exit code; usage errors exit 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import click

from layering.cli.context import Context, cli
from store.errors import ToolError

__all__ = ["Context", "cli", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script; exits with strata's status codes."""
    verbose = "-v" in (argv if argv is not None else sys.argv[1:]) or "--verbose" in (
        argv if argv is not None else sys.argv[1:]
    )
    try:
        cli.main(args=argv, prog_name="strata", standalone_mode=False)
    except ToolError as e:
        if verbose:
            import traceback

            traceback.print_exc()
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(2 if isinstance(e, click.UsageError) else e.exit_code)
    sys.exit(0)
