"""The two sides of the corpus comparison, on one base commit and one local apt repository.

- strata: a sysroot with the minbase (OSTree layout) committed and deployed;
  ``strata install PKG`` makes a new deployment; its booted view is the
  deployment plus a copy of the stateroot's ``/var`` after
  ``systemd-tmpfiles --create --boot`` (what the first boot does), then
  ``strata rollback`` and the stateroot's ``/var`` as the base deploy left it (a
  rollback keeps ``/var``, which the layering deploy changed) so that the next
  package starts from the base host again.
- apt: a checkout of the same base commit with ``/etc`` made from ``usr/etc``
  (as deploy does) is the lower layer of an overlay; ``apt-get install PKG``
  runs in it (bubblewrap as a chroot: own pid/ipc/uts namespaces), then the
  same ``systemd-tmpfiles`` pass.

Both sides see ``usr/sbin/policy-rc.d`` (exit 101) from the base, as image
builders do, so no service is started during installation.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fixtures.images import ostree_layout
from tests.util import run, run_strata

STATEROOT = "corpus"
BRANCH = "corpus/base"
KVER = "6.1.0-corpus"
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
       "LANG": "C.UTF-8", "HOME": "/root", "TERM": "dumb", "DEBIAN_FRONTEND": "noninteractive"}
POLICY_RC_D = "#!/bin/sh\n# no service starts while an image is built\nexit 101\n"


def prepare_rootfs(tar: Path, dest: Path, source_line: str) -> Path:
    """The minbase of ``tar`` in OSTree layout, with only ``source_line`` as apt source,
    a policy-rc.d and a fake kernel (deploy needs one)."""
    dest.mkdir()
    with tarfile.open(tar) as t:
        t.extractall(dest, members=[m for m in t.getmembers()
                                    if not m.name.startswith("./dev/")], filter="fully_trusted")
    for f in (dest / "etc/apt/sources.list.d").iterdir():
        f.unlink()
    (dest / "etc/apt/sources.list").unlink(missing_ok=True)
    (dest / "etc/apt/sources.list.d/corpus.list").write_text(source_line + "\n")
    (dest / "usr/sbin/policy-rc.d").write_text(POLICY_RC_D)
    (dest / "usr/sbin/policy-rc.d").chmod(0o755)
    kdir = dest / "usr/lib/modules" / KVER
    kdir.mkdir(parents=True)
    (kdir / "vmlinuz").write_bytes(b"corpus kernel\n")
    ostree_layout(dest)
    return dest


def bwrap_view(root: Path, var: Path, argv: list[str], *, writable: bool = False,
               timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with ``root`` as ``/`` and ``var`` as ``/var`` (a chroot with its own
    pid, ipc and uts namespaces; no user namespace, so ownership works as root)."""
    argv_ = ["bwrap", "--bind" if writable else "--ro-bind", str(root), "/",
             "--bind", str(var), "/var", "--proc", "/proc", "--dev", "/dev",
             "--tmpfs", "/tmp", "--tmpfs", "/run", "--unshare-pid", "--unshare-ipc",
             "--unshare-uts", "--die-with-parent", "--clearenv"]
    for k, v in ENV.items():
        argv_ += ["--setenv", k, v]
    return subprocess.run([*argv_, *argv], capture_output=True, text=True, timeout=timeout)


def boot_tmpfiles(root: Path, var: Path, mnt: Path) -> None:
    """``systemd-tmpfiles --create --boot`` over ``root`` (read-only) with ``var`` as /var,
    as the first boot of that system does."""
    mnt.mkdir(exist_ok=True)
    script = ('mount -o bind,ro "$1" "$3" && mount --bind "$2" "$3/var" && '
              'exec systemd-tmpfiles --create --boot --root="$3"')
    subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script,
                    "sh", str(root), str(var), str(mnt)], capture_output=True, timeout=300)


