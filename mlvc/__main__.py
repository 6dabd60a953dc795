"""``python -m mlvc`` runs the CLI."""

from .cli.main import main

main()
