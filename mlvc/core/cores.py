"""Whether a core is idle now, for work that can use a helper thread when one is (big files).

The one-minute load average lags: right after other work it still says "busy" for a minute,
and it counts this process's own earlier commands. This measures the present instead:

- at the start, the number of threads of other processes running this instant
  (``procs_running`` in ``/proc/stat`` less this process's running threads);
- then, at most every ``EVERY`` seconds (the first time after ``FIRST`` when the start said
  no), the CPU the *other* processes used since the last look: all CPUs' busy time from ``/proc/stat`` minus this process's own
  (``time.process_time``), over the wall time between the looks.

A helper is worth starting when the others leave at least ``SPARE`` of a core beside the one
the caller runs on. Off Linux (no ``/proc/stat``) the answer is yes when there are 2+ CPUs.
"""

from __future__ import annotations

import os
import time

EVERY = 0.2  # seconds between looks at /proc/stat (its counters tick every 10 ms)
# A "no" from the first instant is looked at again this soon: a process running just then (a
# kernel flusher, the shell that started this one) would otherwise keep a big commit on one
# thread for EVERY seconds, ~300 MiB of a file. 50 ms is 10 ticks of 2 CPUs: coarse, enough.
FIRST = 0.05
SPARE = 0.5  # a helper pays when the others leave at least this much of a core free


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _stat() -> tuple[int, int, int] | None:
    """(busy ticks, all ticks, threads running now) of the whole machine, or None."""
    try:
        with open("/proc/stat", "rb") as f:
            text = f.read(1 << 16)
    except OSError:
        return None
    try:
        ticks = [int(x) for x in text[: text.index(b"\n")].split()[1:]]
        at = text.index(b"procs_running ") + len(b"procs_running ")
        running = int(text[at : text.index(b"\n", at)])
    except ValueError:
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return sum(ticks[:8]) - idle, sum(ticks[:8]), running


def _mine_running() -> int:
    """Threads of this process running or runnable now (at least the caller)."""
    n = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 1
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                text = f.read(512)
        except OSError:
            continue  # the thread ended meanwhile
        n += text[text.rfind(b")") + 2 : text.rfind(b")") + 3] == b"R"
    return max(n, 1)


class IdleWatch:
    """``spare()``: whether another core is free for a helper thread, looked at now."""

    def __init__(self) -> None:
        self.cpus = _cpus()
        self.machine = os.cpu_count() or self.cpus
        self.last = _stat()
        self.at = time.monotonic()
        self.mine = time.process_time()
        self.looks = 0  # looks at /proc/stat since the first
        if self.cpus < 2:
            self.answer = False
        elif self.last is None:
            self.answer = True
        else:
            self.answer = self.last[2] - _mine_running() <= self.cpus - 1 - SPARE

    def spare(self) -> bool:
        if self.last is None or self.cpus < 2:
            return self.answer
        now = time.monotonic()
        if now - self.at < (EVERY if self.looks or self.answer else FIRST):
            return self.answer
        got, mine = _stat(), time.process_time()
        if got is not None and got[1] > self.last[1]:
            share = (got[0] - self.last[0]) / (got[1] - self.last[1])  # of all CPUs busy
            others = share * self.machine - (mine - self.mine) / (now - self.at)
            self.answer = others <= self.cpus - 1 - SPARE
            self.last, self.at, self.mine = got, now, mine
            self.looks += 1
        return self.answer
