"""The DuckDB index: ingestion, rebuild, read-only queries and concurrent committers.

Repos are real (``Repo.init`` in tmp dirs) and runs are committed with the primitives, in the
order commit uses: objects, journal entry, run ref, ``try_ingest``.
"""

from __future__ import annotations

import io
import math
import multiprocessing
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mlvc.index.pool
from mlvc.api.repo import Repo
from mlvc.core.ids import ObjectId
from mlvc.core.objects import Env, Run
from mlvc.errors import QueryError
from mlvc.events import emit
from mlvc.index.index import Index
from mlvc.store.typed import write_object
from mlvc.workspace.trees import build_tree

T0 = 1_700_000_000_000_000  # microseconds since the epoch
PACKAGES = {"numpy": "1.26.4", "torch": "2.2.0"}


def index_of(repo: Repo) -> Index:
    return Index(repo.dir, repo.store, repo.refs, settings=repo.settings)


def write_files(root, files: dict[str, str]) -> list[str]:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return sorted(files)


def series_blob(points: list[tuple[str, int, int, float]], ts_type=pa.int64()) -> bytes:
    keys, steps, stamps, values = zip(*points, strict=True)
    table = pa.table(
        {
            "key": pa.array(keys, pa.string()),
            "step": pa.array(steps, pa.int64()),
            "timestamp": pa.array(
                stamps, pa.int64() if ts_type == pa.int64() else pa.timestamp("us")
            ).cast(ts_type),
            "value": pa.array(values, pa.float64()),
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def commit(repo: Repo, run: Run, name: str | None = None, ingest: bool = True) -> ObjectId:
    """What ``mlvc commit`` does, in its order."""
    oid = write_object(repo.store, run)
    repo.store.sync()  # objects are durable (and visible to other processes) before refs
    index = index_of(repo)
    index.journal(oid)
    repo.refs.add_run(oid)
    if name:
        repo.refs.write(f"refs/names/{name}", oid)
    if ingest:
        index.try_ingest()
    return oid


def make_run(repo: Repo, i: int, series: bytes | None = None, **kw) -> Run:
    work = repo.root / f"work-{os.getpid()}-{i % 3}"  # three code versions, shared
    code = build_tree(
        repo.store, work, write_files(work, {"train.py": f"v{i % 3}", "lib/u.py": "u"})
    )
    data = repo.root / f"data-{os.getpid()}"  # a file rewritten while another reads it
    data_tree = build_tree(repo.store, data, write_files(data, {"x.csv": "a,b\n1,2\n"}))
    env = write_object(repo.store, Env({"packages": PACKAGES, "python": "3.11.7"}))
    fields = dict(
        name=f"run{i}",
        message=f"run number {i}",
        author="ada",
        started=T0 + i * 1_000_000,
        ended=T0 + i * 1_000_000 + 2_500_000,
        command=("python", "train.py", "--lr", f"{0.1 / (i + 1)}", "--note", "a b"),
        exit_code=0,
        code=code,
        data=data_tree,
        env=env,
        git={"commit": "abc123", "branch": "main", "dirty": i % 2 == 1},
        params={"lr": 0.1 / (i + 1), "epochs": 10 + i, "optim": "adam", "shuffle": True},
        metrics={"loss": 1.0 / (i + 1), "acc": 0.5 + i / 100},
        tags={"team": "vision"},
        series=repo.store.add_bytes(series) if series else None,
    )
    fields.update(kw)
    return Run(**fields)


@pytest.fixture
def repo(tmp_path) -> Repo:
    return Repo.init(tmp_path / "proj")


def rows(index: Index, sql: str) -> list[dict]:
    return index.query(sql).to_pylist()


def dump(index: Index) -> dict[str, tuple]:
    """Every table and view but meta, runs_wide's own tables (how its columns are laid out
    depends on the order keys arrived in) and ref_files (which ref files a refresh may skip
    next time: only those older than ``journal.settle_ns`` when it ran, so it depends on the clock,
    not on the runs), rows sorted: what 'bit for bit' compares."""
    out = {}
    with index.connect_readonly() as con:
        names = con.sql(
            "SELECT table_name FROM information_schema.tables WHERE table_name <> 'meta' "
            "AND table_name <> 'ref_files' AND NOT regexp_matches(table_name, '^wide_')"
        ).fetchall()
        for (name,) in names:
            table = con.sql(f'SELECT * FROM "{name}"').to_arrow_table()
            out[name] = (table.schema, sorted(map(repr, table.to_pylist())))
    assert {"runs", "files", "packages", "runs_wide", "metrics"} <= set(out)
    return out


# -- ingestion into each table ----------------------------------------------------------------


def test_commit_ingests_into_every_table(repo):
    index = index_of(repo)
    ids = [commit(repo, make_run(repo, i), name="sweep") for i in range(3)]
    repo.refs.write("refs/tags/best", ids[2])
    assert index.pending() == []

    runs = rows(index, "SELECT * FROM runs ORDER BY started")
    assert [r["id"] for r in runs] == [o.hex for o in ids]
    first = runs[0]
    assert first["short_id"] == ids[0].hex[:10]
    assert first["name"] == "run0" and first["author"] == "ada" and first["status"] == "finished"
    assert first["parent"] is None and first["parents"] == []
    assert first["command"] == "python train.py --lr 0.1 --note 'a b'"
    assert first["duration_s"] == 2.5
    assert first["created"] == first["started"]
    assert first["started"].timestamp() == T0 / 1e6
    assert first["git_commit"] == "abc123" and first["git_branch"] == "main"
    assert [r["git_dirty"] for r in runs] == [False, True, False]

    params = rows(
        index,
        f"SELECT key, value, value_num, type FROM params WHERE run_id = '{ids[0].hex}' ORDER BY key",
    )
    assert params == [
        {"key": "epochs", "value": "10", "value_num": 10.0, "type": "int"},
        {"key": "lr", "value": "0.1", "value_num": 0.1, "type": "float"},
        {"key": "optim", "value": "adam", "value_num": None, "type": "str"},
        {"key": "shuffle", "value": "true", "value_num": None, "type": "bool"},
    ]
    metrics = rows(
        index,
        f"SELECT key, step, value, timestamp FROM metrics WHERE run_id = '{ids[1].hex}' ORDER BY key",
    )
    assert [(m["key"], m["step"], m["value"]) for m in metrics] == [
        ("acc", 0, 0.51),
        ("loss", 0, 0.5),
    ]
    assert metrics[0]["timestamp"] == runs[1]["ended"]

    summary = rows(index, "SELECT * FROM metric_summary WHERE key = 'loss' ORDER BY last")
    assert [s["last"] for s in summary] == [1 / 3, 0.5, 1.0]
    assert summary[0]["count"] == 1 and summary[0]["last_step"] == 0

    files = rows(
        index,
        f"SELECT section, path, size, kind FROM files WHERE run_id = '{ids[0].hex}' ORDER BY section, path",
    )
    assert files == [
        {"section": "code", "path": "lib/u.py", "size": 1, "kind": "file"},
        {"section": "code", "path": "train.py", "size": 2, "kind": "file"},
        {"section": "data", "path": "x.csv", "size": 8, "kind": "file"},
    ]
    packages = rows(index, "SELECT run_id, name, version FROM packages ORDER BY run_id, name")
    assert len(packages) == 6 and {(p["name"], p["version"]) for p in packages} == set(
        PACKAGES.items()
    )
    assert rows(index, "SELECT DISTINCT key, value FROM tags") == [
        {"key": "team", "value": "vision"}
    ]
    assert rows(index, "SELECT kind, name, run_id FROM refs ORDER BY kind") == [
        {"kind": "name", "name": "sweep", "run_id": ids[2].hex},
        {"kind": "tag", "name": "best", "run_id": ids[2].hex},
    ]
    assert rows(index, "SELECT count(*) AS n FROM ingest_errors") == [{"n": 0}]


def test_runs_wide_has_one_typed_column_per_key(repo):
    index = index_of(repo)
    for i in range(4):
        commit(repo, make_run(repo, i))
    table = index.query(
        'SELECT id, "params.lr", "params.epochs", "params.optim", "params.shuffle", '
        '"metrics.loss" FROM runs_wide WHERE "params.lr" > 0.03 ORDER BY "metrics.loss" LIMIT 10'
    )
    assert [str(t) for t in table.schema.types] == [
        "string",
        "double",
        "double",
        "string",
        "bool",
        "double",
    ]
    assert table.column("metrics.loss").to_pylist() == [1 / 3, 0.5, 1.0]
    # a new key appears, and a key turns from numeric to text: the columns follow
    commit(repo, make_run(repo, 4, params={"lr": "auto", "momentum": 0.9, "none": None}))
    wide = index.query(
        'SELECT "params.lr", "params.momentum", "params.none" FROM runs_wide ORDER BY started'
    )
    assert [str(t) for t in wide.schema.types] == ["string", "double", "string"]
    assert wide.column("params.lr").to_pylist()[-2:] == ["0.025", "auto"]
    assert wide.column("params.momentum").to_pylist() == [None] * 4 + [0.9]
    assert wide.column("params.none").to_pylist() == [None] * 5
    # values that fit the columns append rows; a new class of value retypes the column
    commit(repo, make_run(repo, 5, params={"lr": 0.5, "momentum": None, "none": 3}))
    wide = index.query('SELECT "params.lr", "params.none" FROM runs_wide ORDER BY started')
    assert wide.column("params.lr").to_pylist()[-1] == "0.5"
    assert wide.schema.field("params.none").type == pa.float64()
    before = dump(index)
    index.rebuild()
    assert dump(index) == before


def test_parents_and_reproduces(repo):
    index = index_of(repo)
    a = commit(repo, make_run(repo, 0))
    b = commit(repo, make_run(repo, 1, parents=(a,), reproduces=a))
    row = rows(index, f"SELECT parent, parents, reproduces FROM runs WHERE id = '{b.hex}'")[0]
    assert row == {"parent": a.hex, "parents": [a.hex], "reproduces": a.hex}


# -- series -------------------------------------------------------------------------------------


@pytest.mark.parametrize("ts_type", [pa.int64(), pa.timestamp("us"), pa.timestamp("ms", tz="UTC")])
def test_series_points_replace_final_metrics(repo, ts_type):
    index = index_of(repo)
    points = [("loss", s, (T0 // 1000 + s) * 1000, 1.0 / (s + 1)) for s in range(5)]
    points += [
        ("acc", 0, T0, float("nan")),
        ("acc", 1, T0 + 1000, 0.7),
        ("acc", 2, T0 + 2000, float("inf")),
    ]
    oid = commit(
        repo,
        make_run(repo, 0, series=series_blob(points, ts_type), metrics={"loss": 0.2, "f1": 0.4}),
    )
    got = rows(
        index,
        f"SELECT key, step, value, timestamp FROM metrics WHERE run_id = '{oid.hex}' ORDER BY key, step",
    )
    assert [(r["key"], r["step"]) for r in got] == [
        ("acc", 0),
        ("acc", 1),
        ("acc", 2),
        ("f1", 0),
    ] + [("loss", s) for s in range(5)]
    assert math.isnan(got[0]["value"]) and got[2]["value"] == math.inf
    assert got[5]["timestamp"].timestamp() == T0 / 1e6 + 1e-3  # micros, whatever the unit given
    summary = {r["key"]: r for r in rows(index, "SELECT * FROM metric_summary")}
    assert (
        summary["loss"]["last"] == 0.2
        and summary["loss"]["count"] == 5
        and summary["loss"]["last_step"] == 4
    )
    assert summary["loss"]["min"] == 0.2 and summary["loss"]["max"] == 1.0
    assert (
        summary["acc"]["last"] == math.inf
        and summary["acc"]["min"] == 0.7
        and summary["acc"]["count"] == 3
    )
    assert summary["f1"]["last"] == 0.4


def test_unreadable_series_is_reported_and_final_metrics_kept(repo):
    index = index_of(repo)
    oid = commit(repo, make_run(repo, 0, series=b"not parquet"))
    assert rows(index, "SELECT key FROM metrics ORDER BY key") == [{"key": "acc"}, {"key": "loss"}]
    errors = rows(index, "SELECT run_id, error FROM ingest_errors")
    assert errors[0]["run_id"] == oid.hex and "metric series unreadable" in errors[0]["error"]


def test_hostile_values_are_reported_not_fatal(repo):
    index = index_of(repo)
    text_values = pa.table({"key": ["loss"], "step": [1], "value": ["high"]})
    buf = io.BytesIO()
    pq.write_table(text_values, buf)
    bad_series = commit(repo, make_run(repo, 0, series=buf.getvalue()), ingest=False)
    huge = commit(
        repo,
        make_run(repo, 1, exit_code=2**64 - 1, params={"big": 2**64 - 1}, metrics={"m": 2**64 - 1}),
        ingest=False,
    )
    fine = commit(repo, make_run(repo, 2), ingest=False)
    assert {r["id"] for r in rows(index, "SELECT id FROM runs")} == {
        o.hex for o in (bad_series, huge, fine)
    }
    errors = rows(index, "SELECT run_id, error FROM ingest_errors")
    assert [e["run_id"] for e in errors] == [bad_series.hex]
    big = rows(
        index,
        f"SELECT exit_code, p.value_num, m.value FROM runs JOIN params p ON p.run_id = id JOIN metrics m ON m.run_id = id WHERE id = '{huge.hex}' AND p.key = 'big' AND m.key = 'm'",
    )
    assert big == [{"exit_code": None, "value_num": 2.0**64, "value": 2.0**64}]


def test_nan_final_metric_is_kept(repo):
    index = index_of(repo)
    commit(repo, make_run(repo, 0, metrics={"loss": float("nan")}))
    (row,) = rows(
        index,
        "SELECT m.value, s.last, s.min, s.count FROM metrics m JOIN metric_summary s USING (run_id, key)",
    )
    assert (
        math.isnan(row["value"])
        and math.isnan(row["last"])
        and row["min"] is None
        and row["count"] == 1
    )


# -- the cache: rebuild equals incremental ------------------------------------------------------


def test_deleted_index_is_rebuilt_equal(repo):
    index = index_of(repo)
    for i in range(4):
        commit(
            repo,
            make_run(repo, i, series=series_blob([("loss", 1, T0, 0.5)]) if i == 2 else None),
            name=f"n{i % 2}",
        )
    before = dump(index)
    index.path.unlink()
    assert dump(index) == before


def test_rebuild_equals_incremental(repo):
    index = index_of(repo)
    for i in range(4):
        commit(repo, make_run(repo, i, params={"lr": 0.1, f"only{i}": i}))
        if i == 2:
            commit(repo, make_run(repo, 10, params={"lr": "text now"}))
    incremental = dump(index)
    index.rebuild()
    assert dump(index) == incremental


def test_parallel_rebuild_equals_sequential(repo, monkeypatch):
    index = index_of(repo)
    for i in range(5):
        commit(repo, make_run(repo, i, series=series_blob([("loss", i, T0, 0.5)])), ingest=False)
    index.sync()
    sequential = dump(index)
    monkeypatch.setattr("mlvc.index.ingest.BATCH_RUNS", 2)
    monkeypatch.setattr("mlvc.index.ingest.PARALLEL_MIN_RUNS", 1)
    started = []
    monkeypatch.setattr(
        "mlvc.index.pool.Workers.__init__", _record(mlvc.index.pool.Workers.__init__, started)
    )
    assert Index(repo.dir, repo.store, repo.refs, workers=2, settings=repo.settings).rebuild() == 5
    assert started == [2]
    assert dump(index) == sequential


def test_batches_bounded_by_points_equal_one_batch(repo, monkeypatch):
    """A budget of metric points splits a rebuild's batches (memory stays bounded however
    many metrics runs have), in one process and in worker processes, with the same rows."""
    index = index_of(repo)
    for i in range(5):
        points = [(f"m{k}", s, T0 + s, float(i * k + s)) for k in range(3) for s in range(2)]
        commit(repo, make_run(repo, i, series=series_blob(points)), ingest=False)
    commit(repo, make_run(repo, 5, series=b"not parquet"), ingest=False)
    index.sync()
    whole = dump(index)
    monkeypatch.setattr("mlvc.index.ingest.BATCH_POINTS", 7)  # about one run per batch
    batches = []
    monkeypatch.setattr(
        "mlvc.index.ingest._insert_tables",
        _record_batches(mlvc.index.ingest._insert_tables, batches),
    )
    assert index.rebuild() == 6
    assert dump(index) == whole
    assert len(batches) >= 5 and max(batches) <= 2 * 7 + 2  # runs' series and final metrics
    monkeypatch.setattr("mlvc.index.ingest.PARALLEL_MIN_RUNS", 1)
    batches.clear()
    assert Index(repo.dir, repo.store, repo.refs, workers=2, settings=repo.settings).rebuild() == 6
    assert dump(index) == whole
    assert len(batches) >= 5


def _record_batches(insert, sizes):
    """``_insert_tables`` noting the metric rows of each per-run batch it inserts."""

    def wrapped(con, tables):
        if "series" in tables:
            sizes.append(len(tables["series"]) + len(tables["metrics"]))
        insert(con, tables)

    return wrapped


KILLED_REBUILD = """
import os, sys, time
import mlvc.index.ingest as ingest
import mlvc.index.pool as pool
from mlvc.api.repo import Repo
from mlvc.index.index import Index
ingest.BATCH_POINTS, ingest.BATCH_RUNS, ingest.PARALLEL_MIN_RUNS = 2, 2, 1
started = pool.Workers.__init__
def workers(self, n):
    started(self, n)
    print(*[p.pid for p in self.procs], flush=True)
pool.Workers.__init__ = workers
insert = ingest._insert_tables
def slow(con, tables):
    insert(con, tables)
    print("inserted", flush=True)
    time.sleep(60)
ingest._insert_tables = slow
repo = Repo(sys.argv[1])
Index(repo.dir, repo.store, repo.refs, workers=2, settings=repo.settings).rebuild()
"""


@pytest.mark.parametrize("fork", [True, False], ids=["forked", "subprocesses"])
def test_rebuild_killed_between_batches_leaves_the_index_whole(repo, tmp_path, fork):
    """kill -9 of a rebuild while its workers (forked, or subprocesses: pool.py) stream
    batches: the index in place answers as before, its workers end, and the next rebuild
    clears the half-written file."""
    index = index_of(repo)
    for i in range(4):
        points = [("loss", s, T0 + s, float(i + s)) for s in range(3)]
        commit(repo, make_run(repo, i, series=series_blob(points)), ingest=False)
    index.sync()
    before = dump(index)
    script = tmp_path / "killed_rebuild.py"
    script.write_text(f"import mlvc.index.pool\nmlvc.index.pool.FORK = {fork}\n{KILLED_REBUILD}")
    proc = subprocess.Popen(
        [sys.executable, str(script), str(repo.root)], stdout=subprocess.PIPE, text=True
    )
    try:
        workers = [int(pid) for pid in proc.stdout.readline().split()]
        assert len(workers) == 2 and proc.stdout.readline() == "inserted\n"
        assert list(index.path.parent.glob("index.duckdb.rebuild-*"))  # half written
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers)  # EOF or EPIPE ended them
    assert dump(index) == before
    assert index.rebuild() == 4
    assert not list(index.path.parent.glob("index.duckdb.rebuild-*"))
    assert dump(index) == before
    assert repo.fsck() == []


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped by init, does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # gone
        return False
    return "\nState:\tZ" not in status


def _record(init, calls):
    def wrapped(self, n):
        calls.append(n)
        init(self, n)

    return wrapped


def test_schema_version_change_rebuilds(repo, monkeypatch):
    index = index_of(repo)
    commit(repo, make_run(repo, 0))
    before = dump(index)
    monkeypatch.setattr("mlvc.index.schema.SCHEMA_VERSION", 99)
    assert rows(index, "SELECT value FROM meta WHERE key = 'schema_version'") == [{"value": "99"}]
    assert dump(index) == before


def test_corrupt_index_file_is_rebuilt(repo):
    index = index_of(repo)
    commit(repo, make_run(repo, 0))
    before = dump(index)
    index.path.write_bytes(b"garbage" * 1000)
    assert dump(index) == before


# -- the journal ----------------------------------------------------------------------------------


def test_reader_ingests_pending_journal(repo):
    index = index_of(repo)
    commit(repo, make_run(repo, 0))
    late = commit(repo, make_run(repo, 1), ingest=False)
    assert index.pending() == [late]
    assert {r["id"] for r in rows(index, "SELECT id FROM runs")} >= {late.hex}
    assert index.pending() == []


def test_journal_without_ref_waits_then_is_abandoned(repo):
    index = index_of(repo)
    in_progress = write_object(repo.store, make_run(repo, 0))
    index.journal(in_progress)
    assert rows(index, "SELECT count(*) AS n FROM runs") == [{"n": 0}]
    assert index.pending() == [in_progress]  # a commit still writing its ref
    old = time.time() - 3600
    os.utime(index.journal_dir / in_progress.hex, (old, old))
    index.sync()
    assert index.pending() == []


def test_deleted_run_ref_plus_journal_drops_the_run(repo):
    index = index_of(repo)
    keep, gone = commit(repo, make_run(repo, 0)), commit(repo, make_run(repo, 1, env=None))
    (repo.dir / "refs" / "runs" / gone.hex).unlink()
    index.journal(gone)
    assert rows(index, "SELECT id FROM runs") == [{"id": keep.hex}]
    assert rows(index, "SELECT DISTINCT run_id FROM params UNION SELECT id FROM runs_wide") == [
        {"run_id": keep.hex}
    ]
    after = dump(index)
    index.rebuild()
    assert dump(index) == after


def test_tag_moved_outside_a_commit_shows_up(repo):
    index = index_of(repo)
    a, b = commit(repo, make_run(repo, 0)), commit(repo, make_run(repo, 1))
    repo.refs.write("refs/tags/best", a)
    assert rows(index, "SELECT run_id FROM refs WHERE name = 'best'") == [{"run_id": a.hex}]
    repo.refs.write("refs/tags/best", b)
    assert rows(index, "SELECT run_id FROM refs WHERE name = 'best'") == [{"run_id": b.hex}]


# -- read-only, errors, streaming -----------------------------------------------------------------


def test_queries_cannot_write_or_reach_files(repo, tmp_path):
    index = index_of(repo)
    commit(repo, make_run(repo, 0))
    out = tmp_path / "out.csv"
    for sql in [
        "INSERT INTO runs (id) VALUES ('x')",
        "CREATE TABLE evil (a INT)",
        "DELETE FROM runs",
        "DROP TABLE runs",
        f"COPY runs TO '{out}'",
        "SELECT * FROM read_csv('/etc/passwd')",
        f"ATTACH '{tmp_path / 'other.duckdb'}' AS other",
        "INSTALL httpfs",
    ]:
        with pytest.raises(QueryError):
            index.query(sql)
    assert rows(index, "SELECT count(*) AS n FROM runs") == [{"n": 1}]
    assert sorted(os.listdir(tmp_path)) == ["proj"]


def test_bad_sql_gives_duckdb_message_on_one_line(repo):
    index = index_of(repo)
    with pytest.raises(QueryError) as e:
        index.query("SELEC id FROM runs")
    assert str(e.value) == 'Parser Error: syntax error at or near "SELEC"'
    with pytest.raises(QueryError, match="Table with name nope does not exist"):
        index.query("SELECT * FROM nope")
    assert "\n" not in str(e.value)


def test_stream_yields_record_batches(repo):
    index = index_of(repo)
    commit(repo, make_run(repo, 0))
    batches = list(index.stream("SELECT range AS i FROM range(10000)", batch_size=1000))
    assert all(isinstance(b, pa.RecordBatch) for b in batches)
    assert sum(b.num_rows for b in batches) == 10000
    with pytest.raises(QueryError):
        list(index.stream("SELECT nope"))


def test_nested_readers_do_not_deadlock(repo):
    index = index_of(repo)
    commit(repo, make_run(repo, 0))
    for _batch in index.stream("SELECT id FROM runs"):
        commit(repo, make_run(repo, 1))  # pending now, and the lock is held shared by us
        assert index.query("SELECT count(*) AS n FROM runs").column("n").to_pylist() == [1]
    assert index.query("SELECT count(*) AS n FROM runs").column("n").to_pylist() == [2]


def test_committer_does_not_wait_for_a_reader(repo):
    index = index_of(repo)
    commit(repo, make_run(repo, 0))
    with index.connect_readonly():
        start = time.monotonic()
        late = commit(repo, make_run(repo, 1))
        assert time.monotonic() - start < 1.0
        assert index.pending() == [late]
    assert rows(index, "SELECT count(*) AS n FROM runs") == [{"n": 2}]


def test_a_waiting_reader_keeps_committers_from_taking_the_lock(repo):
    """flock is not fair: a reader waiting behind a storm of committers' ingests leaves a
    marker, committers leave their runs journalled, and the reader ingests them all."""
    import threading

    index = index_of(repo)
    commit(repo, make_run(repo, 0))
    held = index.lock.take(exclusive=True, wait=0.0)  # an ingest under way elsewhere
    answer = {}
    reader = threading.Thread(target=lambda: answer.update(n=rows(index, "SELECT id FROM runs")))
    reader.start()
    deadline = time.monotonic() + 10
    while not index.lock.wanted() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert index.lock.wanted()
    late = commit(repo, make_run(repo, 1))  # try_ingest: skipped, the reader will do it
    assert index.pending() == [late]
    os.close(held)
    reader.join(30)
    got = sorted(r["id"] for r in answer["n"])
    assert late.hex in got and got == [i.hex for i in ids_of(repo)]
    assert index.pending() == [] and not index.lock.wanted()
    assert list((repo.dir / "index.wanted").iterdir()) == []


def test_a_dead_readers_marker_does_not_stop_commits(repo):
    index = index_of(repo)
    marker = repo.dir / "index.wanted" / "12345-1-1"
    marker.parent.mkdir()
    marker.touch()
    os.utime(marker, (time.time() - 3600, time.time() - 3600))
    assert not index.lock.wanted() and not marker.exists()
    commit(repo, make_run(repo, 0))
    assert index.pending() == []
    marker.touch()  # a live reader waits: the free lock is left to it
    late = commit(repo, make_run(repo, 1))
    assert index.pending() == [late]
    marker.unlink()
    assert len(rows(index, "SELECT id FROM runs")) == 2


def ids_of(repo: Repo) -> list:
    return sorted(repo.refs.run_ids())


def test_import_is_cheap():
    import subprocess
    import sys

    code = (
        "import sys, mlvc.index.index; print('duckdb' in sys.modules or 'pyarrow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_index_internals_contract_names_every_module():
    """The import-linter contract keeping the index's internals private lists modules by
    name: a new module of mlvc, or of mlvc.index, must appear in it."""
    import pkgutil

    import mlvc
    import mlvc.index
    from mlvc.core.params import _toml

    pyproject = Path(__file__).parents[2] / "pyproject.toml"
    contracts = _toml().loads(pyproject.read_text())["tool"]["importlinter"]["contracts"]
    (contract,) = [c for c in contracts if c["name"].startswith("Index internals")]
    # compiled speedups (mlvc._walk, ._metricbuf): import-linter sees only Python sources
    here = Path(mlvc.__path__[0])
    top = {
        f"mlvc.{m.name}"
        for m in pkgutil.iter_modules(mlvc.__path__)
        if m.ispkg or (here / f"{m.name}.py").exists()
    }
    inner = {f"mlvc.index.{m.name}" for m in pkgutil.iter_modules(mlvc.index.__path__)}
    assert set(contract["source_modules"]) == top - {"mlvc.index"}
    public = {
        "mlvc.index.index",
        "mlvc.index.user_sql",
        "mlvc.index.mlflow_filter",
        "mlvc.index.series",
    }
    assert set(contract["forbidden_modules"]) == inner - public


def test_every_documented_query_runs(repo):
    doc = (Path(__file__).parents[2] / "docs" / "sql-schema.md").read_text()
    queries = re.findall(r"```sql\n(.*?)```", doc, re.S)
    assert len(queries) >= 5
    base = commit(repo, make_run(repo, 0, name="baseline"), name="baseline")
    env = write_object(repo.store, Env({"packages": {**PACKAGES, "torch": "2.3.0"}}))
    now = time.time_ns() // 1000
    candidate = make_run(
        repo, 1, name="candidate", parents=(base,), env=env, status="failed", exit_code=1,
        started=now - 5_000_000, ended=now, metrics={"loss": 0.25, "acc": 0.9},
    )  # fmt: skip
    commit(repo, candidate, name="candidate")
    emit(repo.ctx, "alert.fired", {"rule": "loss-nan", "name": "candidate"})
    index = index_of(repo)
    results = [index.query(q).to_pylist() for q in queries]
    assert all(results), [q for q, r in zip(queries, results, strict=True) if not r]
    by_text = dict(zip(queries, results, strict=True))
    changed = next(r for q, r in by_text.items() if "'added'" in q)
    assert changed == [{"section": "code", "path": "train.py", "change": "changed"}]
    (packages,) = [r for q, r in by_text.items() if "AS before" in q]
    assert packages == [{"package": "torch", "before": "2.2.0", "after": "2.3.0"}]


# -- concurrency ----------------------------------------------------------------------------------


def _committer(root: str, worker: int, n: int) -> list[str]:
    repo = Repo(root)
    ids = []
    for i in range(n):
        run = make_run(repo, worker * 100 + i, message=f"worker {worker}")
        ids.append(commit(repo, run).hex)
    return ids


def _reader(root: str, stop, errors) -> int:
    index = index_of(Repo(root))
    count = 0
    while not stop.is_set():
        try:
            count = index.query("SELECT count(*) AS n FROM runs_wide").column("n")[0].as_py()
        except Exception as e:  # the test asserts there are none
            errors.append(repr(e))
    return count


def test_concurrent_committers_and_reader_lose_nothing(repo):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        stop, errors = manager.Event(), manager.list()
        with ctx.Pool(7) as pool:
            reader = pool.apply_async(_reader, (str(repo.root), stop, errors))
            writers = [pool.apply_async(_committer, (str(repo.root), w, 10)) for w in range(6)]
            committed = {i for w in writers for i in w.get(timeout=120)}
            stop.set()
            reader.get(timeout=60)
        assert list(errors) == []
    index = index_of(repo)
    indexed = {r["id"] for r in rows(index, "SELECT id FROM runs")}
    assert len(committed) == 60 and indexed == committed
    assert rows(index, "SELECT count(*) AS n FROM runs_wide") == [{"n": 60}]
    assert index.pending() == []


def test_a_reader_in_another_thread_does_not_hide_a_commit(project):
    """Reader nesting is per thread: thread B's query ingests B's commit (waiting for thread
    A's reader to end) instead of answering from the index as it was."""
    import threading

    repo = Repo(project)  # MLVC_INDEX_SYNC=inline (conftest): commits ingest in-process
    repo.commit("first")
    holding, release, committed = threading.Event(), threading.Event(), threading.Event()
    seen: dict = {}

    def reader() -> None:
        with repo.index.connect_readonly():
            holding.set()
            release.wait(60)

    def committer() -> None:
        try:
            seen["id"] = repo.commit("second")  # the index lock is busy: stays journalled
            committed.set()
            seen["ids"] = {r["id"] for r in repo.query("SELECT id FROM runs").to_pylist()}
        except Exception as e:  # the assertions below report it
            seen["error"] = e
            committed.set()

    a = threading.Thread(target=reader)
    a.start()
    assert holding.wait(30)
    b = threading.Thread(target=committer)
    b.start()
    try:
        assert committed.wait(60)
        b.join(1.0)  # with per-process nesting, B answered at once, without its run
    finally:
        release.set()
        a.join(30)
        b.join(60)
    assert "error" not in seen, seen.get("error")
    assert seen["id"] in seen["ids"] and len(seen["ids"]) == 2
    assert repo.index.pending() == []


def test_a_reader_nested_in_one_thread_still_reads(repo):
    """The same thread reading again inside its own reader does not wait for itself."""
    index = index_of(repo)
    commit(repo, make_run(repo, 0))
    with index.connect_readonly():
        late = commit(repo, make_run(repo, 1))  # journalled: the lock is ours, shared
        start = time.monotonic()
        assert rows(index, "SELECT count(*) AS n FROM runs") == [{"n": 1}]
        assert time.monotonic() - start < 5.0
        assert index.pending() == [late]
    assert rows(index, "SELECT count(*) AS n FROM runs") == [{"n": 2}]


# -- scale (pytest -m heavy -s; MLVC_BENCH_RUNS=100000 for the full size) -------------------


def _bulk_runs(repo: Repo, n: int, start: int = 0) -> None:
    """n runs of 20 params and a 5 x 100-point series each, journalled, not ingested."""
    import random

    rnd = random.Random(start)
    work = repo.root / "work"
    code = build_tree(
        repo.store, work, write_files(work, {f"src/m{i}.py": str(i) for i in range(20)})
    )
    env = write_object(repo.store, Env({"packages": {f"pkg{i}": "1.0" for i in range(100)}}))
    index = index_of(repo)
    for i in range(start, start + n):
        points = [
            (k, s, T0 + s * 1000, rnd.random())
            for k in ("loss", "acc", "f1", "lr", "gn")
            for s in range(100)
        ]
        run = Run(
            name=f"sweep-{i % 50}",
            started=T0 + i,
            ended=T0 + i + 10_000_000,
            command=("python", "train.py"),
            code=code,
            env=env,
            params={f"p{k}": rnd.random() for k in range(18)}
            | {"lr": rnd.random() / 10, "seed": i},
            metrics={"loss": points[99][3]},
            series=repo.store.add_bytes(series_blob(points)),
        )
        oid = write_object(repo.store, run)
        index.journal(oid)
        repo.refs.add_run(oid)


@pytest.mark.heavy
def test_scale(tmp_path):
    n = int(os.environ.get("MLVC_BENCH_RUNS", "10000"))
    repo = Repo.init(tmp_path / "big")
    index = index_of(repo)
    t = time.perf_counter()
    _bulk_runs(repo, n)
    print(f"\nwrote {n} runs in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    index.rebuild()
    print(
        f"rebuild of {n} runs: {time.perf_counter() - t:.2f} s, {index.path.stat().st_size >> 20} MiB"
    )
    sql = (
        'SELECT id, "params.lr", "metrics.loss" FROM runs_wide WHERE "params.lr" > 0.01 '
        'ORDER BY "metrics.loss" LIMIT 10'
    )
    for label in ("cold", "warm", "warm"):
        t = time.perf_counter()
        assert index.query(sql).num_rows == 10
        print(f"wide query ({label}, with connect): {(time.perf_counter() - t) * 1000:.0f} ms")
    for label, params in (("same keys", {}), ("a new key", {"brand_new": 1.0})):
        run = make_run(repo, n + len(params), params={"lr": 0.05, **params})
        oid = write_object(repo.store, run)
        index.journal(oid)
        repo.refs.add_run(oid)
        t = time.perf_counter()
        assert index.try_ingest()
        print(f"ingest of 1 run ({label}) into {n}: {(time.perf_counter() - t) * 1000:.0f} ms")
    t = time.perf_counter()
    total = index.query("SELECT count(*) AS n FROM metrics").column("n")[0].as_py()
    print(f"count(*) of {total} metric points: {(time.perf_counter() - t) * 1000:.0f} ms")
    assert total == n * 500 + 2 * 2


def test_readers_opening_at_once_in_threads_all_get_a_connection(repo):
    """The first readers of a process configure its DuckDB database (UTC, settings locked);
    two threads that both saw it unconfigured once raced, and the loser's SET failed."""
    import threading

    from mlvc.index.db import connect_ro

    repo.commit("first")
    path = repo.index.path
    for _round in range(20):
        barrier, errors, cons = threading.Barrier(8), [], []

        def open_one(barrier=barrier, cons=cons, errors=errors):
            barrier.wait()
            try:
                cons.append(connect_ro(path))
            except Exception as e:  # noqa: BLE001 - the test reports any failure
                errors.append(e)

        threads = [threading.Thread(target=open_one) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for con in cons:
            assert con.execute("SELECT current_setting('TimeZone')").fetchall() == [("UTC",)]
            con.close()
        assert errors == []
    repo.commit("second")  # a writer of this process can open the index again
    assert [r["message"] for r in repo.log()][:2] == ["second", "first"]


# -- series blobs: Arrow IPC (new runs) and Parquet (runs recorded before) ------------------


def ipc_blob(points: list[tuple[str, int, int, float]]) -> bytes:
    """The points as a finished run stores them now (runs/finish.series_blob's bytes)."""
    from mlvc.core.series_blob import encode_series

    keys, steps, stamps, values = zip(*points, strict=True)
    return encode_series(
        pa.table(
            {
                "key": pa.array(keys, pa.string()),
                "step": pa.array(steps, pa.int64()),
                "timestamp": pa.array(stamps, pa.timestamp("us", "UTC")),
                "value": pa.array(values, pa.float64()),
            }
        )
    )


def _per_run(index: Index, table: str, cols: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in rows(index, f"SELECT r.name, {cols} FROM {table} t JOIN runs r ON r.id = t.run_id"):
        out.setdefault(r.pop("name"), []).append(repr(sorted(r.items())))
    return {k: sorted(v) for k, v in out.items()}


def test_a_series_stored_as_arrow_ipc_or_as_parquet_indexes_the_same(
    repo, monkeypatch, settle_window
):
    """The same points, one run's blob in each format: equal metrics, summaries and stored
    samples (a key long enough for series_levels, with NaN and infinities); and a rebuild
    in worker processes gives the index the incremental ingest made."""
    long = [("long", s, T0 + s * 1000, float(s % 89)) for s in range(10_050)]
    long[77] = ("long", 77, T0 + 77_000, math.nan)
    long[5000] = ("long", 5000, T0 + 5_000_000, math.inf)
    points = [*long, *[("short", s, T0 + s, -float(s)) for s in range(7)]]
    index = index_of(repo)
    commit(repo, make_run(repo, 0, series=series_blob(points), metrics={}), name="pq")
    commit(repo, make_run(repo, 1, series=ipc_blob(points), metrics={}), name="ipc")
    assert rows(index, "SELECT count(*) AS n FROM ingest_errors") == [{"n": 0}]
    for table, cols in (
        ("metrics", "key, step, timestamp, value"),
        ("metric_summary", "key, last, min, max, count, last_step"),
        ("series_levels", "key, axis, step, timestamp, value"),
    ):
        got = _per_run(index, table, cols)
        assert got["run0"] == got["run1"] and got["run0"], table
    assert len(_per_run(index, "series_levels", "key")["run1"]) > 100
    incremental = dump(index)
    monkeypatch.setattr("mlvc.index.ingest.PARALLEL_MIN_RUNS", 1)
    # the rebuild as if it ran later than the commits' ingests (CI's load once made it so):
    # it notes the ref files as settled, which the ingests did not yet
    settle_window(0)
    assert Index(repo.dir, repo.store, repo.refs, workers=2, settings=repo.settings).rebuild() == 2
    assert dump(index) == incremental


@pytest.mark.parametrize("cut", ["magic only", "truncated", "footer gone"])
def test_a_damaged_arrow_ipc_series_is_reported_and_final_metrics_kept(repo, cut):
    good = ipc_blob([("loss", s, T0 + s, 0.5) for s in range(50)])
    bad = {
        "magic only": b"ARROW1" + b"\0" * 40,
        "truncated": good[: len(good) // 2],
        "footer gone": good[:-10],
    }[cut]
    index = index_of(repo)
    oid = commit(repo, make_run(repo, 0, series=bad))
    assert rows(index, "SELECT key FROM metrics ORDER BY key") == [{"key": "acc"}, {"key": "loss"}]
    errors = rows(index, "SELECT run_id, error FROM ingest_errors")
    assert errors[0]["run_id"] == oid.hex and "metric series unreadable" in errors[0]["error"]


def test_a_run_read_while_another_process_merges_indexes_is_ingested(project, merge_while_listed):
    """Regression (CI: a table of 450 runs showed 449): the ingest read a journalled run
    while the next commit merged the pack indexes; its store listed the index files before
    the merge and opened them after, found the run missing, and the run went to
    ingest_errors with its journal entry deleted: lost to every query until a rebuild."""
    repo = Repo(project)
    first = repo.commit("first")
    reader = Repo(project)
    reader.index.store.reload(force=True)  # a reader that looked a moment ago
    index = repo.index
    held = index.lock.take(exclusive=True, wait=0.0)  # an ingest under way elsewhere
    try:
        second = repo.commit("second")  # journalled, not ingested
    finally:
        os.close(held)
    assert index.pending() == [second]
    merged = merge_while_listed(project / ".mlvc" / "objects")
    got = {r["id"] for r in reader.query("SELECT id FROM runs").to_pylist()}
    assert merged and got == {first.hex, second.hex}
    assert reader.query("SELECT count(*) AS n FROM ingest_errors").to_pylist() == [{"n": 0}]
