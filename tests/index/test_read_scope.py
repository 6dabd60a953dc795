"""A read brings up to date what it reads: one of runs only (``runs``, ``metrics``,
``runs_wide``, ...) ingests the journalled runs and leaves the named refs, the model registry
and the events, which it does not read, to the next read that names their tables. During a
stream of named commits those refreshes were two fifths of a reader's ingest."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys

import duckdb
import pytest

import mlvc.index.events
from mlvc.core.ids import ObjectId
from mlvc.errors import IndexBusy
from mlvc.index.user_sql import tables_read

HOUR_NS = 3600 * 10**9  # a settle window that makes every change recent


@contextlib.contextmanager
def ingest_elsewhere(repo):
    """Another process's ingest holding the index lock: commits leave their runs journalled."""
    fd = os.open(repo.dir / "index.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        os.close(fd)


def named(repo, name: str) -> str:
    return repo.commit(name, name=name, capture_code=False, capture_env=False)


@pytest.fixture
def listings(monkeypatch, repo):
    """Each listing of the name refs and of the event folder an ingest makes, in order."""
    seen: list[str] = []
    name_stats = type(repo.refs).name_stats
    event_ids = mlvc.index.events.event_ids

    def names(self, namespace):
        seen.append(f"refs/{namespace}")
        return name_stats(self, namespace)

    def events(layout, after=None):
        seen.append("events")
        return event_ids(layout, after)

    monkeypatch.setattr(type(repo.refs), "name_stats", names)
    monkeypatch.setattr(mlvc.index.events, "event_ids", events)
    return seen


def column(repo, sql: str) -> list:
    return repo.query(sql).column(0).to_pylist()


def test_a_read_of_runs_ingests_the_runs_and_leaves_names_and_events(repo, listings, settle_window):
    a = named(repo, "a")
    column(repo, "SELECT count(*) FROM refs")
    with ingest_elsewhere(repo):
        b = named(repo, "b")
    listings.clear()
    assert column(repo, "SELECT id FROM runs ORDER BY id") == sorted([a, b])
    # and a read of runs with nothing to ingest, however recently the events changed
    settle_window(HOUR_NS)
    assert column(repo, "SELECT DISTINCT run_id FROM metric_summary") == []
    assert listings == []  # neither the names nor the events were listed
    # a read of names brings them up to date first, and the events with them
    rows = repo.query("SELECT name, run_id FROM refs WHERE kind = 'name' ORDER BY name")
    assert rows.to_pylist() == [{"name": "a", "run_id": a}, {"name": "b", "run_id": b}]
    assert "refs/names" in listings and "events" in listings
    assert b in column(repo, "SELECT run_id FROM events")


@pytest.mark.parametrize("table", ["events", "ref_files", "model_versions", "meta", "provenance"])
def test_a_read_of_any_table_not_journalled_refreshes_everything(repo, listings, table):
    named(repo, "a")
    column(repo, "SELECT count(*) FROM refs")
    with ingest_elsewhere(repo):
        b = named(repo, "b")
    listings.clear()
    column(repo, f"SELECT count(*) FROM runs, (SELECT count(*) FROM {table})")
    assert "refs/names" in listings and "events" in listings
    assert b in column(repo, "SELECT run_id FROM refs")


@pytest.mark.parametrize("kept", [False, True], ids=["process", "server's kept reader"])
def test_names_changed_since_the_last_ingest_keep_only_their_readers_waiting(repo, kept):
    """A read of runs needs no ingest for names alone: it does not wait for the lock."""
    a, b = named(repo, "a"), named(repo, "b")
    column(repo, "SELECT count(*) FROM refs")
    if kept:
        repo.index.keep_readers()
    repo.refs.write("refs/names/a", ObjectId.parse(b))
    fd = os.open(repo.dir / "index.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_SH)  # another reader: an ingest would wait for it
    try:
        with pytest.raises(IndexBusy):
            column(repo, "SELECT run_id FROM refs WHERE name = 'a'")
        assert column(repo, "SELECT id FROM runs ORDER BY id") == sorted([a, b])
    finally:
        os.close(fd)
        repo.index.release_idle(0.0)
    assert column(repo, "SELECT run_id FROM refs WHERE name = 'a'") == [b]


def snapshot(repo) -> dict:
    sql = {
        "runs": "SELECT id, name FROM runs ORDER BY id",
        "refs": "SELECT kind, name, run_id FROM refs ORDER BY kind, name",
        "events": "SELECT id, type, run_id FROM events ORDER BY id",
        "wide": "SELECT id FROM runs_wide ORDER BY id",
    }
    return {k: repo.query(q).to_pylist() for k, q in sql.items()}


def test_after_reads_of_runs_only_the_index_is_what_a_rebuild_makes(repo):
    a = named(repo, "a")
    snapshot(repo)
    with ingest_elsewhere(repo):
        b = named(repo, "b")
        c = named(repo, "c")
    column(repo, "SELECT count(*) FROM runs")
    repo.refs.write("refs/names/a", ObjectId.parse(c))  # moved
    repo.refs.delete("refs/names/b")
    repo.refs.write("refs/tags/v1", ObjectId.parse(a))
    with ingest_elsewhere(repo):
        d = named(repo, "d")
    assert d in column(repo, "WITH r AS (SELECT id FROM runs) SELECT id FROM r")
    seen = snapshot(repo)
    assert {r["name"]: r["run_id"] for r in seen["refs"]} == {"a": c, "c": c, "d": d, "v1": a}
    repo.rebuild_index()
    assert snapshot(repo) == seen
    assert {b, c, d} <= {r["run_id"] for r in seen["events"]}


@pytest.mark.parametrize(
    ("sql", "names"),
    [
        ("SELECT count(*) FROM runs", {"runs"}),
        (
            'select * from RUNS r join "index".main.Metrics m on m.run_id = r.id',
            {"runs", "metrics"},
        ),
        ("SELECT (SELECT count(*) FROM refs) FROM runs_wide", {"refs", "runs_wide"}),
        ("SELECT * FROM runs WHERE id IN (SELECT run_id FROM events)", {"runs", "events"}),
        ("WITH x AS (SELECT * FROM params) FROM x", {"params", "x"}),
        ("SELECT 1; SELECT * FROM provenance", {"provenance"}),
        ("DESCRIBE refs", {"refs"}),
        ("SHOW TABLES", set()),
        ("SELECT 1", set()),
        ("PIVOT metrics ON key USING avg(value)", None),
        ("EXPLAIN SELECT * FROM runs", None),
        ("SELECT * FROM query_table('re' || 'fs')", None),
        ("SELECT * FROM query('SELECT * FROM refs')", None),
        ("SELECT * FROM read_csv('/etc/passwd')", None),
        ("this is not SQL", None),
        # nested deeper than Python's JSON decoder goes: it raised RecursionError
        pytest.param(
            "SELECT * FROM " + "(SELECT * FROM " * 900 + "runs" + ") t" * 900, None, id="nested-900"
        ),
    ],
)
def test_tables_read_names_what_a_read_reads(sql, names):
    con = duckdb.connect()
    try:
        got = tables_read(sql, con)
    finally:
        con.close()
    assert got == (None if names is None else frozenset(names))


def test_tables_read_opens_nothing(tmp_path):
    """The parse binds nothing: a table function over a FIFO nobody writes would block a
    reader that opened it (DuckDB's ``get_table_names`` binds, and reads the file)."""
    fifo = tmp_path / "never-written"
    os.mkfifo(fifo)
    code = (
        "import duckdb, sys\n"
        "from mlvc.index.user_sql import tables_read\n"
        "print(tables_read(f\"SELECT * FROM read_csv('{sys.argv[1]}')\", duckdb.connect()))\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, str(fifo)], capture_output=True, text=True, timeout=60
    )
    assert (p.returncode, p.stdout.strip(), p.stderr) == (0, "None", "")
