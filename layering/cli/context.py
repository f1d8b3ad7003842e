"""The root click group and the state it hands to sub-commands."""

from __future__ import annotations

import importlib
import math
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import click


@dataclass(frozen=True)
class Context:
    """Global options, resolved once."""

    repo_path: Path | None
    sysroot: Path
    json: bool
    quiet: bool
    verbose: bool
    lock_timeout: float | None = None

    @property
    def repo(self) -> Path:
        """The repository path: ``--repo``, ``$STRATA_REPO``, else ``SYSROOT/ostree/repo``."""
        return self.repo_path if self.repo_path is not None else self.sysroot / "ostree" / "repo"


COMMAND_MODULES = {
    "repo": ("init", "commit", "checkout", "refs", "log", "show", "ls", "cat", "diff", "fsck",
             "prune"),
    "remote": ("summary", "remote", "pull", "static-delta", "sign", "verify"),
    "pkg": ("import",),
    "compose": ("compose", "db"),
    "admin": ("os-init", "deploy", "status", "rollback", "cleanup", "pin", "kargs",
              "finalize-staged"),
    "client": ("install", "uninstall", "override", "upgrade", "rebase"),
    "image": ("run", "export"),
    "bundle": ("bundle",),
}


class LazyGroup(click.Group):
    """The root group: a command family's module is imported when one of its commands
    runs (or when all are listed), so start-up stays small."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            for module, names in COMMAND_MODULES.items():
                if cmd_name in names:
                    importlib.import_module(f"layering.cli.{module}")
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        for module in COMMAND_MODULES:
            importlib.import_module(f"layering.cli.{module}")
        return super().list_commands(ctx)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``--version``: strata's version from its package metadata, read only when asked
    (the lookup costs ~50 ms of start-up)."""
    if not value or ctx.resilient_parsing:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("strata")
    except PackageNotFoundError:
        found = "unknown (not installed)"
    click.echo(f"strata {found}")
    ctx.exit(0)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version, help="Print the version and exit.")
@click.option("--repo", "repo_path", type=click.Path(path_type=Path), default=None,
              help="Object repository (default $STRATA_REPO, else SYSROOT/ostree/repo).")
@click.option("--sysroot", type=click.Path(path_type=Path), default=None,
              help="Physical root holding ostree/ and boot/ (default $STRATA_SYSROOT, else /).")
@click.option("--json", "json_", is_flag=True,
              help="JSON on stdout for read commands and --dry-run "
                   "(also accepted after the command).")
@click.option("-q", "--quiet", is_flag=True, help="Less on stderr.")
@click.option("-v", "--verbose", is_flag=True, help="More on stderr; tracebacks on errors.")
@click.option("--lock-timeout", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Give up when the sysroot or repository stays locked by another process "
                   "this long (default: wait, saying who holds it).")
@click.pass_context
def cli(
    ctx: click.Context, repo_path: Path | None, sysroot: Path | None, json_: bool,
    quiet: bool, verbose: bool, lock_timeout: float | None,
) -> None:
    """strata: OSTree-format images with client-side package layering."""
    if repo_path is None and os.environ.get("STRATA_REPO"):
        repo_path = Path(os.environ["STRATA_REPO"])
    if sysroot is None:
        sysroot = Path(os.environ.get("STRATA_SYSROOT", "/"))
    ctx.obj = Context(repo_path=repo_path, sysroot=sysroot, json=json_, quiet=quiet,
                      verbose=verbose, lock_timeout=lock_timeout)
    _current[:] = [ctx.obj]
    _set_lock_policy(lock_timeout, quiet=quiet)


_current: list[Context] = []


def current() -> Context | None:
    """The global options of the command that runs (for the error mapping), if parsed yet."""
    return _current[0] if _current else None


def _set_lock_policy(timeout: float | None, *, quiet: bool) -> None:
    """Locks wait ``timeout`` seconds (default: as long as it takes), saying once on
    stderr whom they wait for."""
    from store.lock import LockPolicy, set_policy

    def notify(message: str) -> None:
        if not quiet:
            click.echo(f"strata: {message}", err=True)

    set_policy(LockPolicy(timeout=math.inf if timeout is None else timeout, notify=notify,
                          holder=" ".join(["strata", *sys.argv[1:]])))


pass_ctx = click.make_pass_decorator(Context)


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``--json`` after a command: the same as the global ``strata --json``."""
    if value and isinstance(ctx.obj, Context):
        ctx.obj = replace(ctx.obj, json=True)
        _current[:] = [ctx.obj]


json_option = click.option(
    "--json", "json_", is_flag=True, expose_value=False, callback=_set_json,
    help="Print JSON on stdout (the same as strata --json before the command).")
"""The per-command ``--json``: sets the command's :class:`Context` ``json``."""
