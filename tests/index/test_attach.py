"""Readers and writers attach the index file to an in-memory DuckDB database their process
keeps for it (db.attach_ro, db.connect_rw; one for both, locked as a reader's) instead of
starting a database each time: what a reader's SQL sees and may do is what it was with a
database of its own, and a writer writes as it did."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_index import commit, index_of, make_run

import mlvc.index.pool
from mlvc.api.repo import Repo
from mlvc.errors import QueryError
from mlvc.index import db, ingest


def count(index) -> int:
    return index.query("SELECT count(*) AS n FROM runs").column("n")[0].as_py()


def test_each_read_sees_the_commits_before_it(repo):
    """The file is attached afresh for each read: nothing of an earlier read is served."""
    index = index_of(repo)
    for i in range(4):
        commit(repo, make_run(repo, i), name=f"r{i}", ingest=i % 2 == 0)
        assert count(index) == i + 1
        names = index.query("SELECT name FROM refs ORDER BY name").column("name").to_pylist()
        assert names == [f"r{k}" for k in range(i + 1)]


def test_user_sql_sees_the_index_as_a_database_named_index(repo):
    commit(repo, make_run(repo, 0))
    index = index_of(repo)
    got = index.query("SELECT current_database() AS d, (SELECT count(*) FROM index.main.runs) AS n")
    assert got.to_pylist() == [{"d": "index", "n": 1}]


def test_user_sql_reads_no_file_but_the_index(repo):
    """External access stays off for a reader: files beside the index (the repository's
    own) and the reader's working folder are out of reach, the index itself is not."""
    commit(repo, make_run(repo, 0))
    index = index_of(repo)
    (repo.root / "secret.txt").write_text("s3cr3t")
    for path in (repo.root / "secret.txt", repo.dir / "config", repo.dir / "index.lock"):
        with pytest.raises(QueryError, match="disabled by configuration"):
            index.query(f"SELECT * FROM read_text('{path}')")
    with pytest.raises(QueryError):
        index.query("SELECT current_setting('threads') AS t; SET threads = 1")
    assert count(index) == 1


def test_a_process_reading_many_indexes_keeps_few_databases(tmp_path):
    repos = []
    for k in range(db.KEPT + 3):
        repo = Repo.init(tmp_path / f"p{k}")
        for i in range(k % 3 + 1):
            commit(repo, make_run(repo, i))
        repos.append(repo)
    with db._HOSTS_LOCK:  # those the commits above (and earlier tests here) left open
        for host in db._HOSTS.values():
            host.con.close()
        db._HOSTS.clear()
    for turn in range(2):
        for k, repo in enumerate(repos):
            assert count(index_of(repo)) == k % 3 + 1
            # as many as read, up to KEPT: none closed below it
            assert len(db._HOSTS) == (min(k + 1, db.KEPT) if turn == 0 else db.KEPT)


def test_two_readers_of_one_index_at_once_in_one_thread(repo):
    """Two asyncio tasks each hold a reader (a reader is counted per task): the second
    cannot attach the file the first holds, and reads through a database of its own."""
    for i in range(3):
        commit(repo, make_run(repo, i))
    index = index_of(repo)
    both = asyncio.Event()
    entered = []

    async def read(k: int) -> int:
        with index.connect_readonly() as con:
            entered.append(k)
            if len(entered) == 2:
                both.set()
            await asyncio.wait_for(both.wait(), 10)
            return con.execute("SELECT count(*) FROM runs").fetchone()[0]

    async def main():
        return await asyncio.gather(read(0), read(1))

    assert asyncio.run(main()) == [3, 3]
    assert count(index) == 3  # and the thread's database is free again


