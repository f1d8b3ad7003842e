"""strata replication commands: summary, remote, pull, static-delta, sign, verify."""

from __future__ import annotations

from pathlib import Path

import click

from layering.cli.context import Context, cli, json_option, pass_ctx
from layering.cli.progress import cli_progress, progress_option


@cli.command("summary")
@click.option("-u", "--update", is_flag=True, required=True, help="Regenerate the summary file.")
@click.option("--sign-key", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="ed25519 secret key file (base64) to sign the summary with.")
@pass_ctx
def summary_cmd(ctx: Context, update: bool, sign_key: Path | None) -> None:
    """Write the repository's summary (and summary.sig) for serving."""
    from store.replication.summary import update_summary
    from store.repo import Repo

    s = update_summary(Repo.open(ctx.repo), sign_key=sign_key)
    if ctx.verbose:
        click.echo(f"{len(s.refs)} refs, {len(s.deltas)} deltas", err=True)


@cli.group("remote")
def remote_group() -> None:
    """Configure remotes (kept in the repository's config)."""


@remote_group.command("add")
@click.option("--sign-pubkey", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="ed25519 public key file; commits must be signed by it.")
@click.option("--no-sign-verify", is_flag=True, help="Do not require signatures.")
@click.option("--collection-id", default="", metavar="ID",
              help="Commits must be bound to this collection (ostree's collection-id).")
@click.argument("name")
@click.argument("url")
@pass_ctx
def remote_add(ctx: Context, sign_pubkey: Path | None, no_sign_verify: bool, collection_id: str,
               name: str, url: str) -> None:
    """Add remote NAME at URL (a public key, or --no-sign-verify, is required)."""
    from store.replication.remote import add_remote

    if sign_pubkey is not None and no_sign_verify:
        raise click.UsageError("--sign-pubkey and --no-sign-verify exclude each other")
    add_remote(ctx.repo, name, url, sign_pubkey=sign_pubkey,
               sign_verify=False if no_sign_verify else None, collection_id=collection_id)


@remote_group.command("list")
@click.option("-u", "--show-urls", is_flag=True, help="Also print each remote's URL.")
@json_option
@pass_ctx
def remote_list(ctx: Context, show_urls: bool) -> None:
    """List remotes, one a line."""
    from store.replication.remote import list_remotes

    remotes = list_remotes(ctx.repo)
    if ctx.json:
        import json

        click.echo(json.dumps([{"name": r.name, "url": r.url, "contenturl": r.contenturl,
                                "sign-verify": r.sign_verify,
                                "sign-verify-summary": r.sign_verify_summary,
                                "collection-id": r.collection_id} for r in remotes], indent=2))
        return
    for r in remotes:
        click.echo(f"{r.name}\t{r.url}" if show_urls or ctx.verbose else r.name)


@remote_group.command("delete")
@click.argument("name")
@pass_ctx
def remote_delete(ctx: Context, name: str) -> None:
    """Remove remote NAME from the config."""
    from store.replication.remote import delete_remote

    delete_remote(ctx.repo, name)


@cli.command("pull")
@progress_option
@click.option("--depth", type=int, default=0, show_default=True,
              help="Also fetch N parent commits (-1: all).")
@click.option("--mirror", is_flag=True, help="Write refs as local refs (refs/heads).")
@click.option("--disable-static-deltas", is_flag=True, help="Fetch objects, never deltas.")
@click.option("--allow-downgrade", is_flag=True,
              help="Let a ref move to a commit older than the one it has.")
@click.argument("name")
@click.argument("refs", nargs=-1)
@pass_ctx
def pull_cmd(ctx: Context, depth: int, mirror: bool, disable_static_deltas: bool,
             allow_downgrade: bool, name: str, refs: tuple[str, ...]) -> None:
    """Fetch REFS from remote NAME: REF, REF@CHECKSUM or CHECKSUM (no ref moves); every ref
    in the summary when none is named. NAME:REF[@CHECKSUM] names one alone."""
    from store.replication.pull import pull

    if ":" in name:
        if refs:
            raise click.UsageError("NAME:REF takes no further REFS")
        name, ref = name.split(":", 1)
        refs = (ref,)
    result = pull(ctx.repo, name, refs, depth=depth, mirror=mirror,
                  disable_static_deltas=disable_static_deltas, progress=cli_progress(),
                  allow_downgrade=allow_downgrade)
    if ctx.json:
        import json

        click.echo(json.dumps({"remote": result.remote, "refs": result.refs,
                               "commits": list(result.commits),
                               "objects": result.objects_fetched,
                               "bytes": result.bytes_fetched, "deltas": result.deltas_used}))
    else:
        click.echo(result.summary_line())


@cli.group("static-delta")
def static_delta_group() -> None:
    """Precomputed updates between commits."""


@static_delta_group.command("generate")
@progress_option
@click.option("--from", "from_", metavar="CSUM", help="Commit the delta starts from.")
@click.option("--empty", is_flag=True, help="A delta from nothing (a full image).")
@click.option("--to", "to", metavar="CSUM", required=True, help="Commit the delta produces.")
@pass_ctx
def delta_generate(ctx: Context, from_: str | None, empty: bool, to: str) -> None:
    """Generate a static delta; prints its name."""
    from store.replication.delta_generate import generate_delta
    from store.repo import Repo

    if empty and from_:
        raise click.UsageError("--from and --empty exclude each other")
    repo = Repo.open(ctx.repo)
    to_csum = repo.resolve(to)
    from_csum = None if empty else repo.resolve(from_) if from_ else _parent_of(repo, to_csum)
    click.echo(generate_delta(repo, from_csum, to_csum, progress=cli_progress()).name)


def _parent_of(repo, csum: str) -> str | None:  # type: ignore[no-untyped-def]
    return repo.load_commit(csum).parent


@static_delta_group.command("list")
@pass_ctx
def delta_list(ctx: Context) -> None:
    """List the repository's static deltas, one name a line."""
    from store.replication.summary import list_delta_names

    for name in list_delta_names(ctx.repo):
        click.echo(name)


@cli.command("sign")
@click.option("--key", "key", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              required=True, help="ed25519 secret key file (base64).")
@click.argument("ref")
@pass_ctx
def sign_cmd(ctx: Context, key: Path, ref: str) -> None:
    """Add an ed25519 signature to REF's commit."""
    from store.sign import sign_commit

    sign_commit(ctx.repo, ref, key)


@cli.command("verify")
@click.option("--pubkey", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="ed25519 public key file (default: the system's trusted keys).")
@click.argument("ref")
@pass_ctx
def verify_cmd(ctx: Context, pubkey: Path | None, ref: str) -> None:
    """Check REF's commit carries a valid ed25519 signature; prints the commit."""
    from store.sign import verify_commit

    click.echo(verify_commit(ctx.repo, ref, pubkey))
