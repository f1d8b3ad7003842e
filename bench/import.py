#!/usr/bin/env python3
"""Bench: `strata import` against native extraction of the same packages.

- 50 real .debs (the dependency closure of a few common tools, `apt-get download`)
  vs `dpkg-deb -x` of each file;
- rpms built here with rpmbuild from the contents of the largest of those debs
  (zstd payloads, as Fedora ships) vs `rpm2cpio FILE | cpio -idm`;
- warm re-import (every package already in the cache), through the CLI (includes
  interpreter and CLI start-up) and through the library call.

Everything runs on a loop-mounted ext4 image created and removed by this script
(the machine's root filesystem creates files slowly and erratically). Prints a
table of medians and the ratio strata/native. Needs root (mount) and network
for the first download (cached in bench/out/import/).
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import STRATA, loop_ext4  # noqa: E402
from importers.pkgcache import import_packages  # noqa: E402
from store.repo import Repo  # noqa: E402
from store.run import run  # noqa: E402

OUT = ROOT / "bench" / "out" / "import"
TOOLS = ("git", "curl", "jq", "tree")
N_DEBS = 50
N_RPMS = 20
RUNS = 5
WARM_RUNS = 3  # per round: a warm run is short, so its median needs more samples


def deb_closure() -> list[str]:
    argv = ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
            "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *TOOLS]
    names = [line.strip() for line in run(argv).stdout.decode().splitlines()
             if line and not line.startswith(" ") and "<" not in line]
    return sorted(dict.fromkeys(names))[:N_DEBS]


def ensure_debs() -> list[Path]:
    d = OUT / "debs"
    d.mkdir(parents=True, exist_ok=True)
    if len(list(d.glob("*.deb"))) < N_DEBS:
        d.chmod(0o777)
        run(["apt-get", "download", *deb_closure()], cwd=d, timeout=600)
    return sorted(d.glob("*.deb"))[:N_DEBS]


def ensure_rpms(debs: list[Path]) -> list[Path]:
    d = OUT / "rpms"
    have = sorted(d.glob("RPMS/*/*.rpm"))
    if len(have) >= N_RPMS:
        return have[:N_RPMS]
    biggest = sorted(debs, key=lambda p: p.stat().st_size, reverse=True)[:N_RPMS]
    for deb in biggest:
        _rpm_from_deb(deb, d)
    return sorted(d.glob("RPMS/*/*.rpm"))[:N_RPMS]


def _rpm_from_deb(deb: Path, top: Path) -> None:
    name = "bench-" + deb.name.split("_")[0].replace("+", "plus")
    stage = top / "stage" / name
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    run(["dpkg-deb", "-x", deb, stage])
    tops = "\n".join(f"/{p.name}" for p in sorted(stage.iterdir()))
    spec = top / f"{name}.spec"
    spec.write_text(
        f"Name: {name}\nVersion: 1.0\nRelease: 1\nSummary: bench\nLicense: MIT\n"
        "AutoReqProv: no\n%description\nbench\n%install\n"
        f"cp -a {stage}/. %{{buildroot}}/\n%files\n{tops}\n")
    run(["rpmbuild", "-bb", "--define", f"_topdir {top}", "--define",
         "_binary_payload w3.zstdio", "--define", "__os_install_post %{nil}",
         "--define", "_build_id_links none", "--define", "debug_package %{nil}", spec])


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def strata_import(repo: Path, pkgs: list[Path]) -> None:
    # bytecode caching on, as for an installed tool (this environment may disable it)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": ""}
    run([*STRATA, "--repo", repo, "import", *pkgs], env=env)


def native_deb(dest: Path, pkgs: list[Path]) -> None:
    for p in pkgs:
        run(["dpkg-deb", "-x", p, dest])


def native_rpm(dest: Path, pkgs: list[Path]) -> None:
    for p in pkgs:
        cpio = run(["rpm2cpio", p]).stdout
        run(["cpio", "-idm", "--quiet"], input=cpio, cwd=dest)


def library_reimport(repo: Path, pkgs: list[Path]) -> None:
    results = import_packages(Repo.open(repo), pkgs)
    assert all(r.skipped for r in results)


def bench(mnt: Path, kind: str, pkgs: list[Path],
          native: Callable[[Path, list[Path]], None]) -> dict[str, float]:
    cold, warm, lib, nat = [], [], [], []
    for i in range(RUNS):
        dest = mnt / f"native-{kind}-{i}"
        dest.mkdir()
        os.sync()
        nat.append(timed(lambda d=dest: native(d, pkgs)))
        repo = Repo.init(mnt / f"repo-{kind}-{i}").path
        os.sync()
        cold.append(timed(lambda r=repo: strata_import(r, pkgs)))
        os.sync()  # the cold run's writeback must not land in the warm run's time
        warm += [timed(lambda r=repo: strata_import(r, pkgs)) for _ in range(WARM_RUNS)]
        lib.append(timed(lambda r=repo: library_reimport(r, pkgs)))
        shutil.rmtree(dest)
        shutil.rmtree(repo)
    return {"native": statistics.median(nat), "cold": statistics.median(cold),
            "warm": statistics.median(warm), "lib": statistics.median(lib)}


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("bench/import.py needs root (it loop-mounts an ext4 image)")
    debs = ensure_debs()
    rpms = ensure_rpms(debs)
    mb = {k: sum(p.stat().st_size for p in v) / 1e6 for k, v in (("deb", debs), ("rpm", rpms))}
    with loop_ext4(4) as mnt:
        results = {"deb": bench(mnt, "deb", debs, native_deb),
                   "rpm": bench(mnt, "rpm", rpms, native_rpm)}
    print(f"median of {RUNS} runs, loop-mounted ext4, load average {os.getloadavg()[0]:.1f}\n")
    print("| set | native | strata cold | cold/native | warm (CLI) | warm/cold | "
          "warm (library) | lib/cold |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, r in results.items():
        n = len(debs) if kind == "deb" else len(rpms)
        native_name = "dpkg-deb -x" if kind == "deb" else "rpm2cpio|cpio -idm"
        print(f"| {n} {kind}s ({mb[kind]:.1f} MB), native = {native_name} | {r['native']:.3f} s"
              f" | {r['cold']:.3f} s | {r['cold'] / r['native']:.2f}x | {r['warm']:.3f} s"
              f" | {100 * r['warm'] / r['cold']:.1f}% | {r['lib']:.3f} s"
              f" | {100 * r['lib'] / r['cold']:.1f}% |")


if __name__ == "__main__":
    main()
