"""Decoding many runs at once gives the rows of decoding each alone.

The decoder keeps series blobs as runs write them (Arrow IPC, timestamp[us, UTC]) as read and
makes them plain a batch at a time, normalises any other blob (Parquet, other timestamp
units, int64 stamps, no timestamps) one at a time, and drops a final metric whose key has a
series with one Arrow match over the batch. Here runs of every kind, interleaved, damaged ones
among them, are ingested one by one (one batch each) and then rebuilt in one batch, from a
local store and through a store that is not local (read on threads): the index is the same.
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_index import T0, commit, dump, index_of, make_run

from mlvc.api.repo import Repo
from mlvc.core.ids import ObjectId
from mlvc.core.series_blob import encode_series
from mlvc.index import decode, schema
from mlvc.index.index import Index
from mlvc.store.odb import MemoryStore

KINDS = ("ipc", "ipc-sorted-nulls", "parquet", "ipc-ns", "ipc-int64", "no-timestamp", "damaged")


def _points(i: int, keys: list[str]) -> dict:
    n = 3 + i % 4
    return {
        "key": [k for k in keys for _ in range(n)],
        "step": [s for _ in keys for s in range(n)],
        "timestamp": [T0 + 1000 * s + i for _ in keys for s in range(n)],
        "value": [float(i * s) - 1.5 for _ in keys for s in range(n)],
    }


def blob(kind: str, i: int, keys: list[str]) -> bytes:
    """A series blob of run ``i`` in one of the forms a store may hold."""
    p = _points(i, keys)
    if kind == "damaged":
        return b"ARROW1\x00\x00 not really"
    stamps = pa.array(p["timestamp"], pa.int64())
    if kind == "ipc-sorted-nulls":  # as runs write it, with a missing value and timestamp
        p["value"][0] = None
        stamps = pa.array([None, *p["timestamp"][1:]], pa.int64())
    if kind in ("ipc", "ipc-sorted-nulls", "parquet"):
        stamps = stamps.cast(pa.timestamp("us", "UTC"))
    elif kind == "ipc-ns":
        stamps = pa.array([t * 1000 for t in p["timestamp"]], pa.timestamp("ns", "UTC"))
    columns = {"key": pa.array(p["key"]), "step": pa.array(p["step"], pa.int64())}
    if kind != "no-timestamp":
        columns["timestamp"] = stamps
    columns["value"] = pa.array(p["value"], pa.float64())
    table = pa.table(columns)
    if kind == "parquet":
        buf = io.BytesIO()
        pq.write_table(table, buf)
        return buf.getvalue()
    return encode_series(table)


def commit_runs(repo: Repo, kinds: list[str]) -> list[ObjectId]:
    """A run per kind, each ingested alone; final metrics "loss" (a series key of every run
    with a series) and "acc" (only some runs' series have it)."""
    ids = []
    for i, kind in enumerate(kinds):
        keys = ["loss", "acc"] if i % 2 else ["loss"]
        series = None if kind == "none" else blob(kind, i, keys)
        run = make_run(repo, i, series=series, metrics={"loss": 0.25 + i, "acc": 0.5 - i})
        ids.append(commit(repo, run))
    return ids


def test_one_batch_of_mixed_blobs_equals_runs_ingested_alone(repo):
    kinds = [*KINDS, "none", *reversed(KINDS), "ipc", "ipc", "parquet", "ipc"]
    ids = commit_runs(repo, kinds)
    index = index_of(repo)
    alone = dump(index)
    errors = index.query("SELECT count(*) AS n FROM ingest_errors").to_pylist()[0]["n"]
    assert errors == 2  # the damaged blobs, and nothing else
    summary = index.query("SELECT count(*) AS n FROM metric_summary").to_pylist()[0]["n"]
    assert summary == 2 * len(ids)  # loss and acc of every run, from a series or alone
    index.rebuild()
    assert dump(index) == alone


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from([*KINDS, "none"]), min_size=1, max_size=8))
def test_any_mix_decodes_as_each_run_alone(tmp_path_factory, kinds):
    """decode_runs over the mix in one batch, from a local store and from a store read on
    threads, gives exactly the tables of decoding each run on its own, concatenated."""
    repo = Repo.init(tmp_path_factory.mktemp("mix") / "proj")
    ids = commit_runs(repo, kinds)
    with index_of(repo).connect_readonly() as con:
        schemas = {t: schema.arrow_schema(con, t) for t in set(schema.DECODED)}
    hexes = [oid.hex for oid in ids]
    memory = MemoryStore()
    for oid in repo.store.ids():
        memory.add_bytes(repo.store.read_bytes(oid))
    each = [next(decode.decode_runs(repo.store, schemas, [h]))[0] for h in hexes]
    for store in (repo.store, memory):
        (tables, _trees, _envs), *more = decode.decode_runs(store, schemas, hexes)
        assert not more
        for name, table in tables.items():
            parts = [e[name].cast(table.schema) for e in each]
            expected = pa.concat_tables([table.schema.empty_table(), *parts])
            assert _rows(table) == _rows(expected), name


