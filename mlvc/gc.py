"""Garbage collection: remove objects no ref, reflog entry, journal entry or live run reaches.

Safety against a concurrent commit, two ways: a commit holds ``.mlvc/gc.lock`` shared while
it writes objects and moves refs, and gc holds it exclusive; and anything younger than the
grace period (loose objects, packs, which a dedup hit freshens) is kept whatever its
reachability, for writers outside the lock (a live run logging artifacts).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import MlvcError

LOCK_WAIT = 600.0  # seconds gc waits for commits in progress to finish


class GcBusy(MlvcError):
    exit_code = 8


@contextmanager
def gc_lock(mlvc_dir: Path, shared: bool = True, wait: float = LOCK_WAIT) -> Iterator[None]:
    """Hold ``gc.lock``: shared for writers (commits), exclusive for gc."""
    fd = os.open(Path(mlvc_dir) / "gc.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        if shared:
            fcntl.flock(fd, mode)  # gc is rare and bounded: a commit simply waits
        else:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise GcBusy(
                            "commits kept the repository busy; run `mlvc gc` again later"
                        ) from None
                    time.sleep(0.05)
        yield
    finally:
        os.close(fd)
