"""Remote configuration, checked against the real ostree reading the same config."""

from __future__ import annotations

from pathlib import Path

import pytest

from store.replication.remote import get_remote, list_remotes
from store.repo import Repo, RepoMode
from store.sign import generate_keypair
from tests.store.servers import ostree
from tests.util import StrataRunner, require_tool


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    require_tool("ostree")
    Repo.init(tmp_path / "repo", RepoMode.BARE_USER)
    return tmp_path / "repo"


def test_add_list_delete_seen_by_ostree(repo: Path, tmp_path: Path, strata: StrataRunner) -> None:
    generate_keypair(tmp_path / "k.sec", tmp_path / "k.pub")
    strata("--repo", repo, "remote", "add", "--no-sign-verify", "plain", "http://127.0.0.1:1/r")
    strata("--repo", repo, "remote", "add", "--sign-pubkey", tmp_path / "k.pub", "signed",
           "file:///srv/repo")
    assert strata("--repo", repo, "remote", "list").stdout.split() == ["plain", "signed"]
    assert ostree("remote", "list", f"--repo={repo}").split() == ["plain", "signed"]
    assert ostree("remote", "show-url", f"--repo={repo}", "signed").strip() == "file:///srv/repo"
    assert ostree("config", f"--repo={repo}", "get", 'remote "signed".verification-ed25519-file'
                  ).strip() == str(tmp_path / "k.pub")
    assert ostree("config", f"--repo={repo}", "get",
                  'remote "signed".sign-verify').strip() == "true"
    assert ostree("config", f"--repo={repo}", "get", 'remote "plain".gpg-verify').strip() == "false"
    r = get_remote(repo, "signed")
    assert r.sign_verify and r.pubkey_file == str(tmp_path / "k.pub")
    assert not get_remote(repo, "plain").sign_verify
    strata("--repo", repo, "remote", "delete", "plain")
    assert ostree("remote", "list", f"--repo={repo}").split() == ["signed"]
    assert ostree("config", f"--repo={repo}", "get", "core.mode").strip() == "bare-user"


def test_remote_added_by_ostree_is_listed(repo: Path, strata: StrataRunner) -> None:
    ostree("remote", "add", f"--repo={repo}", "--no-gpg-verify", "fromostree",
           "https://h.invalid/x")
    assert [(r.name, r.url) for r in list_remotes(repo)] == [("fromostree", "https://h.invalid/x")]
    out = strata("--repo", repo, "remote", "list", "-u").stdout
    assert out == "fromostree\thttps://h.invalid/x\n"


@pytest.mark.parametrize("args,message", [
    (["add", "--no-sign-verify", "dup", "http://x/"], "error: remote dup already exists"),
    (["add", "bad/name", "http://x/"], "error: invalid remote name 'bad/name'"),
    (["add", "nourl", "/just/a/path"], "error: remote URL must be"),
    (["delete", "ghost"], "error: remote ghost not found"),
])
def test_remote_errors(repo: Path, strata: StrataRunner, args: list[str], message: str) -> None:
    strata("--repo", repo, "remote", "add", "--no-sign-verify", "dup", "http://x/")
    p = strata("--repo", repo, "remote", *args, check=False)
    assert p.returncode == 1 and p.stderr.startswith(message), p.stderr


def test_sign_pubkey_and_no_sign_verify_exclusive(repo: Path, tmp_path: Path,
                                                  strata: StrataRunner) -> None:
    generate_keypair(tmp_path / "k.sec", tmp_path / "k.pub")
    p = strata("--repo", repo, "remote", "add", "--sign-pubkey", tmp_path / "k.pub",
               "--no-sign-verify", "x", "http://x/", check=False)
    assert p.returncode == 2
