"""``python -m mlvc`` runs the CLI."""

from .cli import main

main()
