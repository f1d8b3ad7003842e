"""Fault injection for crash tests: ``STRATA_TEST_FAIL_AT=point[,point...]``.

At a named point the process exits at once with status 1 (``os._exit``: no
cleanup handlers run), as if it had been killed there.
"""

from __future__ import annotations

import os


def fail_point(name: str) -> None:
    """Exit immediately when ``name`` is listed in ``$STRATA_TEST_FAIL_AT``."""
    points = os.environ.get("STRATA_TEST_FAIL_AT", "")
    if name in points.split(","):
        os._exit(1)
