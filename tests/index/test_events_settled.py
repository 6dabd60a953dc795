"""Whether the index's ``events`` table is current, known from the events folder's identity
once it has settled: a read listed every event file (~1.4 µs each: every server read paid
~50 ms at 10,000 runs and ~0.5 s at 100,000). While the folder changes, a listing decides,
so an event renamed in within one tick of a coarse clock is still seen."""

from __future__ import annotations

import os

import pytest

import mlvc.index.events
from mlvc.events import emit

HOUR_NS = 3600 * 10**9


def listings(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = mlvc.index.events.event_ids

    def counting(layout, *args):
        calls.append(1)
        return real(layout, *args)

    monkeypatch.setattr(mlvc.index.events, "event_ids", counting)
    return calls


def events(repo) -> list[str]:
    sql = "SELECT name FROM events WHERE type = 'alert.fired' ORDER BY id"
    return repo.query(sql).column("name").to_pylist()


@pytest.mark.parametrize("kept", [False, True], ids=["process", "server's kept reader"])
def test_reads_of_a_settled_journal_list_no_event_file(repo, monkeypatch, settle_window, kept):
    settle_window(0)  # every change settled at once
    for i in range(3):
        repo.commit(f"run {i}", capture_code=False, capture_env=False)
    emit(repo.ctx, "alert.fired", {"rule": "r", "name": "first"})
    assert events(repo) == ["first"]  # the ingest notes the settled folder
    if kept:
        repo.index.keep_readers()
    calls = listings(monkeypatch)
    try:
        for _ in range(3):
            assert events(repo) == ["first"]
        assert calls == []
        emit(repo.ctx, "alert.fired", {"rule": "r", "name": "second"})  # the folder changes
        assert events(repo) == ["first", "second"]
    finally:
        repo.index.release_idle(0.0)


def test_an_event_renamed_in_within_the_same_tick_is_still_seen(repo, settle_window):
    settle_window(HOUR_NS)  # every change recent
    emit(repo.ctx, "alert.fired", {"rule": "r", "name": "first"})
    assert events(repo) == ["first"]
    folder = repo.dir / "events"
    st = os.stat(folder)
    emit(repo.ctx, "alert.fired", {"rule": "r", "name": "second"})
    os.utime(folder, ns=(st.st_atime_ns, st.st_mtime_ns))  # a coarse clock's same tick
    assert events(repo) == ["first", "second"]


def test_once_settled_one_ingest_notes_the_folder_and_reads_stop_listing(
    repo, monkeypatch, settle_window
):
    settle_window(HOUR_NS)
    emit(repo.ctx, "alert.fired", {"rule": "r", "name": "first"})
    assert events(repo) == ["first"]
    calls = listings(monkeypatch)
    events(repo)
    assert calls  # recent: listed
    settle_window(0)  # now settled
    events(repo)  # one ingest notes the folder
    calls.clear()
    assert events(repo) == ["first"]
    assert calls == []
