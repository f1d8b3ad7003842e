"""strata package commands on a sysroot, as rpm-ostree: install, uninstall, override,
upgrade, rebase."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from layering.cli.compose import print_transaction, transaction_dict
from layering.cli.context import Context, cli, json_option, pass_ctx

if TYPE_CHECKING:
    from layering.client import ClientResult
from layering.cli.progress import cli_progress, progress_option


def _sysroot(c: Context):  # type: ignore[no-untyped-def]
    from boot.sysroot import Sysroot

    return Sysroot(c.sysroot)


def _report(c: Context, result: object, *, dry_run: bool) -> None:
    from layering.client import ClientResult

    assert isinstance(result, ClientResult)
    for warning in [*result.warnings,
                    *(result.compose.warnings if result.compose is not None else ())]:
        click.echo(f"warning: {warning}", err=True)
    if c.json:
        _report_json(c, result, dry_run=dry_run)
        return
    if result.compose is not None and (dry_run or c.verbose):
        print_transaction(result.compose, dry_run=dry_run)
    if c.verbose and result.compose is not None:
        for what, output in result.compose.script_log.entries:
            click.echo(f"--- {what}\n{output}", err=True, nl=False)
    if dry_run:
        _etc_preview(c, result)
        return
    if result.compose is not None and result.deployed is None and result.target is None:
        comp = result.compose  # --download-only
        click.echo(f"{len(comp.layers)} packages in the cache ({comp.downloaded} downloaded, "
                   f"{comp.unpacked} unpacked); nothing deployed")
        return
    if result.deployed is None:
        click.echo("No upgrade available." if result.no_upgrade
                   else "No change: the default deployment already is this.")
        return
    d = result.deployed.deployment
    if result.compose is not None:
        comp = result.compose
        click.echo(f"{len(comp.resolution.install)} packages layered "
                   f"({comp.downloaded} downloaded, {comp.unpacked} unpacked), "
                   f"{len(comp.resolution.remove)} base packages removed")
    verb = "Staged" if result.deployed.staged else "Deployed"
    on_base = f" on base {result.base[:12]}" if result.base != d.checksum else ""
    click.echo(f"{verb} {d.checksum} ({d.stateroot}, serial {d.deployserial}){on_base}")
    if result.deployed.staged:
        click.echo("It becomes the default at shutdown; /etc is merged then.")
    for path in result.deployed.etc.conflicts:
        click.echo(f"warning: /etc/{path} changed in the new image too; your version is kept",
                   err=True)
    for line in result.deployed.var.warnings():
        click.echo(f"warning: {line}", err=True)


def _report_json(c: Context, result: ClientResult, *, dry_run: bool) -> None:
    """The transaction (and, unless a dry run, the new deployment) as one JSON object."""
    import json

    from boot.admin import preview_deploy

    o, comp = result.origin, result.compose
    data: dict[str, object] = {
        "base": result.base, "origin": o.refspec,
        "requested-packages": list(o.requested_packages),
        "requested-local-packages": list(o.requested_local_packages),
        **(transaction_dict(comp) if comp is not None else _NO_TRANSACTION)}
    if dry_run:
        data["etc"] = preview_deploy(_sysroot(c), result.base)[1].to_dict()
    else:
        res = result.deployed
        data["deployment"] = None if res is None else {
            "stateroot": res.deployment.stateroot, "checksum": res.deployment.checksum,
            "serial": res.deployment.deployserial, "staged": res.staged,
            "var": res.var.to_dict()}
    click.echo(json.dumps(data, indent=2))


_NO_TRANSACTION: dict[str, object] = {
    "kind": None, "install": [], "remove": [], "inactive-requests": [], "download-size": 0,
    "growth": 0}


def _etc_preview(c: Context, result: ClientResult) -> None:
    """The /etc merge a deploy of the new base would do (user changes carried, conflicts)."""
    from boot.admin import preview_deploy

    _csum, plan = preview_deploy(_sysroot(c), result.base)
    for kind, paths in plan.carried.to_dict().items():
        for path in paths:
            click.echo(f"  /etc merge: keep your {kind} /etc/{path}")
    for path in plan.conflicts:
        click.echo(f"  /etc merge: /etc/{path} changed in the new image too; yours wins")


def _split(args: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[Path, ...]]:
    names, files = [], []
    for a in args:
        if a.endswith((".deb", ".rpm")) or "/" in a:
            files.append(Path(a))
        else:
            names.append(a)
    return tuple(names), tuple(files)


def _run(c: Context, *, dry_run: bool = False, stage: bool | None = None, **kw: object) -> None:
    import contextlib

    from boot.deploy import LOCK_WAIT
    from boot.stage import StageMode
    from layering.client import ClientRequest, apply

    mode = {None: StageMode.AUTO, True: StageMode.ALWAYS, False: StageMode.NEVER}[stage]
    sysroot = _sysroot(c)
    # a dry run reads only: the shared lock (re-entered by apply) covers its /etc preview
    with sysroot.read_lock(wait=LOCK_WAIT) if dry_run else contextlib.nullcontext():
        result = apply(sysroot, ClientRequest(dry_run=dry_run, progress=cli_progress(),
                                              stage=mode, **kw))  # type: ignore[arg-type]
        _report(c, result, dry_run=dry_run)


_NO_RECOMMENDS = click.option("--no-recommends", is_flag=True,
                              help="Do not install Recommends (apt installs them by default).")
_DRY_RUN = click.option("--dry-run", is_flag=True,
                        help="Resolve and print the transaction; change nothing.")
_OFFLINE = click.option("--offline", is_flag=True,
                        help="Use only the package cache and file:// sources; no network.")
_DOWNLOAD_ONLY = click.option("--download-only", is_flag=True,
                              help="Download packages into the cache; deploy nothing.")
_STAGE = click.option(
    "--stage/--no-stage", default=None,
    help="Finalize the new deployment at shutdown, keeping /etc edits made until then "
         "(default on the booted host when strata-finalize-staged.service can start), "
         "or switch the boot entries now.")
_CACHE_ONLY = click.option("--cache-only", "-C", is_flag=True,
                           help="Use only cached indexes and packages (no network).")


@cli.command()
@progress_option
@_STAGE
@_DRY_RUN
@click.option("--no-scripts", is_flag=True, help="Do not run maintainer scripts.")
@_OFFLINE
@_NO_RECOMMENDS
@json_option
@_DOWNLOAD_ONLY
@_CACHE_ONLY
@click.option("--idempotent", is_flag=True, help="A package already requested is no error.")
@click.option("--allow-inactive", is_flag=True,
              help="Request a package even if the base already provides it.")
@click.argument("packages", nargs=-1, required=True)
@pass_ctx
def install(c: Context, stage: bool | None, dry_run: bool, no_scripts: bool, offline: bool,
            no_recommends: bool, download_only: bool, cache_only: bool, idempotent: bool,
            allow_inactive: bool, packages: tuple[str, ...]) -> None:
    """New deployment = default's base + its requested packages + PACKAGES (names or files)."""
    names, files = _split(packages)
    _run(c, stage=stage, dry_run=dry_run, install=names, install_local=files, no_scripts=no_scripts,
         offline=offline, no_recommends=no_recommends, download_only=download_only,
         cache_only=cache_only, idempotent=idempotent, allow_inactive=allow_inactive)


