"""Metric series for charts (mlvc.index.series, Repo.series): sampling invariants and the
library answer over a real repository."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mlvc
from mlvc.errors import UnknownRun, UsageError

SPECIAL = [math.nan, math.inf, -math.inf]
values = st.one_of(st.floats(-1e6, 1e6), st.sampled_from(SPECIAL))


@st.composite
def series(draw):
    n = draw(st.integers(0, 600))
    steps = sorted(draw(st.lists(st.integers(-50, 10_000), min_size=n, max_size=n)))
    vals = draw(st.lists(values, min_size=n, max_size=n))
    return np.array(steps, dtype=float), np.array(vals, dtype=float)


def buckets_of(x, v, limit):
    """The buckets as the docstring defines them, computed the slow, obvious way."""
    nb = limit // 4 if np.isfinite(v).all() else limit // 7
    span = x[-1] - x[0]
    out: dict[int, list[int]] = {}
    for i, xi in enumerate(x):
        b = 0 if span == 0 else min(int((xi - x[0]) / span * nb), nb - 1)
        out.setdefault(b, []).append(i)
    return out


def sample(x, v, limit: int) -> list[int]:
    """The indices of the points read_series keeps of one series (x sorted), through the
    real query on an in-memory DuckDB holding the index's tables."""
    import duckdb
    import pyarrow as pa

    from mlvc.index import schema
    from mlvc.index.series import read_series

    con = duckdb.connect()
    schema.create(con)
    rows = pa.table({
        "run_id": pa.array(["r"] * len(x)), "key": pa.array(["k"] * len(x)),
        "step": pa.array(np.asarray(x, dtype=np.int64)),
        "timestamp": pa.array(np.arange(len(x), dtype=np.int64) * 1000, pa.timestamp("us", "UTC")),
        "value": pa.array(np.asarray(v, dtype=float)),
    })  # fmt: skip
    con.register("rows", rows)
    con.execute("INSERT INTO metrics SELECT * FROM rows")
    con.execute("INSERT INTO metric_summary SELECT 'r', 'k', 0, 0, 0, 1, 0")
    got = read_series(con, ["r"], ["k"], limit=limit).series
    if not got:
        return []
    (s,) = got
    assert s.total == len(x) and s.sampled == (len(x) > limit)
    # the timestamp is each point's index: it names the point kept
    return [round(t * 1e3) for t in s.time]


@settings(max_examples=40)  # each example is a DuckDB database of its own
@given(series(), st.integers(8, 300))
def test_sampling_keeps_what_a_chart_needs_and_no_more(s, limit):
    x, v = s
    keep = sample(x, v, limit)
    kept = set(keep)
    assert [x[i] for i in keep] == sorted(x[i] for i in keep)  # ordered by x
    assert len(keep) == len(kept)  # no point twice
    if len(x) <= limit:
        assert sorted(keep) == list(range(len(x)))  # full resolution when small
        return
    assert len(keep) <= limit
    for rows in buckets_of(x, v, limit).values():
        in_bucket = kept & set(rows)
        # the first and last x of the bucket (which point of equal x is kept may vary)
        assert any(x[i] == x[rows[0]] for i in in_bucket)
        assert any(x[i] == x[rows[-1]] for i in in_bucket)
        fin = [i for i in rows if math.isfinite(v[i])]
        if fin:
            lo, hi = min(v[i] for i in fin), max(v[i] for i in fin)
            assert any(v[i] == lo for i in in_bucket)
            assert any(v[i] == hi for i in in_bucket)
        for special in ("nan", "inf", "-inf"):  # never dropped silently
            if any(_kind(v[i]) == special for i in rows):
                assert any(_kind(v[i]) == special for i in in_bucket)
    assert any(x[i] == x[0] for i in kept) and any(x[i] == x[-1] for i in kept)


def _kind(f: float) -> str:
    return "nan" if f != f else ("inf" if f == math.inf else "-inf" if f == -math.inf else "")


