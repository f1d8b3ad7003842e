"""strata commands that use an image without deploying it: run, export."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from layering.cli.context import Context, cli, pass_ctx
from store.errors import ToolError


@cli.command(context_settings={"allow_interspersed_args": False,
                               "ignore_unknown_options": True})
@click.option("--bind", "binds", multiple=True, metavar="SRC:DEST",
              help="Bind a host path (read-write) at DEST in the sandbox; repeatable.")
@click.option("--network", is_flag=True, help="Share the host's network (off by default).")
@click.argument("ref")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_ctx
def run(c: Context, binds: tuple[str, ...], network: bool, ref: str,
        command: tuple[str, ...]) -> None:
    """Run COMMAND in the tree of REF (a commit, or deployment:N|default|booted) in a
    sandbox: read-only /usr, throwaway /etc, empty /var and /tmp, no network unless
    --network.  Exits with COMMAND's status."""
    from boot.sysroot import Sysroot
    from layering.run import RunRequest, parse_bind, run_command
    from store.repo import Repo

    if command[:1] == ("--",):
        command = command[1:]
    if not command:
        raise click.UsageError("run: no COMMAND after REF")
    request = RunRequest(ref, command, tuple(parse_bind(b) for b in binds), network)
    status = run_command(Repo.open(c.repo), Sysroot(c.sysroot), request)
    if status:
        sys.exit(status)  # COMMAND's own status, without an error line (click's Exit is 0)


class TerminalOutput(ToolError):
    """A tar would go to a terminal."""


@cli.command()
@click.option("-o", "--output", required=True, metavar="FILE.tar|-",
              help="Where the tar goes ('-' for stdout).")
@click.argument("ref")
@pass_ctx
def export(c: Context, output: str, ref: str) -> None:
    """Write the tree of REF as a tar (for podman import / docker import)."""
    from store.export import export_tar
    from store.fsutil import atomic_file
    from store.repo import Repo

    repo = Repo.open(c.repo)
    with repo.lock(exclusive=False):
        if output == "-":
            if sys.stdout.isatty():
                raise TerminalOutput("export: not writing a tar to a terminal; use -o FILE")
            export_tar(repo, ref, sys.stdout.buffer)
            sys.stdout.buffer.flush()
            return
        with atomic_file(Path(output)) as f:
            export_tar(repo, ref, f)
