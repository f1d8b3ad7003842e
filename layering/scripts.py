"""Running maintainer scripts in a sandbox without touching stored objects.

The tree is checked out (hardlinks from the store, the repository's kept
checkout when it is free, see :mod:`store.checkoutcache`) as the lower layer of an
overlayfs; scripts run with bubblewrap with the overlay as ``/`` (and
``usr/etc`` at ``/etc``).  They run as real root, so ``adduser``, ``chown`` and
``dpkg-statoverride`` work (a user namespace maps only uid 0), but in new pid,
ipc, uts, net, cgroup and mount namespaces, with every capability dropped but
those file ownership and user switching need (no ``CAP_SYS_ADMIN``, no
``CAP_MKNOD``, no module loading, ...), ``no_new_privs``, ``/proc/sys`` read-only,
no kernel keyrings (:mod:`layering.scriptseccomp`), a clean environment,
and a cgroup bounding tasks and memory (:mod:`layering.scriptlimits`).

Nothing the scripts can write is read back by path: their output and exit
statuses come through pipes (bounded: a time limit per script, an output
limit, only the last lines kept), and afterwards only the upper layer is read
back into the tree, through directory descriptors that never follow symlinks
(:mod:`layering.upperfold`), once its system directories are checked.  The
run's scratch directory (``tmp/scripts-*``) is locked by its process, so a
repository's next open removes one left by a killed compose.  Mounting the
overlay needs root, as ``rpm-ostree`` does for its scripts.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import selectors
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen, TimeoutExpired

from layering.errors import ScriptError
from layering.scriptlimits import MIB, Cgroup, Limits, script_cgroup
from layering.scriptseccomp import keyring_filter
from layering.upperfold import apply_upper, printable, replaced_system_dir
from store.checkoutcache import CheckoutCache
from store.fsutil import rmtree
from store.mtree import MutableTree
from store.progress import Stage
from store.repo import Repo
from store.run import spawn
from store.txn import Transaction

KEEP = 64 * 1024  # bytes of each script's output kept (its last ones)
JOIN_AND_EXEC = ('n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; '
                 'n=$((n-1)); done; exec "$@"')
# the lower layer's path comes on stdin, once the checkout is ready
MOUNT_AND_EXEC = ('IFS= read -r lower || exit 125; mount -t overlay overlay -o '
                  '"lowerdir=$lower,upperdir=$1,workdir=$2,redirect_dir=off,metacopy=off" "$3" '
                  '&& shift 3 && exec "$@"')
CAPS_KEPT = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
             "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_SETFCAP", "CAP_NET_BIND_SERVICE",
             "CAP_SYS_CHROOT", "CAP_AUDIT_WRITE")
PROC_READ_ONLY = ("sys", "sysrq-trigger", "irq", "bus", "fs")  # root could write these
PROC_HIDDEN = ("kcore", "keys", "latency_stats", "timer_list", "sched_debug", "kallsyms")
PROC_HIDDEN_DIRS = ("acpi", "scsi")
NAMESPACES = ("--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net",
              "--unshare-cgroup")
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8", "HOME": "/root", "TERM": "dumb"}
STATUS = re.compile(rb"strata-rc:([0-9]{1,3})")


@dataclass(frozen=True)
class ScriptRun:
    """One script invocation: which package, which script, with what arguments."""

    package: str
    name: str
    body: str
    interpreter: str = ""
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    path: str = ""  # run this file of the tree (as dpkg runs /var/lib/dpkg/info/*) if set
    stdin: str = ""  # its input (rpm's file triggers read the matching paths), else /dev/null

    @property
    def what(self) -> str:
        return f"{self.name} script of package {self.package}"


@dataclass
class ScriptLog:
    """What the scripts printed, per script, for ``-v`` and for errors (each output cut
    to its last :data:`KEEP` bytes)."""

    entries: list[tuple[str, str]] = field(default_factory=list)


def _bwrap_argv(usr_etc: bool, merged: Path, scripts: Path, seccomp_fd: int) -> list[str]:
    argv = ["bwrap", "--bind", str(merged), "/"]
    if seccomp_fd >= 0:
        argv += ["--seccomp", str(seccomp_fd)]
    if usr_etc:  # a real directory in the tree: bwrap resolves a bind's source on the host
        argv += ["--bind", str(merged / "usr/etc"), "/etc"]
    argv += ["--proc", "/proc", *_proc_covers(), "--dev", "/dev", "--tmpfs", "/tmp",
             "--tmpfs", "/run", "--ro-bind", str(scripts), "/run/strata", *NAMESPACES,
             "--die-with-parent", "--new-session", "--clearenv", "--cap-drop", "ALL"]
    for cap in CAPS_KEPT:
        argv += ["--cap-add", cap]
    for k, v in BASE_ENV.items():
        argv += ["--setenv", k, v]
    return argv + ["/bin/sh", "/run/strata/driver"]


def _proc_covers() -> list[str]:
    """Real root writes ``/proc/sys`` (``kernel.core_pattern`` runs a program as the
    host's root) and the like; as docker does, those become read-only (the host's, whose
    values are the same but for the network namespace) and some are hidden."""
    argv = []
    for name in filter(lambda n: os.path.exists(f"/proc/{n}"), PROC_READ_ONLY):
        argv += ["--ro-bind", f"/proc/{name}", f"/proc/{name}"]
    for name in filter(lambda n: os.path.exists(f"/proc/{n}"), PROC_HIDDEN):
        argv += ["--ro-bind", "/dev/null", f"/proc/{name}"]
    for name in filter(lambda n: os.path.isdir(f"/proc/{n}"), PROC_HIDDEN_DIRS):
        argv += ["--tmpfs", f"/proc/{name}", "--remount-ro", f"/proc/{name}"]
    return argv


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def driver_script(runs: Sequence[ScriptRun], names: list[str]) -> str:
    """A shell program that runs each script in order, in a subshell with its own
    environment, its output on stdout, its input ``/dev/null`` (or its ``NAME.in``
    file when it has a ``stdin``).  After each it writes
    ``strata-rc:N`` to stderr, stops at the first failure, and waits for a line on
    stdin before the next (so each script's output is told apart exactly)."""
    lines = ["#!/bin/sh"]
    for r, name in zip(runs, names, strict=True):
        env = "".join(f"export {k}={_quote(v)}; " for k, v in r.env)
        cmd = " ".join(_quote(a) for a in [*r.interpreter.split(),
                                             r.path or f"/run/strata/{name}", *r.args])
        given = _quote(f"/run/strata/{name}.in") if r.stdin else "/dev/null"
        lines.append(f"( {env}exec {cmd} ) < {given} 2>&1")
        lines.append("rc=$?; echo strata-rc:$rc >&2; [ $rc = 0 ] || exit 0; read -r go || exit 0")
    return "\n".join(lines) + "\n"


class _Output:
    """One script's output: the last :data:`KEEP` bytes kept, all of them counted."""

    def __init__(self) -> None:
        self.tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        self.tail += data
        if len(self.tail) > 2 * KEEP:
            del self.tail[:-KEEP]

    def text(self) -> str:
        cut = self.total - len(self.tail[-KEEP:])
        head = f"[{cut} bytes cut]\n" if cut else ""
        out = self.tail[-KEEP:].decode("utf-8", "replace")
        return head + "".join(c if c.isprintable() or c in "\n\t" else "?" for c in out)

    def last_lines(self) -> str:
        return printable(" | ".join(self.text().strip().splitlines()[-6:]), 600)


class _Watch:
    """Feeds the sandbox's driver and reads its pipes: stdout carries the scripts'
    output, stderr the driver's status lines (and the sandbox tools' own errors)."""

    def __init__(self, proc: Popen[bytes], runs: Sequence[ScriptRun], limits: Limits,
                 cgroup: Cgroup, upper: Path, log: ScriptLog,
                 counted: Stage | None = None) -> None:
        assert proc.stdin and proc.stdout and proc.stderr
        self.counted = counted
        self.proc, self.runs, self.limits, self.cgroup, self.upper, self.log = (
            proc, runs, limits, cgroup, upper, log)
        self.out, self.status, self.ack = (proc.stdout.fileno(), proc.stderr.fileno(),
                                           proc.stdin.fileno())
        self.done = 0
        self.output = _Output()
        self.pending = bytearray()
        self.errors = _Output()
        self.deadline = time.monotonic() + limits.timeout

    @property
    def current(self) -> str:
        return self.runs[self.done].what if self.done < len(self.runs) else "the script sandbox"

    def run(self) -> None:
        """Until both pipes close; raises ScriptError at the first failure or limit."""
        sel = selectors.DefaultSelector()
        for fd in (self.out, self.status):
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map():
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise ScriptError(f"{self.current} timed out after {self.limits.timeout:g}s")
            for key, _ in sel.select(left):
                data = self._read(key.fd)
                if data is None:
                    continue
                if not data:
                    sel.unregister(key.fd)
                elif key.fd == self.out:
                    self._take_output(data)
                else:
                    self._take_status(data)
        try:
            rc = self.proc.wait(self.limits.timeout)
        except TimeoutExpired:
            raise ScriptError("the script sandbox did not exit after closing its pipes") from None
        if self.done < len(self.runs):
            raise ScriptError(f"the script sandbox failed (exit {rc}) in {self.current}"
                              f"{self._oom_note()}: {self.errors.last_lines()}")

    def _read(self, fd: int) -> bytes | None:
        try:
            return os.read(fd, 65536)
        except BlockingIOError:
            return None

    def _take_output(self, data: bytes) -> None:
        self.output.add(data)
        if self.output.total > self.limits.output:
            raise ScriptError(f"{self.current} printed more than "
                              f"{self.limits.output / MIB:g} MiB")

    def _take_status(self, data: bytes) -> None:
        *lines, rest = (bytes(self.pending) + data).split(b"\n")
        if len(rest) > 4096:  # no status line is that long
            lines, rest = [*lines, rest], b""
        self.pending = bytearray(rest)
        for line in lines:
            m = STATUS.fullmatch(line.strip())
            if m and self.done < len(self.runs):
                self._finished(int(m.group(1)))
            else:
                self.errors.add(line + b"\n")
                if self.errors.total > self.limits.output:  # a script writing to fd 2 of the driver
                    raise ScriptError(f"{self.current} wrote more than "
                                      f"{self.limits.output / MIB:g} MiB to the sandbox's status")

    def _finished(self, rc: int) -> None:
        while (data := self._read(self.out)):
            self._take_output(data)
        run = self.runs[self.done]
        self.log.entries.append((f"{run.package} {run.name}", self.output.text()))
        if rc != 0:
            raise ScriptError(f"{run.what} failed (exit {rc}{self._oom_note()}): "
                              f"{self.output.last_lines()}")
        replaced = replaced_system_dir(self.upper)
        if replaced:
            raise ScriptError(f"{run.what} replaced a system directory: {replaced}")
        self.done += 1
        if self.counted is not None:
            self.counted.advance()
        self.output = _Output()
        self.deadline = time.monotonic() + self.limits.timeout
        with contextlib.suppress(OSError):
            os.write(self.ack, b"go\n")

    def _oom_note(self) -> str:
        if self.cgroup.oom_kills():
            return f", killed at the memory limit of {self.limits.memory / MIB:g} MiB"
        return ""


def _names(runs: Sequence[ScriptRun]) -> list[str]:
    return [f"{i:03d}-{r.package}.{r.name}".replace("%", "") for i, r in enumerate(runs)]


class _Sandbox:
    """The sandbox's process, started before its lower layer is ready: its first shell
    joins the script cgroup (slow on cgroup v1, so it overlaps the checkout) and its mount
    shell waits for the lower layer's path on stdin (:meth:`run`)."""

    def __init__(self, scratch: Path, runs: Sequence[ScriptRun], limits: Limits,
                 usr_etc: bool, stack: contextlib.ExitStack) -> None:
        self.runs, self.limits = runs, limits
        self.upper, work, merged, scripts = (scratch / n
                                             for n in ("upper", "work", "merged", "scripts"))
        for d in (self.upper, work, merged, scripts):
            d.mkdir()
        names = _names(runs)
        for r, name in zip(runs, names, strict=True):
            (scripts / name).write_bytes(r.body.encode("utf-8", "surrogateescape"))
            (scripts / name).chmod(0o755)
            if r.stdin:
                (scripts / f"{name}.in").write_text(r.stdin)
        (scripts / "driver").write_text(driver_script(runs, names))
        self.cgroup = stack.enter_context(script_cgroup(limits))
        seccomp_fd = stack.enter_context(_seccomp_fd(scratch))
        argv = ["sh", "-c", JOIN_AND_EXEC, "sh", str(len(self.cgroup.procs)),
                *map(str, self.cgroup.procs),
                "unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                MOUNT_AND_EXEC, "sh", str(self.upper), str(work), str(merged),
                *_bwrap_argv(usr_etc, merged, scripts, seccomp_fd)]
        self.proc = spawn(argv, pass_fds=[seccomp_fd] if seccomp_fd >= 0 else [])
        stack.callback(self._stop)

    def _stop(self) -> None:
        self.proc.kill()
        self.cgroup.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()

    def run(self, lower: Path, log: ScriptLog, counted: Stage | None) -> None:
        """Mount the overlay over ``lower`` and run the scripts; ScriptError at the first
        failure, broken limit or replaced system directory."""
        if "\n" in str(lower):
            raise ScriptError(f"cannot run maintainer scripts over a path with a newline: "
                              f"{printable(str(lower), 200)}")
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(f"{lower}\n".encode("utf-8", "surrogateescape"))
        except OSError:
            pass  # it died: its status and errors tell why
        _Watch(self.proc, self.runs, self.limits, self.cgroup, self.upper, log, counted).run()
        replaced = replaced_system_dir(self.upper)
        if replaced:
            packages = ", ".join(dict.fromkeys(r.package for r in self.runs))
            raise ScriptError(f"maintainer scripts of {packages} replaced a system directory: "
                              f"{replaced}")


@contextlib.contextmanager
def _seccomp_fd(scratch: Path) -> Iterator[int]:
    """A descriptor of :func:`keyring_filter`'s program for ``bwrap --seccomp``, or -1
    on an architecture it does not know."""
    program = keyring_filter()
    if program is None:
        yield -1
        return
    (scratch / "seccomp.bpf").write_bytes(program)
    fd = os.open(scratch / "seccomp.bpf", os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked_scratch(repo: Repo) -> Iterator[Path]:
    """A scratch directory ``tmp/scripts-*`` holding a lock on its ``.lock`` while this
    process uses it (taken before the directory gets its name), removed on exit; the
    repository's open-time clean-up removes one whose lock is free."""
    starting = Path(tempfile.mkdtemp(prefix=".scripts-", dir=repo.tmp_dir))
    fd = os.open(starting / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        scratch = starting.with_name(starting.name[1:])
        os.rename(starting, scratch)
        try:
            yield scratch
        finally:
            rmtree(scratch)
    finally:
        rmtree(starting)
        os.close(fd)


def run_scripts(repo: Repo, txn: Transaction, tree: MutableTree, runs: Sequence[ScriptRun], *,
                limits: Limits | None = None,
                checkouts: CheckoutCache | None = None, counted: Stage | None = None) -> ScriptLog:
    """Run ``runs`` in order over ``tree`` and fold their changes back into it.

    The overlay's lower layer is the repository's kept checkout (``checkouts``),
    brought to the tree, or a fresh checkout when it is in use.  ``limits``
    default to :meth:`Limits.from_env`.  Raises ScriptError, changing nothing in
    ``tree``, when a script fails, breaks a limit or replaces a system directory.
    ``counted`` hears each script as it ends.
    """
    log = ScriptLog()
    if not runs:
        return log
    if os.geteuid() != 0:
        raise ScriptError("running maintainer scripts needs root (an overlay mount); "
                          "run as root or pass --no-scripts")
    limits = limits or Limits.from_env()
    log.entries.append(("strata sandbox", f"limits: {limits.describe()}\n"))
    checkouts = checkouts or CheckoutCache(repo)
    usr_etc = isinstance(tree.lookup("usr/etc"), MutableTree)
    with locked_scratch(repo) as scratch, contextlib.ExitStack() as stack:
        sandbox = _Sandbox(scratch, runs, limits, usr_etc, stack)
        root = tree.write(txn)
        with checkouts.lease(root, scratch) as lower:
            try:
                sandbox.run(lower, log, counted)
            finally:
                stack.close()  # nothing runs over the checkout once it is let go
            skipped = apply_upper(txn, tree, scratch / "upper")
    if skipped:
        log.entries.append(("strata sandbox", "skipped what a commit cannot hold (FIFOs, "
                            f"sockets, devices): {printable(', '.join(skipped), 2000)}\n"))
    return log