def test_a_spike_in_a_million_points_survives_sampling():
    x = np.arange(1_000_000, dtype=float)
    v = np.sin(x / 1000)
    v[777_777] = 50.0
    v[123_456] = math.nan
    keep = sample(x, v, 2500)
    assert len(keep) <= 2500 and 777_777 in keep and 123_456 in keep


def test_all_points_at_one_x_are_one_bucket():
    keep = sample(np.zeros(100), np.arange(100, dtype=float), 8)
    assert len(keep) <= 4 and 0 in keep and 99 in keep  # its min and max, whatever else


@pytest.fixture
def runs(repo):
    with mlvc.start_run(name="a", repo=repo) as a:
        for i in range(5000):
            a.log_metric("loss", 1 / (i + 1), step=i, timestamp=1_700_000_000 + i)
        a.log_metric("acc", math.nan, step=0, timestamp=1_700_000_000)
        a.log_metric("acc", math.inf, step=1, timestamp=1_700_000_001)
        a.log_metric("acc", 0.5, step=2, timestamp=1_700_000_002)
    with mlvc.start_run(name="b", repo=repo) as b:
        for i in range(10):
            b.log_metric("loss", 2.0 - i / 10, step=i * 10, timestamp=1_700_000_100 + i)
    return repo


def test_series_samples_long_series_and_returns_short_ones_whole(runs):
    got = runs.series(["a", "b"], ["loss", "acc", "absent"], limit=1000)
    assert got.keys == ["acc", "loss"]
    by = {(s.run, s.key): s for s in got.series}
    a, b = runs.resolve("a").hex, runs.resolve("b").hex
    assert [(s.run, s.key) for s in got.series] == [(a, "loss"), (a, "acc"), (b, "loss")]
    loss = by[(a, "loss")]
    assert loss.total == 5000 and loss.sampled and len(loss.step) <= 1000
    assert loss.step[0] == 0 and loss.step[-1] == 4999 and loss.value[0] == 1.0
    assert loss.step == sorted(loss.step) and len(loss.time) == len(loss.value)
    assert by[(a, "acc")].value == ["nan", "inf", 0.5]  # kept, as mlvc's JSON writes them
    short = by[(b, "loss")]
    assert not short.sampled and short.step == list(range(0, 100, 10))
    assert short.time[0] == 1_700_000_100.0


def test_a_window_small_enough_comes_back_at_full_resolution(runs):
    got = runs.series(["a"], ["loss"], window=(1000, 1500), limit=1000)
    (s,) = got.series
    assert not s.sampled and s.total == 501 and s.step == list(range(1000, 1501))
    wide = runs.series(["a"], ["loss"], window=(0, 4000), limit=1000).series[0]
    assert wide.sampled and wide.total == 4001 and wide.step[-1] == 4000
    open_end = runs.series(["a"], ["loss"], window=(4990, math.inf)).series[0]
    assert open_end.step == list(range(4990, 5000))
    assert runs.series(["a"], ["loss"], window=(5, 4)).series == []  # holds no point


def test_time_axes(runs):
    wall = runs.series(["b"], ["loss"], x="time", window=(1_700_000_102, 1_700_000_103))
    assert wall.series[0].step == [20, 30]
    rel = runs.series(["a"], ["loss"], x="relative", window=(0, 2)).series[0]
    assert rel.step == [0, 1, 2]  # seconds since the run's first point
    assert rel.origin == 1_700_000_000.0 and wall.series[0].origin is None
    assert runs.series(["a"], []).keys == ["acc", "loss"]


def test_an_answer_stays_bounded_however_many_series_are_asked(runs):
    keys = [f"k{i}" for i in range(20)]
    got = runs.series(["a", "b"], ["loss", *keys[:19]], limit=100_000)
    assert got.limit == 50_000  # 2,000,000 points over 2 x 20 series
    assert runs.series(["a"], ["loss"], limit=100_000).limit == 100_000


