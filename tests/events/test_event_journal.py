"""The event model and its journal: ids, stable bytes, durable writes, readers that survive
damage, concurrent writers, kill -9 mid-emit."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlvc import Repo
from mlvc.core.events import Event, event_ids, id_time_us, iso_utc, new_id
from mlvc.core.layout import Layout
from mlvc.events import emit, follow_events, read_events

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=10), json_values, max_size=6))
def test_an_event_round_trips_through_json_with_stable_bytes(data):
    event = Event.new("run.finished", data)
    again = Event.from_json(event.to_json())
    assert again == event
    assert again.to_json() == event.to_json()
    assert json.loads(event.to_json()) == {
        "id": event.id,
        "type": "run.finished",
        "timestamp": event.timestamp,
        "data": data,
    }


def test_ids_sort_by_time_and_carry_it():
    a = new_id(1_700_000_000_000_000)
    b = new_id(1_700_000_000_000_001)
    assert a < b and len(a) == 28 and a.startswith("evt_")
    assert id_time_us(a) == 1_700_000_000_000_000
    assert iso_utc(1_700_000_000_000_001) == "2023-11-14T22:13:20.000001Z"
    event = Event.new("x.y")
    assert event.timestamp.endswith("Z") and len(event.timestamp) == 27


@pytest.mark.parametrize(
    "bad",
    [
        "[]",
        "{}",
        '{"id": "evt_x", "type": "run.finished", "timestamp": "t", "data": {}}',
        '{"id": "evt_000000000000000000000000", "type": "Run", "timestamp": "t", "data": {}}',
        '{"id": "evt_000000000000000000000000", "type": "a.b", "timestamp": "t", "data": 3}',
        "\xff garbage",
    ],
)
def test_garbage_is_not_an_event(bad):
    with pytest.raises(ValueError):
        Event.from_json(bad)


def test_emit_writes_one_durable_file_and_read_events_filters(repo):
    first = emit(repo.ctx, "run.finished", {"run_id": "ab" * 32})
    second = emit(repo.ctx, "model_version.created", {"name": "clf", "version": 1})
    path = repo.ctx.layout.events / f"{first.id}.json"
    assert path.read_text() == first.to_json()
    got = list(read_events(repo.ctx))
    assert [e.id for e in got][-2:] == [first.id, second.id]
    assert [e.id for e in read_events(repo.ctx, types=["run.*"])] == [first.id]
    assert [e.id for e in read_events(repo.ctx, after=first.id)] == [second.id]
    assert not list((repo.ctx.layout.tmp).glob("event-*"))


@pytest.mark.damages_repo
def test_a_garbage_event_file_is_skipped_and_fsck_reports_it(repo, caplog):
    good = emit(repo.ctx, "run.finished", {"n": 1})
    bad = repo.ctx.layout.events / f"{new_id()}.json"
    bad.write_bytes(b'{"id": "evt_torn')
    stray = repo.ctx.layout.events / "notes.txt"
    stray.write_text("hello")
    assert [e.id for e in read_events(repo.ctx)] == [good.id]
    assert "damaged event file" in caplog.text
    problems = repo.fsck()
    assert any(str(bad) in p and "damaged" in p for p in problems)
    assert any(str(stray) in p for p in problems)
    assert good.id not in " ".join(problems)


def test_events_off_writes_nothing(project):
    from mlvc.core.settings import Settings

    repo = Repo(project, settings=Settings.from_env({"MLVC_EVENTS": "0"}))
    event = emit(repo.ctx, "run.finished", {})
    assert event.type == "run.finished"
    assert not any(e.id == event.id for e in read_events(repo.ctx))


def test_an_io_error_after_the_change_is_a_warning_not_a_failure(repo, caplog):
    events = repo.ctx.layout.events
    events.mkdir(parents=True, exist_ok=True)
    events.chmod(0o500)
    try:
        event = emit(repo.ctx, "run.finished", {})
    finally:
        events.chmod(0o755)
    assert event.type == "run.finished"
    if os.geteuid() != 0:  # root writes anyway
        assert "could not record the event run.finished" in caplog.text


_EMITTER = textwrap.dedent(
    """
    import sys
    from mlvc import Repo
    from mlvc.events import emit
    repo = Repo(sys.argv[1])
    tag = sys.argv[2]
    for i in range(int(sys.argv[3])):
        emit(repo.ctx, "test.tick", {"writer": tag, "i": i, "pad": "x" * 2000})
    """
)


def test_two_processes_emitting_at_once_lose_nothing(project):
    n = 150
    procs = [
        subprocess.Popen([sys.executable, "-c", _EMITTER, str(project), tag, str(n)])
        for tag in ("a", "b")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    got = list(read_events(Layout.of(project), types=["test.*"]))
    for tag in ("a", "b"):
        assert sorted(e.data["i"] for e in got if e.data["writer"] == tag) == list(range(n))
    assert [e.id for e in got] == sorted(e.id for e in got)


def test_kill_9_mid_emit_leaves_no_torn_event_visible(project):
    proc = subprocess.Popen([sys.executable, "-c", _EMITTER, str(project), "k", "100000"])
    layout = Layout.of(project)
    deadline = time.time() + 60
    while len(event_ids(layout)) < 30 and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ids = event_ids(layout)
    assert len(ids) >= 30
    got = list(read_events(layout))
    assert [e.id for e in got] == ids  # every visible file is a whole event
    assert sorted(e.data["i"] for e in got) == list(range(len(got)))
    # a temp file the kill left behind is not an event and fsck (conftest) tidies it


def test_follow_delivers_new_and_late_events_once(repo):
    layout = repo.ctx.layout
    first = emit(repo.ctx, "run.started", {})
    late = Event("evt_" + first.id[4:20] + "00000000", "run.late", first.timestamp, {})
    seen = []
    stop_after = {"n": 0}

    def stop():
        stop_after["n"] += 1
        if stop_after["n"] == 1:
            emit(repo.ctx, "run.finished", {})
            from mlvc.events import write_event

            write_event(layout, late)  # renamed in after a later id was already seen
        return stop_after["n"] >= 3

    for event in follow_events(repo.ctx, poll=0.01, stop=stop):
        seen.append(event.type)
    assert sorted(seen) == ["run.finished", "run.late", "run.started"]


def test_hostile_names_in_the_event_journal_neither_break_queries_nor_fsck(repo, project):
    """Files in .mlvc/events named like events but not ones (a non-UTF-8 name, an id that is
    not hex) made every index ingest fail (DuckDB cannot take the name): every query failed."""
    good = emit(repo.ctx, "run.finished", {"n": 1})
    folder = bytes(repo.ctx.layout.events)
    hostile = [b"evt_\xff\xfe.json", b"evt_" + b"0" * 23 + b"\xff.json", b"evt_nothex.json"]
    for name in hostile:
        os.close(os.open(os.path.join(folder, name), os.O_WRONLY | os.O_CREAT, 0o644))
    try:
        repo.commit("after")
        ids = repo.query("SELECT id FROM events ORDER BY id").column("id").to_pylist()
        assert ids[0] == good.id and all(i.startswith("evt_") and len(i) == 28 for i in ids)
        assert [e.id for e in read_events(repo.ctx)][0] == good.id
        out = subprocess.run(
            [sys.executable, "-m", "mlvc", "fsck"], cwd=project, capture_output=True,
            encoding="utf-8", errors="replace",  # the names are printed as they are
        )  # fmt: skip
        assert out.returncode != 0 and "Traceback" not in out.stderr
        assert (out.stdout + out.stderr).count("is not an event file") == 3
    finally:  # the project fixture's fsck at the end
        for name in hostile:
            os.unlink(os.path.join(folder, name))
