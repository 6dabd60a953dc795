"""A progress bar on stderr for long operations: bytes, files, rate and ETA.

The library reports progress through ``advance``/``files_done``, which cost almost nothing
when no bar is active. The CLI turns bars on with ``enable(True)``; a bar then appears only
after an operation has run for ``DELAY`` seconds and only when stderr is a terminal, so
scripts, pipes and quick commands never see one.

Both switches live in context variables, not module globals: whether bars are on, and the
bar of the operation running now, belong to one thread (or asyncio task), so two threads of
a server or a sweep never count into each other's bar. A new thread starts with bars off;
a pool doing one operation's work runs its tasks through ``carry`` to count in its bar.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

T = TypeVar("T")

DELAY = 1.0  # seconds before a bar appears
EVERY = 0.1  # seconds between redraws

_enabled: ContextVar[bool] = ContextVar("mlvc_progress_enabled", default=False)
_current: ContextVar[Bar | None] = ContextVar("mlvc_progress_bar", default=None)


def enable(on: bool = True) -> None:
    """Allow bars in this thread or task (the CLI calls this unless ``-q``); they still
    need a terminal."""
    _enabled.set(on)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


class Bar:
    """One operation's counters, drawn on ``stream`` at most every EVERY seconds."""

    def __init__(self, label: str, total_bytes: int = 0, total_files: int = 0, stream=None):
        self.label = label
        self.total_bytes = total_bytes
        self.total_files = total_files
        self.bytes = 0
        self.files = 0
        self.start = time.monotonic()
        self.stream = stream or sys.stderr
        self.shown = False
        self._next = self.start + DELAY
        self._lock = threading.Lock()

    def advance(self, nbytes: int = 0, files: int = 0) -> None:
        with self._lock:
            self.bytes += nbytes
            self.files += files
            now = time.monotonic()
            if now >= self._next:
                self._next = now + EVERY
                self._draw(now)

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.start, 1e-9)
        rate = self.bytes / elapsed
        parts = [self.label]
        if self.total_bytes:
            pct = min(100.0, 100.0 * self.bytes / self.total_bytes)
            parts.append(f"{pct:3.0f}% {_human(self.bytes)}/{_human(self.total_bytes)}")
        else:
            parts.append(_human(self.bytes))
        if self.total_files:
            parts.append(f"{self.files}/{self.total_files} files")
        parts.append(f"{_human(rate)}/s")
        if self.total_bytes and rate > 0 and self.bytes < self.total_bytes:
            eta = (self.total_bytes - self.bytes) / rate
            parts.append(f"ETA {int(eta) // 60}:{int(eta) % 60:02d}")
        return "  ".join(parts)

    def _draw(self, now: float) -> None:
        self.stream.write("\r\x1b[K" + self.line(now))
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def active(stream=None) -> bool:
    stream = stream or sys.stderr
    try:
        return _enabled.get() and stream.isatty()
    except (AttributeError, ValueError):
        return False


@contextmanager
def bar(label: str, total_bytes: int = 0, total_files: int = 0):
    """Show a bar for the enclosed operation (if enabled, on a terminal, after DELAY).

    Inside another bar of this context, the outer bar goes on counting (it is yielded)."""
    outer = _current.get()
    if not active() or outer is not None:
        yield outer
        return
    b = Bar(label, total_bytes, total_files)
    token = _current.set(b)
    try:
        yield b
    finally:
        _current.reset(token)
        b.close()


def advance(nbytes: int = 0, files: int = 0) -> None:
    """Count work done in this context's bar, if any."""
    b = _current.get()
    if b is not None:
        b.advance(nbytes, files)


def carry(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn``, counting in the caller's bar when a pool thread runs it (pool threads start
    with an empty context, so they would count nowhere)."""
    b = _current.get()
    if b is None:
        return fn

    def counted(*args, **kwargs) -> T:
        token = _current.set(b)
        try:
            return fn(*args, **kwargs)
        finally:
            _current.reset(token)

    return counted
