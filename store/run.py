"""The one subprocess wrapper: argv lists only, stderr captured, failures typed."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence

from store.errors import CommandError


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    capture_stdout: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` and return the completed process.

    With ``check`` a non-zero exit raises :class:`CommandError` carrying the
    command line, the exit code and the last lines of stderr.
    """
    args = [os.fspath(a) for a in argv]
    try:
        proc = subprocess.run(
            args,
            input=input,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            timeout=timeout,
            stdout=subprocess.PIPE if capture_stdout else None,
            stderr=subprocess.PIPE,
        )
    except FileNotFoundError as e:
        raise CommandError(shlex.join(args), 127, f"{args[0]}: not found") from e
    except subprocess.TimeoutExpired as e:
        tail = (e.stderr or b"").decode(errors="replace").strip()[-500:]
        msg = f"timed out after {timeout}s {tail}".strip()
        raise CommandError(shlex.join(args), -9, msg) from e
    if check and proc.returncode != 0:
        last = proc.stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise CommandError(shlex.join(args), proc.returncode, " | ".join(last))
    return proc


def start(argv: Sequence[str | os.PathLike[str]]) -> subprocess.Popen[bytes]:
    """Start ``argv`` in the background, its input and output discarded; the caller waits."""
    args = [os.fspath(a) for a in argv]
    try:
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    except FileNotFoundError as e:
        raise CommandError(shlex.join(args), 127, f"{args[0]}: not found") from e


def spawn(argv: Sequence[str | os.PathLike[str]], *,
          pass_fds: Sequence[int] = ()) -> subprocess.Popen[bytes]:
    """Start ``argv`` with pipes on its stdin, stdout and stderr (the caller reads, writes,
    bounds and waits; nothing is buffered here), and ``pass_fds`` open in it."""
    args = [os.fspath(a) for a in argv]
    try:
        return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, bufsize=0, pass_fds=tuple(pass_fds))
    except FileNotFoundError as e:
        raise CommandError(shlex.join(args), 127, f"{args[0]}: not found") from e


_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """In a child process: be sent SIGTERM when ``parent`` dies; exit now if it already has."""
    import ctypes
    import signal

    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(1)


def run_attached(argv: Sequence[str | os.PathLike[str]]) -> int:
    """Run ``argv`` on this process's stdin, stdout and stderr (a terminal stays usable)
    and return its exit status, ``128 + N`` when signal N ended it.  On Ctrl-C the child
    is waited for before KeyboardInterrupt goes on, so nothing of it outlives the caller's
    clean-up."""
    args = [os.fspath(a) for a in argv]
    try:
        proc = subprocess.Popen(args)
    except FileNotFoundError as e:
        raise CommandError(shlex.join(args), 127, f"{args[0]}: not found") from e
    try:
        rc = proc.wait()
    except BaseException:
        proc.terminate()
        proc.wait()
        raise
    return 128 - rc if rc < 0 else rc
