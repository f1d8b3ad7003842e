"""Fuzzing the importers' parsers of hostile bytes with hypothesis: control stanzas, apt
Release/Packages/sources, rpm header blobs, repomd.xml and primary.xml.  Each gives a value
or a ToolError (the importers' own error types), never another exception, and its work
stays proportional to its input."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importers.aptsource import download_fields, parse_packages, parse_release, parse_sources
from importers.debcontrol import meta_from_control
from importers.model import Origin
from importers.rpmheader import parse_blob
from importers.rpmmd import _iter_elements, _package, parse_repomd
from store.errors import ToolError
from tests.util import ROOT


def fuzz(n: int) -> settings:
    return settings(max_examples=n, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


CONTROL = textwrap.dedent("""\
    Package: hello
    Version: 1:2.10-3
    Architecture: amd64
    Depends: libc6 (>= 2.34), foo | bar (<< 3)
    Provides: greeter (= 1.0)
    Installed-Size: 280
    Size: 53000
    Filename: pool/main/h/hello/hello_2.10-3_amd64.deb
    SHA256: {sha}
    Description: say hello
     long text
    """).format(sha="ab" * 32)
RELEASE = textwrap.dedent("""\
    Origin: Test
    Suite: stable
    SHA256:
     {sha} 1234 main/binary-amd64/Packages
     {sha} 567 main/binary-amd64/Packages.xz
    """).format(sha="cd" * 32)
SOURCES = "deb [arch=amd64 signed-by=/k.gpg] http://h/debian stable main contrib\n# c\n"
SOURCES822 = "Types: deb\nURIs: http://h/debian\nSuites: stable\nComponents: main\n"
REPOMD = b"""<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo"><revision>1</revision>
<data type="primary"><checksum type="sha256">%s</checksum>
<open-checksum type="sha256">%s</open-checksum><location href="repodata/p.xml.gz"/>
<size>1234</size><open-size>5678</open-size></data></repomd>
""" % (b"ef" * 32, b"01" * 32)
PRIMARY = b"""<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common"
 xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="1">
<package type="rpm"><name>hello</name><arch>x86_64</arch>
<version epoch="0" ver="2.10" rel="3"/><checksum type="sha256" pkgid="YES">%s</checksum>
<summary>hi</summary><size package="100" installed="200" archive="300"/>
<location href="Packages/hello.rpm"/><format><rpm:sourcerpm>hello.src.rpm</rpm:sourcerpm>
<rpm:requires><rpm:entry name="libc.so.6()(64bit)"/><rpm:entry name="x" flags="GE"
 epoch="0" ver="1" rel="2" pre="1"/></rpm:requires><file>/usr/bin/hello</file>
