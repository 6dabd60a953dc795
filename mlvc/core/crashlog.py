"""The log files of detached processes (the index worker, the alert watcher): they have no
terminal, so what went wrong is appended to a file under ``.mlvc/``."""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path


def append_log(path: Path, text: str | None = None) -> None:
    """Append a stamped line with ``text``, or with the exception being handled and its
    traceback, to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        stamp = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} pid {os.getpid()}"
        f.write(f"{stamp}: {text}\n" if text is not None else f"{stamp}\n")
        if text is None:
            f.write(traceback.format_exc())
