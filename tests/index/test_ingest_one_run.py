"""The ingest of one run (issue 16, item 4): what it skips or takes from rows in hand gives
the index a rebuild gives, and a kill -9 anywhere in it loses nothing.

The shortcuts: runs_wide's new rows pivoted in Python from the new runs' rows (wide.py,
PIVOT_IN_PYTHON), Arrow schemas of the fixed tables remembered per process, meta read once
and only its changed entries written, probes of a few ids as literal lists."""

from __future__ import annotations

import signal
import subprocess
import sys

import duckdb
import pytest
from test_index import commit, dump, index_of, make_run

from mlvc.index import schema, wide
from mlvc.index.db import connect_rw


def meta(index) -> dict[str, str]:
    return {r["key"]: r["value"] for r in index.query("SELECT * FROM meta").to_pylist()}


@pytest.mark.parametrize("pivot", ["python", "sql"])
def test_runs_ingested_one_at_a_time_equal_a_rebuild(repo, monkeypatch, pivot):
    """New keys, a key changing type (runs_wide rewritten), a boolean and a string column,
    keys differing in case, a quote in a key, a run deleted: table by table, and runs_wide
    row by row, as a rebuild writes them."""
    if pivot == "sql":
        monkeypatch.setattr(wide, "PIVOT_IN_PYTHON", -1)
    index = index_of(repo)
    first = [
        {"lr": 0.1, "opt": "adam", "ok": True},
        {"lr": 0.2, "new'key": 3, "ok": False},
        {"lr": 0.3, "LR": 1.0, "ok": None},
    ]
    ids = [commit(repo, make_run(repo, i, params=p)) for i, p in enumerate(first)]
    (repo.dir / "refs" / "runs" / ids[1].hex).unlink()  # dropped by the next ingest
    index.journal(ids[1])
    later = [
        {"lr": 0.4, "epochs": 5},  # runs_wide written whole: a run was dropped
        {"lr": "warm", "opt": "sgd"},  # lr becomes a VARCHAR column: written whole
        {"lr": 0.5, "late": "x", "ok": True},  # from here on it grows
        {"ok": True, "new'key": 2, "LR": 2.0},
        {"after": 1.0, "ok": False},
    ]
    for i, params in enumerate(later, 10):
        commit(repo, make_run(repo, i, params=params, metrics={f"m.{i}": 1.0 / i}))
    assert not index.pending()
    incremental = dump(index)
    wide_rows = index.query("SELECT * FROM runs_wide ORDER BY id").to_pylist()
    stored = meta(index)
    index.rebuild()
    assert dump(index) == incremental
    assert index.query("SELECT * FROM runs_wide ORDER BY id").to_pylist() == wide_rows
    rebuilt = meta(index)
    assert stored["schema_version"] == rebuilt["schema_version"]
    # a fingerprint taken within settle_ns of a change is marked (refs) or notes no folder
    # identity (events); the rebuild may come after that (CI, loaded): the same either way
    for key in ("refs_fingerprint", "events_fingerprint"):
        assert unmarked(stored[key]) == unmarked(rebuilt[key]), key
    assert repo.fsck() == []


def unmarked(fingerprint: str) -> str:
    """A fingerprint without what depends on when it was taken."""
    return fingerprint.removesuffix("/unsettled").removesuffix("/recent").partition("@")[0]


def test_an_ingest_writes_only_the_meta_entries_that_changed(repo, monkeypatch):
    index = index_of(repo)
    commit(repo, make_run(repo, 0))
    written = []
    real = schema.write_meta
    monkeypatch.setattr(schema, "write_meta", lambda con, v: (written.append(v), real(con, v)))
    commit(repo, make_run(repo, 1, params={"new": 1.0}))
    assert [set(v) for v in written] == [{"runs_wide"}]  # refs and events did not change
    assert meta(index)["runs_wide"] == written[0]["runs_wide"]
    assert repo.fsck() == []


def test_remembered_arrow_schemas_are_duckdbs(repo):
    """Each fixed table's remembered schema is what DuckDB answers on a new connection;
    runs_wide's own tables, whose columns change, are never remembered."""
    commit(repo, make_run(repo, 0))
    commit(repo, make_run(repo, 1, params={"other": "x"}))
    index = index_of(repo)
    con = connect_rw(index.path)
    try:
        for table in sorted(schema.FIXED):
            fresh = con.sql(f"SELECT * FROM {table} LIMIT 0").to_arrow_table().schema
            assert schema.arrow_schema(con, table) == fresh, table
        assert "runs" in schema.FIXED and "wide_base" not in schema.FIXED
        assert not any(t.startswith("wide_") for t in schema._ARROW_SCHEMAS)
    finally:
        con.close()


@pytest.mark.parametrize("probe", ["literal", "registered"])
def test_probes_answer_alike_for_hostile_values(tmp_path, monkeypatch, probe):
    if probe == "registered":
        monkeypatch.setattr(schema, "PROBE_LITERALS", 0)
    con = duckdb.connect(str(tmp_path / "p.duckdb"))
    try:
        con.execute("CREATE TABLE runs (id VARCHAR PRIMARY KEY)")
        held = ["a", "it's", 'q"x', "é\u2028", "x" * 5000, "--", "a' OR '1'='1"]
        con.execute("INSERT INTO runs SELECT unnest(?::VARCHAR[])", [held])
        asked = [*held, "b", "it''s", "a' OR '1'='1' --"]
        assert schema.indexed(con, asked) == set(held)
        assert schema.present(con, "SELECT id FROM runs", asked) == set(held)
        assert schema.indexed(con, []) == set() == schema.present(con, "SELECT 1", [])
    finally:
        con.close()


KILLED_INGEST = """
import os, signal, sys
import mlvc.index.ingest as ingest
import mlvc.index.wide as wide
from mlvc.api.repo import Repo
from mlvc.index.index import Index
where = sys.argv[2]
def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
if where == "in the transaction":
    wide.refresh = die
else:  # committed, not yet checkpointed, the journal entry still there
    applied = ingest.Writer._apply_journal
    def then_die(self, *a, **k):
        applied(self, *a, **k)
        die()
    ingest.Writer._apply_journal = then_die
repo = Repo(sys.argv[1])
Index(repo.dir, repo.store, repo.refs, settings=repo.settings).sync()
"""


@pytest.mark.parametrize("where", ["in the transaction", "after the commit"])
def test_a_one_run_ingest_killed_leaves_its_entry_and_a_whole_index(repo, tmp_path, where):
    index = index_of(repo)
    commit(repo, make_run(repo, 0))
    before = dump(index)
    oid = commit(repo, make_run(repo, 1, params={"brand_new": 1.0}), ingest=False)
    script = tmp_path / "killed_ingest.py"
    script.write_text(KILLED_INGEST)
    proc = subprocess.run([sys.executable, str(script), str(repo.root), where], check=False)
    assert proc.returncode == -signal.SIGKILL
    assert index.pending() == [oid]  # the entry outlives the kill
    if where == "in the transaction":
        con = connect_rw(index.path)  # DuckDB's own recovery: the run is not there
        try:
            assert schema.indexed(con, [oid.hex]) == set()
        finally:
            con.close()
    index.sync()
    assert not index.pending()
    after = dump(index)
    assert after != before
    index.rebuild()
    assert dump(index) == after
    assert index.query(f"SELECT \"params.brand_new\" FROM runs_wide WHERE id = '{oid.hex}'"
                       ).to_pylist() == [{"params.brand_new": 1.0}]  # fmt: skip
    assert repo.fsck() == []
