"""``make demo``: the strata story end to end in a scratch directory, with real output.

Run as ``python -m layering.demo [WORKDIR]`` (default ``./demo-work``). It builds a
small deb-based base image, publishes it as an archive repository served on
loopback HTTP, deploys it into a scratch sysroot, layers a package (with a
dependency and a postinst) from a local apt repository, shows status and the
package diff, runs the layered program inside the new deployment, publishes a
second base, upgrades (layers re-applied from the cache) and rolls back.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from layering.demoimages import apt_repo, build_deb, deb_base_rootfs, ostree_layout

HELLO = b"#!/bin/sh\necho \"Hello from a layered package! ($(cat /usr/share/greet/version))\"\n"
POSTINST = ("#!/bin/sh\nset -e\n"
            "[ \"$1\" = configure ] && echo \"hello configured\" > /etc/hello.stamp\n")


def step(argv: list[str], *, cwd: Path, show: str | None = None) -> str:
    """Run one command of the demo, echoing it and its output; stop the demo on failure."""
    print(f"\n$ {show or ' '.join(shlex.quote(a) for a in argv)}", flush=True)
    cmd = [sys.executable, "-m", "layering", *argv[1:]] if argv[0] == "strata" else argv
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    lines = (proc.stdout + proc.stderr).splitlines()
    shown = lines[:30] + ([f"... ({len(lines) - 30} more lines)"] if len(lines) > 30 else [])
    if shown:
        print("\n".join(shown), flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"demo step failed (exit {proc.returncode}): {show or argv}")
    return proc.stdout


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """``python3 -m http.server`` on a free loopback port, for the lifetime of the block."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                             str(port)], cwd=directory, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.1):
                break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()


def base_image(work: Path, version: str) -> Path:
    root = deb_base_rootfs(work / f"rootfs-{version}", version=version)
    (root / "etc/motd").write_text(f"Welcome to strata demo OS {version}\n")
    return ostree_layout(root)


def demo_packages(work: Path) -> Path:
    debs = work / "debs"
    debs.mkdir()
    built = [
        build_deb(debs, "libgreet", "1.0-1", arch="amd64",
                  files={"usr/share/greet/version": b"libgreet 1.0\n"}),
        build_deb(debs, "hello", "2.10-1", arch="amd64", control="Depends: libgreet (>= 1.0)\n",
                  files={"usr/bin/hello": HELLO}, scripts={"postinst": POSTINST}),
    ]
    return apt_repo(work / "apt", built)


def main() -> None:
    work = Path(sys.argv[1] if len(sys.argv) > 1 else "demo-work").resolve()
    if work.exists():
        subprocess.run(["chattr", "-R", "-i", work], capture_output=True)
        shutil.rmtree(work)
    work.mkdir(parents=True)
    demo_packages(work)
    server = "server/repo"
    step(["strata", "--repo", server, "init", "--mode", "archive"], cwd=work)
    step(["strata", "--repo", server, "commit", "-b", "demo/stable", "-s", "Demo OS 1",
          "--add-metadata", "version=1", str(base_image(work, "1"))], cwd=work)
    step(["strata", "--repo", server, "summary", "--update"], cwd=work)
    with serve(work / "server/repo") as os_url, serve(work / "apt") as apt_url:
        run_story(work, os_url, apt_url)
    print(f"\ndemo finished; everything is in {work}")


def run_story(work: Path, os_url: str, apt_url: str) -> None:
    sysrepo = "sysroot/ostree/repo"
    step(["strata", "--sysroot", "sysroot", "os-init", "demo"], cwd=work)
    step(["strata", "--repo", sysrepo, "remote", "add", "--no-sign-verify", "origin", os_url],
         cwd=work)
    step(["strata", "--repo", sysrepo, "pull", "origin", "demo/stable"], cwd=work)
    step(["strata", "--sysroot", "sysroot", "deploy", "origin:demo/stable"], cwd=work)
    deployed = next((work / "sysroot/ostree/deploy/demo/deploy").glob("*.0"))
    sources = deployed / "etc/apt/sources.list.d/demo.list"
    sources.write_text(f"deb [trusted=yes] {apt_url} stable main\n")
    print(f"\n$ echo 'deb [trusted=yes] {apt_url} stable main' > "
          f"{sources.relative_to(work)}")
    step(["strata", "--sysroot", "sysroot", "install", "hello"], cwd=work)
    step(["strata", "--sysroot", "sysroot", "status"], cwd=work)
    old, new = _deployed_checksums(work)
    step(["strata", "--repo", sysrepo, "db", "diff", old, new], cwd=work)
    step(["strata", "--sysroot", "sysroot", "run", "deployment:0", "--", "/usr/bin/hello"],
         cwd=work)
    step(["strata", "--repo", "server/repo", "commit", "-b", "demo/stable", "-s", "Demo OS 2",
          "--add-metadata", "version=2", str(base_image(work, "2"))], cwd=work)
    step(["strata", "--repo", "server/repo", "summary", "--update"], cwd=work)
    step(["strata", "--sysroot", "sysroot", "upgrade", "--check"], cwd=work)
    step(["strata", "-v", "--sysroot", "sysroot", "upgrade"], cwd=work)
    step(["strata", "--sysroot", "sysroot", "status"], cwd=work)
    step(["strata", "--sysroot", "sysroot", "rollback"], cwd=work)
    step(["strata", "--sysroot", "sysroot", "status"], cwd=work)
    step(["ostree", "admin", "status", "--sysroot=sysroot"], cwd=work)


def _deployed_checksums(work: Path) -> tuple[str, str]:
    import json

    proc = subprocess.run([sys.executable, "-m", "layering", "--sysroot", "sysroot", "status",
                           "--json"], cwd=work, capture_output=True, text=True, check=True)
    deps = json.loads(proc.stdout)["deployments"]
    return deps[1]["checksum"], deps[0]["checksum"]


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "")
    main()
