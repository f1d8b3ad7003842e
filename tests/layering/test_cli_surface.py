"""The operator-facing surface of the CLI: a help text on every option, ``--version``,
``--json`` accepted after every read command with the shapes docs/cli.md documents, the
dry-run transaction as JSON, and ``db diff`` without arguments."""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from tests.layering.test_client import Host, host  # noqa: F401  (the fixture)
from tests.util import run_strata

COMMIT_KEYS = ["checksum", "parent", "subject", "body", "timestamp", "root-tree", "root-meta",
               "metadata"]
LS_KEYS = ["path", "mode", "uid", "gid", "size", "checksum", "symlink"]
REMOTE_KEYS = ["name", "url", "contenturl", "sign-verify", "sign-verify-summary",
               "collection-id"]
PKG_KEYS = ["name", "evr", "arch"]
DB_DIFF_KEYS = ["from", "to", "added", "removed", "upgraded", "downgraded"]
TRANSACTION_KEYS = ["base", "origin", "requested-packages", "requested-local-packages", "kind",
                    "install", "remove", "inactive-requests", "download-size", "growth"]


def _walk(cmd: click.Command, path: list[str]) -> Iterator[tuple[str, click.Command]]:
    yield " ".join(path), cmd
    if isinstance(cmd, click.Group):
        ctx = click.Context(cmd)
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            assert sub is not None
            yield from _walk(sub, [*path, name])


def test_every_command_and_option_has_a_help_text() -> None:
    from layering.cli import cli

    missing, options = [], 0
    for name, cmd in _walk(cli, ["strata"]):
        if not (cmd.help or "").strip():
            missing.append(name)
        for p in cmd.params:
            if isinstance(p, click.Option):
                options += 1
                if not (p.help or "").strip():
                    missing.append(f"{name} {p.opts[-1]}")
    assert options > 60 and missing == []


def test_version_from_package_metadata() -> None:
    out = run_strata("--version").stdout
    assert out == f"strata {importlib.metadata.version('strata')}\n"


def _both(*args: object, at: int) -> object:
    """The JSON printed with ``--json`` after the command (inserted at ``at``), checked equal
    to the global ``strata --json`` form."""
    argv = [str(a) for a in args]
    after = run_strata(*argv[:at], "--json", *argv[at:]).stdout
    before = run_strata("--json", *argv).stdout
    data = json.loads(after)
    assert json.loads(before) == data
    return data


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, str, str]:
    repo = tmp_path / "repo"
    run_strata("--repo", repo, "init")
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/a").write_text("a\n")
    (tree / "etc/l").symlink_to("a")
    one = run_strata("--repo", repo, "commit", "-b", "os/x", "-s", "one", "--timestamp", "1",
                     "--add-metadata", "version=1", tree).stdout.strip()
    (tree / "etc/b").write_text("b\n")
    (tree / "etc/a").unlink()
    two = run_strata("--repo", repo, "commit", "-b", "os/x", "-s", "two", "--timestamp", "2",
                     tree).stdout.strip()
    run_strata("--repo", repo, "remote", "add", "--no-sign-verify", "origin",
               "http://127.0.0.1:9/repo")
    return repo, one, two


def test_store_read_commands_take_json_after_the_command(store: tuple[Path, str, str]) -> None:
    repo, one, two = store
    r = ("--repo", repo)
    assert _both(*r, "refs", at=3) == {"os/x": two}
    log = _both(*r, "log", "os/x", at=3)
    assert [list(e) for e in log] == [COMMIT_KEYS, COMMIT_KEYS]  # type: ignore[union-attr]
    assert [e["checksum"] for e in log] == [two, one]  # type: ignore[union-attr]
    shown = _both(*r, "show", one[:8], at=3)
    assert list(shown) == COMMIT_KEYS  # type: ignore[arg-type]
    assert shown["metadata"]["version"] == "1" and shown["parent"] is None  # type: ignore[index]
    ls = _both(*r, "ls", "-R", "os/x", "/etc", at=3)
    assert [e["path"] for e in ls] == ["/etc", "/etc/b", "/etc/l"]  # type: ignore[union-attr]
    assert all(list(e) == LS_KEYS for e in ls)  # type: ignore[union-attr]
    assert ls[2]["symlink"] == "a"  # type: ignore[index]
    assert _both(*r, "diff", one, "os/x", at=3) == [
        {"kind": "D", "path": "/etc/a"}, {"kind": "A", "path": "/etc/b"}]
    assert _both(*r, "diff", "os/x^", "os/x", at=3) == _both(*r, "diff", one, two, at=3)
    fsck = _both(*r, "fsck", at=3)
    assert fsck == {"ok": True, "commits": 2, "objects": fsck["objects"],  # type: ignore[index]
                    "problems": []}
    remotes = _both(*r, "remote", "list", at=4)
    assert [list(x) for x in remotes] == [REMOTE_KEYS]  # type: ignore[union-attr]
    assert remotes[0]["name"] == "origin" and remotes[0]["sign-verify"] is False  # type: ignore[index]


