"""Every emission point that is not covered beside its feature's own tests (the registry in
tests/models, reproduce in tests/reproduce, the server's REST and MLflow routes in
tests/server): each change is followed by its event, written before the call returns."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import mlvc
from mlvc import Repo


def types(repo, *patterns):
    return [e.type for e in repo.events(types=list(patterns) or None)]


def test_a_live_run_emits_started_commit_and_finished_with_its_ids(repo):
    with mlvc.start_run(name="first", tags={"team": "a"}, repo=repo) as run:
        run.log_metric("loss", 0.5, step=0)
        key = run.staged.key
    events = list(repo.events())
    assert [e.type for e in events] == ["run.started", "commit.created", "run.finished"]
    started, commit, finished = events
    assert started.data["live_key"] == key and started.data["name"] == "first"
    assert started.data["tags"] == {"team": "a"}
    head = repo.head().hex
    assert commit.data["run_id"] == finished.data["run_id"] == head
    assert finished.data["status"] == "finished" and finished.data["live_key"] == key
    assert finished.data["metrics"] == {"loss": 0.5}


def test_a_run_that_raises_emits_failed(repo):
    with pytest.raises(ZeroDivisionError), mlvc.start_run(repo=repo):
        1 / 0  # noqa: B018
    assert types(repo, "run.*") == ["run.started", "run.failed"]


def test_a_plain_commit_emits_commit_created_only(repo, cli):
    cli("commit", "-m", "snapshot", "-M", "acc=0.9")
    [event] = list(repo.events())
    assert event.type == "commit.created" and event.data["message"] == "snapshot"
    assert event.data["metrics"] == {"acc": 0.9} and event.data["run_id"] == repo.head().hex


def test_a_killed_run_is_announced_by_the_reaper(project):
    script = textwrap.dedent(
        """
        import sys, time, mlvc
        run = mlvc.start_run(name="doomed")
        run.log_metric("x", 1.0)
        print("ready", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=project, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    repo = Repo(project)
    [rid] = repo.reap()
    killed = list(repo.events(types=["run.killed"]))
    assert [(e.data["name"], e.data["run_id"]) for e in killed] == [("doomed", rid.hex)]


def test_gc_emits_its_report_and_a_dry_run_does_not(repo):
    repo.gc(dry_run=True)
    assert types(repo) == []
    report = repo.gc()
    [event] = list(repo.events())
    assert event.type == "gc.completed" and event.data == report.to_dict()


def test_a_push_emits_ref_updated_for_each_ref_it_set(repo, cli, tmp_path):
    cli("commit", "-m", "one", "-n", "one")
    cli("remote", "add", "origin", str(tmp_path / "remote"))
    cli("push")
    updated = list(repo.events(types=["ref.updated"]))
    refs = {e.data["ref"]: e.data["new"] for e in updated}
    assert refs and all(e.data["remote"] == "origin" for e in updated)
    assert repo.head().hex in refs.values()


def test_events_off_leave_the_journal_empty(project, monkeypatch):
    monkeypatch.setenv("MLVC_EVENTS", "0")
    repo = Repo(project)
    with mlvc.start_run(repo=repo):
        pass
    assert not (project / ".mlvc" / "events").exists() or not os.listdir(
        project / ".mlvc" / "events"
    )


def test_an_event_lands_before_the_call_returns(repo):
    before = time.time_ns() // 1000
    with mlvc.start_run(repo=repo):
        pass
    finished = list(repo.events(types=["run.finished"]))
    assert len(finished) == 1 and finished[0].time_us >= before
