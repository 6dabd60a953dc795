"""metric_summary computed with numpy in the decoder equals its SQL definition, and the
rows a rebuild writes equal those of the ingest of the same runs."""

from __future__ import annotations

import functools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlvc.index.summary import SUMMARY_SQL, summarize

values = st.one_of(
    st.floats(-3, 3).map(lambda v: round(v, 1)),
    st.sampled_from([math.nan, math.inf, -math.inf, None, 0.0, -0.0]),
)
point = st.tuples(
    st.sampled_from(["a", "b", "B", None]),
    st.one_of(st.integers(-3, 6), st.none(), st.sampled_from([-(2**63), 2**63 - 1])),
    st.one_of(st.integers(0, 4), st.none()),
    values,
)


def _schema():
    import pyarrow as pa

    return pa.schema(
        [("run_id", pa.string()), ("key", pa.string()), ("last", pa.float64()),
         ("min", pa.float64()), ("max", pa.float64()), ("count", pa.int64()),
         ("last_step", pa.int64())]
    )  # fmt: skip


def _points(rows):
    import pyarrow as pa

    return pa.table(
        {
            "key": pa.array([r[0] for r in rows], pa.string()),
            "step": pa.array([r[1] for r in rows], pa.int64()),
            "value": pa.array([r[3] for r in rows], pa.float64()),
            "timestamp": pa.array(
                [None if r[2] is None else 1_700_000_000_000_000 + r[2] for r in rows], pa.int64()
            ),
        }
    )


@functools.cache
def _con():
    import duckdb

    return duckdb.connect()


def _check(runs: list[list[tuple]]):
    import pyarrow as pa

    rids = [f"r{i}" for i in range(len(runs))]
    rows = [r for run in runs for r in run]
    points = _points(rows)
    got = summarize(rids, [len(r) for r in runs], points, _schema())
    assert got.schema.names == _schema().names
    con = _con()
    con.register(
        "pts",
        points.add_column(
            0,
            "run_id",
            pa.array([rid for rid, run in zip(rids, runs, strict=True) for _ in run], pa.string()),
        ),
    )
    con.register("got", got)
    want = con.sql(f"SELECT * FROM ({SUMMARY_SQL.format(source='pts')}) ORDER BY ALL").fetchall()
    have = con.sql("SELECT * FROM got ORDER BY ALL").fetchall()
    con.unregister("pts")
    con.unregister("got")
    assert _plain(have) == _plain(want)


def _plain(rows) -> list[str]:
    """Rows as text, -0.0 as 0.0: min and max of a tie of 0.0 and -0.0 keep whichever the
    scan met first, in DuckDB as in numpy (NaN stays NaN, None None)."""
    return [repr(tuple(v + 0.0 if isinstance(v, float) else v for v in r)) for r in rows]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(point, max_size=30), max_size=4))
def test_summary_computed_with_numpy_equals_the_sql(runs):
    """Any order, ties, missing steps/timestamps/values, NaN, infinities, a null key."""
    _check(runs)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 40), max_size=4), st.data())
def test_summary_of_sorted_series_equals_the_sql(sizes, data):
    """Series as blobs store them (each key's steps increasing): the path without a sort."""
    runs = []
    for n in sizes:
        keys = sorted(data.draw(st.sets(st.sampled_from(["x", "y", "z"]), min_size=1)))
        run = []
        for key in keys:
            steps = sorted(data.draw(st.sets(st.integers(-5, 50), min_size=1, max_size=n)))
            run += [(key, s, data.draw(st.integers(0, 3)), data.draw(values)) for s in steps]
        runs.append(run)
    _check(runs)


def test_summary_of_no_points_is_empty():
    assert summarize([], [], _points([]), _schema()).num_rows == 0


@pytest.mark.parametrize("value", [math.nan, None])
def test_a_key_without_a_finite_value_has_no_min_or_max(value):
    _check([[("a", 1, 0, value), ("a", 2, None, value)]])
