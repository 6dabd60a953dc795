"""The optional C speedups, in one place: ``MLVC_PURE=1`` in the environment forces the
pure-Python path of every one of them (each gives identical results either way)."""

from __future__ import annotations

import os
from types import ModuleType

PURE = os.environ.get("MLVC_PURE", "") not in ("", "0")  # read here only (tests set it)


def walk() -> ModuleType | None:
    """``mlvc._walk`` (the stat walk of data folders), or None: MLVC_PURE, or not built."""
    return None if PURE else walk_module()


def walk_module() -> ModuleType | None:
    """``mlvc._walk`` whatever MLVC_PURE says, or None if it was not built."""
    import importlib  # by name: `from .. import _walk` reads as importing the package root

    try:
        return importlib.import_module("mlvc._walk")
    except ImportError:
        return None
