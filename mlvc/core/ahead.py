"""An ordered map with a bounded number of calls in flight on threads: for reads that wait on
a disk or a network, so the waiting overlaps the work done on each result."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered(fn: Callable[[T], R], items: Iterable[T], width: int, name: str) -> Iterator[R]:
    """``fn(item)`` of each item, in order, with up to ``width`` calls running ahead of the
    consumer on threads named ``name``: at most ``width`` results are held at once. Calls not
    started when the consumer stops are cancelled."""
    if width <= 1:
        yield from map(fn, items)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(width, thread_name_prefix=name) as pool:
        running = deque()
        try:
            for item in items:
                running.append(pool.submit(fn, item))
                if len(running) >= width:
                    yield running.popleft().result()
            while running:
                yield running.popleft().result()
        finally:
            for future in running:
                future.cancel()
