"""``python -m layering`` runs the ``strata`` command."""

from layering.cli import main

main()
