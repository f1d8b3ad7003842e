"""Hostile remotes that try to exhaust memory or time: each pull ends with one ``error:`` line
naming the URL, exit 1, peak RSS under 300 MiB, no ref moved, the canary untouched and the
repository clean for the real ``ostree fsck``."""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from store.gvariant import Variant
from store.replication.delta_format import Superblock, delta_dir, delta_name
from store.replication.summary import DELTAS_KEY, Summary
from tests.store.bounds import (
    Sent,
    assert_one_error,
    deflate_bomb,
    endless_body,
    run_bounded,
    trickle_body,
    xz_bomb,
)
from tests.store.replication.test_pull_hostile import client_at_c1, obj_path, seed, source  # noqa: F401
from tests.store.servers import OstreeSource, free_port, hostile_server, ostree, send
from tests.util import StrataRunner

MIB = 1 << 20
SLACK = 64 * MIB  # what loopback socket buffers may hold beyond what the client read


@dataclass
class Attack:
    """A hook for hostile_server, the error it must cause, and a check on what was sent."""

    hook: Callable  # type: ignore[type-arg]
    pattern: str
    sent: Sent = field(default_factory=Sent)
    env: dict[str, str] = field(default_factory=dict)
    max_sent: int | None = None  # the client must hang up before this many bytes
    serve: Path | None = None  # another directory to serve (the delta source)


def answer(path: str, fn: Callable) -> Callable:  # type: ignore[type-arg]
    def hook(h, p, file):  # type: ignore[no-untyped-def]
        if p == path:
            fn(h)
            return True
        return False
    return hook


def endless_summary(src: OstreeSource, _d: Path) -> Attack:
    a = Attack(None, r"http://\S+/summary is larger than 33554432 bytes", max_sent=32 * MIB + SLACK)
    a.hook = answer("/summary", lambda h: endless_body(h, a.sent, stop_after=1 << 30))
    return a


def endless_dirtree(src: OstreeSource, _d: Path) -> Attack:
    path = obj_path(src.new_dirtree, "dirtree")
    a = Attack(None, rf"http://\S+{path} is larger than 10485760 bytes", max_sent=10 * MIB + SLACK)
    a.hook = answer(path, lambda h: endless_body(h, a.sent, stop_after=1 << 30))
    return a


def _filez_bomb(src: OstreeSource, declared: int | None, total: int) -> bytes:
    real = src.object_file(src.new_file, "filez").read_bytes()
    hlen = 8 + int.from_bytes(real[:4], "big")
    header = bytearray(real[:hlen])
    if declared is not None:
        header[8:16] = declared.to_bytes(8, "big")
    return bytes(header) + deflate_bomb(total)


def filez_bomb(src: OstreeSource, _d: Path) -> Attack:
    """2 MB that inflate to 2 GiB, under the object's real header (41 bytes declared)."""
    path, body = obj_path(src.new_file, "filez"), _filez_bomb(src, None, 2 << 30)
    return Attack(answer(path, lambda h: send(h, 200, body)),
                  rf"http://\S+{path} is larger than its header allows")


def filez_bomb_declared(src: OstreeSource, _d: Path) -> Attack:
    """1 MB inflating to 1 GiB whose header declares the 1 GiB: inflated piece by piece,
    hashed, refused."""
    path, body = obj_path(src.new_file, "filez"), _filez_bomb(src, 1 << 30, 1 << 30)
    return Attack(answer(path, lambda h: send(h, 200, body)),
                  rf"file object {src.new_file} from http://\S+{path} does not match its checksum")


def xz_bomb_part(src: OstreeSource, delta_src: Path) -> Attack:
    """Part 0 of a real ostree delta replaced by 600 kB of xz that decompress to 4 GiB; the
    superblock names its checksum and size, the summary the superblock's."""
    name = delta_name(src.c1, src.c2)
    base = delta_dir(name)
    sb = Superblock.from_bytes((delta_src / base / "superblock").read_bytes())
    bomb = b"x" + xz_bomb(4 << 30)
    part = replace(sb.parts[0], checksum=hashlib.sha256(bomb).hexdigest(), size=len(bomb))
    sb_bytes = replace(sb, parts=(part, *sb.parts[1:])).to_bytes()
    s = Summary.from_bytes((delta_src / "summary").read_bytes())
    deltas = {**s.deltas, name: hashlib.sha256(sb_bytes).hexdigest()}
    meta = {**s.metadata, DELTAS_KEY: Variant("a{sv}", {k: Variant("ay", bytes.fromhex(v))
                                                          for k, v in deltas.items()})}
    summary = Summary(s.refs, deltas, meta).to_bytes()
    answers = {"/summary": summary, f"/{base}/superblock": sb_bytes, f"/{base}/0": bomb}

    def hook(h, p, file):  # type: ignore[no-untyped-def]
        if p in answers:
            send(h, 200, answers[p])
            return True
        return False
    return Attack(hook, rf"static delta part http://\S+/{re.escape(base)}/0 (inflates beyond|"
                        r"decompresses past the) \d+ bytes( declared)?$",
                  serve=delta_src)