def _rows(table) -> list:
    """The rows, dictionary columns decoded, sorted (a table's rows are a set: a batch puts
    the final metrics' summaries after the series' ones)."""
    plain = pa.table(
        {n: c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c
         for n, c in zip(table.column_names, table.columns, strict=True)}
    )  # fmt: skip
    return sorted(repr(r) for r in plain.to_pylist())


@pytest.mark.parametrize("workers", [1, 2])
def test_rebuild_of_mixed_blobs_in_workers(repo, monkeypatch, workers):
    kinds = [*KINDS, "none"] * 2
    commit_runs(repo, kinds)
    index = index_of(repo)
    alone = dump(index)
    monkeypatch.setattr("mlvc.index.ingest.BATCH_RUNS", 5)
    monkeypatch.setattr("mlvc.index.ingest.PARALLEL_MIN_RUNS", 1)
    rebuilt = Index(repo.dir, repo.store, repo.refs, workers=workers, settings=repo.settings)
    assert rebuilt.rebuild() == len(kinds)
    assert dump(index) == alone


def test_workers_run_this_mlvc_whatever_the_working_directory_holds(repo, monkeypatch, tmp_path):
    """An ``mlvc`` folder in the working directory (another checkout) is not what decodes."""
    commit_runs(repo, ["ipc", "parquet", "none"])
    index = index_of(repo)
    alone = dump(index)
    impostor = tmp_path / "elsewhere" / "mlvc" / "index"
    impostor.mkdir(parents=True)
    (impostor.parent / "__init__.py").write_text("")
    (impostor / "__init__.py").write_text("")
    (impostor / "pool.py").write_text("raise SystemExit('the wrong mlvc')\n")
    monkeypatch.chdir(impostor.parent.parent)
    monkeypatch.setattr("mlvc.index.ingest.BATCH_RUNS", 1)
    monkeypatch.setattr("mlvc.index.ingest.PARALLEL_MIN_RUNS", 1)
    rebuilt = Index(repo.dir, repo.store, repo.refs, workers=2, settings=repo.settings)
    assert rebuilt.rebuild() == 3
    assert dump(index) == alone


def test_a_parquet_bomb_series_becomes_an_ingest_error(repo):
    """A run pushed with a Parquet series blob of a few hundred KB that inflates to 256 MiB
    is indexed, its series refused as unreadable (core/parquet.py), the rest as any run."""
    import numpy as np

    n = 8 << 20
    zeros = pa.table({"key": pa.array([""] * 1).take(pa.array(np.zeros(n, np.int32)))} | {
        c: np.zeros(n, dtype=np.int64) for c in ("step", "timestamp")} | {
        "value": np.zeros(n)})  # fmt: skip
    buf = io.BytesIO()
    pq.write_table(zeros, buf, compression="zstd", use_dictionary=False, compression_level=19)
    assert len(buf.getvalue()) < 1 << 20
    del zeros
    run_id = commit(repo, make_run(repo, 0, series=buf.getvalue(), metrics={"loss": 0.5}))
    index = index_of(repo)
    errors = index.query("SELECT run_id, error FROM ingest_errors").to_pylist()
    assert [e["run_id"] for e in errors] == [run_id.hex]
    assert "metric series unreadable" in errors[0]["error"]
    assert "decode to over" in errors[0]["error"]
    rows = index.query("SELECT key, value FROM metrics").to_pylist()
    assert rows == [{"key": "loss", "value": 0.5}]  # the run's final metric still answers
