"""The one switch for mlvc's optional C extensions (built from setup.py when a compiler is
there): ``MLVC_PURE=1`` in the environment makes every caller take its pure-Python path."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

PURE = os.environ.get("MLVC_PURE") == "1"


def extension(name: str) -> ModuleType | None:
    """The compiled module ``name`` (e.g. ``"mlvc._metricbuf"``), or None when ``PURE`` is set
    or it was not built. Read at each call, so a test can flip ``PURE``."""
    if PURE:
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None
