"""store/replication/inline_read.py: an inline delta read from its file part by part gives
the superblock and parts the whole-file parser gives; a truncated or lying file is one
CorruptObject, never a huge read."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from store.commit import commit_directory
from store.errors import CorruptObject
from store.replication.bundle_delta import apply_inline, generate_inline, parse_inline
from store.replication.delta_format import delta_dir
from store.replication.inline_read import open_inline
from store.repo import Repo, RepoMode
from tests.store.servers import fill_tree
from tests.util import run


@pytest.fixture(scope="module")
def delta(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("inline")
    fill_tree(tmp / "tree", 60)
    repo = Repo.init(tmp / "repo", RepoMode.ARCHIVE)
    csum = commit_directory(repo, tmp / "tree", branch="os", timestamp=1).checksum
    inline = generate_inline(repo, None, csum, max_chunk_size=400_000)
    assert inline.parts > 2
    path = tmp / "delta.superblock"
    path.write_bytes(inline.data)
    return path, csum


def test_parts_and_superblock_match_the_whole_file_parser(delta: tuple[Path, str],
                                                          tmp_path: Path) -> None:
    path, csum = delta
    whole = parse_inline(path.read_bytes(), "whole")
    lazy = open_inline(path, "lazy")
    sb = lazy.superblock
    assert (sb.from_csum, sb.to_csum, sb.commit_bytes, sb.parts) == \
        (whole.from_csum, whole.to_csum, whole.commit_bytes, whole.parts)
    base = delta_dir(csum)
    assert set(sb.metadata) == {k for k in whole.metadata if not k[len(base) + 1:].isdigit()}
    for i in range(len(whole.parts)):
        y, body = whole.metadata[f"{base}/{i}"].value
        assert lazy.read_part(i) == bytes([y]) + bytes(body)
    repo = Repo.init(tmp_path / "dest", RepoMode.ARCHIVE)
    with repo.transaction() as txn:
        apply_inline(repo, txn, sb, "lazy", read_part=lazy.read_part)
        txn.set_ref("os", csum)
    run(["ostree", "fsck", f"--repo={repo.path}"])


def _refused(path: Path, data: bytes, match: str) -> None:
    path.write_bytes(data)
    with pytest.raises(CorruptObject, match=match):
        open_inline(path, str(path))


def test_truncated_or_lying_files_are_refused(delta: tuple[Path, str], tmp_path: Path) -> None:
    data = delta[0].read_bytes()
    bad = tmp_path / "bad.superblock"
    for cut in (0, 1, 7, len(data) // 2, len(data) - 1):
        _refused(bad, data[:cut], "is corrupt")
    # the metadata's end offset (the tuple's last framing offset) past the end of the file
    _refused(bad, data[:-4] + struct.pack("<I", len(data) * 2), "is corrupt")
    # the metadata's offset table claims ~2**32 entries: refused before it is read
    meta_end = struct.unpack("<I", data[-4:])[0]
    lying = bytearray(data)
    lying[meta_end - 4:meta_end] = struct.pack("<I", 0)
    _refused(bad, bytes(lying), "is corrupt")
    # a part's bytes flipped: the file still parses, the part no longer matches its checksum
    lazy = open_inline(delta[0], "x")
    start, _end = lazy.parts[0]
    flipped = bytearray(data)
    flipped[start + 10] ^= 0xFF
    bad.write_bytes(bytes(flipped))
    repo = Repo.init(tmp_path / "dest", RepoMode.ARCHIVE)
    other = open_inline(bad, "flipped")
    with pytest.raises(CorruptObject, match="part 0 in flipped does not match its checksum"), \
            repo.transaction() as txn:
        apply_inline(repo, txn, other.superblock, "flipped", read_part=other.read_part)
