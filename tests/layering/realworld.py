"""Real Debian material for tests and benches: a minbase root and real .debs.

The mirror is the one this machine's apt is configured with, read at run time.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tarfile
import urllib.request
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


def cache_root() -> Path:
    """Where real-world material is kept between runs (``$STRATA_TEST_CACHE``)."""
    d = Path(os.environ.get("STRATA_TEST_CACHE") or Path.home() / ".cache" / "strata-tests")
    d.mkdir(parents=True, exist_ok=True)
    return d


def minbase_tar(suite: str = "bookworm") -> Path:
    """``mmdebstrap --variant=minbase`` from the machine's own mirror, as a tarball built
    once and kept in the test cache (its index is kept beside it, see :func:`main_index`)."""
    tar = cache_root() / suite / "minbase.tar"
    if not tar.exists():
        main_index(suite)
        tar.parent.mkdir(parents=True, exist_ok=True)
        tmp = tar.with_suffix(f".tmp{os.getpid()}.tar")
        run(["mmdebstrap", "--quiet", "--variant=minbase", "--mode=root", suite, tmp,
             f"deb {host_mirror(suite)} {suite} main"], timeout=900)
        os.replace(tmp, tar)
    return tar


def build_minbase(dest: Path, suite: str = "bookworm") -> Path:
    """A minbase root filesystem at ``dest`` (from the cached :func:`minbase_tar`), with an
    empty ``/dev`` as an image has it (``ostree commit`` and ``strata commit`` refuse the
    device nodes mmdebstrap leaves there; the booted kernel mounts devtmpfs)."""
    dest.mkdir(parents=True, exist_ok=True)
    run(["tar", "-xf", minbase_tar(suite), "-C", dest, "--numeric-owner",
         "--exclude=./dev/*"], timeout=300)
    return dest


def minbase_status(suite: str = "bookworm") -> Path:
    """The minbase's ``var/lib/dpkg/status``, extracted once into the test cache."""
    status = cache_root() / suite / "minbase.status"
    if not status.exists():
        with tarfile.open(minbase_tar(suite)) as tf:
            member = tf.extractfile("./var/lib/dpkg/status")
            assert member is not None
            status.write_bytes(member.read())
    return status


def main_index(suite: str = "bookworm", arch: str = "amd64") -> Path:
    """The mirror's ``main/binary-ARCH/Packages.xz`` of ``suite``, downloaded once."""
    path = cache_root() / suite / f"main-{arch}-Packages.xz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        url = f"{host_mirror(suite)}/dists/{suite}/main/binary-{arch}/Packages.xz"
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        with urllib.request.urlopen(url, timeout=120) as resp, open(tmp, "wb") as out:
            shutil.copyfileobj(resp, out)
        os.replace(tmp, path)
    return path


def download_debs(names: list[str], dest: Path) -> list[Path]:
    """``apt-get download`` of exactly these packages into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    run(["apt-get", "download", "-q", *names], cwd=dest, timeout=600)
    return sorted(dest.glob("*.deb"))


def cached_debs(names: list[str]) -> list[Path]:
    """The current .debs of these packages (``apt-get download``), kept in the test cache."""
    d = cache_root() / "debs"
    d.mkdir(parents=True, exist_ok=True)
    missing = [n for n in names if not list(d.glob(f"{n}_*.deb"))]
    if missing:
        download_debs(missing, d)
    return sorted(p for n in names for p in d.glob(f"{n}_*.deb"))


def dpkg_audit(repo_path: Path, commit: str, dest: Path,
               db: str = "usr/lib/sysimage/dpkg") -> str:
    """``dpkg --audit`` of the host's dpkg (the image's version) over the dpkg database of
    ``commit``, checked out at ``dest``: its output, and the exit status when not 0."""
    run(["ostree", "checkout", "--repo", repo_path, "-U", commit, dest])
    proc = subprocess.run(["dpkg", f"--admindir={dest / db}", "--audit"], capture_output=True,
                          text=True)
    return proc.stdout + proc.stderr + (f"exit {proc.returncode}" if proc.returncode else "")
