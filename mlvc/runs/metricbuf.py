"""A live run's metric buffer: the points logged since the last flush, in columns.

Two implementations with one behaviour. ``mlvc._metricbuf.MetricBuffer`` (C, built from
setup.py when a compiler is there) takes the common call itself, with no Python frame: a key
already logged, a float or int value, a step None or an int, a timestamp None or a number; it
hands everything else to ``_slow`` below. ``PyMetricBuffer`` is the pure-Python buffer
(``MLVC_PURE=1``, or no compiler). Both refuse what a run cannot store with the same
UsageError, in the same order: the value, then the timestamp, then a new key, then the step
(a key is registered once it is checked, even if the step is then refused).

``take()`` empties the buffer and returns ``(names, codes, steps, times, values)``: ``codes``
an int when every point has one key; the columns are lists (Python) or native-order bytes
(C; numpy and pyarrow read them without a copy). Threads: the C buffer appends each point
whole while holding the GIL, so the flusher's ``take()`` and other logging threads see whole
points; the Python buffer appends the value last and takes only complete rows.
"""

from __future__ import annotations

import time
from typing import Any

from ..core.params import INT_MAX, INT_MIN, case_twin, check_key
from ..core.speedups import extension
from ..errors import UsageError

_now_ns = time.time_ns


def new_buffer(pure: bool = False) -> Any:
    """The C buffer when it was built, unless ``pure`` or ``MLVC_PURE=1``; else the Python
    one."""
    c = None if pure else extension("mlvc._metricbuf")
    return c.MetricBuffer(_slow) if c is not None else PyMetricBuffer()


class PyMetricBuffer:
    """The pure-Python metric buffer (the C one's fallback, with the same methods)."""

    def __init__(self) -> None:
        # appended in this order, value last (see take)
        self._codes: list[int] = []
        self._steps: list[int] = []
        self._times: list[int] = []
        self._values: list[float] = []
        self._keys: dict[str, list] = {}  # key -> [code, next step]
        self._names: list[str] = []

    def log_metric(
        self, key: str, value: float, step: int | None = None, timestamp: float | None = None
    ) -> None:
        if type(value) is not float:  # a type check costs less than a float() call
            value = _value(key, value)
        ns = _now_ns() if timestamp is None else _timestamp_ns(key, timestamp)
        st = self._keys.get(key) or self._new_key(key)
        if step is None:
            step = st[1]
            if step == INT_MAX:  # no next step
                _step(key, step)
        elif type(step) is not int or not INT_MIN <= step < INT_MAX:
            step = _step(key, step)
        st[1] = step + 1
        self._codes.append(st[0])
        self._steps.append(step)
        self._times.append(ns)
        self._values.append(value)

    def log_metrics(
        self, metrics: dict[str, float], step: int | None = None, timestamp: float | None = None
    ) -> None:
        for k, v in metrics.items():
            self.log_metric(k, v, step, timestamp)

    def _new_key(self, key: str) -> list:
        st = [len(self._names), 0]
        self._names.append(_new_key(key, self._keys))
        self._keys[key] = st
        return st

    @property
    def names(self) -> list[str]:
        return list(self._names)

    def __len__(self) -> int:
        return len(self._values)

    def take(self) -> tuple | None:
        n = len(self._values)  # value is appended last: the first n rows are complete
        if not n:
            return None
        cols = [lst[:n] for lst in (self._codes, self._steps, self._times, self._values)]
        names = list(self._names)
        for lst in (self._codes, self._steps, self._times, self._values):
            del lst[:n]
        codes = cols[0]
        if codes.count(codes[0]) == n:  # one key
            cols[0] = codes[0]
        return (names, *cols)


def _slow(buf: Any, key: Any, value: Any, step: Any, timestamp: Any) -> None:
    """The C buffer's ``log_metric`` for a call its fast path does not take: the checks of
    ``PyMetricBuffer.log_metric`` in its order, then one whole point appended with ``push``."""
    if type(value) is not float:
        value = _value(key, value)
    ns = _now_ns() if timestamp is None else _timestamp_ns(key, timestamp)
    code = buf.code(key)
    if code is None:
        code = buf.add_key(_new_key(key, buf.names))
    if step is None:
        step = buf.next_step(code)
        if step == INT_MAX:
            _step(key, step)
    elif type(step) is not int or not INT_MIN <= step < INT_MAX:
        step = _step(key, step)
    buf.push(code, step, ns, value)