def test_to_dict_is_json(runs):
    import json

    d = runs.series(["a"], ["acc"], window=(-math.inf, 10)).to_dict()
    text = json.dumps(d, allow_nan=False)
    assert '"value":["nan","inf",0.5]' in text.replace(" ", "")
    assert d["window"] == [None, 10.0]


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"x": "epoch"}, "x: 'epoch' is not one of step, time, relative"),
        ({"limit": 3}, "limit: 3 is out of range"),
        ({"window": (math.nan, 1)}, "not NaN"),
        ({"keys": [f"k{i}" for i in range(21)]}, "at most 100 runs and 20 keys"),
    ],
)
def test_bad_requests_are_refused_naming_the_argument(runs, kwargs, words):
    args = {"runs": ["a"], "keys": ["loss"], **kwargs}
    with pytest.raises(UsageError, match=words.replace("(", r"\(")):
        runs.series(**args)


def test_an_unknown_run_is_named(runs):
    with pytest.raises(UnknownRun, match="nosuch"):
        runs.series(["nosuch"], ["loss"])


def test_a_series_asked_again_comes_from_the_cache_until_the_run_changes(runs):
    """Sampled answers are kept by content: asked again, the same run's series is not
    queried; once the name names another run (a run recorded again, with more points),
    the answer is that run's."""
    first = runs.series(["a", "b"], ["loss"], limit=1000)
    assert first.cached == 0
    again = runs.series(["a", "b"], ["loss"], limit=1000)
    assert again.cached == 2 and again.to_dict()["series"] == first.to_dict()["series"]
    # a series whose last value is NaN (NaN equals nothing, itself included) is found too
    with mlvc.start_run(name="n", repo=runs) as n:
        n.log_metric("loss", 1.0, step=0)
        n.log_metric("loss", math.nan, step=1)
    assert runs.series(["n"], ["loss"]).cached == 0
    assert runs.series(["n"], ["loss"]).cached == 1
    # another window, limit or x axis is another answer
    assert runs.series(["a"], ["loss"], limit=500).cached == 0
    assert runs.series(["a"], ["loss"], x="time", limit=1000).cached == 0
    assert runs.series(["a"], ["loss"], window=(0, 10), limit=1000).cached == 0
    old = runs.resolve("a").hex
    with mlvc.start_run(name="a", repo=runs) as a:  # "a" now names a new run
        for i in range(6000):
            a.log_metric("loss", 2 / (i + 1), step=i, timestamp=1_700_000_000 + i)
    now = runs.series(["a"], ["loss"], limit=1000)
    (s,) = now.series
    assert now.cached == 0 and s.run != old and s.total == 6000 and s.value[0] == 2.0
    assert runs.series([old], ["loss"], limit=1000).cached == 1  # the old run is unchanged
    assert runs.fsck() == []


def test_a_cached_series_is_not_answered_once_the_index_lost_its_run(runs, tmp_path):
    """The cache key holds the run's metric_summary row: an index without the run (being
    rebuilt, say) misses instead of answering the old points."""
    import duckdb

    from mlvc.index.series import SeriesCache, read_series

    a = runs.resolve("a").hex
    cache = SeriesCache()
    with runs.index.connect_readonly() as con:
        assert read_series(con, [a], ["loss"], cache=cache).series[0].total == 5000
        assert read_series(con, [a], ["loss"], cache=cache).cached == 1
    empty = duckdb.connect(str(tmp_path / "empty.duckdb"))
    from mlvc.index import schema

    schema.create(empty)
    got = read_series(empty, [a], ["loss"], cache=cache)
    assert got.series == [] and got.cached == 0 and got.keys == []


def test_the_cache_holds_at_most_its_points_least_recently_used_out_first():
    from mlvc.index.series import Series, SeriesCache

    def one(n):
        return Series("r", "k", n, False, list(range(n)), [0.0] * n, [0.0] * n)

    cache = SeriesCache(max_points=100)
    for k in range(5):
        cache.put(("k", k), one(30))
    assert cache.points == 90 and len(cache) == 3  # 0 and 1 went out
    assert cache.get(("k", 0)) is None and cache.get(("k", 2)) is not None
    cache.put(("k", 5), one(30))  # 2 was used last: 3 goes
    assert cache.get(("k", 3)) is None and cache.get(("k", 2)) is not None
    cache.put(("big",), one(101))  # larger than the whole cache: not kept
    assert cache.get(("big",)) is None and cache.points <= 100


