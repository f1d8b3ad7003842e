"""strata sysroot commands: os-init, deploy, status, rollback, cleanup, pin, kargs.

Each command parses its arguments, calls one function of ``boot`` and prints
the result; stdout stays parseable.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from layering.cli.context import Context, cli, json_option, pass_ctx
from layering.cli.progress import cli_progress, progress_option

if TYPE_CHECKING:
    from types import ModuleType

    from boot.admin import DeploymentStatus
    from boot.origin import Origin
    from boot.sysroot import Sysroot, SysrootState
    from store.repo import Repo


def _sysroot(ctx: Context) -> Sysroot:
    from boot.sysroot import Sysroot

    return Sysroot(ctx.sysroot)


def _admin() -> ModuleType:
    """boot.admin, imported on first use so other commands start fast."""
    from boot import admin

    return admin


def _dump(obj: object) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


@cli.command("os-init")
@click.argument("stateroot")
@pass_ctx
def os_init_cmd(ctx: Context, stateroot: str) -> None:
    """Create the sysroot layout and ostree/deploy/STATEROOT/var."""
    from boot.deploy import os_init

    os_init(_sysroot(ctx), stateroot)


@cli.command("deploy")
@progress_option
@click.option("--stateroot", default=None, help="Stateroot (default: the current one).")
@click.option("--karg", "kargs", multiple=True, metavar="K=V",
              help="Set a kernel argument (replaces an earlier value of K).")
@click.option("--dry-run", is_flag=True, help="Show the /etc merge without deploying.")
@click.option("--allow-downgrade", is_flag=True,
              help="Deploy a commit older than the booted (else default) deployment's base.")
@json_option
@click.option("--version", "version", default=None, metavar="V",
              help="Deploy the commit of REFSPEC's history whose version is V.")
@click.option("--stage", is_flag=True,
              help="Finalize at shutdown: /etc edits made until then are kept "
                   "(needs the booted host's sysroot).")
@click.argument("refspec")
@pass_ctx
def deploy_cmd(ctx: Context, stateroot: str | None, kargs: tuple[str, ...], dry_run: bool,
               allow_downgrade: bool, version: str | None, stage: bool, refspec: str) -> None:
    """New deployment of REFSPEC, made the default."""
    if dry_run:
        pinned_csum = _versioned(_sysroot(ctx), refspec, version)[0]
        csum, plan = _admin().preview_deploy(_sysroot(ctx), pinned_csum or refspec,
                                             stateroot=stateroot)
        if ctx.json:
            _dump({"checksum": csum, **plan.to_dict()})
            return
        c = plan.carried
        for tag, paths in (("M", c.modified), ("D", c.removed), ("A", c.added)):
            for p in paths:
                click.echo(f"carried {tag} /etc/{p}")
        for p in plan.conflicts:
            click.echo(f"conflict /etc/{p}: changed by the new image, the local version is kept")
        for p in plan.blocked:
            click.echo(f"blocked /etc/{p}: the new image has a directory here; deploy will fail")
        return
    from boot.stage import StageMode, stage_or_deploy

    csum, origin = _versioned(_sysroot(ctx), refspec, version)
    if not allow_downgrade:
        _check_not_downgrade(_sysroot(ctx), refspec, csum)
    _warn_layered(_sysroot(ctx), refspec)
    res = stage_or_deploy(_sysroot(ctx), StageMode.ALWAYS if stage else StageMode.NEVER,
                          refspec=refspec, checksum=csum, origin=origin, stateroot=stateroot,
                          karg_replace=kargs, progress=cli_progress())
    d = res.deployment
    if ctx.json:
        _dump({"stateroot": d.stateroot, "checksum": d.checksum, "serial": d.deployserial,
               "staged": res.staged, "etc": res.etc.to_dict(),
               "removed": [f"{x.checksum}.{x.deployserial}" for x in res.removed]})
        return
    click.echo(f"{d.checksum}.{d.deployserial}")
    if res.staged and not ctx.quiet:
        click.echo("staged: the boot entries switch to it at shutdown", err=True)
    for p in res.etc.conflicts:
        click.echo(f"note: /etc/{p} also changed in the new image; the local version is kept",
                   err=True)
    if not ctx.quiet:
        c = res.etc_changes
        click.echo(f"/etc changes carried: {len(c.modified)} modified, {len(c.removed)} removed, "
                   f"{len(c.added)} added", err=True)


def _check_not_downgrade(sysroot: Sysroot, refspec: str, csum: str | None) -> None:
    """Refuse (DowngradeError) a REFSPEC older than the booted, else default, deployment."""
    from layering.client import check_not_downgrade
    from store.repo import Repo

    repo = Repo.open(sysroot.repo_path)
    check_not_downgrade(sysroot, repo, csum or repo.resolve(refspec), f"commit of {refspec}")


def _versioned(sysroot: Sysroot, refspec: str,
               version: str | None) -> tuple[str | None, Origin | None]:
    """With --version: the commit of that version in REFSPEC's history and an origin that
    keeps it (``override-commit``); else (None, None): the ref's head."""
    if version is None:
        return None, None
    from boot.origin import Origin
    from layering.client import commit_of_version
    from store.repo import Repo

    csum = commit_of_version(Repo.open(sysroot.repo_path), refspec, version)
    return csum, Origin.for_refspec(refspec).with_value("origin", "override-commit", csum)


def _warn_layered(sysroot: Sysroot, refspec: str) -> None:
    """deploy takes the image as it is: say so when the default has layered packages."""
    d = sysroot.load().next
    o = d.origin if d is not None else None
    if o is None:
        return
    what = [*o.requested_packages, *o.requested_local_packages, *o.removed_base_packages,
            *o.replaced_local_packages]
    if what:
        click.echo(f"warning: the default deployment's layered packages and overrides "
                   f"({' '.join(what)}) are not in the new deployment; use 'strata rebase "
                   f"{refspec}' to keep them", err=True)