FORKED = """
import os, sys, threading
sys.path[:0] = [{tests!r}]
from test_index import commit, index_of, make_run
import mlvc.index.pool
from mlvc.api.repo import Repo

repo = Repo({root!r})
def count():
    return index_of(repo).query("SELECT count(*) AS n FROM runs").column("n")[0].as_py()
assert count() == 1  # this thread read: a reading and a writing database are open
hold = {hold!r}  # another thread has read, and holds a reader (its database) while we fork
read, forked = threading.Event(), threading.Event()
def other():
    if hold:
        with index_of(repo).connect_readonly() as con:
            assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
            read.set()
            forked.wait()
    else:
        assert count() == 1
        read.set()
        forked.wait()
thread = threading.Thread(target=other)
thread.start()
read.wait()
pid = os.fork()
if pid == 0:  # the child ends as a program does (interpreter finalization included)
    if {idle!r}:  # a child that never uses mlvc (a data loader's worker)
        sys.exit(0)
    if hold:  # it shares the held reader's lock (a flock crosses a fork): it only reads
        sys.exit(0 if count() == 1 else 3)
    commit(repo, make_run(repo, 1))
    sys.exit(0 if count() == 2 else 3)
forked.set()
thread.join()
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
commit(repo, make_run(repo, 2))
assert count() == (2 if hold or {idle!r} else 3)
print("ok")
"""


@pytest.mark.parametrize(("hold", "idle"), [(False, False), (False, True), (True, False)])
def test_a_process_that_read_can_fork_a_child_that_reads_and_writes(repo, hold, idle):
    """A DuckDB database must not cross a fork (a child that closed its copy, at its start
    or its end, died of SIGSEGV): the ones not in use are closed before the fork, those a
    thread holds are left alone in the child, which makes its own."""
    commit(repo, make_run(repo, 0))
    tests = str(Path(__file__).parent)
    script = FORKED.format(tests=tests, root=str(repo.root), hold=hold, idle=idle)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (p.returncode, p.stdout.strip()) == (0, "ok"), p.stderr[-2000:]


def test_a_rebuild_forks_its_workers_after_reads_in_the_same_thread(repo, monkeypatch):
    """Workers forked by a rebuild after reads of this thread (whose databases are closed
    before the fork) decode as they should: the rebuild equals the ingests."""
    monkeypatch.setattr(ingest, "PARALLEL_MIN_RUNS", 2)
    monkeypatch.setattr(ingest, "BATCH_RUNS", 2)
    for i in range(6):
        commit(repo, make_run(repo, i))
    index = index_of(repo)
    before = index.query("SELECT id, name FROM runs ORDER BY id").to_pylist()
    assert len(before) == 6 and db._HOSTS
    forks = []
    real_fork = os.fork

    def fork():
        forks.append(os.getpid())
        return real_fork()

    monkeypatch.setattr(os, "fork", fork)
    assert index.rebuild() == 6
    assert len(forks) == 2
    assert index.query("SELECT id, name FROM runs ORDER BY id").to_pylist() == before


def test_a_reader_ingests_many_runs_with_worker_processes_into_the_same_database(repo, monkeypatch):
    """A big ingest decodes in worker processes and asks DuckDB for one thread meanwhile; the
    database it attaches the file to is locked as a reader's (no SET): it ingests with
    DuckDB's threads as they are, and the read after it goes through the same database."""
    commit(repo, make_run(repo, 0))  # the index is there: the runs below are journalled
    for i in range(1, 7):
        commit(repo, make_run(repo, i), ingest=False)
    monkeypatch.setattr(ingest, "BATCH_RUNS", 2)
    monkeypatch.setattr(ingest, "PARALLEL_MIN_RUNS", 1)
    started = []
    workers = mlvc.index.pool.Workers.__init__

    def starting(self, n, *args, **kw):
        started.append(n)
        workers(self, n, *args, **kw)

    monkeypatch.setattr(mlvc.index.pool.Workers, "__init__", starting)
    made = []
    index_db = db._index_db
    monkeypatch.setattr(db, "_index_db", lambda path: made.append(path) or index_db(path))
    with db._HOSTS_LOCK:  # none kept from the commits: the read below starts its own
        kept = db._HOSTS.pop(str(repo.dir / "index.duckdb"), None)
    if kept is not None:
        kept.con.close()
    index = index_of(repo)
    index.workers = 2
    assert count(index) == 7
    assert started == [2]
    assert made == [index.path]  # one database: written, then read