<file type="dir">/usr/share/hello</file></format></package></metadata>
""" % (b"12" * 32)


def rpm_header(entries: list[tuple[int, int, bytes, int]]) -> bytes:
    """An rpm header blob (``il dl index store``) from (tag, type, data, count) entries."""
    index, store = b"", b""
    for tag, typ, data, count in entries:
        store += b"\0" * (-len(store) % {3: 2, 4: 4, 5: 8}.get(typ, 1))
        index += struct.pack(">IIiI", tag, typ, len(store), count)
        store += data
    return struct.pack(">II", len(entries), len(store)) + index + store


HEADER = rpm_header([(1000, 6, b"hello\0", 1), (1001, 6, b"2.10\0", 1),
                     (1009, 4, struct.pack(">I", 280), 1), (1047, 8, b"a\0b\0c\0", 3),
                     (1112, 4, struct.pack(">3I", 0, 8, 12), 3), (1004, 9, b"hi\0", 1),
                     (5092, 7, b"\x01\x02\x03", 3), (1048, 3, struct.pack(">2H", 1, 2), 2)])


def _primary(data: bytes) -> list[Any]:
    tag = "{http://linux.duke.edu/metadata/common}package"
    with tempfile.NamedTemporaryFile(prefix="strata-fuzz-", suffix=".xml") as f:
        f.write(data)
        f.flush()
        return [_package(e, "http://h")
                for e in _iter_elements(Path(f.name), "primary.xml", tag, 1 << 20)]


TEXT_PARSERS: dict[str, tuple[Callable[[str], Any], str]] = {
    "control": (lambda t: meta_from_control(t, origin=Origin.FILE), CONTROL),
    "release": (lambda t: parse_release(t, "Release"), RELEASE),
    "sources": (parse_sources, SOURCES),
    "sources822": (lambda t: parse_sources(t, deb822=True), SOURCES822),
    "packages": (lambda t: parse_packages(t, "http://h/debian"), CONTROL + "\n" + CONTROL),
}
BYTE_PARSERS: dict[str, tuple[Callable[[bytes], Any], bytes]] = {
    "download-fields": (lambda b: list(download_fields(b)), (CONTROL + "\n").encode() * 2),
    "rpm-header": (lambda b: parse_blob(b, "x.rpm"), HEADER),
    "repomd": (lambda b: parse_repomd(b, "repomd.xml"), REPOMD),
    "primary": (_primary, PRIMARY),
}


def total(fn: Callable[[Any], Any], data: Any) -> None:
    try:
        fn(data)
    except ToolError as e:
        assert str(e)


def test_samples_parse() -> None:
    for fn, sample in [*TEXT_PARSERS.values(), *BYTE_PARSERS.values()]:
        fn(sample)  # type: ignore[operator]


NUMBERS = [b"x", b"", b"-1", b"\xd9\xa3", b"9" * 5000, b"1.5", b"0x10", b"99999999999999999999"]


@st.composite
def mutated_bytes(draw: st.DrawFn, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        n = len(data)
        i = draw(st.integers(0, max(n - 1, 0)))
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "word", "number"]))
        if op == "flip" and n:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=6) | st.sampled_from(
                [b"\n", b"\n\n", b": ", b" ", b"<", b">", b"&", b"-1", b"99999999999999999999"]))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 8))]
        elif op == "word" and n >= 4:
            data[i:i + 4] = draw(st.integers(0, (1 << 32) - 1)).to_bytes(4, "big")
        elif op == "number":
            runs = list(re.finditer(rb"\d+", bytes(data)))
            if runs:
                m = draw(st.sampled_from(runs))
                data[m.start():m.end()] = draw(st.sampled_from(NUMBERS))
    return bytes(data)


@pytest.mark.parametrize("name", sorted(TEXT_PARSERS))
@fuzz(400)
@given(data=st.data())
def test_text_parsers_are_total(name: str, data: st.DataObject) -> None:
    fn, sample = TEXT_PARSERS[name]
    raw = data.draw(mutated_bytes(sample.encode()) | st.binary(max_size=200))
    total(fn, raw.decode("utf-8", "replace"))


@pytest.mark.parametrize("name", sorted(BYTE_PARSERS))
@fuzz(400)
@given(data=st.data())
def test_byte_parsers_are_total(name: str, data: st.DataObject) -> None:
    fn, sample = BYTE_PARSERS[name]
    total(fn, data.draw(mutated_bytes(sample) | st.binary(max_size=200)))


def test_rpm_header_with_overlapping_entries_stays_small() -> None:
    """65,535 entries all naming the same 1 MiB string array: rpm refuses overlapping
    entries; reading each again would build 65,535 x 500,000 strings."""
    store = b"a\0" * (1 << 19)
    index = struct.pack(">IIiI", 1047, 8, 0, 1 << 19) * 0xFFFF
    blob = struct.pack(">II", 0xFFFF, len(store)) + index + store
    code = """
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from importers.errors import PackageFormatError
        from importers.rpmheader import parse_blob
        blob = open(sys.argv[1], "rb").read()
        try:
            parse_blob(blob, "bomb.rpm")
        except PackageFormatError as e:
            print("refused:", e)
        """
    with tempfile.NamedTemporaryFile() as f:
        f.write(blob)
        f.flush()
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), f.name],
                              capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "refused: rpm header entries overlap in bomb.rpm" in proc.stdout
