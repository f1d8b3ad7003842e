"""strata package-image commands: compose, db list, db diff."""

from __future__ import annotations

import json
from pathlib import Path

import click

from layering.cli.context import Context, cli, pass_ctx
from layering.cli.progress import cli_progress, progress_option


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


def print_transaction(result: object, *, dry_run: bool) -> None:
    """The transaction of a compose, as ``--dry-run`` shows it (stdout)."""
    res = result.resolution  # type: ignore[attr-defined]
    for p in res.install:
        click.echo(f"  install {p.name} {p.evr} {p.arch}  ({res.source_of.get(p.nevra, '')})")
    for p in res.remove:
        click.echo(f"  remove  {p.name} {p.evr} {p.arch}")
    for name in res.satisfied_by_base:
        click.echo(f"  inactive request {name}: already provided by the base image")
    click.echo(f"{len(res.install)} to install, {len(res.remove)} to remove; "
               f"download {_size(result.download_size)}, "  # type: ignore[attr-defined]
               f"image grows by {_size(result.growth * 1024)}")  # type: ignore[attr-defined]


@cli.command()
@progress_option
@click.option("-b", "--branch", required=True)
@click.option("--base", required=True, metavar="REF")
@click.option("--install", multiple=True, metavar="NAME")
@click.option("--install-local", multiple=True, type=click.Path(path_type=Path), metavar="FILE")
@click.option("--remove", multiple=True, metavar="NAME")
@click.option("--source", multiple=True, metavar="SPEC")
@click.option("--no-scripts", is_flag=True)
@click.option("--offline", is_flag=True)
@click.option("--no-recommends", is_flag=True)
@click.option("--dry-run", is_flag=True)
@pass_ctx
def compose(c: Context, branch: str, base: str, install: tuple[str, ...],
            install_local: tuple[Path, ...], remove: tuple[str, ...], source: tuple[str, ...],
            no_scripts: bool, offline: bool, no_recommends: bool, dry_run: bool) -> None:
    """Build BRANCH = BASE + packages, resolved client-side; print the commit."""
    from layering.compose import ComposeRequest
    from layering.compose import compose as do_compose
    from store.repo import Repo

    result = do_compose(Repo.open(c.repo), ComposeRequest(
        base=base, branch=branch, install=install, install_local=install_local, remove=remove,
        sources=source, no_scripts=no_scripts, offline=offline, no_recommends=no_recommends,
        dry_run=dry_run), progress=cli_progress())
    if dry_run:
        print_transaction(result, dry_run=True)
        return
    if c.verbose:
        for what, output in result.script_log.entries:
            click.echo(f"--- {what}\n{output}", err=True, nl=False)
    if not c.quiet:
        click.echo(f"{len(result.resolution.install)} packages layered, "
                   f"{len(result.resolution.remove)} removed; {result.downloaded} downloaded, "
                   f"{result.unpacked} unpacked" + (" (existing commit)" if result.reused else ""),
                   err=True)
    click.echo(result.checksum)


@cli.group()
def db() -> None:
    """Package databases of commits."""


@db.command("list")
@click.argument("ref")
@pass_ctx
def db_list(c: Context, ref: str) -> None:
    """The packages in a commit, from its own package database."""
    from layering.dbinfo import packages
    from store.repo import Repo

    _kind, pkgs = packages(Repo.open(c.repo), ref)
    if c.json:
        click.echo(json.dumps([{"name": p.name, "evr": p.evr, "arch": p.arch} for p in pkgs],
                              indent=2))
        return
    for p in pkgs:
        click.echo(f"{p.name} {p.evr} {p.arch}")


@db.command("diff")
@click.argument("a")
@click.argument("b")
@pass_ctx
def db_diff(c: Context, a: str, b: str) -> None:
    """Packages added, removed, upgraded and downgraded between two commits."""
    from layering.dbinfo import diff
    from store.repo import Repo

    d = diff(Repo.open(c.repo), a, b)
    if c.json:
        click.echo(json.dumps(d.to_dict(), indent=2))
        return
    for title, pairs in (("Upgraded", d.upgraded), ("Downgraded", d.downgraded)):
        if pairs:
            click.echo(f"{title}:")
            for x, y in pairs:
                click.echo(f"  {x.name} {x.evr} -> {y.evr}")
    for title, pkgs in (("Removed", d.removed), ("Added", d.added)):
        if pkgs:
            click.echo(f"{title}:")
            for p in pkgs:
                click.echo(f"  {p.name} {p.evr} {p.arch}")
