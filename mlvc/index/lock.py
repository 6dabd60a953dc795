"""The index lock, an ``flock`` on ``.mlvc/index.lock``, and the readers a thread holds.

Exclusive to write the index, shared to read it. An flock is not fair: under a storm of
commits, each starting an ingest the moment the lock is free, a reader polling for it could
wait for dozens of them. So a reader (or ``sync``) that has to wait leaves a marker in
``.mlvc/index.wanted/`` while it waits, and committers start no ingest while one is there:
their runs stay journalled, and the waiting reader ingests them all at once. An flock belongs to an open file
description, so two threads of one process, each with its own descriptor, exclude each other
as two processes do: a writer in one thread waits (bounded) for a reader in another.

A thread that already holds a reader must never wait for the exclusive lock: its own shared
lock keeps it out, for good. So a reader it opens inside its reader is *nested*: it reads the
index as it stands, and a damaged index found there is reported, not rebuilt. Which readers
are held is a context variable — per thread, and per asyncio task or ``copy_context()`` run.
It was once counted per process, and then one thread's open reader made every other thread's
query skip the journal and answer without runs committed since.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from ..errors import IndexBusy

LOCK_WAIT = 30.0  # seconds a reader or ``sync`` waits for the index lock
WANTED = "index.wanted"  # the folder of markers of waiting readers, in .mlvc

# Lock paths of the readers this context holds, once per reader (nested ones included).
_readers: ContextVar[tuple[str, ...]] = ContextVar("mlvc_index_readers", default=())


class GaveWay(Exception):
    """A committer's ingest stopped for a reader waiting for the lock (``Writer.give_way``):
    its transaction is rolled back and its journal entries stay, for that reader."""


class IndexLock:
    """The flock of one index: ``path``, created in ``folder`` when missing."""

    def __init__(self, path: Path, folder: Path):
        self.path = Path(path)
        self.folder = Path(folder)

    def take(self, exclusive: bool, wait: float) -> int | None:
        """An fd holding the lock, or None if it stayed busy for ``wait`` seconds."""
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            # .mlvc is not writable here: lock the file read-only, or, if nobody could create
            # it, nobody can write the index either, and the folder serves as the lock
            target = self.path if self.path.exists() else self.folder
            fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
        op = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        deadline = time.monotonic() + wait
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, op)
                return fd
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def take_or_raise(self, exclusive: bool) -> int:
        """An fd holding the lock, waiting at most LOCK_WAIT seconds, else ``IndexBusy``;
        while it waits, committers start no ingest (``wanted``)."""
        fd = self.take(exclusive, 0.0)
        if fd is None:
            with self._waiting():
                fd = self.take(exclusive, LOCK_WAIT)
        if fd is None:
            raise IndexBusy(
                f"the index has been locked by another mlvc process for over {LOCK_WAIT:.0f} s "
                f"(a long query or an ingest holds {self.path}); try again in a moment"
            )
        return fd

    def downgrade(self, fd: int) -> None:
        """Turn the exclusive lock held on ``fd`` into a shared one, so that no writer takes
        the index between a reader's ingest and its read (a committer's worker that did would
        keep the reader waiting for a whole ingest more). Linux makes the change in two steps,
        so another process may take the lock in between: then this waits for it, bounded,
        like ``take_or_raise``."""
        with contextlib.ExitStack() as waiting:
            deadline = None
            while not _try_flock(fd, fcntl.LOCK_SH):
                if deadline is None:
                    waiting.enter_context(self._waiting())
                    deadline = time.monotonic() + LOCK_WAIT
                elif time.monotonic() >= deadline:
                    raise IndexBusy(
                        f"the index has been locked by another mlvc process for over "
                        f"{LOCK_WAIT:.0f} s ({self.path}); try again in a moment"
                    )
                time.sleep(0.01)

    def wanted(self) -> bool:
        """Whether a reader is waiting for the lock now (a marker younger than LOCK_WAIT;
        older ones were left by a process that died, and are removed)."""
        try:
            markers = list(os.scandir(self.folder / WANTED))
        except OSError:
            return False
        now = time.time()
        for marker in markers:
            try:
                if now - marker.stat().st_mtime < LOCK_WAIT + 5:
                    return True
                os.unlink(marker.path)
            except OSError:
                continue
        return False

    @contextmanager
    def _waiting(self) -> Iterator[None]:
        """A marker in ``index.wanted`` while the block runs (none if .mlvc is read-only)."""
        path = self.folder / WANTED / f"{os.getpid()}-{threading.get_ident()}-{time.time_ns()}"
        try:
            path.parent.mkdir(exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
        except OSError:
            path = None
        try:
            yield
        finally:
            if path is not None:
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def held_here(self) -> bool:
        """Whether this thread (or task) holds a reader of this index."""
        return str(self.path) in _readers.get()

    @contextmanager
    def reader(self) -> Iterator[None]:
        """Count the enclosed block as a reader held by this thread (or task)."""
        key = str(self.path)
        _readers.set((*_readers.get(), key))
        try:
            yield
        finally:
            held = list(_readers.get())
            if key in held:  # a generator finished in another context holds none here
                held.remove(key)
            _readers.set(tuple(held))


def _try_flock(fd: int, op: int) -> bool:
    """Whether ``flock(fd, op)`` succeeded without waiting."""
    try:
        fcntl.flock(fd, op | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
        return False