@cli.command()
@progress_option
@_STAGE
@_DRY_RUN
@_OFFLINE
@_NO_RECOMMENDS
@_DOWNLOAD_ONLY
@_CACHE_ONLY
@json_option
@click.argument("packages", nargs=-1, required=True)
@pass_ctx
def uninstall(c: Context, stage: bool | None, dry_run: bool, offline: bool,
              no_recommends: bool, download_only: bool, cache_only: bool,
              packages: tuple[str, ...]) -> None:
    """New deployment without these requested packages."""
    _run(c, stage=stage, dry_run=dry_run, uninstall=packages, offline=offline,
         no_recommends=no_recommends, download_only=download_only, cache_only=cache_only)


@cli.group()
def override() -> None:
    """Remove or replace packages of the base image, or undo that."""


@override.command("remove")
@progress_option
@_STAGE
@_DRY_RUN
@json_option
@click.argument("packages", nargs=-1, required=True)
@pass_ctx
def override_remove(c: Context, stage: bool | None, dry_run: bool,
                    packages: tuple[str, ...]) -> None:
    """Remove base packages in a new deployment."""
    _run(c, stage=stage, dry_run=dry_run, override_remove=packages)


@override.command("replace")
@progress_option
@_STAGE
@_DRY_RUN
@json_option
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@pass_ctx
def override_replace(c: Context, stage: bool | None, dry_run: bool,
                     files: tuple[Path, ...]) -> None:
    """Replace base packages by local package files."""
    _run(c, stage=stage, dry_run=dry_run, override_replace=files)


@override.command("reset")
@progress_option
@_STAGE
@_DRY_RUN
@json_option
@click.argument("packages", nargs=-1, required=True)
@pass_ctx
def override_reset(c: Context, stage: bool | None, dry_run: bool,
                   packages: tuple[str, ...]) -> None:
    """Undo overrides of these base packages."""
    _run(c, stage=stage, dry_run=dry_run, override_reset=packages)


@cli.command()
@progress_option
@_STAGE
@click.option("--check", is_flag=True, help="Only say whether an update exists (exit 77: none).")
@_DRY_RUN
@_OFFLINE
@click.option("--allow-downgrade", is_flag=True,
              help="Permit a base older than the booted (else default) deployment's.")
@_NO_RECOMMENDS
@json_option
@_DOWNLOAD_ONLY
@_CACHE_ONLY
@pass_ctx
def upgrade(c: Context, stage: bool | None, check: bool, dry_run: bool, offline: bool,
            allow_downgrade: bool, no_recommends: bool, download_only: bool,
            cache_only: bool) -> None:
    """Pull the origin's newest base and re-apply every requested package."""
    if check:
        from layering.client import check_upgrade

        current, newest = check_upgrade(_sysroot(c), allow_downgrade=allow_downgrade)
        if c.json:
            import json

            click.echo(json.dumps({"current": current, "newest": newest}))
            return
        click.echo(f"Update available: {current[:12]} -> {newest}")
        return
    _run(c, stage=stage, dry_run=dry_run, upgrade=True, offline=offline,
         allow_downgrade=allow_downgrade, no_recommends=no_recommends,
         download_only=download_only, cache_only=cache_only)


@cli.command()
@progress_option
@_STAGE
@_DRY_RUN
@click.option("--allow-downgrade", is_flag=True,
              help="Let the pulled ref move to a commit older than the one it has.")
@json_option
@click.option("--version", "version", default=None, metavar="V",
              help="The commit of REFSPEC's history whose version is V (kept until upgrade).")
@click.argument("refspec")
@pass_ctx
def rebase(c: Context, stage: bool | None, dry_run: bool, allow_downgrade: bool,
           version: str | None, refspec: str) -> None:
    """Move to another base, keeping requested packages."""
    _run(c, stage=stage, dry_run=dry_run, rebase=refspec, allow_downgrade=allow_downgrade,
         version=version)
