"""Fault injection for crash tests: ``STRATA_TEST_FAIL_AT=point[,point...]``.

At a named point the process exits at once with status 1 (``os._exit``: no
cleanup handlers run), as if it had been killed there.  With
``STRATA_TEST_STOP_AT=point[,point...]`` it stops itself (SIGSTOP) there instead,
so that a test can deliver a signal (Ctrl-C) at exactly that point.
"""

from __future__ import annotations

import os
import signal


def fail_point(name: str) -> None:
    """Exit immediately when ``name`` is listed in ``$STRATA_TEST_FAIL_AT``; stop when it
    is listed in ``$STRATA_TEST_STOP_AT``."""
    points = os.environ.get("STRATA_TEST_FAIL_AT", "")
    if name in points.split(","):
        os._exit(1)
    if name in os.environ.get("STRATA_TEST_STOP_AT", "").split(","):
        os.kill(os.getpid(), signal.SIGSTOP)
