"""Fuzzing every parser of network bytes with hypothesis: random bytes, mutations of real
objects (made by ``ostree`` and by strata), and round trips of generated values.

Every parser must be total: a value or a ToolError (CorruptObject for the store), never
another exception.  The generic decoder is cross-checked against GLib (python3-gi):
it accepts exactly the bytes GLib calls normal form, and reads the same value.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.errors import CorruptObject, ToolError
from store.gvariant import TypeInfo, Variant, decode, encode, type_info
from store.objects import (
    ARCHIVE_HEADER_SIG,
    COMMIT_SIG,
    DIRMETA_SIG,
    DIRTREE_SIG,
    FILE_HEADER_SIG,
    Commit,
    DirMeta,
    DirTree,
    FileMeta,
    ObjectType,
    archive_header,
    file_header,
    parse_header,
)
from store.replication.delta_format import (
    PART_SIG,
    SUPERBLOCK_SIG,
    PartMeta,
    PartPayload,
    Superblock,
    read_varuint,
    unpack_objects,
)
from store.replication.summary import RefEntry, Summary, parse_summary_sig
from tests.store.test_gvariant import SYSTEM_PY, glib_serialize
from tests.util import run

NORMAL_ORACLE = Path(__file__).with_name("glib_normal_oracle.py")


def fuzz(n: int) -> settings:
    """Deterministic settings (no example database, derandomized) with ``n`` examples."""
    return settings(max_examples=n, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def _part(data: bytes) -> PartPayload:
    return PartPayload.from_bytes(data, max_size=1 << 16)


def _varuints(data: bytes) -> None:
    pos = 0
    while pos < len(data):
        _value, pos = read_varuint(data, pos)


PARSERS: dict[str, Callable[[bytes], Any]] = {
    "commit": Commit.from_bytes,
    "dirtree": DirTree.from_bytes,
    "dirmeta": DirMeta.from_bytes,
    "summary": Summary.from_bytes,
    "summary.sig": parse_summary_sig,
    "commitmeta": lambda b: decode("a{sv}", b),
    "superblock": Superblock.from_bytes,
    "part": _part,
    "file-header": lambda b: parse_header(b, archive=False),
    "filez-header": lambda b: parse_header(b, archive=True),
    "varuint": _varuints,
    "part-objects": unpack_objects,
}


def total(name: str, data: bytes) -> Any:
    """Run one parser: a value or a ToolError; anything else fails the test."""
    try:
        return PARSERS[name](data)
    except ToolError as e:
        assert str(e), name
        return e


# ---- samples: real objects -----------------------------------------------------------

C = "ab" * 32
D = "cd" * 32


def strata_samples() -> dict[str, list[bytes]]:
    meta = FileMeta(0, 0, 0o100644, "", ((b"user.a", b"1"), (b"user.b", b"x" * 300)))
    commit = Commit(C, D, 1_700_000_000, "subject", "body", D,
                    {"version": Variant("s", "1.0"),
                     "ostree.ref-binding": Variant("as", ["main", "other"]),
                     "ostree.sizes": Variant("aay", [b"\x01" * 40, b"\x02" * 41])},
                    (("rel", C),))
    tree = DirTree((("a", C), ("b" * 300, D)), (("d", C, D), ("e", D, C)))
    summary = Summary({"main": RefEntry("main", C, 1234, 1_700_000_000, "2.0"),
                       "other": RefEntry("other", D, 99)},
                      {f"{C}-{D}": "ef" * 32},
                      {"ostree.summary.mode": Variant("s", "archive-z2"),
                       "ostree.static-deltas": Variant("a{sv}", {
                           f"{C}-{D}": Variant("ay", bytes.fromhex("ef" * 32))})})
    payload = PartPayload([(0, 0, 0o100644), (1, 2, 0o120777)], [[], [(b"user.x\0", b"y")]],
                          b"blob" * 40, b"S\x00\x00\x05\x00")
    sb = Superblock(C, D, 1_700_000_000, commit.to_bytes(),
                    (PartMeta(0, "12" * 32, 100, 200, ((ObjectType.FILE, C),)),), (), {})
    return {
        "commit": [commit.to_bytes(), Commit(C, D, 0).to_bytes()],
        "dirtree": [tree.to_bytes(), DirTree().to_bytes()],
        "dirmeta": [DirMeta(0, 0, 0o40755, meta.xattrs).to_bytes()],
        "summary": [summary.to_bytes()],
        "summary.sig": [encode("a{sv}", {"ostree.sign.ed25519": Variant("aay", [b"s" * 64])})],
        "commitmeta": [encode("a{sv}", {"ostree.gpgsigs": Variant("aay", [b"g" * 90])})],
        "superblock": [sb.to_bytes()],
        "part": [payload.to_bytes(compression=0), payload.to_bytes()],
        "file-header": [file_header(meta) + b"content"],
        "filez-header": [archive_header(meta, 7) + zlib.compress(b"content")[2:-4]],
        "varuint": [b"\x05\xff\x01\x80\x80\x01"],
        "part-objects": [bytes([1]) + bytes(32) + bytes([2]) + bytes(32)],
    }


@functools.cache
def samples() -> dict[str, list[bytes]]:
    """Valid encodings of every kind: strata's, plus ostree's own when ostree is here."""
    out = strata_samples()
    if shutil.which("ostree") is None:
        return out
    with tempfile.TemporaryDirectory(prefix="strata-fuzz-") as tmp:
        _ostree_samples(Path(tmp), out)
    return out


def _ostree_samples(base: Path, out: dict[str, list[bytes]]) -> None:
    repo, tree = base / "repo", base / "tree"
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/tool").write_bytes(b"#!/bin/sh\n" * 50)
    (tree / "etc").mkdir()
    (tree / "etc/link").symlink_to("../usr/bin/tool")
    run(["ostree", "init", f"--repo={repo}", "--mode=archive"])
    csum = run(["ostree", "commit", f"--repo={repo}", "-b", "main", "-s", "s",
                "--add-metadata-string=version=3", "--timestamp=@1700000000",
                str(tree)]).stdout.strip()
    run(["ostree", "static-delta", "generate", f"--repo={repo}", "--empty", f"--to={csum}",
         "--inline"])
    run(["ostree", "summary", "-u", f"--repo={repo}"])
    ext = {"commit": "commit", "dirtree": "dirtree", "dirmeta": "dirmeta",
           "filez-header": "filez"}
    for p in sorted((repo / "objects").rglob("*")):
        kind = next((k for k, e in ext.items() if p.name.endswith("." + e)), None)
        if kind:
            out[kind].append(p.read_bytes())
    refs, meta = decode("(a(s(taya{sv}))a{sv})", (repo / "summary").read_bytes())
    meta["ostree.summary.last-modified"] = Variant("t", 1)  # the same samples every run
    out["summary"].append(encode("(a(s(taya{sv}))a{sv})", (refs, meta)))
    out["superblock"] += [p.read_bytes() for p in (repo / "deltas").rglob("superblock")]


# ---- (a) random bytes, (b) mutations --------------------------------------------------


@pytest.mark.parametrize("name", sorted(PARSERS))
@fuzz(400)
@given(data=st.binary(max_size=400))
def test_random_bytes(name: str, data: bytes) -> None:
    total(name, data)


@st.composite
def mutated(draw: st.DrawFn, originals: list[bytes]) -> bytes:
    """A valid encoding with 1-4 of: bit flips, truncation, inserted or deleted bytes,
    spliced framing offsets (the last bytes), a copied slice."""
    data = bytearray(draw(st.sampled_from(originals)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "offset", "splice"]))
        n = len(data)
        i = draw(st.integers(0, max(n - 1, 0)))
        if op == "flip" and n:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 8))]
        elif op == "offset" and n:
            width = draw(st.sampled_from([1, 2, 4, 8]))
            pos = max(n - draw(st.integers(1, 3)) * width, 0)
            data[pos:pos + width] = draw(st.integers(0, (1 << 8 * width) - 1)).to_bytes(width,
                                                                                       "little")
        elif op == "splice" and n:
            j, k = draw(st.integers(i, n)), draw(st.integers(0, n))
            data[k:k] = data[i:j]
    return bytes(data)


@pytest.mark.parametrize("name", sorted(PARSERS))
@fuzz(600)
@given(data=st.data())
def test_mutated_objects(name: str, data: st.DataObject) -> None:
    total(name, data.draw(mutated(samples()[name])))


@fuzz(1500)
@given(data=st.data())
def test_dirtree_parser_agrees_with_generic_decoder(data: st.DataObject) -> None:
    """The hand-written dirtree parser accepts exactly what the generic decoder accepts with
    32-byte checksums, and reads the same entries."""
    raw = data.draw(mutated(samples()["dirtree"]))
    try:
        files, dirs = decode(DIRTREE_SIG, raw)
    except CorruptObject:
        with pytest.raises(CorruptObject):
            DirTree.from_bytes(raw)
        return
    if any(len(c) != 32 for _n, c in files) or any(len(x) != 32 for _n, *sums in dirs
                                                   for x in sums):
        with pytest.raises(CorruptObject, match="checksum"):
            DirTree.from_bytes(raw)
        return
    tree = DirTree.from_bytes(raw)
    assert tree.files == tuple((n, c.hex()) for n, c in files)
    assert tree.dirs == tuple((n, t.hex(), m.hex()) for n, t, m in dirs)


# ---- (c) round trips of generated values, checked against GLib ----------------------

SIGS = ["(a{sv}aya(say)sstayay)", "(a(say)a(sayay))", "(uuua(ayay))", "(tuuuusa(ayay))",
        "(a(s(taya{sv}))a{sv})", "(a(uuu)aa(ayay)ayay)", "a(uayttay)", "a(yaytt)",
        "(bynqiuxtdh)", "mv", "m(sy)", "ma{ss}", "aas", "a()", "(y)", "(ty)", "(yt)", "a(ty)",
        "(sogv)", "ad", "amy"]
VARIANT_SIGS = ["s", "t", "y", "b", "as", "ay", "aay", "a{sv}", "(su)", "v", "mi", "()"]
_INTS = {"y": (0, 8), "n": (1, 16), "q": (0, 16), "i": (1, 32), "u": (0, 32), "h": (1, 32),
         "x": (1, 64), "t": (0, 64)}
KNOWN_KEYS = ["ostree.static-deltas", "ostree.commit.timestamp", "ostree.commit.version",
              "ostree.ref-binding", "version", "ostree.endianness", "ostree.sizes",
              "ostree.summary.last-modified", "ostree.sign.ed25519", "ostree.summary.mode",
              f"{C}-{D}", C]
_TEXT = st.sampled_from(KNOWN_KEYS) | st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=12)


def values(t: TypeInfo, depth: int = 0) -> st.SearchStrategy[Any]:
    """Python values of GVariant type ``t`` as store.gvariant represents them."""
    k = t.kind
    if k in _INTS:
        signed, bits = _INTS[k]
        return st.integers(-(1 << bits - 1), (1 << bits - 1) - 1) if signed else \
            st.integers(0, (1 << bits) - 1)
    if k == "b":
        return st.booleans()
    if k == "d":
        return st.floats(allow_nan=False)
    if k == "s":
        return {"o": st.sampled_from(["/", "/a", "/org/b_c/D1"]),
                "g": st.sampled_from(["", "s", "a{sv}(ii)"])}.get(t.sig, _TEXT)
    if k == "v":
        sigs = VARIANT_SIGS if depth < 2 else ["s", "t"]
        return st.sampled_from(sigs).flatmap(
            lambda s: values(type_info(s), depth + 1).map(lambda v: Variant(s, v)))
    if k == "m":
        return st.none() | values(t.children[0], depth + 1)
    if k == "a":
        elem = t.children[0]
        if elem.kind == "y":
            return st.binary(min_size=32, max_size=32) | st.binary(max_size=40)
        if elem.kind == "{":
            return st.dictionaries(values(elem.children[0], depth + 1),
                                   values(elem.children[1], depth + 1), max_size=3)
        return st.lists(values(elem, depth + 1), max_size=3)
    return st.tuples(*(values(m, depth + 1) for m in t.children))


@pytest.mark.parametrize("sig", SIGS)
@fuzz(150)
@given(data=st.data())
def test_round_trip(sig: str, data: st.DataObject) -> None:
    value = data.draw(values(type_info(sig)))
    assert decode(sig, encode(sig, value)) == value


def test_round_trips_match_glib() -> None:
    """Values hypothesis generates serialize exactly as GLib serializes them."""
    items: list[tuple[str, Any]] = []

    @fuzz(60)
    @given(data=st.data())
    def collect(data: st.DataObject) -> None:
        sig = data.draw(st.sampled_from(SIGS))
        items.append((sig, data.draw(values(type_info(sig)))))

    collect()
    for (sig, value), want in zip(items, glib_serialize(items), strict=True):
        assert encode(sig, value) == want, (sig, value)


def glib_read(items: list[tuple[str, bytes]]) -> list[bytes | None]:
    """GLib's verdict on each serialized value: None unless normal form, else GLib's fresh
    serialization of the value it reads."""
    if not os.path.exists(SYSTEM_PY):
        pytest.skip("no system python for the GLib oracle")
    payload = json.dumps([[s, d.hex()] for s, d in items])
    proc = subprocess.run([SYSTEM_PY, str(NORMAL_ORACLE)], input=payload, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin"})
    if proc.returncode != 0 and "No module" in proc.stderr:
        if os.environ.get("STRATA_REQUIRE_TOOLS") == "1":
            pytest.fail("python3-gi missing")
        pytest.skip("python3-gi missing")
    assert proc.returncode == 0, proc.stderr
    return [None if h is None else bytes.fromhex(h) for h in json.loads(proc.stdout)]


GLIB_KINDS = {"commit": COMMIT_SIG, "dirtree": DIRTREE_SIG, "dirmeta": DIRMETA_SIG,
              "summary": "(a(s(taya{sv}))a{sv})", "summary.sig": "a{sv}",
              "commitmeta": "a{sv}"}


def test_mutations_accepted_exactly_when_glib_calls_them_normal() -> None:
    """Mutated objects: decode accepts them iff GLib says normal form, and reads the value
    GLib reads (GLib's fresh serialization of it is strata's).  GLib calls some encodings
    normal that it never writes (a variable-size tuple of zero bytes reads as empty members):
    strata accepts those too, as GLib, and reads the same values."""
    items: list[tuple[str, bytes]] = []

    @fuzz(1500)
    @given(data=st.data())
    def collect(data: st.DataObject) -> None:
        kind = data.draw(st.sampled_from(sorted(GLIB_KINDS)))
        items.append((GLIB_KINDS[kind], data.draw(mutated(samples()[kind]))))

    collect()
    for (sig, raw), glib in zip(items, glib_read(items), strict=True):
        try:
            value = decode(sig, raw)
        except CorruptObject as e:
            assert glib is None, f"GLib reads {sig} {raw.hex()} but strata says {e}"
            continue
        assert glib is not None, f"strata reads {sig} {raw.hex()}, GLib says not normal form"
        assert encode(sig, value) == glib, f"strata and GLib read {sig} {raw.hex()} differently"


def _lenprefixed(v: bytes) -> bytes:
    return len(v).to_bytes(4, "big") + bytes(4) + v


STRUCTURED = {"commit": (COMMIT_SIG, bytes), "dirtree": (DIRTREE_SIG, bytes),
              "dirmeta": (DIRMETA_SIG, bytes), "summary": ("(a(s(taya{sv}))a{sv})", bytes),
              "summary.sig": ("a{sv}", bytes), "commitmeta": ("a{sv}", bytes),
              "superblock": (SUPERBLOCK_SIG, bytes), "part": (PART_SIG, lambda v: b"\0" + v),
              "file-header": (FILE_HEADER_SIG, _lenprefixed),
              "filez-header": (ARCHIVE_HEADER_SIG, _lenprefixed)}


@pytest.mark.parametrize("name", sorted(STRUCTURED))
@fuzz(150)
@given(data=st.data())
def test_well_formed_values_of_any_content(name: str, data: st.DataObject) -> None:
    """Well-formed GVariants of each object's type holding anything (known keys with other
    types, sizes of 2**64-1, checksums of any length): a value or a ToolError."""
    sig, wrap = STRUCTURED[name]
    total(name, wrap(encode(sig, data.draw(values(type_info(sig))))))
