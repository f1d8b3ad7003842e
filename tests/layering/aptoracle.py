"""apt as the oracle of resolution: ``apt-get install -s`` over a given dpkg status and index.

The apt configuration is private (``APT_CONFIG`` and ``Dir::*``): the host's
apt.conf.d, sources and state are never read, so the answer depends only on
the status file, the ``Packages`` index and apt's defaults (Recommends on).
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from importers.aptsource import IndexFile
from importers.debcontrol import meta_from_control
from importers.model import Origin, PackageType
from layering.errors import DepsolveError
from layering.resolve import Request, Universe, solve
from tests.util import run

_INST = re.compile(r"^Inst (\S+) ")


@dataclass(frozen=True)
class Answer:
    """What one resolver answered: the packages it would add, or its error."""

    install: tuple[str, ...] = ()
    error: str = ""


class AptOracle:
    """A private apt root in ``root`` over ``status`` and one ``Packages.xz``."""

    def __init__(self, root: Path, status: Path, packages_xz: Path, suite: str = "bookworm",
                 arch: str = "amd64") -> None:
        self.root = root
        for d in ("etc/parts", "etc/prefs", "state/lists/partial", "cache/archives/partial",
                  f"repo/dists/{suite}/main/binary-{arch}"):
            (root / d).mkdir(parents=True, exist_ok=True)
        shutil.copy(status, root / "state/status")
        repo = root / "repo"
        bindir = repo / f"dists/{suite}/main/binary-{arch}"
        shutil.copy(packages_xz, bindir / "Packages.xz")
        # apt wants the uncompressed index's hash in Release, not the file itself
        (bindir / "Packages").write_bytes(lzma.decompress(packages_xz.read_bytes()))
        release = run(["apt-ftparchive", "-o", f"APT::FTPArchive::Release::Suite={suite}",
                       "release", f"dists/{suite}"], cwd=repo).stdout
        (bindir / "Packages").unlink()
        (repo / f"dists/{suite}/Release").write_text(release)
        (root / "etc/sources.list").write_text(f"deb [trusted=yes] file:{repo} {suite} main\n")
        conf = {"Dir::Etc::SourceList": root / "etc/sources.list",
                "Dir::Etc::SourceParts": root / "etc/parts", "Dir::Etc::Parts": root / "etc/parts",
                "Dir::Etc::Preferences": root / "etc/prefs/none",
                "Dir::Etc::PreferencesParts": root / "etc/prefs", "Dir::State": root / "state",
                "Dir::State::status": root / "state/status", "Dir::Cache": root / "cache",
                "Dir::Log": root, "APT::Architecture": arch, "APT::Architectures": arch,
                "APT::Install-Recommends": "true", "APT::Install-Suggests": "false",
                "APT::Sandbox::User": "root", "Debug::NoLocking": "true",
                "Acquire::Languages": "none"}
        (root / "apt.conf").write_text("".join(f'{k} "{v}";\n' for k, v in conf.items()))
        self.env = {**os.environ, "APT_CONFIG": str(root / "apt.conf"), "LC_ALL": "C"}
        self._apt("update", "-q")
        self.installed = [meta_from_control(p, origin=Origin.INSTALLED)
                          for p in status.read_text().split("\n\n") if p.strip()]
        self.index = IndexFile(path=packages_xz, url=f"file:{packages_xz}",
                               base_uri=f"file:{repo}", limit=1 << 31,
                               sha256=_sha256(packages_xz))

    def _apt(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["apt-get", *args], capture_output=True, text=True, env=self.env,
                              timeout=300)

    def apt_cached(self, queries: list[tuple[str, bool]], cache: Path) -> dict[str, Answer]:
        """:meth:`apt` for each (name, recommends), two at a time, keyed ``NAME`` or
        ``NAME --no-install-recommends``.  Answers are kept in ``cache`` (a JSON file) under
        a key of apt's version, the status and the index, so they are asked again whenever
        one of those changes."""
        key = hashlib.sha256("\0".join([
            self._apt("--version").stdout.splitlines()[0], _sha256(self.root / "state/status"),
            self.index.sha256]).encode()).hexdigest()
        try:
            doc = json.loads(cache.read_text())
        except (OSError, ValueError):
            doc = {}
        known = doc.get(key, {}) if isinstance(doc, dict) else {}
        missing = [q for q in queries if query_key(*q) not in known]
        with ThreadPoolExecutor(2) as pool:
            answers = pool.map(lambda q: self.apt(q[0], recommends=q[1]), missing)
            for q, ans in zip(missing, answers, strict=True):
                known[query_key(*q)] = {"install": list(ans.install), "error": ans.error}
        if missing:
            tmp = cache.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps({key: known}, sort_keys=True, indent=0))
            os.replace(tmp, cache)
        return {query_key(*q): Answer(tuple(known[query_key(*q)]["install"]),
                                      known[query_key(*q)]["error"]) for q in queries}

    def apt(self, name: str, *, recommends: bool = True) -> Answer:
        """``apt-get install -s NAME``: the packages apt would unpack, or its ``E:`` lines."""
        proc = self._apt("install", "-s", "-q", "-o",
                         f"APT::Install-Recommends={str(recommends).lower()}", name)
        if proc.returncode != 0:
            errors = [line for line in proc.stdout.splitlines() + proc.stderr.splitlines()
                      if line.startswith("E:")]
            return Answer(error=" ".join(errors) or proc.stderr.strip() or "failed")
        return Answer(tuple(sorted(m.group(1) for line in proc.stdout.splitlines()
                                   if (m := _INST.match(line)))))

    def universe(self, tmp_dir: Path) -> Universe:
        """strata's resolver universe over the same status and index (loaded once)."""
        u = Universe(PackageType.DEB, "amd64")
        u.add("@System", self.installed)
        u.add_deb_index("main", self.index, tmp_dir)
        u.finish()
        return u

    @staticmethod
    def strata(u: Universe, name: str, *, recommends: bool = True) -> Answer:
        """strata's library resolver asked for ``name``, as ``compose --install NAME``."""
        try:
            res = solve(u, Request(install=(name,), no_recommends=not recommends))
        except DepsolveError as e:
            return Answer(error=str(e).splitlines()[0])
        return Answer(tuple(sorted(p.name for p in res.install)))


def query_key(name: str, recommends: bool) -> str:
    """How a query is named in the answers: ``NAME`` or ``NAME --no-install-recommends``."""
    return name if recommends else f"{name} --no-install-recommends"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


__all__ = ["Answer", "AptOracle", "query_key"]
