"""The pack files a store reads, kept open between reads but never more than a bound at once.

A repository gets a pack per commit (until ``mlvc gc`` merges them), so a process that reads
every run (an index rebuild, fsck, gc, an export, a server over months) meets thousands of
packs. Kept open each, they ran out of descriptors at the usual soft limit of 1,024 (macOS:
256): "Too many open files" in the middle of a rebuild. Like git's pack window, at most
``limit`` stay open: the least recently read is closed when another must open.

Threads read through one store (the index's readers, a checkout's writers), so a descriptor
is closed only while no read is using it: closed under a reader, its number could be handed
to the next file opened and the read would return that file's bytes. A read pins its pack's
descriptor for the system call; if every open one is pinned, the bound is passed for a moment
rather than waited on. A pack that no index names any more (gc merged it away) is closed at
the next look at the folder (``forget``), so a long-running process does not keep its disk
space held.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import resource
import threading
from collections import OrderedDict
from collections.abc import Callable, Container
from pathlib import Path

MOST = 256  # descriptors kept open for packs, at most, whatever the process's limit


def default_limit() -> int:
    """A quarter of the process's soft limit on open files, between 8 and MOST: the rest is
    left for DuckDB, sockets, the files a command writes, and other stores."""
    try:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):  # pragma: no cover - every POSIX system has it
        return 64
    if soft == resource.RLIM_INFINITY:
        return MOST
    return max(8, min(MOST, soft // 4))


class OpenPacks:
    """Descriptors of the packs in ``folder``, opened on first read, at most ``limit`` kept."""

    def __init__(self, folder: Path, limit: int | None = None):
        self.folder = folder
        self.limit = default_limit() if limit is None else limit
        self._fds: OrderedDict[str, int] = OrderedDict()  # least recently read first
        self._pinned: dict[str, int] = {}  # reads in progress, by pack
        self._lock = threading.Lock()

    def pread(self, name: str, n: int, offset: int) -> bytes:
        return self._with(name, lambda fd: os.pread(fd, n, offset))

    def size(self, name: str) -> int:
        return self._with(name, lambda fd: os.fstat(fd).st_size)

    def map(self, name: str, length: int, offset: int) -> mmap.mmap:
        """A read-only map of part of a pack; it stays valid once the descriptor is closed."""
        return self._with(
            name, lambda fd: mmap.mmap(fd, length, prot=mmap.PROT_READ, offset=offset)
        )

    def open_count(self) -> int:
        return len(self._fds)

    def forget(self, listed: Container[str]) -> None:
        """Close the packs not in ``listed`` (no index names them: merged away or deleted)
        that no read is using; any left open are closed in their turn as least recent."""
        with self._lock:
            for name in [n for n in self._fds if n not in listed and n not in self._pinned]:
                os.close(self._fds.pop(name))

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._fds.clear()

    def _with(self, name: str, use: Callable[[int], object]):
        """``use(fd)`` with ``name``'s descriptor pinned open (FileNotFoundError if the pack
        is gone and was not open)."""
        with self._lock:
            fd = self._fds.get(name)
            if fd is None:
                fd = os.open(self.folder / name, os.O_RDONLY | os.O_CLOEXEC)
                self._fds[name] = fd
            else:
                self._fds.move_to_end(name)
            self._pinned[name] = self._pinned.get(name, 0) + 1  # before any shrink: not this
            self._shrink()
        try:
            return use(fd)
        finally:
            with self._lock:
                left = self._pinned.pop(name) - 1
                if left:
                    self._pinned[name] = left
                self._shrink()

    def _shrink(self) -> None:
        """Close the least recently read packs no read is using, down to ``limit`` (the
        first one unpinned is nearly always the first: no copy of the order is made)."""
        while len(self._fds) > self.limit:
            for name in self._fds:
                if name not in self._pinned:
                    break
            else:
                return  # every open pack is being read: over the bound for a moment
            os.close(self._fds.pop(name))
