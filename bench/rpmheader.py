#!/usr/bin/env python3
"""Bench: strata's bounded rpm header reader against the ``rpmfile`` library.

Why strata does not use ``rpmfile`` (the numbers behind the README's reason):

- the same 20 rpms built here by the real ``rpmbuild``: time to read every
  header (median of RUNS rounds, each library reading all files);
- hostile files built here: what each reader does with them (exception type,
  whether it stays inside the package's own error type, peak memory, time).

Needs ``rpmbuild`` and ``rpmfile`` (``pip install rpmfile``); writes only to a
temporary directory.  Run: ``.venv/bin/python bench/rpmheader.py``.
"""

from __future__ import annotations

import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.importers.builders import build_rpm  # noqa: E402

RUNS = 7
N_RPMS = 20


def build_set(tmp: Path) -> list[Path]:
    """N_RPMS small rpms with a few hundred files each (real rpmbuild)."""
    out = []
    for i in range(N_RPMS):
        files = " ".join(f"$RPM_BUILD_ROOT/usr/share/b{i}/f{j}" for j in range(300))
        out.append(build_rpm(tmp, f"bench{i}", install=(
            f"mkdir -p $RPM_BUILD_ROOT/usr/share/b{i}\nfor f in {files}; do echo $f > $f; done"),
            files=f"/usr/share/b{i}"))
    return out


def read_strata(path: Path) -> object:
    from importers.rpmheader import read_package_header

    with open(path, "rb") as f:
        return read_package_header(f, str(path))[1]


def read_rpmfile(path: Path) -> object:
    import rpmfile.headers

    with open(path, "rb") as f:
        return rpmfile.headers.get_headers(f)[1]


READERS = {"strata": read_strata, "rpmfile": read_rpmfile}


def timing(rpms: list[Path]) -> dict[str, float]:
    samples: dict[str, list[float]] = {k: [] for k in READERS}
    for _ in range(RUNS):
        for name, fn in READERS.items():
            t = time.perf_counter()
            for p in rpms:
                fn(p)
            samples[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in samples.items()}


def hostile(tmp: Path, good: Path) -> dict[str, Path]:
    """Hostile variants of a real rpm: each is a few hundred bytes to a few kB."""
    data = good.read_bytes()
    lead = data[:96]
    out = {}

    def header(il: int, dl: int, body: bytes = b"") -> bytes:
        return b"\x8e\xad\xe8\x01" + bytes(4) + struct.pack(">II", il, dl) + body

    # signature header claiming 2**31-1 index entries, then nothing
    out["huge entry count"] = lead + header(0x7FFFFFFF, 16)
    # a data store of 2 GiB claimed, file ends after 64 bytes
    out["huge data store"] = lead + header(1, 0x7FFFFFF0, struct.pack(">iiii", 1000, 6, 0, 1))
    # int32 array whose count reaches past the store
    out["int32 count past store"] = lead + header(1, 8, struct.pack(">iiii", 1000, 4, 0, 0x3FFFFFFF)
                                                  + bytes(8))
    # garbage instead of the signature header: rpmfile scans a byte at a time for 0x8e
    out["1 MiB garbage"] = lead + b"\x00" * (1 << 20)
    # negative sizes (the reader treats them as signed)
    out["negative store size"] = lead + header(1, 0xFFFFFFFF, struct.pack(">iiii", 1000, 6, 0, 1))
    # a STRING entry whose bytes have no terminating NUL
    out["string without NUL"] = lead + header(1, 4, struct.pack(">iiii", 1000, 6, 0, 1) + b"abcd")
    # a STRING entry with count 0
    out["string count 0"] = lead + header(1, 4, struct.pack(">iiii", 1000, 6, 0, 0) + b"abc\0")
    # one byte of a file name changed in the main header: its SHA256 no longer matches
    at = data.rindex(b"f299")
    out["header byte changed"] = data[:at] + b"g" + data[at + 1:]
    paths = {}
    for name, blob in out.items():
        p = tmp / (name.replace(" ", "-") + ".rpm")
        p.write_bytes(blob)
        paths[name] = p
    return paths


PROBE = """
import resource, sys, time
sys.path.insert(0, {root!r})
from bench.rpmheader import READERS
t = time.perf_counter()
try:
    READERS[{reader!r}]({path!r})
    outcome = "accepted"
except Exception as e:  # noqa: BLE001 - the point is to see which type escapes
    outcome = type(e).__module__ + "." + type(e).__name__
print(outcome, round(time.perf_counter() - t, 3),
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def probe(reader: str, path: Path) -> str:
    code = PROBE.format(root=str(ROOT), reader=reader, path=str(path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    return proc.stdout.strip() or f"died: {proc.stderr.strip().splitlines()[-1:]}"


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rpms = build_set(tmp)
        t = timing(rpms)
        print(f"{N_RPMS} rpms, all headers, median of {RUNS}:")
        print(f"  strata  {t['strata'] * 1000:7.1f} ms")
        print(f"  rpmfile {t['rpmfile'] * 1000:7.1f} ms   ratio rpmfile/strata "
              f"{t['rpmfile'] / t['strata']:.2f}x")
        print("hostile file: reader -> outcome, seconds, peak RSS MiB")
        for name, path in hostile(tmp, rpms[0]).items():
            for reader in READERS:
                print(f"  {name:24} {reader:8} {probe(reader, path)}")


if __name__ == "__main__":
    main()
