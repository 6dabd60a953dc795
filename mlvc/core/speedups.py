"""The optional C speedups, in one place (built from setup.py when a compiler is there):
``MLVC_PURE=1`` in the environment makes every caller take its pure-Python path, which gives
identical results."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

PURE = os.environ.get("MLVC_PURE", "") not in ("", "0")  # read here only (tests set it)


def extension(name: str) -> ModuleType | None:
    """The compiled module ``name`` (e.g. ``"mlvc._metricbuf"``), or None when ``PURE`` is set
    or it was not built. ``PURE`` is read at each call, so a test can flip it."""
    return None if PURE else built(name)


def built(name: str) -> ModuleType | None:
    """The compiled module ``name`` whatever ``PURE`` says, or None if it was not built (by
    name: ``from .. import _walk`` would read as importing the package root)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None
