"""Every command family is reachable through the lazy root group, and only through it."""

from __future__ import annotations

import click

from layering.cli.context import COMMAND_MODULES, cli


def test_every_listed_command_exists_and_no_command_is_unlisted() -> None:
    ctx = click.Context(cli)
    listed = {name for names in COMMAND_MODULES.values() for name in names}
    assert set(cli.list_commands(ctx)) == listed
    for name in listed:
        assert cli.get_command(ctx, name) is not None, name
