"""A booted host's view of a test sysroot, without booting: strata run in bubblewrap.

Inside, the sysroot is ``/`` (as ``--sysroot /`` sees a booted host: ``/ostree``
and ``/boot`` are the physical ones), ``/proc/cmdline`` carries the ``ostree=``
argument of the deployment that is "booted", ``/run`` is a directory of the test
(a reboot or a crash empties it) and ``systemctl`` is a shim on ``PATH`` that
logs its arguments to ``/run/systemctl.log`` and succeeds (or fails, for a test
of a host where the finalize service cannot start).  Everything else strata
does runs for real: its staging, its finalization, its mount namespace.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.util import ROOT, require_tool

SYSTEMCTL = """#!/bin/sh
echo "$*" >> /run/systemctl.log
exit {rc}
"""


@dataclass(frozen=True)
class BootedHost:
    """A sysroot seen as the running host, booted from the deployment of ``cmdline``."""

    sysroot: Path
    work: Path

    @property
    def run_dir(self) -> Path:
        return self.work / "run"

    def boot(self, cmdline: str) -> None:
        """(Re)boot: an empty /run and this kernel command line."""
        subprocess.run(["rm", "-rf", str(self.run_dir)], check=True)
        self.run_dir.mkdir(parents=True)
        (self.work / "cmdline").write_text(cmdline + "\n")

    def shim(self, systemctl_rc: int = 0) -> Path:
        d = self.work / "shim"
        d.mkdir(exist_ok=True)
        for name, text in (("systemctl", SYSTEMCTL.format(rc=systemctl_rc)),
                           ("strata", f"#!/bin/sh\nexec {shlex.quote(sys.executable)} "
                                      "-m layering \"$@\"\n")):
            (d / name).write_text(text)
            (d / name).chmod(0o755)
        return d

    def sh(self, script: str, *, readonly: bool = False, systemctl_rc: int = 0,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a shell script in the booted view (``strata`` is this checkout's)."""
        require_tool("bwrap")
        shim = self.shim(systemctl_rc)
        argv = ["bwrap", "--bind", str(self.sysroot), "/", "--tmpfs", "/tmp",
                "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
        for link in ("bin", "sbin", "lib", "lib64"):  # merged /usr, as the host has it
            if os.path.islink(f"/{link}") and not os.path.lexists(self.sysroot / link):
                os.symlink(os.readlink(f"/{link}"), self.sysroot / link)
        prefix = Path(sys.prefix).resolve()
        for path in sorted({ROOT, prefix, Path(sys.executable).resolve().parent}):
            argv += ["--ro-bind", str(path), str(path)]
        argv += ["--proc", "/proc", "--ro-bind", str(self.work / "cmdline"), "/proc/cmdline",
                 "--dev", "/dev", "--bind", str(self.run_dir), "/run",
                 "--ro-bind", str(shim), "/shim", "--cap-add", "ALL", "--chdir", "/",
                 "--setenv", "PATH", "/shim:/usr/sbin:/usr/bin:/sbin:/bin",
                 "--setenv", "PYTHONPATH", str(ROOT)]
        for k, v in (env or {}).items():
            argv += ["--setenv", k, v]
        if readonly:
            argv += ["--remount-ro", "/"]
        clean = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
        return subprocess.run([*argv, "/bin/sh", "-c", script], capture_output=True,
                              text=True, env=clean, timeout=600)

    def strata(self, *args: str, check: bool = True, **kw: object
               ) -> subprocess.CompletedProcess[str]:
        """``strata ARGS`` on the booted view (``--sysroot /``)."""
        proc = self.sh(shlex.join(["strata", *args]), **kw)  # type: ignore[arg-type]
        if check and proc.returncode != 0:
            raise AssertionError(f"strata {' '.join(args)} exited {proc.returncode}\n"
                                 f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
        return proc
