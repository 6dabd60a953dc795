"""runs_wide grown run by run (side tables for new keys) answers as one written whole by a
rebuild, whatever keys arrive, in whatever order, with whatever types and cases."""

from __future__ import annotations

import json

import duckdb
import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from mlvc.api.repo import Repo
from mlvc.core.objects import Run
from mlvc.index import wide
from mlvc.index.index import Index
from mlvc.store.typed import write_object

T0 = 1_700_000_000_000_000

KEYS = st.sampled_from(["lr", "LR", "Lr", "a", "b", "z", "é", 'q"x', "m.1"])
VALUES = st.one_of(
    st.integers(-5, 5), st.floats(allow_nan=False, width=32), st.booleans(), st.none(),
    st.sampled_from(["adam", "0.1"]),
)  # fmt: skip
RUN = st.tuples(
    st.dictionaries(KEYS, VALUES, max_size=3),
    st.dictionaries(KEYS, st.floats(-1, 1, width=32), max_size=2),
)


def index_of(repo: Repo) -> Index:
    return Index(repo.dir, repo.store, repo.refs, settings=repo.settings)


def commit_runs(repo: Repo, runs, first: int) -> list:
    """Commit these (params, metrics) runs and ingest them as one batch."""
    index = index_of(repo)
    ids = []
    for i, (params, metrics) in enumerate(runs, first):
        lowered = {}  # a run may not hold two keys differing only in case (core.params)
        params = {k: v for k, v in params.items() if lowered.setdefault(k.lower(), k) == k}
        metrics = {k: v for k, v in metrics.items() if k.lower() not in lowered or k in params}
        run = Run(name=f"r{i}", started=T0 + i, ended=T0 + i + 1, params=params, metrics=metrics)
        oid = write_object(repo.store, run)
        index.journal(oid)
        repo.refs.add_run(oid)
        ids.append(oid)
    repo.store.sync()
    index.sync()
    return ids


def wide_rows(repo: Repo):
    table = index_of(repo).query("SELECT * FROM runs_wide ORDER BY started")
    return table.schema, table.to_pylist()


@pytest.fixture
def small_limits(monkeypatch):
    monkeypatch.setattr(wide, "MAX_WIDE_KEYS", 4)  # keys pushed out of the columns
    monkeypatch.setattr(wide, "MAX_SIDE_TABLES", 2)  # side tables merged into one
    monkeypatch.setattr(wide, "FILTER_MAX_COLUMNS", 1)  # both ways of pivoting, side by side
    # an ingest's new rows held for runs_wide (up to 5 rows), or the tables scanned for them
    monkeypatch.setattr("mlvc.index.ingest.KEEP_ROWS", 5)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=st.lists(st.lists(RUN, min_size=1, max_size=3), min_size=1, max_size=5),
    in_python=st.booleans(),  # the new rows pivoted in Python (few), or by SQL
)
def test_grown_runs_wide_equals_rebuilt(
    tmp_path_factory, small_limits, monkeypatch, batches, in_python
):
    monkeypatch.setattr(wide, "PIVOT_IN_PYTHON", 5000 if in_python else -1)
    repo = Repo.init(tmp_path_factory.mktemp("wide") / "proj")
    n = 0
    for batch in batches:
        commit_runs(repo, batch, n)
        n += len(batch)
    grown = wide_rows(repo)
    index_of(repo).rebuild()
    assert wide_rows(repo) == grown
    assert repo.fsck() == []


def layout(repo: Repo) -> dict:
    rows = index_of(repo).query("SELECT value FROM meta WHERE key = 'runs_wide'").to_pylist()
    return json.loads(rows[0]["value"])


