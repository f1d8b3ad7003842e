"""strata bundle commands: create and apply (offline transport of a commit and packages)."""

from __future__ import annotations

from pathlib import Path

import click

from layering.cli.context import Context, cli, pass_ctx
from layering.cli.progress import cli_progress, progress_option


@cli.group("bundle")
def bundle_group() -> None:
    """One file carrying a commit (and packages) to a host with no network."""


@bundle_group.command("create")
@progress_option
@click.option("-o", "--output", "out", type=click.Path(path_type=Path, dir_okay=False),
              required=True, help="The bundle file to write.")
@click.option("--from", "from_rev", metavar="COMMIT",
              help="Carry only what changed since this commit (the receiver must have it).")
@click.option("--packages", "packages", multiple=True, metavar="NAME|FILE",
              help="Packages to carry (resolved with their dependencies) or package files; "
                   "repeat or separate by spaces after the flag.")
@click.argument("ref")
@click.argument("more", nargs=-1)
@pass_ctx
def create_cmd(ctx: Context, out: Path, from_rev: str | None, packages: tuple[str, ...],
               ref: str, more: tuple[str, ...]) -> None:
    """Write REF (whole, or as a delta from --from) and packages into one file."""
    from layering.bundle import create

    if more and not packages:
        raise click.UsageError("extra arguments after REF (did you mean --packages?)")
    r = create(ctx.repo, ref, out, from_rev=from_rev, packages=(*packages, *more),
               progress=cli_progress())
    if ctx.json:
        import json

        click.echo(json.dumps({"path": str(r.path), "commit": r.commit, "from": r.from_commit,
                               "size": r.size, "packages": r.packages}))
    else:
        click.echo(f"{r.path}: commit {r.commit}, {r.packages} packages, {r.size} bytes")


@bundle_group.command("apply")
@progress_option
@click.option("--allow-downgrade", is_flag=True,
              help="Accept a commit older than the one the ref points at.")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@pass_ctx
def apply_cmd(ctx: Context, allow_downgrade: bool, file: Path) -> None:
    """Verify and import FILE into the repository (no network)."""
    from layering.bundle_apply import apply

    r = apply(ctx.repo, file, allow_downgrade=allow_downgrade, progress=cli_progress())
    ref = f"{r.ref} -> " if r.ref else ""
    click.echo(f"{ref}{r.commit}: {r.objects} objects, {r.packages} packages")