def _format_status(rows: list[DeploymentStatus]) -> list[str]:
    lines = []
    for r in rows:
        d = r.deployment
        mark = "●" if r.booted else " "
        tags = [t for t, on in (("staged", r.staged), ("default", r.default),
                                ("booted", r.booted), ("pinned", d.pinned)) if on]
        lines.append(f"{mark} {d.index} {d.stateroot} {d.checksum}.{d.deployserial}"
                     + (f" ({', '.join(tags)})" if tags else ""))
        if r.version:
            lines.append(f"    Version: {r.version}")
        if r.timestamp is not None:
            ts = datetime.fromtimestamp(r.timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            lines.append(f"    Timestamp: {ts}")
        lines.append(f"    Origin: {d.origin.refspec or '(none)'}")
        if r.base_checksum != d.checksum:
            lines.append(f"    BaseCommit: {r.base_checksum}")
        for label, items in (("RequestedPackages", d.origin.requested_packages),
                             ("RequestedLocalPackages", d.origin.requested_local_packages),
                             ("LayeredPackages", r.layered_packages),
                             ("RemovedBasePackages", r.removed_base_packages),
                             ("ReplacedBasePackages", r.replaced_base_packages),
                             ("InactiveRequests", r.inactive_requests)):
            if items:
                lines.append(f"    {label}: {' '.join(items)}")
    return lines


@cli.command("status")
@json_option
@pass_ctx
def status_cmd(ctx: Context) -> None:
    """Deployments, default first."""
    rows = _admin().status(_sysroot(ctx))
    if ctx.json:
        _dump({"deployments": [r.to_dict() for r in rows]})
        return
    for line in _format_status(rows):
        click.echo(line)


@cli.command("finalize-staged", hidden=True)
@pass_ctx
def finalize_staged_cmd(ctx: Context) -> None:
    """Make the staged deployment the default (run at shutdown by strata-finalize-staged)."""
    from boot.stage import finalize_staged

    res = finalize_staged(_sysroot(ctx))
    if res is None:
        click.echo("no staged deployment")
        return
    d = res.deployment
    c = res.etc_changes
    click.echo(f"finalized {d.checksum}.{d.deployserial}: /etc changes carried: "
               f"{len(c.modified)} modified, {len(c.removed)} removed, {len(c.added)} added")


@cli.command("rollback")
@pass_ctx
def rollback_cmd(ctx: Context) -> None:
    """Make the previous deployment the default."""
    d = _admin().rollback(_sysroot(ctx))
    click.echo(f"{d.checksum}.{d.deployserial}")


@cli.command("cleanup")
@click.option("-p", "--pending", is_flag=True, help="Remove the pending deployment.")
@click.option("-r", "--rollback", is_flag=True, help="Remove the rollback deployment.")
@click.option("-m", "--repomd", is_flag=True,
              help="Also delete cached package indexes and downloaded package files.")
@pass_ctx
def cleanup_cmd(ctx: Context, pending: bool, rollback: bool, repomd: bool) -> None:
    """Remove surplus deployments, unused cached packages, and prune the repository."""
    from layering.client import drop_cached_indexes, drop_unused_packages

    def drop(repo: Repo, state: SysrootState) -> list[str]:
        return [*drop_unused_packages(repo, state), *(drop_cached_indexes(repo) if repomd
                                                      else [])]

    res = _admin().cleanup(_sysroot(ctx), pending=pending, rollback=rollback, drop_refs=drop)
    for d in res.removed:
        click.echo(f"removed {d.checksum}.{d.deployserial}")
    for p in res.leftovers:
        click.echo(f"removed leftover {p}")
    packages = [r for r in res.dropped_refs if r.startswith("strata/pkg/")]
    if packages:
        click.echo(f"removed {len(packages)} unused cached packages")
    for p in res.dropped_refs:
        if p.endswith(" bytes)"):
            click.echo(f"removed cached indexes {p}")
    if res.pruned is not None:
        click.echo(f"pruned {res.pruned.deleted} objects, {res.pruned.freed} bytes freed")


@cli.command("pin")
@click.option("--unpin", is_flag=True, help="Remove the pin.")
@click.argument("index", type=int)
@pass_ctx
def pin_cmd(ctx: Context, unpin: bool, index: int) -> None:
    """Keep deployment INDEX through cleanup (or stop keeping it)."""
    d = _admin().pin(_sysroot(ctx), index, pinned=not unpin)
    click.echo(f"deployment {index} is {'pinned' if d.pinned else 'unpinned'}")


@cli.command("kargs")
@click.option("--append", multiple=True, metavar="K=V", help="Add a kernel argument.")
@click.option("--delete", multiple=True, metavar="K=V", help="Remove a kernel argument.")
@json_option
@pass_ctx
def kargs_cmd(ctx: Context, append: tuple[str, ...], delete: tuple[str, ...]) -> None:
    """Show the default deployment's kernel arguments, or deploy it again with edited ones."""
    kargs, res = _admin().edit_kargs(_sysroot(ctx), append=append, delete=delete)
    if ctx.json:
        d = None if res is None else res.deployment
        _dump({"kargs": list(kargs.args), "deployment": None if d is None else {
            "stateroot": d.stateroot, "checksum": d.checksum, "serial": d.deployserial}})
        return
    if res is not None and not ctx.quiet:
        d = res.deployment
        click.echo(f"new deployment {d.checksum}.{d.deployserial}", err=True)
    click.echo(kargs.to_text())