def test_new_key_goes_to_a_side_table_and_old_rows_stay(repo_dir):
    repo = Repo.init(repo_dir)
    commit_runs(repo, [({"lr": 0.1, "opt": "adam"}, {"loss": 0.5})] * 3, 0)
    base = layout(repo)
    assert base["tables"] == []
    commit_runs(repo, [({"lr": 0.2, "wd": 1}, {"acc": 0.9})], 3)
    grown = layout(repo)
    assert grown["tables"] == ["wide_1"] and grown["side_rows"] == 1
    assert {c[0]: c[5] for c in grown["columns"]} == {
        "params.lr": "wide_base", "params.opt": "wide_base", "params.wd": "wide_1",
        "metrics.acc": "wide_1", "metrics.loss": "wide_base",
    }  # fmt: skip
    names, rows = wide_rows(repo)
    assert names.names[-5:] == [
        "params.lr",
        "params.opt",
        "params.wd",
        "metrics.acc",
        "metrics.loss",
    ]
    assert [r["params.wd"] for r in rows] == [None, None, None, 1.0]
    assert [r["metrics.loss"] for r in rows] == [0.5, 0.5, 0.5, None]
    # the same keys again fill the side table; a type change writes wide_base whole
    commit_runs(repo, [({"wd": 2}, {})], 4)
    assert layout(repo)["side_rows"] == 2
    commit_runs(repo, [({"wd": "auto"}, {})], 5)
    assert layout(repo)["tables"] == []
    assert [r["params.wd"] for r in wide_rows(repo)[1]] == [None] * 3 + ["1", "2", "auto"]
    assert repo.fsck() == []


@pytest.fixture
def repo_dir(tmp_path):
    return tmp_path / "proj"


def test_runs_past_max_wide_keys_do_not_rewrite_wide_base(repo_dir):
    """With more metric keys per run than runs_wide has columns for (1,500 > MAX_WIDE_KEYS),
    each ingest appends its runs' rows: wide_base is never written whole again."""
    repo = Repo.init(repo_dir)
    keys = {f"m{k:04d}": k / 1500 for k in range(1500)}
    commit_runs(repo, [({"lr": 0.1}, keys)], 0)

    def base_oid():
        index = index_of(repo)
        index.sync()
        # a database of its own: a catalog's oids follow its loading, and the index's readers
        # attach the file to a database that numbers every attachment of the process
        con = duckdb.connect(str(index.path), read_only=True)
        try:
            sql = f"SELECT table_oid FROM duckdb_tables() WHERE table_name = '{wide.BASE}'"
            return [r[0] for r in con.execute(sql).fetchall()]
        finally:
            con.close()

    first = base_oid()
    for n in (1, 2):
        commit_runs(repo, [({"lr": 0.1 * n}, keys)], n)
        assert base_oid() == first  # the same table: rows appended, not rewritten
    assert layout(repo)["tables"] == []
    table = index_of(repo).query("SELECT * FROM runs_wide ORDER BY started")
    metric_cols = [c for c in table.column_names if c.startswith("metrics.")]
    assert len(metric_cols) == wide.MAX_WIDE_KEYS and metric_cols[-1] == "metrics.m0999"
    assert table.column("metrics.m0999").to_pylist() == [999 / 1500] * 3
    assert repo.fsck() == []


def test_side_tables_past_the_limit_merge_without_rewriting_wide_base(repo_dir, monkeypatch):
    """A new key at each of 12 ingests (MAX_SIDE_TABLES is 8): the side tables are merged
    into one (a copy of their few rows) instead of wide_base being written whole again,
    and runs_wide answers what a rebuild's does."""
    repo = Repo.init(repo_dir)
    commit_runs(repo, [({"lr": 0.1}, {"loss": 0.5})] * 20, 0)
    rewrites = []
    real = wide.rewrite
    monkeypatch.setattr(wide, "rewrite", lambda *a, **k: rewrites.append(1) or real(*a, **k))
    for n in range(12):
        commit_runs(repo, [({"lr": 0.2, f"k{n:02d}": n}, {f"m{n % 3}": 0.1 * n})], 20 + n)
        assert rewrites == [], n
        assert 1 <= len(layout(repo)["tables"]) <= wide.MAX_SIDE_TABLES
    assert layout(repo)["tables"][0] == "wide_1" and len(layout(repo)["tables"]) == 5
    grown = wide_rows(repo)
    assert [r["params.k11"] for r in grown[1]][-2:] == [None, 11.0]
    assert [r["metrics.m2"] for r in grown[1]][-2:] == [None, 0.1 * 11]
    index_of(repo).rebuild()
    assert wide_rows(repo) == grown
    assert repo.fsck() == []
