"""Fixtures shared by every test package, and the clean-up after a session."""

from __future__ import annotations

import getpass
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.util import StrataRunner, run_strata, stop_gpg_agents


@pytest.fixture
def strata() -> StrataRunner:
    """Run the real ``strata`` command in a subprocess; ``check=False`` to inspect failures."""
    return run_strata


def _mutable(path: Path) -> None:
    """Drop ``chattr +i`` below ``path`` (deployment roots carry it), so it can be removed."""
    subprocess.run(["chattr", "-R", "-i", str(path)], capture_output=True, check=False)


def pytest_sessionstart(session: pytest.Session) -> None:
    """pytest renames the temporary directories of old runs to ``garbage-*`` and removes
    them when a new run makes its own; a deployment root left in one (a failed or killed
    test) is immutable and would keep it, and its disk space, for ever.

    A shell without job control starts a background command (``make test &``) with
    SIGINT ignored, and an ignored signal stays ignored across exec: every strata the
    tests start would ignore the Ctrl-C the interrupt tests send.  A handler does not
    survive exec, so with one here the children start with SIGINT at its default."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    for old in (Path(tempfile.gettempdir()) / f"pytest-of-{getpass.getuser()}").glob("garbage-*"):
        _mutable(old)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No test leaves a ``gpg-agent`` running, nor an immutable tree pytest cannot remove."""
    stop_gpg_agents()
    factory = getattr(session.config, "_tmp_path_factory", None)
    basetemp = getattr(factory, "_basetemp", None)  # None when no test asked for a tmp_path
    if basetemp is not None:
        _mutable(basetemp)
