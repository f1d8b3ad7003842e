"""Fixtures shared by every test package."""

from __future__ import annotations

import pytest

from tests.util import StrataRunner, run_strata, stop_gpg_agents


@pytest.fixture
def strata() -> StrataRunner:
    """Run the real ``strata`` command in a subprocess; ``check=False`` to inspect failures."""
    return run_strata


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No test leaves a ``gpg-agent`` running."""
    stop_gpg_agents()
