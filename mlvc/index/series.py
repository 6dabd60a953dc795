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
whole. One DuckDB query over the index's ``metrics`` table does it all for every series
asked for (hash aggregates per series and per bucket, no Python loop over points).

x is one of ``step``, ``time`` (wall time, seconds since the epoch) or ``relative``
(seconds since the run's first metric point, over all its keys).

A long recorded series is also sampled once, when the index ingests its run: its **level**
(``series_levels``) holds the points of the same buckets at ``LEVEL_BUCKETS`` buckets per series
(on x = step, and on x = time, which also serves x = relative: a shift by the run's origin
keeps every bucket). A request for a whole series (no window) at a limit of at most
``LEVEL_LIMIT`` points is then sampled from those few thousand points rather than from
millions: a coarser bucket holds whole level buckets when its count divides
``LEVEL_BUCKETS`` (625 at the default limit), so it keeps the same first, last, smallest,
largest and non-finite points (else a level bucket straddling two may lend its extreme to
the next one). So no first viewer of a million-point series pays for scanning it; a window
(zoom) is read from ``metrics`` at full resolution.

A ``SeriesCache`` keeps sampled answers by content: a recorded run's id is the hash of what
it holds, so its series under one (key, x, window, limit) never changes. The key also holds
the run's ``metric_summary`` row for the key (points, last step, last value), so an index
that has not ingested a run yet, or holds it again after a rebuild, misses rather than
answers old points; a run still in progress has no id in the index until it is recorded,
and the name it is asked by then names a new id.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from .schema import lit

X_AXES = ("step", "time", "relative")
DEFAULT_LIMIT = 2500
MIN_LIMIT = 8  # one bucket of 7 points, and a point more than that to bucket at all
MAX_LIMIT = 100_000
MAX_POINTS = 2_000_000  # in one answer, over all its series
MAX_RUNS = 100  # in one request
MAX_KEYS = 20
CACHE_POINTS = 1_000_000  # sampled points a SeriesCache holds (~100 MB as Python lists)
LEVEL_BUCKETS = 2500  # buckets of a stored level (series_levels), per series and axis
LEVEL_MIN_POINTS = 4 * LEVEL_BUCKETS  # series longer than this get a level at ingest
LEVEL_LIMIT = 4 * LEVEL_BUCKETS  # requests up to this limit sample the level, not the points
LEVEL_AXES = ("step", "time")  # x = relative uses the time level


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
    cached: int = 0  # series answered from a SeriesCache, without the query

    def to_dict(self) -> dict:
        return {
            "x": self.x,
            "limit": self.limit,
            "window": [None if math.isinf(v) else v for v in self.window] if self.window else None,
            "keys": self.keys,
            "series": [s.to_dict() for s in self.series],
            "seconds": round(self.seconds, 6),
            "cached": self.cached,
        }


class SeriesCache:
    """Sampled series by content (see the module's docstring), least recently used out
    first once they hold more than ``max_points`` points. Safe across threads (a server's
    requests share one)."""

    def __init__(self, max_points: int = CACHE_POINTS):
        self.max_points = max_points
        self.points = 0
        self.hits = 0
        self._items: OrderedDict[tuple, Series] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> Series | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                self.hits += 1
            return found

    def put(self, key: tuple, series: Series) -> None:
        size = len(series.step)
        if size > self.max_points:
            return
        with self._lock:
            old = self._items.pop(key, None)
            self.points += size - (len(old.step) if old is not None else 0)
            self._items[key] = series
            while self.points > self.max_points:
                _, out = self._items.popitem(last=False)
                self.points -= len(out.step)

    def __len__(self) -> int:
        return len(self._items)


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


def _picks(point: str) -> str:
    """The points one bucket keeps (the module's docstring), as a list of ``point`` structs
    (NULL where a bucket has no such point); ties go to the smallest x, step, then time, so
    that the same points always give the same picks (a rebuilt index equals an ingested one)."""
    at = "(x, step, ts)"
    first = f"arg_min({point}, {at}) FILTER (WHERE {{}})"
    return f"""[
        arg_min({point}, {at}), arg_max({point}, {at}),
        arg_min({point}, (value, x, step, ts)) FILTER (WHERE isfinite(value)),
        arg_max({point}, (value, x, step, ts)) FILTER (WHERE isfinite(value)),
        {first.format("isnan(value)")},
        {first.format("value = 'inf'::DOUBLE")},
        {first.format("value = '-inf'::DOUBLE")}]"""


# a point's bucket among s.nb equal-width ones over its series' x range [s.x0, s.x1]
_BUCKET = "coalesce(least(floor((p.x - s.x0) / nullif(s.x1 - s.x0, 0) * s.nb), s.nb - 1), 0)"


def _sql(
    x: str, window: tuple[float, float] | None, limit: int, want: str, runs: str, source: str
) -> str:
    """The points to draw of every wanted series, ordered by series then x: one scan and
    two hash aggregates (per series, then per bucket), no sort of the whole window. The
    points come from ``source`` (``metrics``, or one axis of ``series_levels``)."""
    origin = (
        "JOIN (SELECT run_id, min(epoch_us(timestamp)) AS t0 FROM metrics "
        f"WHERE run_id IN {runs} GROUP BY run_id) o USING (run_id)"
        if x == "relative"
        else ""
    )
    where = "WHERE x IS NOT NULL" + ("" if window is None else " AND x BETWEEN $lo AND $hi")
    return f"""
    WITH pts AS (
        SELECT * FROM (
            SELECT w.i, m.step, epoch_us(m.timestamp) AS ts, m.value, {_x_expr(x)} AS x,
                   {"o.t0" if x == "relative" else "NULL::BIGINT"} AS t0
            FROM {source} m JOIN {want} w ON m.run_id = w.run AND m.key = w.key {origin}
        ) {where}
    ),
    stats AS (
        SELECT i, count(*) AS n, min(x) AS x0, max(x) AS x1,
               CASE WHEN bool_and(isfinite(value)) THEN {limit // 4} ELSE {limit // 7} END AS nb
        FROM pts GROUP BY i
    ),
    big AS (
        SELECT p.i, s.n, p.x, p.value, p.step, p.ts,
               {{'step': p.step, 'ts': p.ts, 'value': p.value, 'x': p.x, 't0': p.t0}} AS p,
               {_BUCKET} AS b
        FROM pts p JOIN stats s USING (i) WHERE s.n > {limit}
    ),
    picked AS (
        SELECT DISTINCT i, n, p FROM (
            SELECT i, n, unnest({_picks("p")}) AS p FROM big GROUP BY i, n, b)
        WHERE p IS NOT NULL
    )
    SELECT i, n, p.step, p.ts, p.value, p.x, p.t0 FROM picked
    UNION ALL
    SELECT p.i, s.n, p.step, p.ts, p.value, p.x, p.t0
    FROM pts p JOIN stats s USING (i) WHERE s.n <= {limit}
    ORDER BY i, x"""  # ties in x (a step logged twice) keep any order


def level_sql(source: str) -> str:
    """The ``series_levels`` rows of every series in ``source`` (a relation of run_id, key,
    step, timestamp, value) holding more than LEVEL_MIN_POINTS points: per axis of
    LEVEL_AXES, the points its LEVEL_BUCKETS buckets keep."""
    axes = ", ".join(f"('{a}')" for a in LEVEL_AXES)
    return f"""
    WITH long AS (
        SELECT run_id, key FROM {source} GROUP BY run_id, key
        HAVING count(*) > {LEVEL_MIN_POINTS}
    ),
    pts AS (
        SELECT * FROM (
            SELECT a.axis, m.run_id, m.key, m.step, m.timestamp, epoch_us(m.timestamp) AS ts,
                   m.value, CASE a.axis WHEN 'step' THEN CAST(m.step AS DOUBLE)
                                        ELSE epoch_us(m.timestamp) / 1e6 END AS x
            FROM {source} m SEMI JOIN long USING (run_id, key), (VALUES {axes}) a(axis)
        ) WHERE x IS NOT NULL
    ),
    stats AS (
        SELECT axis, run_id, key, min(x) AS x0, max(x) AS x1, {LEVEL_BUCKETS} AS nb
        FROM pts GROUP BY axis, run_id, key
    ),
    big AS (
        SELECT p.*, {{'step': p.step, 'timestamp': p.timestamp, 'value': p.value}} AS pt,
               {_BUCKET} AS b
        FROM pts p JOIN stats s USING (axis, run_id, key)
    )
    SELECT DISTINCT run_id, key, axis, pt.step AS step, pt.timestamp AS timestamp,
           pt.value AS value
    FROM (SELECT axis, run_id, key, unnest({_picks("pt")}) AS pt
          FROM big GROUP BY axis, run_id, key, b)
    WHERE pt IS NOT NULL"""


def write_levels(con, levels) -> None:
    """Store ``levels`` (an Arrow table made by ``level_points``) in ``series_levels``; the
    index's ingest calls it with each batch of new runs, in its transaction. DISTINCT: one
    point may be a bucket's pick several times over, and two equal points are one."""
    if not len(levels):
        return
    con.register("_arrow_levels", levels)
    try:
        con.execute("INSERT INTO series_levels BY NAME SELECT DISTINCT * FROM _arrow_levels")
    finally:
        con.unregister("_arrow_levels")


def level_points(series: list[tuple[str, Any]]):
    """The level points (before DISTINCT) of the long series among ``series``: (run id,
    Arrow table of key, step, value, timestamp as int64 µs) pairs, each run's points in any
    order. The same points as ``level_sql`` (a test holds the two equal), computed with
    numpy from the arrays a decoder holds already: a SQL pass over the inserted points cost
    a 1M-point ingest 1.7-3.2 s, this ~0.1 s."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = []
    for rid, table in series:
        if len(table) <= LEVEL_MIN_POINTS:
            continue
        counts = pc.value_counts(table.column("key"))
        for key, n in zip(counts.field(0).to_pylist(), counts.field(1).to_pylist(), strict=True):
            if n <= LEVEL_MIN_POINTS or key is None:
                continue
            one = table.filter(pc.equal(table.column("key"), key)) if len(counts) > 1 else table
            for axis in LEVEL_AXES:
                picked = _level_picks(one, axis)
                if len(picked):
                    rows = one.take(pa.array(picked))
                    parts.append(_level_table(rid, key, axis, rows))
    if not parts:
        return _level_table("", "", "", pa.table({
            "step": pa.array([], pa.int64()), "value": pa.array([], pa.float64()),
            "timestamp": pa.array([], pa.int64())}))  # fmt: skip
    return pa.concat_tables(parts)


def _level_table(rid: str, key: str, axis: str, rows):
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(rows)
    return pa.table({
        "run_id": pa.array([rid] * n, pa.string()), "key": pa.array([key] * n, pa.string()),
        "axis": pa.array([axis] * n, pa.string()), "step": rows.column("step"),
        "timestamp": rows.column("timestamp").cast(pa.timestamp("us", "UTC")),
        "value": pc.add(rows.column("value"), 0.0),  # -0.0 as 0.0, as DuckDB's picks give it
    })  # fmt: skip


def _level_picks(table, axis: str):
    """Row numbers of ``table`` (one series) that its LEVEL_BUCKETS buckets on ``axis`` keep:
    ``_picks`` and ``_BUCKET`` in numpy. Ties go to the smallest (x, step, timestamp), a
    missing timestamp ordering last, as DuckDB's do."""
    import numpy as np

    def col(name, fill):
        c = table.column(name)
        valid = np.ones(len(c), bool) if c.null_count == 0 else c.is_valid().to_numpy(False)
        return c.fill_null(fill).to_numpy(), valid

    step, step_ok = col("step", 0)
    ts, ts_ok = col("timestamp", np.iinfo(np.int64).max)
    value, value_ok = col("value", np.nan)
    if axis == "step":
        x, keep = step.astype(np.float64), step_ok
    else:
        x, keep = ts.astype(np.float64) / 1e6, ts_ok
    rows = np.flatnonzero(keep)
    if len(rows) < len(x):
        x, step, ts, value, value_ok = x[rows], step[rows], ts[rows], value[rows], value_ok[rows]
    if not len(rows):
        return rows
    x0, x1 = x.min(), x.max()
    if x1 == x0:
        b = np.zeros(len(x), np.int64)
    else:
        b = np.minimum(np.floor((x - x0) / (x1 - x0) * LEVEL_BUCKETS), LEVEL_BUCKETS - 1)
        b = b.astype(np.int64)
    # the usual case: x increases, and the buckets follow in order without a sort
    increasing = np.all(x[1:] > x[:-1])
    order = np.arange(len(x)) if increasing else np.lexsort((ts, step, x, b))
    b, v, ok = b[order], value[order], value_ok[order]
    starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
    ends = np.r_[starts[1:], len(b)]
    bucket = np.repeat(np.arange(len(starts)), ends - starts)
    finite = ok & np.isfinite(v)
    lo = np.minimum.reduceat(np.where(finite, v, np.inf), starts)[bucket]
    hi = np.maximum.reduceat(np.where(finite, v, -np.inf), starts)[bucket]
    picks = [starts, ends - 1]
    for mask, last in (
        (finite & (v == lo), False),  # the smallest value; ties: the first in x
        (finite & (v == hi), True),  # the largest value; ties: the last in x
        (ok & np.isnan(v), False),
        (v == np.inf, False),
        (v == -np.inf, False),
    ):
        picks.append(_first_per_bucket(np.flatnonzero(mask), bucket, last))
    return rows[order[np.unique(np.concatenate(picks))]]


def _first_per_bucket(positions, bucket, last: bool):
    """Of ``positions`` (increasing), the first (or ``last``) one in each bucket."""
    import numpy as np

    if not len(positions):
        return positions
    if last:
        positions = positions[::-1]
    _, first = np.unique(bucket[positions], return_index=True)
    return positions[first]


def read_series(
    con,
    runs: list[str],
    keys: list[str],
    x: str = "step",
    window: tuple[float, float] | None = None,
    limit: int = DEFAULT_LIMIT,
    cache: SeriesCache | None = None,
) -> SeriesSet:
    """Series of ``keys`` for the run ids ``runs`` (hex), in the order asked for, read on
    ``con``: a DuckDB connection holding the index's tables (``Index.connect_readonly``).
    With a ``cache``, series it holds are not queried again, and those queried are kept."""
    window = check_request(x, limit, window, len(runs), len(keys))
    # an answer stays bounded whatever is asked: the limit per series is lowered so that
    # all of them together hold at most MAX_POINTS (the answer's `limit` is the one used)
    limit = max(MIN_LIMIT, min(limit, MAX_POINTS // max(1, len(runs) * len(keys))))
    started = time.perf_counter()
    pairs = [(r, k) for r in runs for k in keys]
    wanted_runs = "(SELECT unnest($runs) AS run)"
    summary = {  # repr: a last value of NaN must equal itself in a cache key
        (r, k): (n, last_step, repr(last))
        for r, k, n, last_step, last in con.execute(
            "SELECT run_id, key, count, last_step, last FROM metric_summary "
            f"WHERE run_id IN {wanted_runs}",
            {"runs": runs},
        ).fetchall()
    }
    out = SeriesSet(x, limit, window, sorted({k for _, k in summary}))
    found: dict[tuple[str, str], Series] = {}
    cache_keys = {p: (*p, x, window, limit, summary.get(p)) for p in pairs}
    if cache is not None:
        for p in pairs:
            hit = cache.get(cache_keys[p]) if p in summary else None
            if hit is not None:
                found[p] = hit
    missing = [p for p in pairs if p not in found]
    # a whole long series is sampled from its level (stored at ingest), not its points
    leveled = window is None and limit <= LEVEL_LIMIT
    from_level = [p for p in missing if leveled and summary.get(p, (0,))[0] > LEVEL_MIN_POINTS]
    from_points = [p for p in missing if p not in set(from_level)]
    for group, level in ((from_points, False), (from_level, True)):
        if not group:
            continue
        for s in _query(con, group, runs, x, window, limit, level):
            if level:  # the whole series' count, and sampled whatever the level held
                s.total = summary[(s.run, s.key)][0]
                s.sampled = s.total > limit
            found[(s.run, s.key)] = s
            if cache is not None:
                cache.put(cache_keys[(s.run, s.key)], s)
    out.series = [found[p] for p in pairs if p in found]
    out.cached = len(pairs) - len(missing)
    out.seconds = time.perf_counter() - started
    return out


def _query(con, pairs, runs, x, window, limit, level: bool = False) -> list[Series]:
    """The sampled series of ``pairs`` (run, key), in one query over ``metrics`` or, with
    ``level``, over their levels (x = relative uses the time axis's)."""
    # the wanted pairs and runs as bound lists, not registered Arrow tables: a server's
    # concurrent reads are cursors of one connection, and registering on them races
    want = "(SELECT i - 1 AS i, $pr[i] AS run, $pk[i] AS key FROM range(1, len($pr) + 1) t(i))"
    wanted_runs = "(SELECT unnest($runs) AS run)"
    params = {"pr": [r for r, _ in pairs], "pk": [k for _, k in pairs]}
    if x == "relative":  # DuckDB refuses a parameter the statement does not use
        params["runs"] = runs
    if window:
        params.update(lo=window[0], hi=window[1])
    source = "metrics"
    if level:
        axis = "step" if x == "step" else "time"
        source = f"(SELECT * FROM series_levels WHERE axis = '{axis}')"
    # the runs, keys (and steps) as constants too: DuckDB then skips the row groups of
    # other runs (a range read) instead of joining every point of the index
    only = [
        f"run_id IN ({', '.join(map(lit, sorted({r for r, _ in pairs})))})",
        f"key IN ({', '.join(map(lit, sorted({k for _, k in pairs})))})",
    ]
    if window and x == "step":
        only.append(f"step BETWEEN {_int_bound(window[0], math.ceil)} AND "
                    f"{_int_bound(window[1], math.floor)}")  # fmt: skip
    source = f"(SELECT * FROM {source} WHERE {' AND '.join(only)})"
    sql = _sql(x, window, limit, want, wanted_runs, source)
    return _split(con.sql(sql, params=params).to_arrow_table(), pairs, limit)


def _int_bound(bound: float, to_int) -> int:
    """A window's bound on x = step as a BIGINT bound (an infinite one: the type's end)."""
    most = 2**63 - 1
    return (
        max(-most, min(most, to_int(bound)))
        if math.isfinite(bound)
        else int(math.copysign(most, bound))
    )


def _split(table, pairs: list[tuple[str, str]], limit: int) -> list[Series]:
    """The query's rows (ordered by series, then x) as one ``Series`` per pair."""
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
        t0 = col["t0"][a]
        out.append(
            Series(
                run=run,
                key=key,
                total=int(col["n"][a]),
                sampled=int(col["n"][a]) > limit,
                step=col["step"][a:b].tolist(),
                time=(col["ts"][a:b] / 1e6).tolist(),
                value=_json_values(col["value"][a:b]),
                origin=None if t0 is None or t0 != t0 else float(t0) / 1e6,
            )
        )
    return out


def _json_values(values) -> list:
    """Floats, with NaN and infinities as the strings mlvc's JSON uses for them."""
    import numpy as np

    out = values.tolist()
    for i in np.flatnonzero(~np.isfinite(values)).tolist():
        v = out[i]
        out[i] = "nan" if v != v else ("inf" if v > 0 else "-inf")
    return out
