"""Limits of the maintainer-script sandbox: time, tasks, memory and output, and the
cgroup that enforces the middle two.

Scripts run as real root (see :mod:`layering.scripts`), where ``RLIMIT_NPROC``
does not apply, so each sandbox run gets a cgroup of its own, created before the
sandbox starts (its first process joins it before anything else runs) and
removed afterwards, once everything in it has been killed::

    cgroup v1 (this machine's kind)           cgroup v2
    /sys/fs/cgroup/pids/<own>/strata-scripts-<pid>-<rand>/   pids.max
    /sys/fs/cgroup/memory/<own>/strata-scripts-<pid>-<rand>/ memory.limit_in_bytes
    /sys/fs/cgroup/<own or root>/strata-scripts-<pid>-<rand>/ pids.max, memory.max

``<own>`` is this process's cgroup in that hierarchy; ``<pid>`` is the process
that made the cgroup, so one left by a killed strata (its processes are gone
with its sandbox's pid namespace) is removed by the next run once ``<pid>`` is
dead.  Each limit has an environment variable (``STRATA_SCRIPT_TIMEOUT``
seconds per script, ``STRATA_SCRIPT_TASKS``, ``STRATA_SCRIPT_MEMORY_MB``,
``STRATA_SCRIPT_OUTPUT_MB``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from layering.errors import ScriptError

CGROUP_ROOT = Path("/sys/fs/cgroup")
PREFIX = "strata-scripts-"
MIB = 1 << 20
EMPTY_WAIT = 10.0  # seconds for killed tasks to leave their cgroup


@dataclass(frozen=True)
class Limits:
    """What one sandbox run may use."""

    timeout: float = 300.0  # seconds per script
    tasks: int = 512  # processes and threads at once
    memory: int = 2048 * MIB  # bytes of memory (and swap, where it is accounted)
    output: int = 16 * MIB  # bytes one script may print

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Limits:
        """The defaults, overridden by ``STRATA_SCRIPT_*`` variables (positive numbers)."""
        d = cls()
        return cls(timeout=_number(env, "STRATA_SCRIPT_TIMEOUT", d.timeout),
                   tasks=int(_number(env, "STRATA_SCRIPT_TASKS", d.tasks)),
                   memory=int(_number(env, "STRATA_SCRIPT_MEMORY_MB", d.memory / MIB) * MIB),
                   output=int(_number(env, "STRATA_SCRIPT_OUTPUT_MB", d.output / MIB) * MIB))

    def describe(self) -> str:
        """The limits in words, for ``-v`` and errors."""
        return (f"{self.timeout:g} s per script, {self.tasks} tasks, "
                f"{self.memory / MIB:g} MiB memory, {self.output / MIB:g} MiB output per script")


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ScriptError(f"{name}={raw!r} is not a positive number in the environment")
    return value


class Cgroup:
    """One sandbox run's cgroup (a directory per hierarchy on v1, one on v2)."""

    def __init__(self, dirs: list[Path], *, v2: bool) -> None:
        self.dirs = dirs
        self.v2 = v2

    @property
    def procs(self) -> list[Path]:
        """The ``cgroup.procs`` files a process writes its pid to, to join."""
        return [d / "cgroup.procs" for d in self.dirs]

    def tasks(self) -> list[int]:
        """The processes in the cgroup now."""
        with contextlib.suppress(OSError):
            return [int(p) for p in self.procs[0].read_text().split()]
        return []

    def kill(self) -> None:
        """SIGKILL everything in the cgroup (``cgroup.kill`` where the kernel has it)."""
        if self.v2 and (self.dirs[0] / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (self.dirs[0] / "cgroup.kill").write_text("1")
                return
        for pid in self.tasks():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def oom_kills(self) -> int:
        """How many tasks the memory limit killed."""
        name = "memory.events" if self.v2 else "memory.oom_control"
        for d in self.dirs:
            with contextlib.suppress(OSError):
                for line in (d / name).read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        return 0

    def remove(self) -> None:
        """Kill everything in the cgroup, wait until it is empty and remove it.

        Raises ScriptError if tasks outlive :data:`EMPTY_WAIT` (the caller must not
        read what they may still be writing).
        """
        deadline = time.monotonic() + EMPTY_WAIT
        pause = 0.0005  # the sandbox's processes are usually gone within a millisecond
        while self.tasks():
            if time.monotonic() > deadline:
                raise ScriptError(f"maintainer script processes survived SIGKILL in {self.dirs[0]}")
            self.kill()
            time.sleep(pause)
            pause = min(pause * 2, 0.01)
        for d in self.dirs:
            with contextlib.suppress(OSError):
                d.rmdir()


@contextlib.contextmanager
def script_cgroup(limits: Limits) -> Iterator[Cgroup]:
    """A new cgroup limiting tasks and memory as ``limits`` say, removed (its tasks
    killed) on exit; ScriptError if this machine offers none."""
    name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        cg = _make_v2(name, limits)
    else:
        cg = _make_v1(name, limits)
    try:
        yield cg
    finally:
        cg.remove()


def _own_path(controller: str) -> str:
    """This process's cgroup in the hierarchy of ``controller`` ("" for cgroup v2)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if (controller in ctrls.split(",")) if controller else ctrls == "":
            return path.lstrip("/")
    return ""


def _make_v1(name: str, limits: Limits) -> Cgroup:
    dirs: list[Path] = []
    try:
        for ctrl in ("pids", "memory"):
            parent = CGROUP_ROOT / ctrl / _own_path(ctrl)
            _remove_stale(parent)
            (parent / name).mkdir()
            dirs.append(parent / name)
        (dirs[0] / "pids.max").write_text(str(limits.tasks))
        (dirs[1] / "memory.limit_in_bytes").write_text(str(limits.memory))
        if (dirs[1] / "memory.memsw.limit_in_bytes").exists():
            (dirs[1] / "memory.memsw.limit_in_bytes").write_text(str(limits.memory))
    except OSError as e:
        Cgroup(dirs, v2=False).remove()
        raise ScriptError(f"cannot limit maintainer scripts with a cgroup in {CGROUP_ROOT}: {e} "
                          "(pass --no-scripts to compose without them)") from e
    return Cgroup(dirs, v2=False)


def _make_v2(name: str, limits: Limits) -> Cgroup:
    error: OSError | None = None
    for parent in dict.fromkeys((CGROUP_ROOT / _own_path(""), CGROUP_ROOT)):
        d = parent / name
        try:
            enabled = (parent / "cgroup.subtree_control").read_text().split()
            if not {"pids", "memory"} <= set(enabled):
                (parent / "cgroup.subtree_control").write_text("+pids +memory")
            _remove_stale(parent)
            d.mkdir()
            (d / "pids.max").write_text(str(limits.tasks))
            (d / "memory.max").write_text(str(limits.memory))
            if (d / "memory.swap.max").exists():
                (d / "memory.swap.max").write_text("0")
            return Cgroup([d], v2=True)
        except OSError as e:
            error = e
            with contextlib.suppress(OSError):
                d.rmdir()
    raise ScriptError(f"cannot limit maintainer scripts with a cgroup in {CGROUP_ROOT}: {error} "
                      "(pass --no-scripts to compose without them)")


def _remove_stale(parent: Path) -> None:
    """Remove cgroups left by strata processes that are gone (an rmdir of a cgroup that
    still has tasks fails, so nothing live is lost)."""
    with contextlib.suppress(OSError):
        for entry in os.listdir(parent):
            if not entry.startswith(PREFIX):
                continue
            pid = entry[len(PREFIX):].partition("-")[0]
            if pid.isdigit() and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    (parent / entry).rmdir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
