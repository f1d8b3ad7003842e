"""Real Debian material for tests and benches: a minbase root and real .debs.

The mirror is the one this machine's apt is configured with, read at run time.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path

from debian.deb822 import Deb822

from tests.util import run

SOURCE_FILES = ("/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list")),
                *sorted(glob.glob("/etc/apt/sources.list.d/*.sources")))


def host_mirror(suite: str = "bookworm") -> str:
    """The first configured apt URI that serves ``suite`` (deb822 or one-line sources)."""
    for path in SOURCE_FILES:
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        if path.endswith(".sources"):
            for para in Deb822.iter_paragraphs(text):
                if suite in para.get("Suites", "").split() and "deb" in para.get("Types", ""):
                    return para["URIs"].split()[0]
        for line in text.splitlines():
            m = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
            if m and m.group(2) == suite:
                return m.group(1)
    raise RuntimeError(f"no apt source for {suite} configured on this machine")


def build_minbase(dest: Path, suite: str = "bookworm") -> Path:
    """``mmdebstrap --variant=minbase`` from the machine's own mirror."""
    run(["mmdebstrap", "--quiet", "--variant=minbase", "--mode=root", suite, dest,
         f"deb {host_mirror(suite)} {suite} main"], timeout=900)
    return dest


def download_debs(names: list[str], dest: Path) -> list[Path]:
    """``apt-get download`` of exactly these packages into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    run(["apt-get", "download", "-q", *names], cwd=dest, timeout=600)
    return sorted(dest.glob("*.deb"))
