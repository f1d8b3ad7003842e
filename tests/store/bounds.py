"""Running ``strata`` against hostile HTTP servers with its memory measured.

* :func:`run_bounded` runs the CLI in a fresh process (through a small wrapper
  that reads ``RUSAGE_CHILDREN``), under an address-space limit so that code
  without bounds fails instead of eating the machine, in its own session so a
  runaway can be killed whole; it returns exit code, stderr, peak RSS, seconds.
* the ``*_body`` helpers answer a request of :func:`tests.store.servers.hostile_server`
  with an endless, trickling or bomb body; every loop is bounded and stops by
  itself (or when the client hangs up).
"""

from __future__ import annotations

import json
import lzma
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from tests.util import ROOT

RSS_BOUND_MIB = 300
AS_LIMIT = 3 << 30  # the child's address space: old unbounded code dies instead of swapping
MEASURE_LOG = os.environ.get("STRATA_TEST_MEASURE_LOG")  # where to append measurements

WRAPPER = r"""
import resource, subprocess, sys, time
limit, out = int(sys.argv[1]), sys.argv[2]
def cap():
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
t = time.monotonic()
rc = subprocess.run([sys.executable, "-m", "layering", *sys.argv[3:]], preexec_fn=cap).returncode
kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
open(out, "w").write(f"{kib} {time.monotonic() - t:.2f}")
sys.exit(rc)
"""


@dataclass(frozen=True)
class Measured:
    """How a bounded strata run ended."""

    returncode: int
    stderr: str
    rss_mib: float
    seconds: float


def run_bounded(name: str, args: list[str | os.PathLike[str]], tmp: Path, *,
                env: dict[str, str] | None = None, timeout: float = 240) -> Measured:
    """Run ``strata ARGS`` in a fresh process under AS_LIMIT; kill it after ``timeout``."""
    out = tmp / f"measure-{name}"
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full_env.pop("STRATA_REPO", None)
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, str(AS_LIMIT), str(out),
                             *map(os.fspath, args)], cwd=ROOT, env=full_env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        _stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"strata {name} did not give up within {timeout} s") from None
    kib, seconds = out.read_text().split()
    m = Measured(proc.returncode, stderr, int(kib) / 1024, float(seconds))
    if MEASURE_LOG:
        with open(MEASURE_LOG, "a") as f:
            f.write(json.dumps({"attack": name, "rc": m.returncode, "rss_mib": round(m.rss_mib),
                                "seconds": m.seconds, "error": stderr.strip()[-300:]}) + "\n")
    return m


@dataclass
class Sent:
    """What a hostile answer managed to send before the client hung up."""

    bytes: int = 0
    hung_up: bool = False
    done: threading.Event = field(default_factory=threading.Event)

    def wait(self) -> Sent:
        """Wait (at most a minute) for the answer to end; return self."""
        self.done.wait(60)
        return self


def endless_body(h: BaseHTTPRequestHandler, sent: Sent, *, stop_after: int,
                 piece: bytes = b"\0" * (1 << 20)) -> None:
    """200 without a length, then ``piece`` after ``piece`` until the client hangs up or
    ``stop_after`` bytes are out."""
    h.send_response(200)
    h.send_header("Connection", "close")
    h.end_headers()
    h.close_connection = True
    try:
        while sent.bytes < stop_after:
            h.wfile.write(piece)
            sent.bytes += len(piece)
    except OSError:
        sent.hung_up = True
    finally:
        sent.done.set()


def trickle_body(h: BaseHTTPRequestHandler, body: bytes, sent: Sent, *, seconds: int) -> None:
    """200 announcing ``body``'s length, then one byte a second for at most ``seconds``."""
    h.send_response(200)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.close_connection = True
    try:
        h.wfile.flush()
        for i in range(min(seconds, len(body))):
            h.wfile.write(body[i:i + 1])
            h.wfile.flush()
            sent.bytes += 1
            time.sleep(1)
    except OSError:
        sent.hung_up = True
    finally:
        sent.done.set()


def deflate_bomb(total: int) -> bytes:
    """A raw deflate stream of ``total`` zero bytes (about total/1000 bytes long), built from
    one full-flushed 16 MiB block repeated."""
    piece = 16 << 20
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(b"\0" * piece) + c.flush(zlib.Z_FULL_FLUSH)
    return block * (total // piece) + b"\x03\x00"


def xz_bomb(total: int) -> bytes:
    """Concatenated xz streams of 64 MiB of zeros each, ``total`` bytes in all."""
    piece = 64 << 20
    one = lzma.compress(b"\0" * piece, format=lzma.FORMAT_XZ, preset=6)
    return one * (total // piece)


def assert_one_error(m: Measured, pattern: str) -> None:
    """Exit 1 with one ``error:`` line matching ``pattern``, and peak RSS under the bound."""
    import re

    lines = m.stderr.strip().splitlines()
    assert m.returncode == 1, m.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), m.stderr[-2000:]
    assert re.search(pattern, lines[0]), lines[0]
    assert m.rss_mib < RSS_BOUND_MIB, f"peak RSS {m.rss_mib:.0f} MiB"
