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


# -- end to end: ingest and a parallel rebuild write the summary the SQL makes of metrics ------

T0 = 1_700_000_000_000_000


def _parquet_blob(rows) -> bytes:
    """A series blob as runs recorded before Arrow IPC stored it."""
    import io

    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(_points(rows), buf)
    return buf.getvalue()


def _table_rows(repo, sql: str) -> list[str]:
    return sorted(map(repr, repo.query(sql).to_pylist()))


def test_ingest_and_parallel_rebuild_write_the_summary_sql_makes_of_metrics(project, monkeypatch):
    """Runs with series (Parquet and Arrow IPC blobs, unsorted, NaN, a key logged only as a
    final metric, a final metric whose key has a series) ingested one by one: metric_summary
    is SUMMARY_SQL over metrics, and a rebuild in worker processes writes the same rows."""
    from mlvc import Repo
    from mlvc.core.objects import Run
    from mlvc.index.index import Index
    from mlvc.runs.finish import series_blob
    from mlvc.store.typed import write_object

    repo = Repo(project)
    index = Index(repo.dir, repo.store, repo.refs, settings=repo.settings)
    for i in range(6):
        rows = [("loss", s, s, 1.0 / (s + 1 + i)) for s in (3, 1, 2, 0)]
        rows += [("acc", 5, None, math.nan), ("acc", 5, 4, 0.25 * i)] if i % 2 else []
        if i % 3 == 0:
            sid = repo.store.add_bytes(_parquet_blob(rows))
        else:
            sid = series_blob(
                repo.store, _points(rows).select(["key", "step", "timestamp", "value"])
            )
        metrics = {"loss": 9.0, "final_only": math.nan if i == 4 else i / 2, "-0": -0.0}
        run = Run(name=f"r{i}", started=T0 + i, ended=T0 + i + 5, metrics=metrics, series=sid)
        oid = write_object(repo.store, run)
        repo.store.sync()
        index.journal(oid)
        repo.refs.add_run(oid)
        index.try_ingest()
    definition = SUMMARY_SQL.format(source="metrics")
    incremental = _table_rows(repo, "SELECT * FROM metric_summary")
    assert incremental == _table_rows(repo, definition)
    assert len(incremental) == 6 * 3 + 3  # loss, final_only, -0 each; acc in three runs
    assert _table_rows(repo, "SELECT * FROM ingest_errors") == []
    metrics = _table_rows(repo, "SELECT * FROM metrics")
    assert sum("'loss'" in r for r in metrics) == 6 * 4  # the final loss: a series has it
    monkeypatch.setattr("mlvc.index.ingest.BATCH_RUNS", 2)
    monkeypatch.setattr("mlvc.index.ingest.PARALLEL_MIN_RUNS", 1)
    assert Index(repo.dir, repo.store, repo.refs, workers=2, settings=repo.settings).rebuild() == 6
    assert _table_rows(repo, "SELECT * FROM metric_summary") == incremental
    assert _table_rows(repo, "SELECT * FROM metrics") == metrics
