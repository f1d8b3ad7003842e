"""Hostile package sources: endless or trickling apt and rpm-md metadata end with one
``error:`` line naming the URL, exit 1, peak RSS under 300 MiB, no commit, no partial
download left, the canary untouched; network failures and bad URLs read in plain words."""

from __future__ import annotations

import hashlib
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.store.bounds import Sent, assert_one_error, endless_body, run_bounded, trickle_body
from tests.store.servers import free_port, hostile_server, send
from tests.util import StrataRunner, require_tool

MIB = 1 << 20
SLACK = 64 * MIB  # what loopback socket buffers may hold beyond what the client read


@dataclass
class Attack:
    """Answers by path (a callable answers itself), the error expected, the source kind."""

    kind: str  # "deb" or "rpm"
    answers: dict[str, bytes | Callable]  # type: ignore[type-arg]
    pattern: str
    sent: Sent = field(default_factory=Sent)
    env: dict[str, str] = field(default_factory=dict)
    max_sent: int | None = None


def _packages_release(declared: int) -> bytes:
    return (f"Suite: stable\nCodename: stable\nArchitectures: amd64\nComponents: main\n"
            f"SHA256:\n {hashlib.sha256(b'').hexdigest()} {declared} "
            f"main/binary-amd64/Packages\n").encode()


def _repomd(declared: int) -> bytes:
    return (f'<?xml version="1.0"?><repomd xmlns="http://linux.duke.edu/metadata/repo">'
            f'<data type="primary"><checksum type="sha256">{hashlib.sha256(b"").hexdigest()}'
            f'</checksum><location href="repodata/primary.xml"/><size>{declared}</size></data>'
            f'</repomd>').encode()


def endless_release(a: Attack) -> None:
    a.pattern = r"http://\S+/dists/stable/Release is larger than 16777216 bytes$"
    a.max_sent = 2 * (16 * MIB + SLACK)  # InRelease, then Release
    endless = lambda h: endless_body(h, a.sent, stop_after=1 << 30)  # noqa: E731
    a.answers = {"/dists/stable/InRelease": endless, "/dists/stable/Release": endless}


def endless_packages(a: Attack) -> None:
    a.pattern = (r"http://\S+/dists/stable/main/binary-amd64/Packages: sha256 does not match "
                 r"the index \(larger than the 1000 bytes it declares\)$")
    a.max_sent = SLACK
    a.answers = {"/dists/stable/Release": _packages_release(1000),
                 "/dists/stable/main/binary-amd64/Packages":
                     lambda h: endless_body(h, a.sent, stop_after=1 << 30)}


def trickle_release(a: Attack) -> None:
    a.pattern = (r"transfer too slow \(under 1000 bytes/s for 2 s\) fetching "
                 r"http://\S+/dists/stable/Release$")
    a.env = {"STRATA_HTTP_LOW_SPEED_TIME": "2", "STRATA_HTTP_RETRIES": "0"}
    a.max_sent = 30
    body = _packages_release(1000)
    a.answers = {"/dists/stable/Release": lambda h: trickle_body(h, body, a.sent, seconds=40)}


def endless_repomd(a: Attack) -> None:
    a.kind = "rpm"
    a.pattern = r"http://\S+/repodata/repomd.xml is larger than 16777216 bytes$"
    a.max_sent = 16 * MIB + SLACK
    a.answers = {"/repodata/repomd.xml": lambda h: endless_body(h, a.sent, stop_after=1 << 30)}


def endless_primary(a: Attack) -> None:
    a.kind = "rpm"
    a.pattern = (r"http://\S+/repodata/primary.xml: sha256 does not match the index "
                 r"\(larger than the 2000 bytes it declares\)$")
    a.max_sent = SLACK
    a.answers = {"/repodata/repomd.xml": _repomd(2000),
                 "/repodata/primary.xml": lambda h: endless_body(h, a.sent, stop_after=1 << 30)}


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two trees to commit as bases: one with a dpkg status, one with an empty rpmdb."""
    root = tmp_path_factory.mktemp("bases")
    (root / "deb/var/lib/dpkg").mkdir(parents=True)
    (root / "deb/var/lib/dpkg/status").write_bytes(b"")
    require_tool("rpmdb")
    subprocess.run(["rpmdb", "--initdb", "--dbpath", str(root / "rpm/usr/lib/sysimage/rpm")],
                   check=True, capture_output=True)
    return {"deb": root / "deb", "rpm": root / "rpm"}


def _repo(tmp_path: Path, bases: dict[str, Path], kind: str, strata: StrataRunner) -> Path:
    repo = tmp_path / "repo"
    strata("--repo", repo, "init", "--mode", "bare-user")
    strata("--repo", repo, "commit", "-b", "base", bases[kind])
    return repo


def _source(kind: str, url: str) -> str:
    return f"deb [trusted=yes] {url} stable main" if kind == "deb" else f"rpm-md {url}"


def _compose(repo: Path, spec: str) -> list[str | Path]:
    return ["--repo", repo, "compose", "-b", "x", "--base", "base", "--install", "hello",
            "--source", spec, "--dry-run"]


@pytest.mark.parametrize("case", [endless_release, endless_packages, trickle_release,
                                  endless_repomd, endless_primary], ids=lambda c: c.__name__)
def test_bounded_against_hostile_source(case: Callable, bases: dict[str, Path],  # type: ignore[type-arg]
                                        tmp_path: Path, strata: StrataRunner) -> None:
    attack = Attack("deb", {}, "")
    case(attack)
    repo = _repo(tmp_path, bases, attack.kind, strata)
    canary = tmp_path / "canary"
    canary.write_bytes(b"canary\n")
    refs = sorted(p.name for p in (repo / "refs/heads").iterdir())

    def hook(h, path, file):  # type: ignore[no-untyped-def]
        got = attack.answers.get(path)
        if got is None:
            send(h, 404, b"")
        elif isinstance(got, bytes):
            send(h, 200, got)
        else:
            got(h)
        return True

    with hostile_server(tmp_path, hook) as srv:
        m = run_bounded(case.__name__, _compose(repo, _source(attack.kind, srv.url)), tmp_path,
                        env=attack.env)
    assert_one_error(m, attack.pattern)
    if attack.max_sent is not None:
        sent = attack.sent.wait()
        assert sent.hung_up and sent.bytes < attack.max_sent, sent
    assert canary.read_bytes() == b"canary\n"
    assert sorted(p.name for p in (repo / "refs/heads").iterdir()) == refs
    assert not [p for p in (repo / "tmp").rglob("*") if p.name.startswith((".part-", "fetch-"))]


@pytest.mark.parametrize("kind", ["deb", "rpm"])
def test_network_failures_in_plain_words(kind: str, bases: dict[str, Path], tmp_path: Path,
                                         strata: StrataRunner) -> None:
    repo = _repo(tmp_path, bases, kind, strata)
    url = f"http://127.0.0.1:{free_port()}"
    p = strata(*_compose(repo, _source(kind, url)), check=False,
               env={"STRATA_HTTP_RETRIES": "1"})
    first = "dists/stable/Release" if kind == "deb" else "repodata/repomd.xml"
    assert p.returncode == 1
    assert p.stderr == (f"error: cannot reach {url}/{first}: connection refused "
                        f"(after 2 attempts)\n")
    p = strata(*_compose(repo, _source(kind, "http://[::1")), check=False)
    assert p.returncode == 1
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and re.match(r"error: invalid URL http://\[::1/\S+: ", lines[0]), \
        p.stderr