def test_fsck_json_lists_problems_and_still_exits_1(store: tuple[Path, str, str]) -> None:
    repo, one, _two = store
    obj = repo / "objects" / one[:2] / f"{one[2:]}.commit"
    obj.chmod(0o644)
    obj.write_bytes(obj.read_bytes() + b"x")
    p = run_strata("--repo", repo, "fsck", "--json", check=False)
    assert p.returncode == 1 and p.stderr.startswith("error: fsck: ")
    data = json.loads(p.stdout)
    assert data["ok"] is False and any(one in line for line in data["problems"])


def _transaction(h: Host, *args: str) -> dict:  # type: ignore[type-arg]
    before = h.status()
    data = json.loads(h.strata(*args, "--dry-run", "--json").stdout)
    assert json.loads(h.strata("--json", *args, "--dry-run").stdout) == data
    assert h.status() == before  # a dry run changes nothing
    assert list(data)[:len(TRANSACTION_KEYS)] == TRANSACTION_KEYS
    assert list(data["etc"]) == ["carried", "conflicts", "blocked"]
    return data  # type: ignore[no-any-return]


def test_dry_run_json_is_the_transaction(host: Host) -> None:  # noqa: F811
    base = host.status()[0]["checksum"]
    data = _transaction(host, "install", "hello")
    assert data["base"] == base and data["origin"] == "os/stable" and data["kind"] == "deb"
    assert data["requested-packages"] == ["hello"]
    assert sorted((p["name"], p["evr"], p["arch"]) for p in data["install"]) == [
        ("hello", "2.10-3", "amd64"), ("hello-doc", "2.10-3", "all"), ("less", "590-2", "amd64"),
        ("libgreet", "1.0-1", "amd64")]
    assert all(list(p) == [*PKG_KEYS, "source"] for p in data["install"])
    assert data["remove"] == [] and data["download-size"] > 0 and data["growth"] >= 0
    assert all(p["source"] for p in data["install"])

    host.strata("install", "hello")
    data = _transaction(host, "uninstall", "hello")
    assert data["requested-packages"] == [] and data["install"] == []
    host.commit_base("2")
    data = _transaction(host, "upgrade")
    assert data["base"] != base and data["requested-packages"] == ["hello"]
    assert {p["name"] for p in data["install"]} >= {"hello", "libgreet"}


def test_sysroot_read_commands_take_json_and_db_diff_compares_deployments(
        host: Host) -> None:  # noqa: F811
    first = host.status()[0]["checksum"]
    deb = next(d for d in host.debs if d.name.startswith("clash-a"))
    host.strata("install", "less", str(deb))
    s = ("--sysroot", host.sysroot)
    status = _both(*s, "status", at=3)
    new = status["deployments"][0]  # type: ignore[index]
    text = host.strata("status").stdout
    assert "RequestedPackages: less" in text
    assert f"RequestedLocalPackages: {new['requested-local-packages'][0]}" in text
    assert _both(*s, "kargs", at=3) == {"kargs": [], "deployment": None}

    listed = _both(*s, "db", "list", new["checksum"], at=4)
    assert all(list(p) == PKG_KEYS for p in listed)  # type: ignore[union-attr]
    assert {"less", "clash-a"} <= {p["name"] for p in listed}  # type: ignore[union-attr]
    explicit = _both(*s, "db", "diff", first, new["checksum"], at=4)
    assert list(explicit) == DB_DIFF_KEYS  # type: ignore[arg-type]
    assert explicit["from"] == first and explicit["to"] == new["checksum"]  # type: ignore[index]
    assert sorted(p["name"] for p in explicit["added"]) == ["clash-a", "less"]  # type: ignore[index]
    # nothing booted here: the default is compared with the rollback, as rpm-ostree does
    p = host.strata("db", "diff", "--json")
    assert json.loads(p.stdout) == explicit
    assert f"ostree diff commit from: rollback deployment ({first})" in p.stderr
    text = host.strata("db", "diff").stdout
    assert "Added:\n" in text and "  less 590-2 amd64" in text


def test_db_diff_without_arguments_needs_a_second_deployment(host: Host) -> None:  # noqa: F811
    p = host.strata("db", "diff", check=False)
    assert p.returncode == 1
    assert p.stderr.startswith("error: no pending or rollback deployment to compare with")
    p = host.strata("db", "diff", "os/stable", check=False)
    assert p.returncode == 2 and "two commits" in p.stderr


def test_shell_completion_offers_the_per_command_json() -> None:
    env = {"_STRATA_COMPLETE": "bash_complete", "COMP_WORDS": "strata db diff --",
           "COMP_CWORD": "3"}
    assert "plain,--json" in run_strata(env=env).stdout.splitlines()
    assert "complete -o nosort -F _strata_completion strata" in run_strata(
        env={"_STRATA_COMPLETE": "bash_source"}).stdout
    assert run_strata(env={"_STRATA_COMPLETE": "zsh_source"}).stdout.startswith("#compdef strata")
