"""ed25519 signing as OSTree stores it, checked with openssl; signed pulls."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from store.commit import commit_directory
from store.repo import Repo, RepoMode
from store.sign import generate_keypair, load_public_keys, load_secret_key, public_key_b64
from tests.store.servers import fill_tree, http_server, ostree
from tests.util import StrataRunner, require_tool, run


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name in ("good", "other"):
        generate_keypair(tmp_path / f"{name}.sec", tmp_path / f"{name}.pub")
        out[name] = tmp_path / name
    return out


def served_repo(tmp_path: Path, n: int = 1) -> tuple[Path, list[str]]:
    tree = tmp_path / "tree"
    fill_tree(tree, 8)
    repo = Repo.init(tmp_path / "served", RepoMode.ARCHIVE)
    commits = []
    for i in range(n):
        (tree / "etc/rev").write_text(str(i))
        res = commit_directory(repo, tree, branch="main", timestamp=1700000000 + i)
        commits.append(res.checksum)
    return repo.path, commits


def test_key_files_round_trip(keys: dict[str, Path]) -> None:
    sec = load_secret_key(Path(f"{keys['good']}.sec"))
    raw = base64.b64decode(Path(f"{keys['good']}.sec").read_text())
    assert len(raw) == 64  # libsodium layout: seed + public key
    assert public_key_b64(sec) == Path(f"{keys['good']}.pub").read_text().strip()
    assert len(load_public_keys([Path(f"{keys['good']}.pub"), Path(f"{keys['other']}.pub")])) == 2


def _parse_aay(text: str) -> list[bytes]:
    """GVariant text of an ``aay`` (GLib prints some as b'...' bytestrings), parsed by GLib."""
    prog = ("import sys, json; from gi.repository import GLib; "
            "v = GLib.Variant.parse(GLib.VariantType('aay'), sys.stdin.read()); "
            "print(json.dumps([bytes(x).hex() for x in v.unpack()]))")
    out = run(["/usr/bin/python3", "-c", prog], input=text).stdout
    return [bytes.fromhex(h) for h in json.loads(out)]


def test_sign_verifies_with_openssl(tmp_path: Path, keys: dict[str, Path],
                                    strata: StrataRunner) -> None:
    require_tool("ostree", "openssl")
    repo, (csum,) = served_repo(tmp_path)
    strata("--repo", repo, "sign", "--key", f"{keys['good']}.sec", "main")
    strata("--repo", repo, "sign", "--key", f"{keys['other']}.sec", "main")
    shown = ostree("show", f"--repo={repo}", "--print-detached-metadata-key=ostree.sign.ed25519",
                   "main")
    sigs = _parse_aay(shown)
    assert len(sigs) == 2 and all(len(s) == 64 for s in sigs)
    pub = Ed25519PublicKey.from_public_bytes(
        base64.b64decode(Path(f"{keys['good']}.pub").read_text()))
    (tmp_path / "pub.pem").write_bytes(pub.public_bytes(Encoding.PEM,
                                                        PublicFormat.SubjectPublicKeyInfo))
    (tmp_path / "sig").write_bytes(sigs[0])
    commit_obj = repo / "objects" / csum[:2] / f"{csum[2:]}.commit"
    out = run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", tmp_path / "pub.pem",
               "-rawin", "-in", commit_obj, "-sigfile", tmp_path / "sig"])
    assert "Signature Verified Successfully" in out.stdout
    ok = strata("--repo", repo, "verify", "--pubkey", f"{keys['good']}.pub", "main")
    assert ok.stdout.strip() == csum


def test_verify_refuses_unsigned_and_wrong_key(tmp_path: Path, keys: dict[str, Path],
                                               strata: StrataRunner) -> None:
    repo, (csum,) = served_repo(tmp_path)
    p = strata("--repo", repo, "verify", "--pubkey", f"{keys['good']}.pub", "main", check=False)
    assert p.returncode == 1 and p.stderr.strip() == \
        f"error: no ed25519 signature on ref main (commit {csum})"
    strata("--repo", repo, "sign", "--key", f"{keys['other']}.sec", "main")
    p = strata("--repo", repo, "verify", "--pubkey", f"{keys['good']}.pub", "main", check=False)
    assert p.returncode == 1 and "does not verify" in p.stderr and csum in p.stderr


def signed_remote_client(tmp_path: Path, url: str, pub: Path, strata: StrataRunner) -> Path:
    dst = tmp_path / "client"
    Repo.init(dst, RepoMode.BARE_USER)
    strata("--repo", dst, "remote", "add", "--sign-pubkey", pub, "origin", url)
    return dst


def test_signed_pull_accepts_good_signature(tmp_path: Path, keys: dict[str, Path],
                                            strata: StrataRunner) -> None:
    repo, (csum,) = served_repo(tmp_path)
    strata("--repo", repo, "sign", "--key", f"{keys['good']}.sec", "main")
    strata("--repo", repo, "summary", "--update", "--sign-key", f"{keys['good']}.sec")
    with http_server(repo) as srv:
        dst = signed_remote_client(tmp_path, srv.url, Path(f"{keys['good']}.pub"), strata)
        strata("--repo", dst, "pull", "origin", "main")
    strata("--repo", dst, "verify", "--pubkey", f"{keys['good']}.pub", "origin:main")
    assert (dst / "refs/remotes/origin/main").read_text().strip() == csum


@pytest.mark.parametrize("case", ["unsigned", "wrong-key", "tampered", "unsigned-summary"])
def test_signed_pull_refuses(case: str, tmp_path: Path, keys: dict[str, Path],
                             strata: StrataRunner) -> None:
    repo, (c1, c2) = served_repo(tmp_path, 2)
    good, other = f"{keys['good']}.sec", f"{keys['other']}.sec"
    if case == "wrong-key":
        strata("--repo", repo, "sign", "--key", other, "main")
    elif case == "tampered":  # a valid signature, but of another commit
        strata("--repo", repo, "sign", "--key", good, c1)
        objs = repo / "objects"
        shutil.copy(objs / c1[:2] / f"{c1[2:]}.commitmeta", objs / c2[:2] / f"{c2[2:]}.commitmeta")
    elif case == "unsigned-summary":
        strata("--repo", repo, "sign", "--key", good, "main")
    strata("--repo", repo, "summary", "--update",
           *(() if case == "unsigned-summary" else ("--sign-key", good)))
    with http_server(repo) as srv:
        dst = signed_remote_client(tmp_path, srv.url, Path(f"{keys['good']}.pub"), strata)
        p = strata("--repo", dst, "pull", "origin", "main", check=False)
    assert p.returncode == 1
    line = p.stderr.strip()
    assert "\n" not in line and line.startswith("error: ")
    if case == "unsigned-summary":
        assert "remote origin" in line and "has no summary.sig" in line
    else:
        assert f"ref main (commit {c2}) of remote origin" in line
        assert ("no ed25519 signature" if case == "unsigned" else "does not verify") in line
    assert not (dst / "refs/remotes/origin/main").exists()
    assert not list((dst / "objects").rglob("*.commit"))
