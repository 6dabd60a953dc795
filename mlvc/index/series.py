"""Metric series for charts: every point of a window, or a bounded sample of it.

A chart cannot draw more points than it has pixels, and a browser cannot parse a million of
them quickly, so a series longer than ``limit`` points is cut into equal-width buckets of its
x range and each bucket keeps only the points a line chart needs to look the same
(min/max per bucket, as M4 does):

- its first and last point (so lines join the next bucket where they should),
- the point of its smallest and of its largest finite value (so no spike disappears),
- its first NaN, its first +inf and its first -inf (non-finite values are never dropped
  silently; a chart shows them as markers).

A bucket keeps at most 7 points, so a series with non-finite values gets ``limit // 7``
buckets and any other ``limit // 4``; a window holding ``limit`` points or fewer is returned
whole. One DuckDB query reads the window's points of every series asked for, ordered by x,
from the index's ``metrics`` table; the bucketing is vectorized numpy over those columns.

x is one of ``step``, ``time`` (wall time, seconds since the epoch) or ``relative``
(seconds since the run's first metric point, over all its keys).
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError

X_AXES = ("step", "time", "relative")
DEFAULT_LIMIT = 2500
MIN_LIMIT = 8  # one bucket of 7 points, and a point more than that to bucket at all
MAX_LIMIT = 100_000
MAX_RUNS = 100  # in one request
MAX_KEYS = 20


@dataclass
class Series:
    """One run's one key: columns of equal length, ordered by x."""

    run: str
    key: str
    total: int  # points in the window before sampling
    sampled: bool
    step: list[int]
    time: list[float]  # seconds since the epoch (microsecond precision)
    value: list[Any]  # floats; 'nan', 'inf', '-inf' as strings (JSON has no such numbers)
    origin: float | None = None  # x = relative: the run's first point's time (x = time - it)

    def to_dict(self) -> dict:
        return {
            "run": self.run,
            "key": self.key,
            "total": self.total,
            "sampled": self.sampled,
            "step": self.step,
            "time": self.time,
            "value": self.value,
            "origin": self.origin,
        }


@dataclass
class SeriesSet:
    """The answer for runs x keys: what the runs have, and the series asked for."""

    x: str
    limit: int
    window: tuple[float, float] | None
    keys: list[str]  # every metric key the runs have, sorted
    series: list[Series] = field(default_factory=list)
    seconds: float = 0.0  # time the query took (benchmarks report it)

    def to_dict(self) -> dict:
        return {
            "x": self.x,
            "limit": self.limit,
            "window": [None if math.isinf(v) else v for v in self.window] if self.window else None,
            "keys": self.keys,
            "series": [s.to_dict() for s in self.series],
            "seconds": round(self.seconds, 6),
        }


def check_request(
    x: str, limit: int, window: tuple[float, float] | None, runs: int, keys: int
) -> tuple[float, float] | None:
    """Refuse what the query cannot answer, with a message naming the argument. A window
    may be open at either end (an infinite bound); one with x_min > x_max holds no point."""
    if x not in X_AXES:
        raise UsageError(f"x: {x!r} is not one of {', '.join(X_AXES)}")
    if not MIN_LIMIT <= limit <= MAX_LIMIT:
        raise UsageError(f"limit: {limit} is out of range ({MIN_LIMIT} to {MAX_LIMIT})")
    if runs > MAX_RUNS or keys > MAX_KEYS:
        raise UsageError(
            f"{runs} runs and {keys} keys asked for; at most {MAX_RUNS} runs and "
            f"{MAX_KEYS} keys in one request"
        )
    if window is None:
        return None
    lo, hi = (float(v) for v in window)
    if math.isnan(lo) or math.isnan(hi):
        raise UsageError("window: x_min and x_max must be numbers, not NaN")
    return lo, hi


def _x_expr(x: str) -> str:
    if x == "step":
        return "CAST(m.step AS DOUBLE)"
    if x == "time":
        return "epoch_us(m.timestamp) / 1e6"
    # relative: from the run's first point over all its keys (one time origin per run)
    return "(epoch_us(m.timestamp) - o.t0) / 1e6"


def _sql(x: str, window: tuple[float, float] | None, want: str, runs: str) -> str:
    """Every point of the wanted series in the window, ordered by series then x."""
    origin = (
        "JOIN (SELECT run_id, min(epoch_us(timestamp)) AS t0 FROM metrics "
        f"WHERE run_id IN (SELECT run FROM {runs}) GROUP BY run_id) o USING (run_id)"
        if x == "relative"
        else ""
    )
    where = "WHERE x IS NOT NULL" + ("" if window is None else " AND x BETWEEN $lo AND $hi")
    return f"""
    SELECT * FROM (
        SELECT w.i, m.step, epoch_us(m.timestamp) AS ts, m.value, {_x_expr(x)} AS x,
               {"o.t0" if x == "relative" else "NULL::BIGINT"} AS t0
        FROM metrics m JOIN {want} w ON m.run_id = w.run AND m.key = w.key {origin}
    ) {where}
    ORDER BY i, x"""  # ties in x (a step logged twice) keep any order


