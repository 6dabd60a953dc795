"""A big rebuild's decode workers: forked from the rebuilding process where no other thread
runs, started as subprocesses otherwise; both give the index an ingest of each run gives,
and neither outlives the rebuild, whether it ends well, fails, or loses a worker (kill -9
of the rebuild itself: test_index's test_rebuild_killed_between_batches_leaves_the_index_whole,
for both kinds).

Runs of every series kind (Arrow IPC as runs write it, Parquet as runs recorded before, other
timestamp types, a damaged blob) are ingested one by one, then rebuilt in small batches by two
workers of each kind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest
from test_decode_batch import KINDS, blob, commit_runs
from test_index import _alive, commit, dump, index_of, make_run

import mlvc.index.ingest
import mlvc.index.pool as pool
from mlvc.errors import MlvcError
from mlvc.index.index import Index

MIXED = [*KINDS, "none", "ipc", "parquet"]
RUNS = len(MIXED) + 2  # and _mixed's two runs with keys of their own


def _workers_of(repo) -> Index:
    return Index(repo.dir, repo.store, repo.refs, workers=2, settings=repo.settings)


@pytest.fixture
def started(monkeypatch) -> list:
    """Small batches, workers for any rebuild, and the ``Workers`` each rebuild starts."""
    monkeypatch.setattr(mlvc.index.ingest, "BATCH_RUNS", 3)
    monkeypatch.setattr(mlvc.index.ingest, "PARALLEL_MIN_RUNS", 1)
    made = []
    init = pool.Workers.__init__

    def recorded(self, n, **kw):
        init(self, n, **kw)
        made.append(self)

    monkeypatch.setattr(pool.Workers, "__init__", recorded)
    return made


def _mixed(repo) -> dict:
    """Runs of every kind, two with a param key of their own, one named; ingested one by
    one: the index's tables."""
    commit_runs(repo, MIXED)
    commit(repo, make_run(repo, 40, params={"lr": 0.5, "only_here": "x"}), name="special")
    commit(repo, make_run(repo, 41, params={"lr": "text now", "LR": 2}))
    return dump(index_of(repo))


def _fork(monkeypatch, fork: bool) -> None:
    """Workers forked, or subprocesses; forked even if an earlier test in this process left
    a thread running (``can_fork`` itself: test_workers_are_not_forked_while_...)."""
    monkeypatch.setattr(pool, "can_fork", lambda: fork)


def _gone(workers) -> bool:
    """Whether every worker process ended and was reaped."""
    return all(not _alive(p.pid) for w in workers for p in w.procs)


@pytest.mark.parametrize("fork", [True, False], ids=["forked", "subprocesses"])
def test_rebuild_by_workers_equals_ingesting_each_run(repo, monkeypatch, started, fork):
    incremental = _mixed(repo)
    _fork(monkeypatch, fork)
    assert _workers_of(repo).rebuild() == RUNS
    assert dump(index_of(repo)) == incremental
    (workers,) = started
    kind = pool._Forked if fork else subprocess.Popen
    assert [type(p) for p in workers.procs] == [kind, kind]
    assert _gone(started)
    assert repo.fsck() == []


def test_workers_are_not_forked_while_another_thread_runs(repo, started):
    """A process running other threads (a server) starts subprocesses: a forked child could
    wait forever on a lock one of them held."""
    incremental = _mixed(repo)
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        assert _workers_of(repo).rebuild() == RUNS
    finally:
        release.set()
        other.join()
    assert [type(p) for p in started[0].procs] == [subprocess.Popen] * 2
    assert dump(index_of(repo)) == incremental


@pytest.mark.parametrize("fork", [True, False], ids=["forked", "subprocesses"])
def test_a_failing_insert_ends_the_workers_and_keeps_the_index(repo, monkeypatch, started, fork):
    before = _mixed(repo)
    _fork(monkeypatch, fork)
    insert = mlvc.index.ingest._insert_tables
    calls = []

    def failing(con, tables):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        insert(con, tables)

    monkeypatch.setattr(mlvc.index.ingest, "_insert_tables", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        _workers_of(repo).rebuild()
    assert _gone(started)
    assert dump(index_of(repo)) == before
    monkeypatch.setattr(mlvc.index.ingest, "_insert_tables", insert)
    assert _workers_of(repo).rebuild() == RUNS
    assert not list(repo.dir.glob("index.duckdb.rebuild-*"))
    assert dump(index_of(repo)) == before
    assert repo.fsck() == []


@pytest.mark.parametrize("fork", [True, False], ids=["forked", "subprocesses"])
def test_a_worker_killed_is_an_error_not_a_hang(repo, monkeypatch, started, fork):
    """A worker killed before it read its requests: the rebuild says so, the other worker
    ends, and the index in place is untouched."""
    before = _mixed(repo)
    _fork(monkeypatch, fork)
    send = pool._send

    def send_then_kill(stream, requests):
        send(stream, requests)
        victim = started[-1].procs[-1]
        if stream is victim.stdin:
            os.kill(victim.pid, signal.SIGKILL)

    monkeypatch.setattr(pool, "_send", send_then_kill)
    t0 = time.monotonic()
    with pytest.raises(MlvcError, match="index worker process died"):
        _workers_of(repo).rebuild()
    assert time.monotonic() - t0 < 30
    assert _gone(started)
    assert dump(index_of(repo)) == before
    assert repo.fsck() == []


def test_an_import_that_finds_no_index_rebuilds_with_workers(repo, monkeypatch, started):
    """An importer's ingest (runs it holds in memory, ``known``) into a repository whose
    index is gone rebuilds it with workers first, then ingests its runs as any ingest."""
    _mixed(repo)
    held = make_run(repo, 50, params={"imported": 1.0})
    oid = commit(repo, held, ingest=False)
    index_of(repo).path.unlink()
    index = _workers_of(repo)
    assert index.try_ingest(known={oid.hex: (held, None)})
    assert len(started) == 1 and _gone(started)
    assert index.query("SELECT count(*) AS n FROM runs").to_pylist() == [{"n": RUNS + 1}]
    imported = dump(index)
    assert index_of(repo).rebuild() == RUNS + 1  # in one process
    assert dump(index) == imported
    assert repo.fsck() == []


def test_an_ingest_of_many_runs_decodes_in_subprocesses(repo, started):
    """Workers an ingest starts, its DuckDB connection open, are not forked (DuckDB's
    threads are no Python threads ``can_fork`` would see); the rows are an ingest's."""
    index_of(repo).sync()  # an index of no runs
    for i, kind in enumerate(MIXED):
        commit(repo, make_run(repo, i, series=blob(kind, i, ["loss"])), ingest=False)
    _workers_of(repo).sync()
    assert [type(p) for p in started[0].procs] == [subprocess.Popen] * 2
    assert _gone(started)
    ingested = dump(index_of(repo))
    assert index_of(repo).rebuild() == len(MIXED)  # in one process
    assert dump(index_of(repo)) == ingested
    assert repo.fsck() == []
