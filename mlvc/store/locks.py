"""``gc.lock``: writers hold it shared while they write objects that a root will name
before they let go; gc holds it exclusive. Shared holds nest and are counted per process.
(A writer that names its objects only later pins them: mlvc.runs.staging.pin.)
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import GcBusy

LOCK_WAIT = 600.0  # seconds gc waits for commits in progress to finish


# (pid, lock path) -> [depth of shared holds in this process, the descriptor holding flock]
_held: dict[tuple[int, str], list] = {}


_held_lock = threading.Lock()


def lock_held(mlvc_dir: Path) -> bool:
    """Whether this process holds ``gc.lock`` shared (for the debug check of writes)."""
    return lock_depth(mlvc_dir) > 0


def lock_depth(mlvc_dir: Path) -> int:
    entry = _held.get((os.getpid(), str(Path(mlvc_dir) / "gc.lock")))
    return entry[0] if entry else 0


@contextmanager
def gc_lock(mlvc_dir: Path, shared: bool = True, wait: float = LOCK_WAIT) -> Iterator[None]:
    """Hold ``gc.lock``: shared for writers (commits), exclusive for gc. Shared holds are
    counted per process, so they nest and threads share one: the flock is released only
    when the last holder in the process leaves."""
    path = str(Path(mlvc_dir) / "gc.lock")
    if shared:
        key = (os.getpid(), path)
        with _held_lock:  # a thread waiting here waits for the same flock anyway
            entry = _held.get(key)
            if entry is None:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH)  # gc is rare and bounded: writers wait
                except BaseException:
                    os.close(fd)
                    raise
                entry = _held[key] = [0, fd]
            entry[0] += 1
        try:
            yield
        finally:
            with _held_lock:
                entry[0] -= 1
                if entry[0] == 0:
                    del _held[key]
                    os.close(entry[1])
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
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


@contextmanager
def writing(mlvc_dir: Path, store) -> Iterator[None]:
    """Write objects that something will name before this block ends, safe from gc: the
    shared lock is held throughout, and the pack index is published before it is let go
    (else another process's gc could not see them and would find their pack unindexed)."""
    with gc_lock(mlvc_dir):
        try:
            yield
        finally:
            flush = getattr(store, "flush", None)
            if flush is not None and lock_depth(mlvc_dir) == 1:
                flush()


def hold_exclusive(path: Path, note: str) -> int | None:
    """Take ``path``'s flock exclusively for the life of the process and write ``note`` in
    it; None when another process holds it (its note says who). The fd is kept open."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, note.encode(), 0)
    return fd
