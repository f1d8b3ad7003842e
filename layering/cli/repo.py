"""strata store commands: init, commit, checkout, refs, log, show, ls, cat, diff, fsck, prune."""

from __future__ import annotations

import json
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from layering.cli.context import Context, cli, json_option, pass_ctx
from store.errors import ToolError

if TYPE_CHECKING:
    from types import ModuleType

    from store.repo import Repo


def _repo(c: Context) -> Repo:
    """The repository of ``--repo`` (store modules load on first use: start-up stays fast)."""
    from store import repo as repo_module

    return repo_module.Repo.open(c.repo)


def _inspect() -> ModuleType:
    from store import inspect

    return inspect


class FsckFailed(ToolError):
    """fsck found problems (already listed on stdout)."""


def _json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def _date(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S +0000")


def _warn(c: Context, text: str) -> None:
    if not c.quiet:
        click.echo(f"warning: {text}", err=True)


@cli.command()
@click.option("--mode", type=click.Choice(["bare", "bare-user", "archive"]), default="bare",
              show_default=True,
              help="Object layout: bare (root, real owners), bare-user (owners in xattrs), "
                   "archive (compressed, for serving over HTTP).")
@pass_ctx
def init(c: Context, mode: str) -> None:
    """Create a repository."""
    from store.repo import Repo, RepoMode

    Repo.init(c.repo, RepoMode.parse(mode))


def _kv(values: tuple[str, ...]) -> list[tuple[str, str]]:
    pairs = []
    for v in values:
        if "=" not in v:
            raise click.UsageError(f"--add-metadata needs KEY=VALUE, got '{v}'")
        k, _, val = v.partition("=")
        pairs.append((k, val))
    return pairs


@cli.command()
@click.option("-b", "--branch", required=True, help="Branch (ref) the commit is written to.")
@click.option("-s", "--subject", default="", help="One-line subject of the commit.")
@click.option("--body", default="", help="Longer description of the commit.")
@click.option("--add-metadata", "metadata", multiple=True, metavar="KEY=VALUE",
              help="Add a string metadata entry (repeatable).")
@click.option("--parent", default=None, metavar="CSUM|none",
              help="Parent commit (default: the branch's head; 'none': no parent).")
@click.option("--timestamp", type=int, default=None, metavar="SECONDS",
              help="Commit time in seconds since the epoch (default: now).")
@click.option("--sign-key", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="ed25519 secret key file (base64) to sign the commit with.")
@click.option("--owner-uid", type=int, default=None, metavar="N",
              help="Record every file as owned by this uid.")
@click.option("--owner-gid", type=int, default=None, metavar="N",
              help="Record every file as owned by this gid.")
@click.option("--skip-special-files", "skip_special", is_flag=True,
              help="Leave out device nodes, FIFOs and sockets (a warning each) instead of "
                   "failing, as ostree commit fails on them; their directories stay.")
@click.argument("directory", type=click.Path(path_type=Path))
@pass_ctx
def commit(c: Context, branch: str, subject: str, body: str, metadata: tuple[str, ...],
           parent: str | None, timestamp: int | None, sign_key: Path | None,
           owner_uid: int | None, owner_gid: int | None, skip_special: bool,
           directory: Path) -> None:
    """Commit a directory tree; print the commit checksum."""
    from store.commit import AUTO, commit_directory

    repo = _repo(c)
    par = AUTO if parent is None else (None if parent == "none" else parent)
    result = commit_directory(repo, directory, branch=branch, subject=subject, body=body,
                              timestamp=timestamp, metadata=_kv(metadata), parent=par,
                              owner_uid=owner_uid, owner_gid=owner_gid, sign_key=sign_key,
                              skip_special=skip_special)
    for p in result.skipped:
        _warn(c, f"skipped special file (not a regular file, symlink or directory): /{p}")
    click.echo(result.checksum)


@cli.command()
@click.option("--subpath", default=None, metavar="PATH",
              help="Check out only this directory of the commit.")
@click.option("--user-mode", "-U", is_flag=True,
              help="Do not set owners or special permissions (for non-root checkouts).")
@click.option("--copy", is_flag=True, help="Copy files instead of hardlinking them.")
@click.argument("ref")
@click.argument("dest", type=click.Path(path_type=Path))
@pass_ctx
def checkout(c: Context, subpath: str | None, user_mode: bool, copy: bool, ref: str,
             dest: Path) -> None:
    """Materialize a commit at DEST."""
    from store.checkout import checkout as do_checkout

    do_checkout(_repo(c), ref, dest, subpath=subpath, user_mode=user_mode, copy=copy)


@cli.command()
@json_option
@pass_ctx
def refs(c: Context) -> None:
    """List refs (remote ones as remote:ref)."""
    found = _repo(c).list_refs()
    if c.json:
        _json(found)
        return
    for name in found:
        click.echo(name)


@cli.command()
@json_option
@click.argument("ref")
@pass_ctx
def log(c: Context, ref: str) -> None:
    """Show the history of REF, newest first."""
    entries = _inspect().log(_repo(c), ref)
    if c.json:
        _json([_inspect().commit_to_dict(csum, cm) for csum, cm in entries])
        return
    for csum, cm in entries:
        click.echo(f"commit {csum}")
        if cm.parent:
            click.echo(f"Parent:  {cm.parent}")
        click.echo(f"Date:  {_date(cm.timestamp)}")
        if "version" in cm.metadata:
            click.echo(f"Version: {cm.meta_value('version')}")
        click.echo(f"\n    {cm.subject}\n")
        if cm.body:
            click.echo("".join(f"    {line}\n" for line in cm.body.splitlines()))


@cli.command()
@json_option
@click.argument("ref")
@pass_ctx
def show(c: Context, ref: str) -> None:
    """Show one commit: checksum, parent, subject, body, timestamp, metadata."""
    repo = _repo(c)
    csum = repo.resolve(ref)
    d = _inspect().commit_to_dict(csum, repo.load_commit(csum))
    if c.json:
        _json(d)
        return
    click.echo(f"commit {csum}")
    if d["parent"]:
        click.echo(f"Parent:  {d['parent']}")
    click.echo(f"Date:  {_date(d['timestamp'])}")
    for k, v in d["metadata"].items():
        click.echo(f"Metadata: {k} = {json.dumps(v)}")
    click.echo(f"\n    {d['subject']}\n")
    if d["body"]:
        click.echo("".join(f"    {line}\n" for line in d["body"].splitlines()))


@cli.command()
@click.option("-R", "--recursive", is_flag=True, help="Descend into subdirectories.")
@json_option
@click.argument("ref")
@click.argument("path", default="/")
@pass_ctx
def ls(c: Context, recursive: bool, ref: str, path: str) -> None:
    """List a directory of a commit: mode, uid, gid, size, checksum, path."""
    entries = _inspect().ls(_repo(c), ref, path, recursive=recursive)
    if c.json:
        _json([e.to_dict() for e in entries])
        return
    for e in entries:
        link = f" -> {e.symlink}" if e.symlink else ""
        click.echo(f"{_inspect().mode_string(e.mode)} {e.uid} {e.gid} {e.size:6d} "
                   f"{e.checksum} {e.path}{link}")


@cli.command()
@click.argument("ref")
@click.argument("path")
@pass_ctx
def cat(c: Context, ref: str, path: str) -> None:
    """Write a file's content to stdout."""
    with _inspect().cat(_repo(c), ref, path) as stream:
        shutil.copyfileobj(stream, sys.stdout.buffer, 1 << 20)


@cli.command()
@json_option
@click.argument("a")
@click.argument("b")
@pass_ctx
def diff(c: Context, a: str, b: str) -> None:
    """Tree difference between two commits: A/D/M path, sorted."""
    changes = _inspect().diff(_repo(c), a, b)
    if c.json:
        _json([{"kind": kind, "path": path} for kind, path in changes])
        return
    for kind, path in changes:
        click.echo(f"{kind} {path}")


@cli.command()
@json_option
@pass_ctx
def fsck(c: Context) -> None:
    """Re-hash every object and check every reference; exit 1 on any problem."""
    from store.fsck import fsck as do_fsck

    report = do_fsck(_repo(c))
    if c.json:
        _json({"ok": report.ok, "commits": report.commits, "objects": report.objects,
               "problems": list(report.problems)})
    else:
        for p in report.problems:
            click.echo(p)
    if not report.ok:
        first = report.problems[0]
        more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
        raise FsckFailed(f"fsck: {first}{more}")
    if not c.quiet and not c.json:
        click.echo(f"checked {report.commits} commits, {report.objects} objects: no problems",
                   err=True)


@cli.command()
@click.option("--refs-only", is_flag=True,
              help="Roots are only the commits refs point at (default: every commit).")
@click.option("--depth", type=int, default=-1, show_default=True,
              help="Keep N parents of each ref's commit (-1: the whole history).")
@click.option("--keep-younger-than", default=None, metavar="DATE",
              help="Delete commits older than DATE that no ref points at directly.")
@pass_ctx
def prune(c: Context, refs_only: bool, depth: int, keep_younger_than: str | None) -> None:
    """Delete unreachable objects; print counts and bytes freed."""
    from store.prune import prune as do_prune

    r = do_prune(_repo(c), refs_only=refs_only, depth=depth,
                 keep_younger_than=keep_younger_than)
    click.echo(f"Total objects: {r.total}")
    click.echo(f"Deleted {r.deleted} objects, {r.freed} bytes freed" if r.deleted
               else "No unreachable objects")
