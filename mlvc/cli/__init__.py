"""The command-line shell: parse, make one library call, render (mlvc.cli.main)."""

from .main import main

__all__ = ["main"]
