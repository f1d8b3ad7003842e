"""Verification as strict as ostree's: ref and collection bindings, a signed summary when
signatures are verified, no silent downgrade, pulls by checksum, no keyless remote, and
``commit --sign-key``.

Every hostile remote is built here and served on 127.0.0.1.  After each attack no ref
moved, a canary file beside the repository is intact and the real ``ostree fsck`` finds the
repository clean.  The real ostree (over HTTP, where it reads the remote's configured
collection ID) is the oracle for bindings, checksum pulls and ``--timestamp-check``.
"""

from __future__ import annotations

import base64
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from store.commit import commit_directory
from store.replication.summary import update_summary
from store.repo import Repo, RepoMode
from store.sign import generate_keypair, sign_commit
from tests.store.servers import (
    fill_tree,
    hostile_server,
    http_server,
    make_ostree_source,
    ostree,
)
from tests.store.test_sign import _parse_aay
from tests.util import StrataRunner, require_tool, run, run_strata

CANARY = "canary: nothing may write here\n"


@dataclass
class Client:
    """A strata repository with remote ``origin`` and a canary file beside it."""

    repo: Path
    canary: Path

    def strata(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_strata("--repo", self.repo, *args, check=check)

    def refs(self) -> dict[str, str]:
        return Repo.open(self.repo).list_refs()

    def refused(self, *args: str) -> str:
        """Run a command that must fail with one ``error:`` line; return that line."""
        p = self.strata(*args, check=False)
        line = p.stderr.strip()
        assert p.returncode == 1 and "\n" not in line and line.startswith("error: "), p.stderr
        return line

    def assert_intact(self, refs_before: dict[str, str]) -> None:
        assert self.refs() == refs_before
        assert self.canary.read_text() == CANARY
        ostree("fsck", f"--repo={self.repo}")


def make_client(tmp_path: Path, url: str, *remote_args: str | Path, name: str = "client") -> Client:
    repo = tmp_path / name
    Repo.init(repo, RepoMode.ARCHIVE)
    canary = tmp_path / f"{name}-canary"
    canary.write_text(CANARY)
    run_strata("--repo", repo, "remote", "add", *remote_args, "origin", url)
    return Client(repo, canary)


def ostree_client(tmp_path: Path, url: str, *remote_args: str, name: str = "theirs") -> Path:
    repo = tmp_path / name
    ostree("init", f"--repo={repo}", "--mode=archive")
    ostree("remote", "add", f"--repo={repo}", "--no-gpg-verify", *remote_args, "origin", url)
    return repo


def ostree_fails(*args: str | Path) -> str:
    p = subprocess.run(["ostree", *map(str, args)], capture_output=True, text=True)
    assert p.returncode != 0, p.stdout
    return p.stderr


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    generate_keypair(tmp_path / "k.sec", tmp_path / "k.pub")
    return tmp_path / "k.sec", tmp_path / "k.pub"


# ---- ref binding -------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["objects", "static-delta"])
def test_commit_bound_to_another_ref_is_refused_like_ostree(via: str, tmp_path: Path) -> None:
    require_tool("ostree")
    srv, tree = tmp_path / "srv", tmp_path / "tree"
    fill_tree(tree, 4)
    ostree("init", f"--repo={srv}", "--mode=archive")
    good = ostree("commit", f"--repo={srv}", "-b", "main", "--timestamp=@1700000000",
                  tree).strip()
    (tree / "etc/evil").write_text("the attacker's tree\n")
    evil = ostree("commit", f"--repo={srv}", "-b", "other", "--timestamp=@1700000100",
                  tree).strip()
    ostree("summary", "-u", f"--repo={srv}")
    with http_server(srv) as served:
        ours, theirs = make_client(tmp_path, served.url, "--no-sign-verify"), \
            ostree_client(tmp_path, served.url)
        ours.strata("pull", "origin", "main")
        ostree("pull", f"--repo={theirs}", "origin", "main")
        (srv / "refs/heads/main").write_text(evil + "\n")  # serve other's commit as main
        if via == "static-delta":  # offered as an update from what the clients have
            ostree("static-delta", "generate", f"--repo={srv}", f"--from={good}", f"--to={evil}")
        ostree("summary", "-u", f"--repo={srv}")
        before = ours.refs()
        line = ours.refused("pull", "origin", "main")
        assert line == (f"error: commit {evil} from remote origin has no requested ref main in "
                        f"its ref binding metadata (other)")
        ours.assert_intact(before)
        assert ("Commit has no requested ref ‘main’ in ref binding metadata (‘other’)"
                in ostree_fails("pull", f"--repo={theirs}", "origin", "main"))
        assert ostree("rev-parse", f"--repo={theirs}", "origin:main").strip() == good
        ours.strata("pull", "origin", "other")  # under its own name it is fine, in both
        ostree("pull", f"--repo={theirs}", "origin", "other")
    assert ours.refs() == {"origin:main": good, "origin:other": evil}
    ostree("fsck", f"--repo={ours.repo}")


# ---- collection binding ------------------------------------------------------------------


@pytest.mark.parametrize("case", ["other-collection", "unbound"])
def test_collection_binding_is_checked_like_ostree(case: str, tmp_path: Path) -> None:
    require_tool("ostree")
    srv, tree = tmp_path / "srv", tmp_path / "tree"
    fill_tree(tree, 4)
    extra = ["--collection-id=org.example.Other"] if case == "other-collection" else []
    ostree("init", f"--repo={srv}", "--mode=archive", *extra)
    csum = ostree("commit", f"--repo={srv}", "-b", "main", "--timestamp=@1700000000",
                  tree).strip()
    ostree("summary", "-u", f"--repo={srv}")
    with http_server(srv) as served:
        ours = make_client(tmp_path, served.url, "--no-sign-verify", "--collection-id",
                           "org.example.Os")
        theirs = ostree_client(tmp_path, served.url, "--collection-id=org.example.Os")
        line = ours.refused("pull", "origin", "main")
        oracle = ostree_fails("pull", f"--repo={theirs}", "origin", "main")
        if case == "other-collection":
            assert line == (f"error: commit {csum} from remote origin has collection ID "
                            f"org.example.Other in its collection binding, the remote has "
                            f"org.example.Os")
            assert ("Commit has collection ID ‘org.example.Other’ in collection binding metadata, "
                    "while the remote it came from has collection ID ‘org.example.Os’") in oracle
        else:
            assert line == (f"error: commit {csum} from remote origin has no collection binding, "
                            f"and the remote has collection ID org.example.Os")
            assert "Expected commit metadata to have collection ID binding information" in oracle
        ours.assert_intact({})
        if case == "other-collection":  # the right collection ID is accepted
            right = make_client(tmp_path, served.url, "--no-sign-verify", "--collection-id",
                                "org.example.Other", name="right")
            right.strata("pull", "origin", "main")
            assert right.refs() == {"origin:main": csum}


# ---- signed remotes need a signed summary ------------------------------------------------


def signed_server(tmp_path: Path, sec: Path, n: int) -> tuple[Path, Path, list[str]]:
    """An archive repository whose main has ``n`` signed commits, 100 s apart, each published
    with a signed summary; returns (repo, tree, commits)."""
    repo, tree = Repo.init(tmp_path / "srv", RepoMode.ARCHIVE), tmp_path / "tree"
    fill_tree(tree, 4)
    commits = [publish(repo, tree, sec, i) for i in range(n)]
    return repo.path, tree, commits


def publish(repo: Repo, tree: Path, sec: Path, i: int) -> str:
    (tree / "etc/rev").write_text(f"revision {i}\n")
    csum = commit_directory(repo, tree, branch="main", timestamp=1700000000 + 100 * i).checksum
    sign_commit(repo.path, "main", sec)
    update_summary(repo, sign_key=sec)
    return csum


def test_signed_remote_without_summary_or_summary_sig_is_refused(
        tmp_path: Path, keys: tuple[Path, Path]) -> None:
    require_tool("ostree")
    sec, pub = keys
    srv, tree, (c1,) = signed_server(tmp_path, sec, 1)
    with http_server(srv) as served:
        ours = make_client(tmp_path, served.url, "--sign-pubkey", pub)
        ours.strata("pull", "origin", "main")
        c2 = publish(Repo.open(srv), tree, sec, 1)  # a newer commit, signed and bound to main
        (srv / "summary").unlink()  # ... offered without a summary: refs/heads/main only
        (srv / "summary.sig").unlink()
        line = ours.refused("pull", "origin", "main")
        assert line == (f"error: signature verification is on, but remote origin "
                        f"({served.url}/summary) has no summary (sign-verify-summary=false in "
                        f"the remote's config disables this)")
        ours.assert_intact({"origin:main": c1})
        update_summary(Repo.open(srv))  # a summary, but no summary.sig
        assert not (srv / "summary.sig").exists()
        assert "has no summary.sig" in ours.refused("pull", "origin", "main")
        ours.assert_intact({"origin:main": c1})
        update_summary(Repo.open(srv), sign_key=sec)
        ours.strata("pull", "origin", "main")
    assert ours.refs() == {"origin:main": c2}


# ---- no silent downgrade ----------------------------------------------------------------


@pytest.mark.parametrize("history", ["had-the-old-commit", "only-the-new"])
def test_replayed_old_signed_summary_is_refused_unless_allow_downgrade(
        history: str, tmp_path: Path, keys: tuple[Path, Path]) -> None:
    require_tool("ostree")
    sec, pub = keys
    srv, tree, (c1,) = signed_server(tmp_path, sec, 1)
    old = {n: (srv / n).read_bytes() for n in ("summary", "summary.sig")}
    with http_server(srv) as served:
        ours = make_client(tmp_path, served.url, "--sign-pubkey", pub)
        theirs = ostree_client(tmp_path, served.url)
        if history == "had-the-old-commit":
            ours.strata("pull", "origin", "main")
        c2 = publish(Repo.open(srv), tree, sec, 1)
        ours.strata("pull", "origin", "main")
        ostree("pull", f"--repo={theirs}", "origin", "main")
        for name, data in old.items():  # the attacker replays the old, validly signed summary
            (srv / name).write_bytes(data)
            later = time.time() + 5  # not "304 Not Modified" to ostree's If-Modified-Since
            os.utime(srv / name, (later, later))
        line = ours.refused("pull", "origin", "main")
        assert line.startswith(f"error: commit of ref main {c1} (2023-11-14 22:13:20 UTC) is "
                               f"older than the current commit of origin:main {c2} "
                               f"(2023-11-14 22:15:00 UTC)")
        assert line.endswith("; use --allow-downgrade to permit")
        ours.assert_intact({"origin:main": c2})
        assert "chronologically older" in ostree_fails("pull", f"--repo={theirs}",
                                                       "--timestamp-check", "origin", "main")
        ours.strata("pull", "--allow-downgrade", "origin", "main")
    assert ours.refs() == {"origin:main": c1}
    ostree("fsck", f"--repo={ours.repo}")


# ---- pulling a commit by checksum --------------------------------------------------------


def test_pull_by_checksum_and_ref_at_checksum_as_ostree(tmp_path: Path) -> None:
    require_tool("ostree")
    src = make_ostree_source(tmp_path)  # main: c1 <- c2, other: its own binding
    with http_server(src.path) as served:
        ours = make_client(tmp_path, served.url, "--no-sign-verify")
        theirs = ostree_client(tmp_path, served.url)
        out = ours.strata("pull", "origin", src.c1).stdout
        ostree("pull", f"--repo={theirs}", "origin", src.c1)
        assert out.startswith("1 commit(s) from origin: ")
        assert ours.refs() == {} and ostree("refs", f"--repo={theirs}").strip() == ""
        assert ours.strata("show", src.c1).stdout.startswith(f"commit {src.c1}\n")
        ours.strata("pull", "origin", f"main@{src.c1}")
        ostree("pull", f"--repo={theirs}", "origin", f"main@{src.c1}")
        assert ours.refs() == {"origin:main": src.c1}
        assert ostree("rev-parse", f"--repo={theirs}", "origin:main").strip() == src.c1
        ours.strata("pull", f"origin:main@{src.c2}")
        assert ours.refs() == {"origin:main": src.c2}
        line = ours.refused("pull", "origin", f"main@{src.c1}")
        assert "is older than the current commit of origin:main" in line
        line = ours.refused("pull", "origin", f"other@{src.c2}")
        assert line == (f"error: commit {src.c2} from remote origin has no requested ref other "
                        f"in its ref binding metadata (main)")
        assert "Commit has no requested ref ‘other’" in ostree_fails(
            "pull", f"--repo={theirs}", "origin", f"other@{src.c2}")
        ours.assert_intact({"origin:main": src.c2})
        ours.strata("pull", "--allow-downgrade", "origin", f"main@{src.c1}")
        assert ours.refs() == {"origin:main": src.c1}
        missing = "ab" * 32
        assert f"commit {missing} is missing on remote origin" in ours.refused(
            "pull", "origin", missing)
    ours.assert_intact({"origin:main": src.c1})


@pytest.mark.parametrize("item,message", [
    ("main@zzz", "error: 'main@zzz' is not REF@CHECKSUM (a checksum is 64 lowercase hex digits)"),
    ("main@" + "AB" * 32, "is not REF@CHECKSUM"),
    ("../../etc@" + "ab" * 32, "error: invalid ref name '../../etc'"),
    ("../../etc", "error: invalid ref name '../../etc'"),
])
def test_malformed_pull_request_is_refused_before_any_request(item: str, message: str,
                                                              tmp_path: Path) -> None:
    require_tool("ostree")
    (tmp_path / "empty").mkdir()
    with hostile_server(tmp_path / "empty") as served:
        ours = make_client(tmp_path, served.url, "--no-sign-verify")
        assert message in ours.refused("pull", "origin", item)
        assert served.requests == []
    ours.assert_intact({})


# ---- remote add --------------------------------------------------------------------------


def test_remote_add_without_key_is_refused_with_how_to(tmp_path: Path) -> None:
    require_tool("ostree")
    repo = Repo.init(tmp_path / "repo", RepoMode.ARCHIVE).path
    config = (repo / "config").read_bytes()
    p = run_strata("--repo", repo, "remote", "add", "origin", "http://127.0.0.1:1/", check=False)
    assert p.returncode == 1 and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr == ("error: remote origin has no public key to verify its content: give its "
                        "ed25519 public key (a base64 line) with --sign-pubkey FILE, or "
                        "--no-sign-verify to accept unsigned content\n")
    assert (repo / "config").read_bytes() == config
    assert ostree("remote", "list", f"--repo={repo}").strip() == ""
    run_strata("--repo", repo, "remote", "add", "--no-sign-verify", "origin", "http://127.0.0.1:1/")
    assert ostree("config", f"--repo={repo}", "get", 'remote "origin".sign-verify').strip() == \
        "false"


# ---- commit --sign-key -------------------------------------------------------------------


def test_commit_sign_key_signature_verifies_with_openssl(tmp_path: Path, keys: tuple[Path, Path],
                                                         strata: StrataRunner) -> None:
    require_tool("ostree", "openssl")
    sec, pub = keys
    repo, tree = Repo.init(tmp_path / "repo", RepoMode.ARCHIVE).path, tmp_path / "tree"
    fill_tree(tree, 4)
    csum = strata("--repo", repo, "commit", "-b", "main", "--sign-key", sec, tree).stdout.strip()
    assert ostree("rev-parse", f"--repo={repo}", "main").strip() == csum
    (sig,) = _parse_aay(ostree("show", f"--repo={repo}",
                               "--print-detached-metadata-key=ostree.sign.ed25519", "main"))
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(pub.read_text()))
    (tmp_path / "pub.pem").write_bytes(key.public_bytes(Encoding.PEM,
                                                        PublicFormat.SubjectPublicKeyInfo))
    (tmp_path / "sig").write_bytes(sig)
    out = run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", tmp_path / "pub.pem", "-rawin",
               "-in", repo / "objects" / csum[:2] / f"{csum[2:]}.commit",
               "-sigfile", tmp_path / "sig"])
    assert "Signature Verified Successfully" in out.stdout
    assert strata("--repo", repo, "verify", "--pubkey", pub, "main").stdout.strip() == csum
    ostree("fsck", f"--repo={repo}")


