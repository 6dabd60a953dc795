"""Reads just after a run is named: the index's refs fingerprint, taken within a clock tick
of the change, cannot be trusted alone, and every read then went to the exclusive lock and
ingested (~50 ms; a server's every read for 2 s after any named commit). Now a reader checks
the refs rows against the files under the shared lock, and ingests only if they differ."""

from __future__ import annotations

import fcntl
import os

import pytest

import mlvc.index.journal
from mlvc.core.ids import ObjectId
from mlvc.errors import IndexBusy

HOUR_NS = 3600 * 10**9


@pytest.fixture
def recent(monkeypatch, settle_window):
    """Every change counts as recent (the window is an hour), whatever the machine's load."""
    settle_window(HOUR_NS)
    monkeypatch.setattr("mlvc.index.lock.LOCK_WAIT", 0.5)


def shared_lock(repo) -> int:
    """Another reader holding the index lock, shared (its own open file description)."""
    fd = os.open(repo.dir / "index.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def named(repo, name: str) -> str:
    return repo.commit(name, name=name, capture_code=False, capture_env=False)


@pytest.mark.parametrize("kept", [False, True], ids=["process", "server's kept reader"])
def test_a_read_just_after_a_named_commit_needs_no_ingest(repo, recent, kept):
    first = named(repo, "alpha")
    repo.query("SELECT 1")  # the ingest: its fingerprint is stored as recent
    if kept:
        repo.index.keep_readers()
    fd = shared_lock(repo)  # an ingest would wait for it, and give up
    try:
        for _ in range(3):
            rows = repo.query("SELECT name, run_id FROM refs WHERE kind = 'name'").to_pylist()
            assert rows == [{"name": "alpha", "run_id": first}]
    finally:
        os.close(fd)
        repo.index.release_idle(0.0)


def _restore(folder, st) -> None:
    """The folder's mtime put back: a change within one tick of a coarse clock."""
    os.utime(folder, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("change", ["moved", "deleted", "added"])
def test_a_name_changed_in_the_same_tick_is_still_seen(repo, recent, change):
    first = named(repo, "alpha")
    second = named(repo, "beta")
    repo.query("SELECT 1")
    folder = repo.dir / "refs" / "names"
    st = os.stat(folder)
    if change == "moved":
        repo.refs.write("refs/names/alpha", ObjectId.parse(second))
    elif change == "deleted":
        repo.refs.delete("refs/names/beta")
    else:
        repo.refs.write("refs/names/gamma", ObjectId.parse(first))
    _restore(folder, st)
    want = {
        "moved": {"alpha": second, "beta": second},
        "deleted": {"alpha": first},
        "added": {"alpha": first, "beta": second, "gamma": first},
    }[change]
    fd = shared_lock(repo)
    try:  # the rows differ from the files: a read of them must ingest, so it waits for the lock
        with pytest.raises(IndexBusy):
            repo.query("SELECT count(*) FROM refs")
        assert repo.query("SELECT count(*) FROM runs").column(0)[0].as_py() == 2  # no names
    finally:
        os.close(fd)
    rows = repo.query("SELECT name, run_id FROM refs WHERE kind = 'name'").to_pylist()
    assert {r["name"]: r["run_id"] for r in rows} == want


def fingerprint(repo) -> str:
    sql = "SELECT value FROM meta WHERE key = 'refs_fingerprint'"
    return repo.query(sql).column(0).to_pylist()[0]


def test_once_settled_one_ingest_stores_a_fingerprint_that_matches_as_it_is(
    repo, recent, monkeypatch, settle_window
):
    """No reading of ref files on every read once the change is old: one ingest."""
    named(repo, "alpha")
    assert fingerprint(repo).endswith("/recent")
    reads = []
    real = type(repo.refs).read_direct
    monkeypatch.setattr(
        type(repo.refs), "read_direct", lambda self, ref: reads.append(ref) or real(self, ref)
    )
    fingerprint(repo)
    assert reads == ["refs/names/alpha"]  # recent: checked against the file
    settle_window(0)  # settled from now on
    assert not fingerprint(repo).endswith(("/recent", "/unsettled"))  # stored by an ingest
    reads.clear()
    fd = shared_lock(repo)
    try:
        assert repo.query("SELECT count(*) AS n FROM refs").column("n").to_pylist() == [1]
    finally:
        os.close(fd)
    assert reads == []


def test_ctrl_c_while_a_reader_checks_the_names_leaves_no_connection_open(
    repo, recent, monkeypatch
):
    """The check lists every name (~60 ms at 10,000): a Ctrl-C there left the read-only
    connection open, and the next query and ingest of the process failed with DuckDB's
    "Can't open a connection to same database file with a different configuration"."""
    named(repo, "alpha")
    repo.query("SELECT count(*) FROM refs")
    real = mlvc.index.journal.refs_match
    calls = []

    def interrupted(con, refs):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(con, refs)

    monkeypatch.setattr(mlvc.index.journal, "refs_match", interrupted)
    with pytest.raises(KeyboardInterrupt) as caught:  # kept, as a REPL keeps the last one
        repo.query("SELECT count(*) FROM refs")
    second = named(repo, "beta")  # its ingest opens the file read-write
    rows = repo.query("SELECT name, run_id FROM refs WHERE name = 'beta'").to_pylist()
    assert rows == [{"name": "beta", "run_id": second}]
    assert caught.value is not None
