"""Hostile GVariant from the network: nesting 1,000 deep, claimed sizes of 3,000,000,000,
wrong types.  Parsing ends in CorruptObject within bounded memory; ``strata pull`` from a
127.0.0.1 server serving such a summary, commit, dirtree, dirmeta or delta superblock
ends with one ``error:`` line, exit 1, no traceback, under a 1 GiB address-space limit,
and the real ``ostree fsck`` finds the local repository clean."""

from __future__ import annotations

import hashlib
import lzma
import os
import re
import resource
import shutil
import subprocess
import sys
import textwrap
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from store.errors import CorruptObject
from store.gvariant import Variant, _frame, decode, encode
from store.objects import Commit, DirMeta, DirTree, ObjectType, _entry, _frame_array
from store.replication.delta_format import PartMeta, PartPayload, Superblock, delta_dir, delta_name
from store.replication.summary import DELTAS_KEY, RefEntry, Summary
from tests.store.servers import http_server, ostree
from tests.util import ROOT, require_tool

LIMIT_AS = 1 << 30
CLAIM = 3_000_000_000
C = "ab" * 32


@contextmanager
def deep_recursion() -> Iterator[None]:
    """Room for strata's own encoder to build values nested 1,000 deep."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def deep_variant(levels: int = 1000) -> Variant:
    v = Variant("s", "bottom")
    for _ in range(levels):
        v = Variant("v", v)
    return v


def deep_meta() -> dict[str, Variant]:
    return {"deep": deep_variant()}


def huge_claim_summary() -> bytes:
    """The summary that made strata allocate 5.9 GB: a delta 'checksum' that is a ``t``."""
    return encode("(a(s(taya{sv}))a{sv})", ([], {DELTAS_KEY: Variant("a{sv}", {
        f"{C}-{'cd' * 32}": Variant("t", 2_950_000_000)})}))


def claimed_offset(data: bytes) -> bytes:
    """``data`` (over 64 KiB: 4-byte framing offsets) whose last offset claims 3,000,000,000."""
    assert len(data) > 0xFFFF
    return data[:-4] + CLAIM.to_bytes(4, "little")


def run_limited(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a Python child limited to LIMIT_AS of address space."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT_AS, LIMIT_AS))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, cwd=ROOT, preexec_fn=limit,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


# ---- the parsers, in-process and under a memory limit ---------------------------------


def test_huge_claim_summary_fails_in_bounded_memory() -> None:
    data = huge_claim_summary()
    proc = run_limited(f"""
        from store.errors import CorruptObject
        from store.replication.summary import Summary
        try:
            Summary.from_bytes(bytes.fromhex({data.hex()!r}))
        except CorruptObject as e:
            print("refused:", e)
        """)
    assert proc.returncode == 0, proc.stderr
    assert "refused: summary: static delta" in proc.stdout


def big_dictionary_xz(data: bytes) -> bytes:
    """``data`` as xz whose header asks for a 1.5 GiB dictionary (props byte 37)."""
    xz = bytearray(lzma.compress(data, format=lzma.FORMAT_XZ))
    size = (xz[12] + 1) * 4
    assert xz[14] == 0x21 and xz[15] == 1  # one LZMA2 filter with one props byte
    xz[16] = 37
    xz[12 + size - 4:12 + size] = zlib.crc32(xz[12:12 + size - 4]).to_bytes(4, "little")
    return bytes(xz)


def test_xz_parts_decompress_within_bounds() -> None:
    """An xz bomb stops at the part's declared size; a 1.5 GiB dictionary is refused
    instead of allocated (checked under a 1 GiB address-space limit)."""
    bomb = PartPayload([], [], bytes(200 << 20), b"").to_bytes()
    assert len(bomb) < 100_000
    greedy = b"x" + big_dictionary_xz(PartPayload([], [], b"abc", b"").to_bytes()[1:])
    assert lzma.decompress(greedy[1:])  # a valid stream, only greedy
    proc = run_limited(f"""
        from store.replication.delta_format import PartPayload
        from store.errors import CorruptObject
        for data in (bytes.fromhex({bomb.hex()!r}), bytes.fromhex({greedy.hex()!r})):
            try:
                PartPayload.from_bytes(data, max_size=1 << 20)
            except CorruptObject as e:
                print("refused:", e)
        """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "refused: static delta part decompresses past the 1048576 bytes declared",
        "refused: static delta part is corrupt: Memory usage limit exceeded"], proc.stdout


def test_deflate_bomb_stops_at_the_declared_size() -> None:
    """A .filez declaring 10 bytes whose deflate stream holds 1.2 GiB of zeros."""
    proc = run_limited("""
        import zlib
        from store.errors import CorruptObject
        from store.objects import FileMeta, archive_header
        from store.filez import verify_filez
        z = zlib.compressobj(9, zlib.DEFLATED, -15)
        zeros = bytes(1 << 20)
        bomb = b"".join(z.compress(zeros) for _ in range(1200)) + z.flush()
        try:
            verify_filez(archive_header(FileMeta(0, 0, 0o100644), 10) + bomb, "ab" * 32, "x")
        except CorruptObject as e:
            print("refused:", e)
        """)
    assert proc.returncode == 0, proc.stderr
    assert "refused: file object abab" in proc.stdout, proc.stdout


def test_nesting_1000_deep_is_refused() -> None:
    with deep_recursion():
        data = encode("v", deep_variant())
    arrays = b"\0" + b"a" * 1000 + b"y"  # an empty array of a type 1,000 deep
    for raw in (data, arrays, encode("v", Variant("s", "x")) + b"(" * 500):
        with pytest.raises(CorruptObject, match="nested deeper than 128|invalid|unclosed"):
            decode("v", raw)
    assert decode("v", encode("v", deep_variant(60))) == deep_variant(60)


@pytest.mark.parametrize("sig,value", [("as", ["x" * 40_000, "y" * 40_000]),
                                       ("(a{sv}aya(say)sstayay)", Commit(
                                           C, C, 1, "s" * 70_000).to_bytes())])
def test_claimed_offset_of_3_billion_is_refused(sig: str, value: object) -> None:
    raw = value if isinstance(value, bytes) else encode(sig, value)
    assert len(raw) > 0xFFFF  # 4-byte framing offsets
    with pytest.raises(CorruptObject, match="malformed GVariant"):
        decode(sig, claimed_offset(raw))


def test_wrong_types_are_refused() -> None:
    commit = Commit(C, C, 1, metadata={"ostree.ref-binding": Variant("s", "main")})
    with pytest.raises(CorruptObject, match="ostree.ref-binding has type s, expected as"):
        Commit.from_bytes(commit.to_bytes())
    summary = Summary({"main": RefEntry("main", C, 1)}, {}, {
        "ostree.summary.last-modified": Variant("s", "yesterday")})
    with pytest.raises(CorruptObject, match="last-modified has type s, expected t"):
        Summary.from_bytes(summary.to_bytes())
    with pytest.raises(CorruptObject):
        DirTree.from_bytes(commit.to_bytes())
    with pytest.raises(CorruptObject):
        DirMeta.from_bytes(DirTree((("a", C),)).to_bytes())


# ---- strata pull from a hostile server -------------------------------------------------


class Site:
    """A copy of a real ostree repository (``main`` = ``c1``) that the attacks rewrite."""

    def __init__(self, path: Path, c1: str) -> None:
        self.path, self.c1 = path, c1
        commit = Commit.from_bytes(self.read(c1, ObjectType.COMMIT))
        self.commit, self.dirtree = commit, self.read(commit.root_tree, ObjectType.DIR_TREE)

    def obj(self, csum: str, objtype: ObjectType) -> Path:
        return self.path / "objects" / csum[:2] / f"{csum[2:]}.{objtype.value}"

    def read(self, csum: str, objtype: ObjectType) -> bytes:
        return self.obj(csum, objtype).read_bytes()

    def put(self, objtype: ObjectType, data: bytes) -> str:
        csum = hashlib.sha256(data).hexdigest()
        self.obj(csum, objtype).parent.mkdir(exist_ok=True)
        self.obj(csum, objtype).write_bytes(data)
        return csum

    def serve_main(self, csum: str, deltas: dict[str, str] | None = None) -> None:
        meta = {DELTAS_KEY: Variant("a{sv}", {k: Variant("ay", bytes.fromhex(v))
                                              for k, v in (deltas or {}).items()})}
        summary = Summary({"main": RefEntry("main", csum, 100)}, deltas or {}, meta)
        (self.path / "summary").write_bytes(summary.to_bytes())

    def serve_commit(self, **changes: object) -> str:
        fields = {**self.commit.__dict__, "parent": self.c1, "timestamp": 1_700_000_500}
        csum = self.put(ObjectType.COMMIT, Commit(**{**fields, **changes}).to_bytes())
        self.serve_main(csum)
        return csum


def summary_deep(site: Site) -> str:
    with deep_recursion():
        data = encode("(a(s(taya{sv}))a{sv})", ([], deep_meta()))
    (site.path / "summary").write_bytes(data)
    return r"summary is not a valid GVariant: .*nested deeper than 128 levels in http://127"


def summary_claim(site: Site) -> str:
    (site.path / "summary").write_bytes(huge_claim_summary())
    return r"summary: static delta .* has no 32-byte checksum in http://127"


def summary_offset(site: Site) -> str:
    refs = {f"r{i:05}": RefEntry(f"r{i:05}", C, 1) for i in range(2000)}
    (site.path / "summary").write_bytes(claimed_offset(Summary(refs).to_bytes()))
    return r"summary is not a valid GVariant: .*member 0 ends at 3000000000.* in http://127"


def summary_types(site: Site) -> str:
    summary = Summary({"main": RefEntry("main", site.c1, 1)}, {}, {
        "ostree.summary.last-modified": Variant("s", "yesterday")})
    (site.path / "summary").write_bytes(summary.to_bytes())
    return r"summary metadata: ostree.summary.last-modified has type s, expected t in http://"


def commit_deep(site: Site) -> str:
    with deep_recursion():
        site.serve_commit(metadata=deep_meta())
    return r"commit object \w+ is corrupt: .*nested deeper than 128"


def commit_offset(site: Site) -> str:
    csum = site.put(ObjectType.COMMIT, claimed_offset(
        Commit(C, C, 1, "s" * 70_000, parent=site.c1).to_bytes()))
    site.serve_main(csum)
    return r"commit object \w+ is corrupt: malformed GVariant"


def commit_types(site: Site) -> str:
    site.serve_commit(metadata={"ostree.ref-binding": Variant("s", "main")})
    return r"commit object \w+ is corrupt: .*ostree.ref-binding has type s, expected as"


def commitmeta_deep(site: Site) -> str:
    csum = site.serve_commit()
    with deep_recursion():
        site.obj(csum, ObjectType.COMMIT_META).write_bytes(encode("a{sv}", deep_meta()))
    return r"commitmeta object \w+ is corrupt: .*nested deeper than 128"


def dirtree_types(site: Site) -> str:
    site.serve_commit(root_tree=site.put(ObjectType.DIR_TREE, site.read(site.c1,
                                                                        ObjectType.COMMIT)))
    return r"dirtree object \w+ is corrupt: malformed dirtree"


def dirtree_offset(site: Site) -> str:
    files = tuple((f"f{i:04}", C) for i in range(2000))
    site.serve_commit(root_tree=site.put(ObjectType.DIR_TREE,
                                         claimed_offset(DirTree(files).to_bytes())))
    return r"dirtree object \w+ is corrupt: malformed dirtree"


def dirtree_split(site: Site) -> str:
    """Subdirectory entries whose middle framing offset splits tree and meta checksums at 16
    bytes instead of 32: GLib reads other checksums than a parser that ignores it."""
    tree = DirTree.from_bytes(site.dirtree)
    files = _frame_array([_entry(n, bytes.fromhex(c)) for n, c in tree.files])
    dirs = _frame_array([_entry(n, bytes.fromhex(t + m), 16) for n, t, m in tree.dirs])
    site.serve_commit(root_tree=site.put(ObjectType.DIR_TREE,
                                         _frame(bytearray(files + dirs), [len(files)])))
    return r"dirtree object \w+ is corrupt: malformed dirtree: bad checksum offset"


def dirtree_nul(site: Site) -> str:
    tree = DirTree.from_bytes(site.dirtree)
    some_file = next((site.path / "objects").rglob("*.filez"))
    csum = some_file.parent.name + some_file.name.split(".")[0]
    bad = DirTree(tree.files + (("a\0b", csum),), tree.dirs)
    site.serve_commit(root_tree=site.put(ObjectType.DIR_TREE, bad.to_bytes()))
    return r"dirtree object \w+ is corrupt: malformed dirtree: entry name with an embedded NUL"


def dirmeta_types(site: Site) -> str:
    site.serve_commit(root_meta=site.put(ObjectType.DIR_META, site.dirtree))
    return r"dirmeta object \w+ is corrupt: malformed GVariant"


def dirmeta_claim(site: Site) -> str:
    xattrs = ((b"user.big", b"x" * 70_000),)
    site.serve_commit(root_meta=site.put(ObjectType.DIR_META, claimed_offset(
        DirMeta(0, 0, 0o40755, xattrs).to_bytes())))
    return r"dirmeta object \w+ is corrupt: malformed GVariant"


def _serve_superblock(site: Site, sb: bytes) -> None:
    to = "cd" * 32
    name = delta_name(site.c1, to)
    (site.path / delta_dir(name)).mkdir(parents=True)
    (site.path / delta_dir(name) / "superblock").write_bytes(sb)
    site.serve_main(to, {name: hashlib.sha256(sb).hexdigest()})


def _superblock(site: Site, **changes: object) -> Superblock:
    fields = {"from_csum": site.c1, "to_csum": "cd" * 32, "timestamp": 1,
              "commit_bytes": site.read(site.c1, ObjectType.COMMIT), "parts": (),
              "fallbacks": (), "metadata": {}}
    return Superblock(**{**fields, **changes})  # type: ignore[arg-type]


def superblock_deep(site: Site) -> str:
    with deep_recursion():
        _serve_superblock(site, _superblock(site, metadata=deep_meta()).to_bytes())
    return r"static delta superblock http://127\S+ is corrupt: .*nested deeper than 128"


def superblock_claim(site: Site) -> str:
    part = PartMeta(0, "12" * 32, CLAIM, CLAIM, ((ObjectType.FILE, C),))
    _serve_superblock(site, _superblock(site, parts=(part,)).to_bytes())
    return r"static delta superblock http://127\S+ is corrupt: a part claims 3000000000"


def superblock_types(site: Site) -> str:
    sb = _superblock(site, metadata={"ostree.endianness": Variant("s", "B")})
    _serve_superblock(site, sb.to_bytes())
    return r"static delta superblock http://127\S+ is corrupt: .*ostree.endianness has type s"


Attack = Callable[[Site], str]
ATTACKS: list[Attack] = [summary_deep, summary_claim, summary_offset, summary_types,
                         commit_deep, commit_offset, commit_types, commitmeta_deep,
                         dirtree_types, dirtree_offset, dirtree_split, dirtree_nul,
                         dirmeta_types, dirmeta_claim, superblock_deep, superblock_claim,
                         superblock_types]


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A real ostree archive repository with one commit on ``main``."""
    require_tool("ostree")
    base = tmp_path_factory.mktemp("hostile-gv")
    tree = base / "tree"
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/tool").write_bytes(b"tool\n" * 100)
    (tree / "etc").mkdir()
    (tree / "etc/conf").write_text("a=1\n")
    ostree("init", f"--repo={base / 'repo'}", "--mode=archive")
    c1 = ostree("commit", f"--repo={base / 'repo'}", "-b", "main", "--timestamp=@1700000000",
                str(tree)).strip()
    ostree("summary", "-u", f"--repo={base / 'repo'}")
    return base / "repo", c1