@pytest.mark.parametrize("bad", ["missing", "not-base64", "empty"])
def test_commit_with_a_bad_sign_key_moves_no_ref(bad: str, tmp_path: Path,
                                                 strata: StrataRunner) -> None:
    require_tool("ostree")
    repo, tree = Repo.init(tmp_path / "repo", RepoMode.ARCHIVE).path, tmp_path / "tree"
    fill_tree(tree, 4)
    first = strata("--repo", repo, "commit", "-b", "main", tree).stdout.strip()
    canary = tmp_path / "canary"
    canary.write_text(CANARY)
    key = tmp_path / "bad.sec"
    if bad != "missing":
        key.write_text("this is not a key!\n" if bad == "not-base64" else "")
    (tree / "etc/changed").write_text("a second commit\n")
    objects = sorted(p.relative_to(repo) for p in (repo / "objects").rglob("*"))
    p = strata("--repo", repo, "commit", "-b", "main", "--sign-key", key, tree, check=False)
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and p.stderr.startswith("error: ")
    assert str(key) in p.stderr and p.stdout == ""
    assert ostree("rev-parse", f"--repo={repo}", "main").strip() == first
    assert sorted(p.relative_to(repo) for p in (repo / "objects").rglob("*")) == objects
    assert not [e for e in (repo / "tmp").iterdir() if e.name.startswith("staging")]
    assert canary.read_text() == CANARY
    ostree("fsck", f"--repo={repo}")


def test_pull_of_a_commit_signed_by_strata_commit(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    """The signature ``commit --sign-key`` writes is the one a verifying pull accepts."""
    require_tool("ostree")
    sec, pub = keys
    srv, tree = Repo.init(tmp_path / "srv", RepoMode.ARCHIVE).path, tmp_path / "tree"
    fill_tree(tree, 4)
    csum = run_strata("--repo", srv, "commit", "-b", "main", "--sign-key", sec,
                      tree).stdout.strip()
    run_strata("--repo", srv, "summary", "--update", "--sign-key", sec)
    with http_server(srv) as served:
        ours = make_client(tmp_path, served.url, "--sign-pubkey", pub)
        ours.strata("pull", "origin", "main")
    ours.assert_intact({"origin:main": csum})