def read_series(
    index,
    runs: list[str],
    keys: list[str],
    x: str = "step",
    window: tuple[float, float] | None = None,
    limit: int = DEFAULT_LIMIT,
) -> SeriesSet:
    """Series of ``keys`` for the run ids ``runs`` (hex), in the order asked for."""
    import pyarrow as pa

    window = check_request(x, limit, window, len(runs), len(keys))
    started = time.perf_counter()
    pairs = [(r, k) for r in runs for k in keys]
    want = pa.table(
        {
            "i": pa.array(range(len(pairs)), pa.int64()),
            "run": pa.array([r for r, _ in pairs], pa.string()),
            "key": pa.array([k for _, k in pairs], pa.string()),
        }
    )
    # names of this call's own: a server's concurrent reads are cursors of one connection,
    # which share its registered views
    tag = uuid.uuid4().hex
    want_name, runs_name = f"_want_{tag}", f"_runs_{tag}"
    with index.connect_readonly() as con:
        con.register(want_name, want)
        con.register(runs_name, pa.table({"run": pa.array(runs, pa.string())}))
        try:
            have = [
                k
                for (k,) in con.execute(
                    "SELECT DISTINCT key FROM metric_summary "
                    f"WHERE run_id IN (SELECT run FROM {runs_name}) ORDER BY key"
                ).fetchall()
            ]
            params = {"lo": window[0], "hi": window[1]} if window else {}
            sql = _sql(x, window, want_name, runs_name)
            table = con.sql(sql, params=params).to_arrow_table() if pairs else None
        finally:
            con.unregister(want_name)
            con.unregister(runs_name)
    out = SeriesSet(x, limit, window, have)
    if table is not None:
        out.series = _split(table, pairs, limit)
    out.seconds = time.perf_counter() - started
    return out


def _split(table, pairs: list[tuple[str, str]], limit: int) -> list[Series]:
    """The query's rows (ordered by series, then x) as one sampled ``Series`` per pair."""
    import numpy as np

    if table.num_rows == 0:
        return []
    col = {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}
    i = col["i"]
    starts = np.flatnonzero(np.r_[True, i[1:] != i[:-1]])
    ends = np.r_[starts[1:], len(i)]
    out = []
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        run, key = pairs[int(i[a])]
        keep = sample(col["x"][a:b], col["value"][a:b], limit)
        out.append(
            Series(
                run=run,
                key=key,
                total=b - a,
                sampled=len(keep) < b - a,
                step=col["step"][a:b][keep].tolist(),
                time=(col["ts"][a:b][keep] / 1e6).tolist(),
                value=_json_values(col["value"][a:b][keep]),
                origin=None
                if col["t0"][a] is None or col["t0"][a] != col["t0"][a]
                else float(col["t0"][a]) / 1e6,
            )
        )
    return out


def sample(x, value, limit: int):
    """Indices of the points to draw (sorted): all of them when there are ``limit`` or
    fewer, else per equal-width bucket of ``x`` its first, last, finite min and max, and
    first NaN, +inf and -inf (see the module's docstring). ``x`` must be sorted."""
    import numpy as np

    n = len(x)
    if n <= limit:
        return np.arange(n)
    finite = np.isfinite(value)
    buckets = limit // 4 if finite.all() else limit // 7
    span = float(x[-1] - x[0])
    if span > 0 and math.isfinite(span):
        bucket = np.minimum(((x - x[0]) / span * buckets).astype(np.int64), buckets - 1)
    else:
        bucket = np.zeros(n, np.int64)
    first = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    last = np.r_[first[1:], n] - 1
    low = np.where(finite, value, np.inf)
    high = np.where(finite, value, -np.inf)
    row_bucket = np.cumsum(np.r_[True, bucket[1:] != bucket[:-1]]) - 1
    lows = np.minimum.reduceat(low, first)[row_bucket]
    highs = np.maximum.reduceat(high, first)[row_bucket]
    marks = [
        finite & (value == lows),
        finite & (value == highs),
        np.isnan(value),
        value == np.inf,
        value == -np.inf,
    ]
    picks = [first, last] + [_first_per_bucket(np.flatnonzero(m), row_bucket) for m in marks]
    return np.unique(np.concatenate(picks))


def _first_per_bucket(rows, row_bucket):
    """The first of ``rows`` (sorted indices) in each bucket that has one."""
    import numpy as np

    if len(rows) == 0:
        return rows
    b = row_bucket[rows]
    return rows[np.r_[True, b[1:] != b[:-1]]]


def _json_values(values) -> list:
    """Floats, with NaN and infinities as the strings mlvc's JSON uses for them."""
    import numpy as np

    out = values.tolist()
    for i in np.flatnonzero(~np.isfinite(values)).tolist():
        v = out[i]
        out[i] = "nan" if v != v else ("inf" if v > 0 else "-inf")
    return out