PEAK_RSS_WRAPPER = """
import atexit, runpy, sys
out = sys.argv.pop(1)
def report():
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
    open(out, "w").write(hwm.split()[1])
atexit.register(report)
runpy.run_module("layering", run_name="__main__", alter_sys=True)
"""


def strata_limited(tmp: Path, *args: str | Path
                   ) -> tuple[subprocess.CompletedProcess[str], int, float]:
    """Run strata under LIMIT_AS; return the result, its peak RSS in KiB (VmHWM, which
    the pages shared with this process before exec do not count in) and seconds taken."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT_AS, LIMIT_AS))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STRATA_HTTP_RETRIES": "1"}
    argv = [sys.executable, "-c", PEAK_RSS_WRAPPER, str(tmp / "hwm"), *map(str, args)]
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, env=env, preexec_fn=limit, capture_output=True,
                          text=True)
    seconds = time.monotonic() - start
    return proc, int((tmp / "hwm").read_text()), seconds


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.__name__)
def test_pull_from_hostile_server(attack: Attack, origin: tuple[Path, str],
                                  tmp_path: Path) -> None:
    src, c1 = origin
    site_dir = tmp_path / "site"
    shutil.copytree(src, site_dir, symlinks=True)
    canary = tmp_path / "canary"
    canary.write_text("untouched")
    dst = tmp_path / "dst"
    run_cli = [sys.executable, "-m", "layering", "--repo", str(dst)]
    subprocess.run([*run_cli, "init", "--mode", "archive"], check=True, cwd=ROOT)
    with http_server(src) as good:
        subprocess.run([*run_cli, "remote", "add", "--no-sign-verify", "origin", good.url],
                       check=True, cwd=ROOT)
        subprocess.run([*run_cli, "pull", "origin", "main"], check=True, cwd=ROOT,
                       capture_output=True)
    subprocess.run([*run_cli, "remote", "delete", "origin"], check=True, cwd=ROOT)
    pattern = attack(Site(site_dir, c1))
    with http_server(site_dir) as bad:
        subprocess.run([*run_cli, "remote", "add", "--no-sign-verify", "origin", bad.url],
                       check=True, cwd=ROOT)
        proc, rss_kib, seconds = strata_limited(tmp_path, "--repo", dst, "pull", "origin",
                                                    "main")
    print(f"\n{attack.__name__}: exit {proc.returncode}, peak RSS {rss_kib // 1024} MiB, "
          f"gave up after {seconds:.2f} s: {proc.stderr.strip()[:300]}")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert rss_kib < 256 << 10  # a healthy pull of this repository peaks at about 28 MiB
    assert (dst / "refs/remotes/origin/main").read_text().strip() == c1
    assert sorted(p.name for p in (dst / "tmp").iterdir()) == ["cache"]
    assert canary.read_text() == "untouched"
    ostree("fsck", f"--repo={dst}")