def _new_key(key: str, keys: Any) -> str:
    """``key``, checked as a new metric key of a run already holding ``keys``."""
    check_key(key)
    twin = case_twin(key, keys)
    if twin is not None:
        raise UsageError(
            f"metric {key!r} differs only in case from {twin!r}, already logged in this "
            "run; SQL cannot tell them apart, so use one spelling"
        )
    return key


def _value(key: str, value: Any) -> float:
    """A metric value given as another type (int, numpy, a numeric string) as a float;
    else a UsageError."""
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise UsageError(
            f"metric {key!r}: {type(value).__name__} value is not a number a float holds"
        ) from None


def _step(key: str, step: Any) -> int:
    """A step given as another integer type (numpy), checked; else a UsageError."""
    try:
        as_int = int(step) if not isinstance(step, bool | float) else None
    except (TypeError, ValueError):
        as_int = None
    if as_int is None or as_int != step or not INT_MIN <= as_int < INT_MAX:
        raise UsageError(f"metric {key!r}: step {step!r} is not a 64-bit integer")
    return as_int


def _timestamp_ns(key: str, timestamp: Any) -> int:
    """Seconds since the epoch as ns, rounded to the microsecond: a float near 1.7e9 s holds
    only ~0.2 us, so ``int(t * 1e9)`` truncated 1764547200.123 to ...122999808 ns, and an
    MLflow millisecond came back one short."""
    try:
        ns = (
            int(timestamp) * 10**9
            if type(timestamp) is int
            else round(float(timestamp) * 1e6) * 1000
        )
    except (TypeError, ValueError, OverflowError):
        ns = None
    if ns is None or not INT_MIN <= ns <= INT_MAX:
        raise UsageError(
            f"metric {key!r}: timestamp {timestamp!r} is not seconds since the epoch "
            "(years 1678 to 2262)"
        )
    return ns


def columns(taken: tuple) -> list:
    """The columns of ``take()`` (key codes, steps, times, values) as Arrow arrays, converted
    at C speed: the C buffer's bytes are wrapped without a copy; for the Python buffer's lists
    pyarrow converts Python ints at 30-50 ns a point, numpy's ``fromiter`` (when numpy is
    installed, as it is where models train) at ~10. A block of one key needs no per-point
    codes. The flusher thread holds the GIL while it converts: this time is taken from the
    training loop."""
    import pyarrow as pa

    _, codes, steps, times, values = taken
    if isinstance(values, bytes):
        n = len(values) // 8
        types = (pa.int32(), pa.int64(), pa.int64(), pa.float64())
        cols = [
            c if isinstance(c, int) else pa.Array.from_buffers(t, n, [None, pa.py_buffer(c)])
            for c, t in zip((codes, steps, times, values), types, strict=True)
        ]
    else:
        n = len(values)
        try:
            import numpy as np
        except ImportError:  # pragma: no cover (numpy is a test dependency)
            cols = [codes, steps, times, values]
        else:
            ints = [pa.array(np.fromiter(c, np.int64, n)) for c in (steps, times)]
            cols = [codes, *ints, pa.array(np.fromiter(values, np.float64, n))]
    if isinstance(codes, int):
        cols[0] = pa.repeat(pa.scalar(codes, pa.int32()), n)
    return cols


def table_of(taken: tuple) -> Any:
    """The points of ``take()`` as an Arrow table of ``key`` (dictionary-encoded text),
    ``value``, ``step`` and ``timestamp_ns``: what a run on a server sends (its batches'
    Arrow form, mlvc.server.v1.live.arrow_batch)."""
    import pyarrow as pa

    names = taken[0]
    codes, steps, times, values = columns(taken) if len(taken[4]) else [[], [], [], []]
    keys = pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(names, pa.string()))
    return pa.table(
        {
            "key": keys,
            "value": pa.array(values, pa.float64()),
            "step": pa.array(steps, pa.int64()),
            "timestamp_ns": pa.array(times, pa.int64()),
        }
    )