@dataclass
class StrataSide:
    """A sysroot with the corpus base deployed."""

    sysroot: Path
    base: str = ""

    def strata(self, *args: object, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_strata("--sysroot", self.sysroot, *args, check=check)  # type: ignore[arg-type]

    def setup(self, rootfs: Path) -> None:
        self.strata("os-init", STATEROOT)
        self.base = self.strata("--repo", self.sysroot / "ostree/repo", "commit", "-b", BRANCH,
                                rootfs).stdout.strip()
        self.strata("deploy", "--stateroot", STATEROOT, BRANCH)
        run(["cp", "-a", self.var, self.base_var])

    @property
    def base_var(self) -> Path:
        """The stateroot's /var as the base deploy made it."""
        return self.sysroot.parent / "base-var"

    @property
    def var(self) -> Path:
        return self.sysroot / "ostree/deploy" / STATEROOT / "var"

    def default_dir(self) -> Path:
        from boot.sysroot import Sysroot

        sysroot = Sysroot(self.sysroot)
        return sysroot.deployment_dir(sysroot.load().deployments[0])

    def install(self, name: str) -> tuple[subprocess.CompletedProcess[str], float]:
        t0 = time.monotonic()
        proc = self.strata("install", name, check=False)
        return proc, time.monotonic() - t0

    def back_to_base(self) -> None:
        """Make the base deployment the default again (the layered one goes at the next
        install, as ostree's retention removes it)."""
        status = json.loads(self.strata("status", "--json").stdout)["deployments"]
        if status[0]["checksum"] != self.base:
            self.strata("rollback")
        shutil.rmtree(self.var)
        run(["cp", "-a", self.base_var, self.var])


@dataclass
class AptSide:
    """A pristine checkout of the base commit with an /etc, the lower layer of each chroot."""

    pristine: Path
    results: Path

    @property
    def lists(self) -> Path:
        """A layer over the pristine checkout with apt's lists (one ``apt-get update``)."""
        return self.pristine.parent / "apt-lists"

    def setup(self, strata: StrataSide) -> None:
        strata.strata("--repo", strata.sysroot / "ostree/repo", "checkout", BRANCH, self.pristine)
        run(["cp", "-a", self.pristine / "usr/etc", self.pristine / "etc"])
        with self.chroot(self.pristine.parent / "apt-update", lists=False,
                         keep=self.lists) as (root, _upper):
            proc = bwrap_view(root, root / "var", ["apt-get", "update", "-q"], writable=True)
            assert proc.returncode == 0, proc.stdout + proc.stderr

    @contextmanager
    def chroot(self, work: Path, *, lists: bool = True, keep: Path | None = None,
               upper_from: Path | None = None) -> Iterator[tuple[Path, Path]]:
        """A writable overlay over the pristine checkout (and apt's lists): (root, upper);
        the upper layer starts as the tar ``upper_from`` and is moved to ``keep`` afterwards
        if given."""
        upper, wdir, merged = work / "upper", work / "work", work / "merged"
        for d in (upper, wdir, merged):
            d.mkdir(parents=True)
        if upper_from is not None:
            run(["tar", "--xattrs", "--xattrs-include=*", "-C", upper, "-xf", upper_from])
        lower = f"{self.lists}:{self.pristine}" if lists else str(self.pristine)
        run(["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={lower},upperdir={upper},workdir={wdir}", merged])
        try:
            yield merged, upper
        finally:
            subprocess.run(["umount", merged], check=False)
            if keep is not None:
                upper.rename(keep)
            shutil.rmtree(work, ignore_errors=True)

    def real_path(self, upper: Path, rel: str) -> str:
        """Where the bytes of ``rel`` of a chroot lie: its upper layer, apt's lists or the
        pristine checkout."""
        for layer in (upper, self.lists):
            if os.path.lexists(layer / rel):
                return str(layer / rel)
        return str(self.pristine / rel)

    @contextmanager
    def installed(self, work: Path, name: str) -> Iterator[tuple[Path, Path, float, str]]:
        """The chroot after ``apt-get install NAME`` and the first-boot tmpfiles pass:
        (root, upper layer, seconds apt-get took, error).  The upper layer and the time are
        kept under ``results`` (the oracle only changes with the repository and minbase)."""
        tar, info = self.results / f"{name}.tar", self.results / f"{name}.json"
        cached = info.exists() and tar.exists()
        with self.chroot(work, upper_from=tar if cached else None) as (root, upper):
            if cached:
                yield root, upper, json.loads(info.read_text())["seconds"], ""
                return
            proc, seconds = self.install(root, name)
            if proc.returncode != 0:
                yield root, upper, seconds, (f"apt-get install failed: {proc.stdout[-400:]}"
                                             f"{proc.stderr[-400:]}")
                return
            boot_tmpfiles(root, root / "var", work.parent / "mnt-a")
            self.results.mkdir(parents=True, exist_ok=True)
            run(["tar", "--xattrs", "--xattrs-include=*", "-C", upper, "-cf", f"{tar}.tmp", "."])
            os.replace(f"{tar}.tmp", tar)
            info.write_text(json.dumps({"seconds": seconds}))
            yield root, upper, seconds, ""

    def facts(self, root: Path, name: str) -> tuple[list[str], str]:
        """``dpkg-query -W`` and ``dpkg --audit``/``--verify`` of apt's side (kept with it)."""
        path = self.results / f"{name}.facts.json"
        if path.exists():
            kept = json.loads(path.read_text())
            return kept["packages"], kept["audit"]
        found = packages(root, root / "var"), audit_and_verify(root, root / "var")
        path.write_text(json.dumps({"packages": found[0], "audit": found[1]}))
        return found

    def install(self, root: Path, name: str) -> tuple[subprocess.CompletedProcess[str], float]:
        t0 = time.monotonic()
        proc = bwrap_view(root, root / "var", ["apt-get", "install", "-y", "-q",
                                               "-o", "Dpkg::Use-Pty=0", name], writable=True)
        return proc, time.monotonic() - t0


def packages(root: Path, var: Path) -> list[str]:
    """``dpkg-query -W`` inside a view: package, version, status abbreviation."""
    proc = bwrap_view(root, var, ["dpkg-query", "-W", "-f",
                                  "${Package} ${Version} ${db:Status-Abbrev}\\n"])
    return sorted(proc.stdout.splitlines())


def audit_and_verify(root: Path, var: Path) -> str:
    """``dpkg --audit`` and ``dpkg --verify`` inside a view: empty when clean."""
    out = []
    for argv in (["dpkg", "--audit"], ["dpkg", "--verify"]):
        proc = bwrap_view(root, var, argv)
        text = (proc.stdout + proc.stderr).strip()
        if text or proc.returncode:
            out.append(f"{' '.join(argv)} (exit {proc.returncode}): {text[:2000]}")
    return "\n".join(out)