def test_threads_sharing_the_cache_get_the_same_answers(runs):
    from concurrent.futures import ThreadPoolExecutor

    want = runs.series(["a", "b"], ["loss", "acc"], limit=400).to_dict()["series"]
    limits = [400, 300, 400, 200] * 8
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda n: runs.series(["a", "b"], ["loss", "acc"], limit=n), limits))
    for n, answer in zip(limits, got, strict=True):
        assert answer.limit == n
        if n == 400:
            assert answer.to_dict()["series"] == want


# -- levels: a long series sampled once, at ingest ------------------------------------------


@pytest.fixture
def long_run(repo):
    """One run with two 12,000-point keys (over LEVEL_MIN_POINTS): ``loss`` distinct random
    values with a spike, ``gap`` with a NaN, an inf and a -inf; and a short run."""
    rng = np.random.default_rng(13)
    loss = rng.normal(size=12_000)
    loss[7_777] = 50.0
    gap = np.arange(12_000, dtype=float) % 97
    gap[[5_000, 9_001, 11_002]] = [math.nan, math.inf, -math.inf]
    with mlvc.start_run(name="long", repo=repo) as r:
        for i in range(12_000):
            t = 1_700_000_000 + i * 0.5
            r.log_metrics({"loss": float(loss[i]), "gap": float(gap[i])}, step=i, timestamp=t)
    with mlvc.start_run(name="short", repo=repo) as r:
        r.log_metric("loss", 1.0, step=0)
    return repo


def _levels(repo) -> list[tuple]:
    return sorted(
        repo.query(
            "SELECT r.name, l.key, l.axis, l.step, l.value FROM series_levels l "
            "JOIN runs r ON r.id = l.run_id"
        )
        .to_pandas()
        .itertuples(index=False, name=None),
        key=repr,
    )


def test_a_long_series_is_sampled_once_at_ingest_and_a_rebuild_gives_the_same(long_run):
    from mlvc.index.series import LEVEL_BUCKETS

    levels = _levels(long_run)
    assert {(n, k, a) for n, k, a, _, _ in levels} == {
        ("long", k, a) for k in ("loss", "gap") for a in ("step", "time")
    }  # the short run has none
    for key, axis in [("loss", "step"), ("gap", "time")]:
        rows = [(s, v) for n, k, a, s, v in levels if (k, a) == (key, axis)]
        assert 2 * LEVEL_BUCKETS <= len(rows) <= 7 * LEVEL_BUCKETS
        steps = {s for s, _ in rows}
        assert {0, 11_999} <= steps
    assert (7_777, 50.0) in [(s, v) for n, k, a, s, v in levels if k == "loss"]
    assert {5_000, 9_001, 11_002} <= {s for n, k, a, s, v in levels if k == "gap"}
    long_run.index.rebuild()
    assert list(map(repr, _levels(long_run))) == list(map(repr, levels))  # NaN == NaN
    assert long_run.fsck() == []


@pytest.mark.parametrize("x", ["step", "time", "relative"])
def test_a_whole_long_series_sampled_from_its_level_equals_it_sampled_from_its_points(long_run, x):
    """Without a window, the series comes from the level; a window holding every point
    (-inf, inf) makes the same request read every point: the answers are the same when
    the request's bucket count divides the level's (625 at 2,500 points, 250 at 1,000)."""
    everything = (-math.inf, math.inf)
    for key, limit in [("loss", 2500), ("loss", 1000), ("gap", 1750)]:
        level = long_run.series(["long"], [key], x=x, limit=limit).series[0]
        points = long_run.series(["long"], [key], x=x, limit=limit, window=everything).series[0]
        assert level.total == points.total == 12_000 and level.sampled and points.sampled
        assert (level.step, level.time, level.value) == (points.step, points.time, points.value)
        assert level.origin == points.origin