def trickle_summary(src: OstreeSource, _d: Path) -> Attack:
    body = (src.path / "summary").read_bytes()
    a = Attack(None, r"transfer too slow \(under 1000 bytes/s for 2 s\) fetching "
                     r"http://\S+/summary$",
               env={"STRATA_HTTP_LOW_SPEED_TIME": "2", "STRATA_HTTP_RETRIES": "0"}, max_sent=30)
    a.hook = answer("/summary", lambda h: trickle_body(h, body, a.sent, seconds=40))
    return a


def trickle_dirtree(src: OstreeSource, _d: Path) -> Attack:
    """A trickle on a pipelined connection."""
    path = obj_path(src.new_dirtree, "dirtree")
    body = src.object_file(src.new_dirtree, "dirtree").read_bytes()
    a = Attack(None, rf"transfer too slow \(under 1000 bytes/s for 2 s\) fetching "
                     rf"http://\S+{path}$",
               env={"STRATA_HTTP_LOW_SPEED_TIME": "2", "STRATA_HTTP_RETRIES": "0"}, max_sent=30)
    a.hook = answer(path, lambda h: trickle_body(h, body, a.sent, seconds=40))
    return a


@pytest.fixture(scope="module")
def delta_src(source: OstreeSource, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the source with ostree's static delta from c1 to c2 in its summary."""
    d = tmp_path_factory.mktemp("delta-src") / "repo"
    shutil.copytree(source.path, d, symlinks=True)
    ostree("static-delta", "generate", f"--repo={d}", f"--from={source.c1}",
           f"--to={source.c2}")
    ostree("summary", "-u", f"--repo={d}")
    return d


@pytest.mark.parametrize("case", [endless_summary, endless_dirtree, filez_bomb,
                                  filez_bomb_declared, xz_bomb_part, trickle_summary,
                                  trickle_dirtree], ids=lambda c: c.__name__)
def test_bounded_against_hostile_remote(case: Callable, source: OstreeSource,  # type: ignore[type-arg]
                                        seed: Path, delta_src: Path, tmp_path: Path,  # noqa: F811
                                        strata: StrataRunner) -> None:
    dst = client_at_c1(tmp_path, seed, strata)
    canary = tmp_path / "canary"
    canary.write_bytes(b"canary\n")
    attack = case(source, delta_src)
    with hostile_server(attack.serve or source.path, attack.hook) as srv:
        strata("--repo", dst, "remote", "add", "--no-sign-verify", "origin", srv.url)
        m = run_bounded(case.__name__, ["--repo", dst, "pull", "origin", "main"], tmp_path,
                        env=attack.env)
    assert_one_error(m, attack.pattern)
    if attack.max_sent is not None:
        sent = attack.sent.wait()
        assert sent.hung_up and sent.bytes < attack.max_sent, sent
    assert canary.read_bytes() == b"canary\n"
    assert (dst / "refs/remotes/origin/main").read_text().strip() == source.c1
    assert sorted(p.name for p in (dst / "tmp").iterdir()) == ["cache"]
    ostree("fsck", f"--repo={dst}")


def test_pull_network_failures_in_plain_words(tmp_path: Path, strata: StrataRunner) -> None:
    dst = tmp_path / "dst"
    strata("--repo", dst, "init", "--mode", "archive")
    url = f"http://127.0.0.1:{free_port()}"
    strata("--repo", dst, "remote", "add", "--no-sign-verify", "dead", url)
    p = strata("--repo", dst, "pull", "dead", "main", check=False,
               env={"STRATA_HTTP_RETRIES": "1"})
    assert p.returncode == 1
    assert p.stderr == f"error: cannot reach {url}/summary: connection refused (after 2 attempts)\n"
    p = strata("--repo", dst, "remote", "add", "--no-sign-verify", "bad", "http://[::1",
               check=False)
    assert p.stderr == "error: invalid remote URL 'http://[::1': Invalid IPv6 URL\n"
    with (dst / "config").open("a") as f:  # written by hand: the fetcher refuses it too
        f.write('\n[remote "bad"]\nurl=http://[::1\ngpg-verify=false\nsign-verify=false\n')
    p = strata("--repo", dst, "pull", "bad", "main", check=False)
    assert p.returncode == 1
    assert p.stderr == "error: invalid URL http://[::1/: Invalid IPv6 URL\n"
    assert sorted(p.name for p in (dst / "tmp").iterdir()) == ["cache"]
