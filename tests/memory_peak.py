"""How far a block of code raised the process's peak memory, measured in a test worker that
has run hundreds of tests before.

``ru_maxrss`` is the peak of the whole process: once an earlier test took the worker to
~900 MB, a block that allocated 500 MB left it unchanged, and a test asserting "this read
did not inflate" passed whatever the read did. Linux resets the peak on request
(``/proc/self/clear_refs``, "5"), so the peak read after the block is the block's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


@contextmanager
def peak_growth() -> Iterator[list[int]]:
    """``with peak_growth() as grown:`` then ``grown[0]``: bytes the peak resident size
    rose above the resident size at the start of the block."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak is now what is resident
    start = _status_kib("VmRSS")
    grown = [0]
    try:
        yield grown
    finally:
        grown[0] = (_status_kib("VmHWM") - start) * 1024


def rss_bytes() -> int:
    return _status_kib("VmRSS") * 1024


__all__ = ["peak_growth", "rss_bytes"]
