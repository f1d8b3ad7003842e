"""The summary file: byte-compatible parsing of ostree's, and ostree reading strata's."""

from __future__ import annotations

from pathlib import Path

import pytest

from store.gvariant import decode
from store.replication.summary import Summary, parse_summary_sig
from store.repo import Repo
from store.sign import any_valid, generate_keypair, load_public_keys, signatures_in
from tests.store.servers import OstreeSource, make_ostree_source, ostree
from tests.util import StrataRunner, require_tool


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> OstreeSource:
    require_tool("ostree")
    src = make_ostree_source(tmp_path_factory.mktemp("summary-src"))
    ostree("static-delta", "generate", f"--repo={src.path}", "--from", src.c1, "--to", src.c2)
    ostree("summary", "-u", f"--repo={src.path}")
    return src


def test_ostree_summary_round_trips(source: OstreeSource) -> None:
    data = (source.path / "summary").read_bytes()
    s = Summary.from_bytes(data)
    assert s.to_bytes() == data
    assert s.refs["main"].csum == source.c2 and s.refs["main"].version == "2.0"
    assert s.refs["main"].timestamp == 1700000100
    assert s.refs["main"].size == (source.path / "objects" / source.c2[:2] /
                                   f"{source.c2[2:]}.commit").stat().st_size
    assert list(s.deltas) == [f"{source.c1}-{source.c2}"]


def test_strata_summary_matches_ostree(source: OstreeSource, strata: StrataRunner,
                                       tmp_path: Path) -> None:
    ours_repo = Repo.open(source.path)
    theirs = Summary.from_bytes((source.path / "summary").read_bytes())
    strata("--repo", source.path, "summary", "--update")
    try:
        ours = Summary.from_bytes((source.path / "summary").read_bytes())
        assert ours.refs == theirs.refs
        assert ours.deltas == theirs.deltas
        for key in ("ostree.summary.mode", "ostree.summary.tombstone-commits"):
            assert ours.metadata[key] == theirs.metadata[key]
        view = ostree("summary", "--view", f"--repo={source.path}")
        size = theirs.refs["main"].size
        assert f"* main\n    Latest Commit ({size} bytes):\n      {source.c2}" in view
        assert "Version (ostree.commit.version): 2.0" in view
        assert f"{source.c1}-{source.c2}" in view
        assert "Last-Modified (ostree.summary.last-modified):" in view
    finally:
        ostree("summary", "-u", f"--repo={ours_repo.path}")


def test_signed_summary(source: OstreeSource, strata: StrataRunner, tmp_path: Path) -> None:
    generate_keypair(tmp_path / "k.sec", tmp_path / "k.pub")
    strata("--repo", source.path, "summary", "--update", "--sign-key", tmp_path / "k.sec")
    try:
        data = (source.path / "summary").read_bytes()
        sig = parse_summary_sig((source.path / "summary.sig").read_bytes())
        assert any_valid(load_public_keys([tmp_path / "k.pub"]), data, signatures_in(sig))
        assert decode("a{sv}", (source.path / "summary.sig").read_bytes()).keys() == \
            {"ostree.sign.ed25519"}
        strata("--repo", source.path, "summary", "--update")
        assert not (source.path / "summary.sig").exists()
    finally:
        ostree("summary", "-u", f"--repo={source.path}")
