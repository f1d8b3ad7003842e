"""strata pkg commands."""

from __future__ import annotations

import os
from pathlib import Path

import click

from layering.cli.context import Context, cli, pass_ctx
from layering.cli.progress import cli_progress, progress_option


@cli.command("import")
@progress_option
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@pass_ctx
def import_cmd(ctx: Context, files: tuple[Path, ...]) -> None:
    """Unpack .deb/.rpm files into the package cache; print one cache ref a line."""
    from importers.pkgcache import DEFAULT_CAP, import_packages
    from store.repo import Repo

    cap_text = os.environ.get("STRATA_IMPORT_CAP", str(DEFAULT_CAP))
    if not cap_text.isdigit():
        raise click.UsageError(f"STRATA_IMPORT_CAP must be a byte count, not {cap_text!r}")
    for result in import_packages(Repo.open(ctx.repo), list(files), cap=int(cap_text),
                                  progress=cli_progress()):
        click.echo(result.ref)
