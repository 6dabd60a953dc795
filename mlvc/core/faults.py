"""Fault injection for the crash tests: ``MLVC_FAULT=<point>`` kills the process there with
SIGKILL, as ``kill -9`` would (commits, publishes, pushes, fetches, pack merges)."""

from __future__ import annotations

import os

FAULT_ENV = "MLVC_FAULT"


def crash_point(name: str) -> None:
    """Die here, as ``kill -9`` would, when the fault-injection tests ask for this point."""
    if os.environ.get(FAULT_ENV) == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
