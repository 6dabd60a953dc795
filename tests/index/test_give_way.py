"""A committer's ingest (the index worker's, or an inline one) stops between its steps for a
reader that has started waiting for the index lock: its transaction is rolled back, its
journal entries stay, and the reader ingests them itself. In a storm of commits the worker,
at the committers' share of the CPU, had kept readers waiting ~1 s for the rest of an ingest."""

from __future__ import annotations

import fcntl
import os

import duckdb
import pytest

import mlvc.index.ingest
from mlvc.index.lock import WANTED


def named(repo, name: str) -> str:
    return repo.commit(name, name=name, capture_code=False, capture_env=False)


def journalled(repo, name: str) -> str:
    """A named commit that finds the index lock taken (another ingest): its run stays
    journalled."""
    fd = os.open(repo.dir / "index.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        return named(repo, name)
    finally:
        os.close(fd)


def indexed_runs(repo) -> list[str]:
    """The runs in the index file as it is, read without any ingest."""
    con = duckdb.connect(str(repo.dir / "index.duckdb"), read_only=True)
    try:
        return [r[0] for r in con.execute("SELECT id FROM runs ORDER BY id").fetchall()]
    finally:
        con.close()


class Steps(list):
    armed = False  # a reader arrives during the next ingest's refresh of the named refs


@pytest.fixture
def reader_arrives(monkeypatch, repo):
    """Once armed, a reader starts waiting for the lock while an ingest refreshes the named
    refs (its marker, as ``IndexLock.take_or_raise`` leaves it); lists the steps taken."""
    steps = Steps()
    refresh_refs = mlvc.index.ingest.refresh_refs
    events_refresh = mlvc.index.ingest.events.refresh

    def refs(con, refs, now_ns=None):
        steps.append("refs")
        if steps.armed:
            (repo.dir / WANTED).mkdir(exist_ok=True)
            (repo.dir / WANTED / f"{os.getpid()}-reader").touch()
        return refresh_refs(con, refs, now_ns)

    def events(con, layout, stored, check=None):
        steps.append("events")
        return events_refresh(con, layout, stored, check)

    monkeypatch.setattr(mlvc.index.ingest, "refresh_refs", refs)
    monkeypatch.setattr(mlvc.index.ingest.events, "refresh", events)
    return steps


def leaves(repo) -> None:
    """The waiting reader takes the lock: its marker goes."""
    for marker in (repo.dir / WANTED).iterdir():
        marker.unlink()


def test_an_inline_commit_stops_its_ingest_for_a_reader(repo, reader_arrives):
    a = named(repo, "a")
    reader_arrives.clear()
    reader_arrives.armed = True
    b = named(repo, "b")  # MLVC_INDEX_SYNC=inline (conftest): the commit ingests
    assert reader_arrives == ["refs", "events"]  # it stopped at the first event to read
    assert indexed_runs(repo) == [a]  # rolled back
    assert [e.hex for e in repo.index.pending()] == [b]  # left to the reader
    leaves(repo)
    assert sorted(repo.query("SELECT id FROM runs").column(0).to_pylist()) == sorted([a, b])
    assert repo.index.pending() == []


def test_the_index_worker_gives_way_and_ends(repo, reader_arrives, monkeypatch):
    a = named(repo, "a")
    monkeypatch.setenv("MLVC_INDEX_SYNC", "background")
    b = journalled(repo, "b")
    reader_arrives.clear()
    reader_arrives.armed = True
    assert repo.index.ingest_as_worker(budget=60.0) is True  # what the worker process runs
    assert reader_arrives == ["refs", "events"]
    assert indexed_runs(repo) == [a]
    leaves(repo)
    rows = repo.query("SELECT name, run_id FROM refs ORDER BY name").to_pylist()
    assert rows == [{"name": "a", "run_id": a}, {"name": "b", "run_id": b}]


def test_a_readers_own_ingest_never_gives_way(repo, reader_arrives):
    """Another reader waiting behind it must not stop it: it would never answer."""
    a = named(repo, "a")
    b = journalled(repo, "b")
    reader_arrives.clear()
    reader_arrives.armed = True
    rows = repo.query("SELECT name, run_id FROM refs ORDER BY name").to_pylist()
    assert rows == [{"name": "a", "run_id": a}, {"name": "b", "run_id": b}]
    assert reader_arrives == ["refs", "events"]
    leaves(repo)


def test_the_worker_gives_way_while_it_reads_many_events(repo, monkeypatch):
    """Reads of runs only leave the events to the worker: in a storm many wait, and reading
    them all before it looks again kept a reader waiting over a second."""
    a = named(repo, "a")
    later = [journalled(repo, f"r{i}") for i in range(30)]
    monkeypatch.setattr(mlvc.index.events, "CHECK_EVERY", 4)
    repo.query("SELECT count(*) FROM runs")  # ingests the runs, leaves their events
    loads = []
    load = mlvc.index.events.load

    def loading(layout, eid):
        loads.append(eid)
        if len(loads) == 10:  # a reader arrives
            (repo.dir / WANTED).mkdir(exist_ok=True)
            (repo.dir / WANTED / f"{os.getpid()}-reader").touch()
        return load(layout, eid)

    monkeypatch.setattr(mlvc.index.events, "load", loading)
    assert repo.index.ingest_as_worker(budget=60.0) is True
    assert 10 <= len(loads) < 10 + 4 < len(later)  # it stopped at the next look
    assert indexed_runs(repo) == sorted([a, *later])  # the read of runs above ingested them
    leaves(repo)
    ids = repo.query("SELECT DISTINCT run_id FROM events").column(0).to_pylist()
    assert set(later) <= set(ids)
