"""GVariant normal form, checked against GLib itself (python3-gi) and the spec's examples."""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store.errors import CorruptObject
from store.gvariant import Variant, decode, encode, type_info

ORACLE = Path(__file__).with_name("glib_oracle.py")
SYSTEM_PY = "/usr/bin/python3"

SIGS = ["s", "ay", "as", "aay", "a{sv}", "(uuuusa(ayay))", "(tuuuusa(ayay))", "(uuua(ayay))",
        "(a(say)a(sayay))", "(a{sv}aya(say)sstayay)", "(a(s(taya{sv}))a{sv})", "a(uayttay)",
        "(yaytt)", "a(yaytt)", "(ii)", "(yy)", "(yi)", "a(ii)", "at", "mi", "ms", "(sv)",
        "a{ss}", "(bty)", "ab", "(ayy)", "a(ss)", "(a(uuu)aa(ayay)ayay)"]


def _gen(sig: str, rng: random.Random, size: int) -> Any:
    t = type_info(sig)
    k = t.kind
    if k in "ybnqiuxt":
        bits = {"y": 8, "n": 16, "q": 16, "i": 32, "u": 32, "x": 64, "t": 64}.get(k, 1)
        if k == "b":
            return rng.random() < 0.5
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if k in "nix" else (0, (1 << bits) - 1)
        return rng.randint(lo, hi)
    if k == "s":
        return "".join(rng.choice("abcé名/\n ") for _ in range(rng.randint(0, size)))
    if k == "v":
        inner = rng.choice(["s", "t", "as", "ay", "(su)", "a{sv}"] if size > 2 else ["s", "u"])
        return Variant(inner, _gen(inner, rng, size // 2))
    if k == "m":
        return None if rng.random() < 0.3 else _gen(sig[1:], rng, size)
    if k == "a":
        if sig == "ay":
            return rng.randbytes(rng.randint(0, size * 4))
        n = rng.randint(0, size)
        items = [_gen(sig[1:], rng, size // 2) for _ in range(n)]
        return dict(items) if sig[1] == "{" else items
    return tuple(_gen(m.sig, rng, size) for m in t.children)


def _to_json(sig: str, v: Any) -> Any:
    t = type_info(sig)
    if sig == "ay":
        return {"b": v.hex()}
    if t.kind == "v":
        return {"v": [v.sig, _to_json(v.sig, v.value)]}
    if t.kind == "m":
        return None if v is None else _to_json(sig[1:], v)
    if t.kind == "a":
        elem = t.children[0]
        if elem.kind == "{":
            return [[_to_json(elem.children[0].sig, k), _to_json(elem.children[1].sig, x)]
                    for k, x in v.items()]
        return [_to_json(elem.sig, x) for x in v]
    if t.kind in "({":
        return [_to_json(m.sig, x) for m, x in zip(t.children, v, strict=True)]
    return v


def glib_serialize(items: list[tuple[str, Any]]) -> list[bytes]:
    if not os.path.exists(SYSTEM_PY):
        pytest.skip("no system python for the GLib oracle")
    payload = json.dumps([[s, _to_json(s, v)] for s, v in items])
    proc = subprocess.run([SYSTEM_PY, str(ORACLE)], input=payload, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin"})
    if proc.returncode != 0 and "gi" in proc.stderr and "No module" in proc.stderr:
        if os.environ.get("STRATA_REQUIRE_TOOLS") == "1":
            pytest.fail("python3-gi missing")
        pytest.skip("python3-gi missing")
    assert proc.returncode == 0, proc.stderr
    return [bytes.fromhex(h) for h in json.loads(proc.stdout)]


@pytest.mark.parametrize("seed", range(4))
def test_matches_glib_on_random_values(seed: int) -> None:
    rng = random.Random(seed)
    items = []
    for sig in SIGS:
        for size in (0, 1, 3, 12):
            items.append((sig, _gen(sig, rng, size)))
    expected = glib_serialize(items)
    for (sig, value), want in zip(items, expected, strict=True):
        got = encode(sig, value)
        assert got == want, f"{sig} {value!r}"
        assert decode(sig, got) == value


def test_large_offsets_match_glib() -> None:
    """Arrays past 255 and 65535 bytes switch to 2- and 4-byte framing offsets."""
    items = [("as", ["x" * 100] * 3), ("as", ["y" * 1000] * 70), ("a{sv}", {
        "k": Variant("ay", bytes(70_000)), "j": Variant("s", "z")}),
        ("(sas)", ("a" * 300, ["b"] * 10))]
    for (sig, value), want in zip(items, glib_serialize(items), strict=True):
        assert encode(sig, value) == want
        assert decode(sig, want) == value


def test_spec_examples() -> None:
    assert encode("s", "hello world") == b"hello world\0"
    assert encode("(si)", ("foo", -1)).hex() == "666f6f00ffffffff04"
    assert encode("as", ["i", "can", "has", "strings?"]) == \
        b"i\0can\0has\0strings?\0" + bytes([2, 6, 10, 19])
    assert encode("()", ()) == b"\0"
    assert encode("ai", [4, 258]) == bytes.fromhex("0400000002010000")


@pytest.mark.parametrize("sig,data", [("s", b"abc"), ("(uu)", b"\0" * 7), ("as", b"a\0\xff"),
                                      ("(su)", b"\xff\xff\xff")])
def test_malformed_input_raises_corrupt_object(sig: str, data: bytes) -> None:
    with pytest.raises(CorruptObject):
        decode(sig, data)


_NAMES = st.text(st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)),
                 min_size=1, max_size=300)
_SUMS = st.binary(min_size=32, max_size=32)


@settings(max_examples=2000, deadline=None)
@given(files=st.dictionaries(_NAMES, _SUMS, max_size=12),
       dirs=st.dictionaries(_NAMES, st.tuples(_SUMS, _SUMS), max_size=12))
def test_dirtree_serializer_matches_the_generic_encoder(
        files: dict[str, bytes], dirs: dict[str, tuple[bytes, bytes]]) -> None:
    """DirTree.to_bytes writes short entries without the generic framing code: byte for byte
    what ``(a(say)a(sayay))`` encodes, long names (two-byte offsets) included."""
    from store.objects import DirTree

    tree = DirTree(tuple((n, c.hex()) for n, c in files.items()),
                   tuple((n, t.hex(), m.hex()) for n, (t, m) in dirs.items()))
    key = lambda n: n.encode()  # noqa: E731
    expected = encode("(a(say)a(sayay))", (
        [(n, files[n]) for n in sorted(files, key=key)],
        [(n, *dirs[n]) for n in sorted(dirs, key=key)]))
    assert tree.to_bytes() == expected
    assert DirTree.from_bytes(expected) == DirTree(
        tuple(sorted(tree.files, key=lambda e: key(e[0]))),
        tuple(sorted(tree.dirs, key=lambda e: key(e[0]))))
