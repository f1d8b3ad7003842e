"""strata remote commands."""

from __future__ import annotations

from layering.cli.context import cli  # noqa: F401
