"""strata package-image commands: compose, db list, db diff."""

from __future__ import annotations

import json
from pathlib import Path

import click

from layering.cli.context import Context, cli, json_option, pass_ctx
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


def transaction_dict(result: object) -> dict[str, object]:
    """The transaction of a compose as data (the ``--dry-run --json`` record)."""
    res = result.resolution  # type: ignore[attr-defined]

    def pkg(p: object, *, source: bool) -> dict[str, str]:
        d = {"name": p.name, "evr": p.evr, "arch": p.arch}  # type: ignore[attr-defined]
        if source:
            d["source"] = res.source_of.get(p.nevra, "")  # type: ignore[attr-defined]
        return d

    return {"kind": str(res.kind), "install": [pkg(p, source=True) for p in res.install],
            "remove": [pkg(p, source=False) for p in res.remove],
            "inactive-requests": list(res.satisfied_by_base),
            "download-size": result.download_size,  # type: ignore[attr-defined]
            "growth": result.growth * 1024}  # type: ignore[attr-defined]


@cli.command()
@progress_option
@click.option("-b", "--branch", help="Branch the new commit is written to.")
@click.option("--base", metavar="REF", help="Commit the image is built on.")
@click.option("--install", multiple=True, metavar="NAME",
              help="Install this package and its dependencies (repeatable).")
@click.option("--install-local", multiple=True, type=click.Path(path_type=Path), metavar="FILE",
              help="Install this .deb/.rpm file (repeatable).")
@click.option("--remove", multiple=True, metavar="NAME",
              help="Remove this package of the base (repeatable).")
@click.option("--source", multiple=True, metavar="SPEC",
              help="Package source: a 'deb URL SUITE COMPONENT...' line, a deb822 entry or "
                   "'rpm-md URL' (repeatable; default: the sources configured in the base).")
@click.option("--no-scripts", is_flag=True, help="Do not run maintainer scripts.")
@click.option("--offline", is_flag=True,
              help="Use only the package cache and file:// sources; no network.")
@click.option("--no-recommends", is_flag=True,
              help="Do not install Recommends (apt installs them by default).")
@click.option("--dry-run", is_flag=True,
              help="Resolve and print the transaction; write nothing.")
@click.option("--file", "file", type=click.Path(path_type=Path), metavar="IMAGE.toml",
              help="Build the derived image IMAGE.toml describes (docs/derived-images.md).")
@json_option
@pass_ctx
def compose(c: Context, branch: str | None, base: str | None, install: tuple[str, ...],
            install_local: tuple[Path, ...], remove: tuple[str, ...], source: tuple[str, ...],
            no_scripts: bool, offline: bool, no_recommends: bool, dry_run: bool,
            file: Path | None) -> None:
    """Build BRANCH = BASE + packages, resolved client-side; print the commit."""
    from layering.composekey import Unchanged, compose_image
    from layering.composerequest import ComposeRequest
    from store.repo import Repo

    if file is not None:
        _file_only(branch=branch, base=base, install=install, install_local=install_local,
                   remove=remove, source=source, no_scripts=no_scripts,
                   no_recommends=no_recommends)
        from layering.composefile import load
        request = load(file).request(offline=offline, dry_run=dry_run)
    elif not branch or not base:
        raise click.UsageError("compose needs -b BRANCH and --base REF, or --file IMAGE.toml")
    else:
        request = ComposeRequest(
            base=base, branch=branch, install=install, install_local=install_local,
            remove=remove, sources=source, no_scripts=no_scripts, offline=offline,
            no_recommends=no_recommends, dry_run=dry_run)
    result = compose_image(Repo.open(c.repo), request, progress=cli_progress(),
                           keyed=not c.json)  # --json always reports the transaction
    if isinstance(result, Unchanged):
        if not c.quiet:
            click.echo(f"No change: {result.branch} is at {result.checksum}", err=True)
            for line in result.left_out:
                click.echo(line, err=True)
        click.echo(result.checksum)
        return
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if dry_run and c.json:
        click.echo(json.dumps({"base": result.base, **transaction_dict(result)}, indent=2))
        return
    if dry_run:
        print_transaction(result, dry_run=True)
        return
    if c.verbose:
        for what, output in result.script_log.entries:
            click.echo(f"--- {what}\n{output}", err=True, nl=False)
    if c.json:
        click.echo(json.dumps({"checksum": result.checksum, "base": result.base,
                               "reused": result.reused, **transaction_dict(result)}, indent=2))
        return
    if not c.quiet:
        click.echo(f"{len(result.resolution.install)} packages layered, "
                   f"{len(result.resolution.remove)} removed; {result.downloaded} downloaded, "
                   f"{result.unpacked} unpacked" + (" (existing commit)" if result.reused else ""),
                   err=True)
        for line in result.left_out:
            click.echo(line, err=True)
    click.echo(result.checksum)


def _file_only(**given: object) -> None:
    """--file describes the whole request: no request option may come with it."""
    extra = [k.replace("_", "-") for k, v in given.items() if v]
    if extra:
        raise click.UsageError(f"--file describes the whole image; put {', '.join(extra)} "
                               "in the file instead of on the command line")


@cli.group()
def db() -> None:
    """Package databases of commits."""


@db.command("list")
@json_option
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
@json_option
@click.argument("a", required=False)
@click.argument("b", required=False)
@pass_ctx
def db_diff(c: Context, a: str | None, b: str | None) -> None:
    """Packages added, removed, upgraded and downgraded from commit A to commit B.

    Without A and B: the booted (else default) deployment against the pending one, or
    without a pending one the rollback deployment against the booted (else default) one."""
    from layering.dbinfo import diff
    from store.repo import Repo

    if (a is None) != (b is None):
        raise click.UsageError("db diff takes two commits, or none to compare deployments")
    if a is None or b is None:
        a, b = _deployment_pair(c)
    repo = Repo.open(c.repo)
    d = diff(repo, a, b)
    if c.json:
        click.echo(json.dumps({"from": repo.resolve(a), "to": repo.resolve(b), **d.to_dict()},
                              indent=2))
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


def _deployment_pair(c: Context) -> tuple[str, str]:
    """The commits of the two deployments ``db diff`` compares by default (said on stderr)."""
    from boot.admin import db_diff_pair
    from boot.sysroot import Sysroot

    pair = db_diff_pair(Sysroot(c.sysroot))
    if not c.quiet:
        for end, (role, d) in zip(("from", "to"), pair, strict=True):
            click.echo(f"ostree diff commit {end}: {role} deployment ({d.checksum})", err=True)
    return pair[0][1].checksum, pair[1][1].checksum