def test_any_limit_sampled_from_a_level_keeps_spikes_and_non_finite_points(long_run):
    for limit in (8, 500, 2222, 2500, 10_000):
        loss, gap = long_run.series(["long"], ["loss", "gap"], limit=limit).series
        for s in (loss, gap):
            assert s.total == 12_000 and len(s.step) <= limit and s.step == sorted(s.step)
            assert s.step[0] == 0 and s.step[-1] == 11_999
        assert 50.0 in loss.value
        assert {"nan", "inf", "-inf"} <= set(gap.value)
    # above the level's resolution, and in a window, every point is read again
    whole = long_run.series(["long"], ["loss"], limit=20_000).series[0]
    assert not whole.sampled and whole.step == list(range(12_000))
    zoom = long_run.series(["long"], ["loss"], window=(7_000, 8_000)).series[0]
    assert not zoom.sampled and zoom.step == list(range(7_000, 8_001))


# -- levels computed with numpy at decode equal the SQL definition ---------------------------

point_values = st.one_of(
    st.floats(-3, 3).map(lambda v: round(v, 1)), st.sampled_from([*SPECIAL, None])
)


@st.composite
def level_series(draw):
    """Points of two keys, in any order: (step, timestamp) unique per key, so that every
    pick is defined (a full tie has no order to break it in either implementation), steps
    and values often repeated, timestamps sometimes missing."""
    n = draw(st.integers(0, 80))
    steps = draw(st.lists(st.integers(-5, 30), min_size=n, max_size=n))
    stamps = draw(st.lists(st.one_of(st.none(), st.integers(0, 40)), min_size=n, max_size=n))
    keys = draw(st.lists(st.sampled_from(["a", "b"]), min_size=n, max_size=n))
    vals = draw(st.lists(point_values, min_size=n, max_size=n))
    seen, rows = set(), []
    for k, s, t, v in zip(keys, steps, stamps, vals, strict=True):
        if (k, s, t) not in seen:
            seen.add((k, s, t))
            rows.append((k, s, None if t is None else 1_700_000_000_000_000 + t * 250_000, v))
    return rows


@settings(max_examples=60, deadline=None)
@given(level_series(), st.sampled_from([1, 2, 3, 7]))
def test_levels_computed_with_numpy_equal_level_sql(rows, buckets):
    """``level_points`` (numpy, in the decoder) keeps exactly the points ``level_sql``
    (DuckDB, the definition) keeps, for any order, ties, gaps and non-finite values."""
    import duckdb
    import pyarrow as pa

    from mlvc.index import series as S

    table = pa.table(
        {
            "key": pa.array([r[0] for r in rows], pa.string()),
            "step": pa.array([r[1] for r in rows], pa.int64()),
            "value": pa.array([r[3] for r in rows], pa.float64()),
            "timestamp": pa.array([r[2] for r in rows], pa.int64()),
        }
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(S, "LEVEL_BUCKETS", buckets)
        mp.setattr(S, "LEVEL_MIN_POINTS", 4)
        got = S.level_points([("r1", table), ("r2", table.slice(0, len(table) // 2))])
        con = duckdb.connect()
        pts = pa.concat_tables(
            [
                table.add_column(0, "run_id", pa.array(["r1"] * len(table), pa.string())),
                table.slice(0, len(table) // 2).add_column(
                    0, "run_id", pa.array(["r2"] * (len(table) // 2), pa.string())
                ),
            ]
        )
        pts = pts.set_column(
            4, "timestamp", pts.column("timestamp").cast(pa.timestamp("us", "UTC"))
        )
        con.register("pts", pts)
        con.register("got", got)
        want = con.sql(f"SELECT DISTINCT * FROM ({S.level_sql('pts')}) ORDER BY ALL").fetchall()
        have = con.sql(
            "SELECT DISTINCT run_id, key, axis, step, timestamp, value FROM got ORDER BY ALL"
        ).fetchall()
        con.close()
    assert list(map(repr, have)) == list(map(repr, want))
