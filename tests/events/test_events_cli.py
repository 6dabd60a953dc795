"""``mlvc events`` and the index's ``events`` table: filters, JSON lines, --follow in a
real process stopped by Ctrl-C, errors in one line, and a rebuild that gives the same rows."""

import json
import os
import signal
import subprocess
import sys
import time

import mlvc
from mlvc import Repo
from mlvc.core.events import Event, iso_utc, new_id
from mlvc.events import write_event


def _three_runs(repo):
    for name in ("a", "b"):
        with mlvc.start_run(name=name, repo=repo):
            pass
    repo.gc()


def test_list_filter_and_json(repo, cli):
    _three_runs(repo)
    out = cli("events").output.splitlines()
    assert len(out) == 7 and "run.started" in out[0] and "gc.completed" in out[-1]
    runs = cli("events", "--type", "run.*", "--type", "gc.*").output.splitlines()
    assert [line.split()[1] for line in runs] == ["run.started", "run.finished"] * 2 + [
        "gc.completed"
    ]
    lines = cli("events", "--json", "-t", "run.finished").output.splitlines()
    got = [json.loads(x) for x in lines]
    assert [g["data"]["name"] for g in got] == ["a", "b"]
    assert set(got[0]) == {"id", "type", "timestamp", "data"}


def test_since_takes_iso_times_and_durations(repo, cli):
    old = Event(new_id(1_600_000_000_000_000), "run.started", iso_utc(1_600_000_000_000_000), {})
    write_event(repo.ctx.layout, old)
    with mlvc.start_run(repo=repo):
        pass
    assert cli("events").output.count("\n") == 4
    assert cli("events", "--since", "1h").output.count("\n") == 3
    assert cli("events", "--since", "2020-09-13T12:26:40Z").output.count("\n") == 4
    assert cli("events", "--since", "2020-09-13T12:26:40.000001Z").output.count("\n") == 3
    assert [e.id for e in repo.events(since="2d", types=["run.started"])] != [old.id]


def test_bad_input_is_one_line(cli):
    for args, word in (
        (["--since", "yesterday"], "--since 'yesterday'"),
        (["--since", "5 parsecs"], "--since"),
        (["--type", "Run;drop"], "--type"),
    ):
        result = cli("events", *args, ok=False)
        assert result.exit_code == 2 and word in result.output
        assert "Traceback" not in result.output and result.output.count("\n") == 1


def test_follow_prints_new_events_and_ctrl_c_exits_cleanly(project):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlvc", "events", "--follow", "--json"],
        cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        time.sleep(1.0)  # let it start and read the (empty) journal
        repo = Repo(project)
        with mlvc.start_run(name="followed", repo=repo):
            pass
        seen = [json.loads(proc.stdout.readline())["type"] for _ in range(3)]
        assert seen == ["run.started", "commit.created", "run.finished"]
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "Traceback" not in err


def test_the_events_table_is_derived_and_rebuilt_identically(repo, cli):
    _three_runs(repo)
    sql = "SELECT id, type, timestamp, run_id, name, data FROM events ORDER BY id"
    before = repo.query(sql).to_pylist()
    assert [r["type"] for r in before] == [e.type for e in repo.events()]
    finished = [r for r in before if r["type"] == "run.finished"]
    assert all(r["run_id"] and json.loads(r["data"])["status"] == "finished" for r in finished)
    (repo.dir / "index.duckdb").unlink()
    assert repo.query(sql).to_pylist() == before
    repo.rebuild_index()
    assert repo.query(sql).to_pylist() == before
    out = cli("query", "SELECT count(*) AS n FROM events WHERE type LIKE 'run.%'").output
    assert out.split()[-3] == "4"


def test_an_event_renamed_in_late_still_reaches_the_index(repo):
    with mlvc.start_run(repo=repo):
        pass
    assert repo.query("SELECT count(*) AS n FROM events")["n"][0].as_py() == 3
    first = next(iter(repo.events()))
    late = Event(first.id[:-8] + "00000000", "test.late", first.timestamp, {})
    write_event(repo.ctx.layout, late)  # an older id than the newest already indexed
    ids = repo.query("SELECT id FROM events ORDER BY id")["id"].to_pylist()
    assert late.id in ids and len(ids) == 4


def test_each_line_names_the_run_it_is_about(repo, cli):
    """A live run's events name its key and a verdict its original run (both lines named
    no run at all: an alert could not be told apart from another run's)."""
    key, original = "20261201101313-a8a0d188", "ab" * 32
    for kind, data in (
        ("run.started", {"live_key": key, "name": ""}),
        ("alert.fired", {"live_key": key, "rule": "loss-nan", "metric": "loss", "value": "nan"}),
        (
            "reproduce.verdict",
            {"original": original, "reproduction": "cd" * 32, "verdict": "EXACT"},
        ),
    ):
        mlvc.events.emit(repo.ctx, kind, data)
    lines = cli("events").output.splitlines()
    assert [line.split()[2] for line in lines] == [key, key, original[:12]]
