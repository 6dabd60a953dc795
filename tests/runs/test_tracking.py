"""Live runs from Python: the fluent API, metric series, failure, kill -9, concurrency."""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import mlvc
from mlvc import Repo
from mlvc.errors import ParamConflict


def test_start_run_records_everything(repo, project):
    (project / "model.bin").write_bytes(b"weights")
    with mlvc.start_run(
        name="exp1",
        params={"lr": 0.01, "opt": {"name": "adam"}},
        tags={"team": "vision"},
        message="first try",
        repo=repo,
    ) as run:
        assert run.id == run.key
        run.log_param("epochs", 3)
        for step in range(5):
            run.log_metric("loss", 1.0 / (step + 1))
            run.log_metrics({"acc": step / 10}, step=step)
        run.log_metric("loss", float("nan"), step=10)
        run.log_artifact(project / "model.bin")
        run.log_dict({"classes": ["a", "b"]}, "meta/classes.json")
        run.log_text("hello", "notes.txt")
        run.set_tag("stage", "dev")
    assert len(run.id) == 64
    rec = repo.run(run.id)
    assert rec.status == "finished" and rec.name == "exp1" and rec.message == "first try"
    assert rec.params == {"lr": 0.01, "opt.name": "adam", "epochs": 3}
    assert rec.tags == {"team": "vision", "stage": "dev"}
    assert math.isnan(rec.metrics["loss"]) and rec.metrics["acc"] == pytest.approx(0.4)
    assert rec.code is not None and rec.env is not None
    shown = repo.show(run.id)
    paths = {e["path"] for e in shown["artifacts"]["entries"]}
    assert paths == {"model.bin", "meta/classes.json", "notes.txt"}
    assert b"".join(repo.cat(f"{run.id}:notes.txt")) == b"hello"
    points = repo.query(
        f"SELECT key, step, value FROM metrics WHERE run_id = '{run.id}' ORDER BY key, step"
    ).to_pylist()
    assert [p["step"] for p in points if p["key"] == "loss"] == [0, 1, 2, 3, 4, 10]
    assert math.isnan(points[-1]["value"])
    summary = repo.query(f"SELECT * FROM metric_summary WHERE run_id = '{run.id}' AND key = 'acc'")
    assert summary.to_pylist()[0]["count"] == 5
    assert repo.fsck() == []


def test_param_is_immutable_within_a_run(repo):
    with mlvc.start_run(repo=repo) as run:
        run.log_param("lr", 0.1)
        run.log_param("lr", 0.1)  # same value: fine
        with pytest.raises(ParamConflict, match="'lr' was already logged as 0.1"):
            run.log_param("lr", 0.2)


def test_exception_marks_run_failed_with_traceback(repo):
    with pytest.raises(ZeroDivisionError), mlvc.start_run(repo=repo) as run:
        run.log_metric("x", 1)
        1 / 0  # noqa: B018
    rec = repo.run(run.id)
    assert rec.status == "failed"
    assert rec.extra["error"]["type"] == "ZeroDivisionError"
    assert "1 / 0" in rec.extra["error"]["traceback"]
    assert rec.metrics == {"x": 1.0}


def test_fluent_api_and_nested_runs(repo, project):
    with mlvc.start_run(name="parent", repo=repo) as parent:
        mlvc.log_param("sweep", "grid")
        assert mlvc.active_run() is parent
        with mlvc.start_run(name="child", repo=repo) as child:
            assert mlvc.active_run() is child
            mlvc.log_metric("loss", 0.5)
        assert mlvc.active_run() is parent
    assert mlvc.active_run() is None
    prec, crec = repo.run(parent.id), repo.run(child.id)
    assert prec.params == {"sweep": "grid"} and crec.metrics == {"loss": 0.5}
    assert prec.extra["children"] == [child.id]
    assert crec.extra["parent"] == parent.key
    assert repo.head() == parent.run_id  # children do not move HEAD


def test_series_is_one_parquet_object(repo):
    with mlvc.start_run(repo=repo) as run:
        for i in range(120_000):  # crosses the flush threshold
            run.log_metric("loss", i * 0.5)
    rec = repo.run(run.id)
    from mlvc.core.series_blob import read_series

    data = repo.store.read_bytes(rec.series)
    assert data[:6] == b"ARROW1"  # new runs store Arrow IPC (docs/object-format.md)
    table = read_series(data)
    assert table.num_rows == 120_000 and table.column_names == ["key", "step", "timestamp", "value"]
    assert table["step"].to_pylist() == list(range(120_000))
    assert repo.query(
        f"SELECT count(*) AS n FROM metrics WHERE run_id = '{run.id}'"
    ).to_pylist() == [{"n": 120_000}]


def test_live_run_is_visible_while_training(repo, cli):
    run = mlvc.start_run(name="live-one", repo=repo)
    try:
        run.log_metric("loss", 0.25)
        run.flush()
        live = repo.live_runs()
        assert [r["key"] for r in live] == [run.key]
        assert live[0]["metrics"] == {"loss": 0.25}
        assert "live-one" in cli("runs").output
        assert repo.show("live-one")["status"] == "running"
        assert json.loads(cli("show", run.key, "--json").output)["metrics"] == {"loss": 0.25}
    finally:
        run.end()
    assert repo.live_runs() == []


TRAINER = textwrap.dedent("""
    import os, sys, time
    import mlvc
    run = mlvc.start_run(name="doomed", params={"lr": 0.1})
    for i in range(1000):
        run.log_metric("loss", 1.0 / (i + 1))
    run.flush()
    run.log_metric("unflushed", 1.0)
    print("ready", flush=True)
    time.sleep(60)
""")


def test_kill_9_keeps_flushed_points_and_records_killed(project, repo):
    proc = subprocess.Popen(
        [sys.executable, "-c", TRAINER], cwd=project, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert repo.log() == []  # reads never write: the dead run waits for a writer
    assert repo.live_runs() == []  # `mlvc runs` notices the dead run and records it
    runs = repo.log()
    assert len(runs) == 1 and runs[0]["status"] == "killed" and runs[0]["name"] == "doomed"
    rec = repo.run(runs[0]["id"])
    assert rec.params == {"lr": 0.1}
    assert rec.metrics["loss"] == pytest.approx(1 / 1000)
    n = repo.query("SELECT count(*) AS n FROM metrics WHERE key = 'loss'").to_pylist()[0]["n"]
    assert n == 1000
    assert not any((project / ".mlvc" / "live").iterdir())
    assert repo.fsck() == []


WORKER = textwrap.dedent("""
    import sys
    import mlvc
    wid, n = int(sys.argv[1]), int(sys.argv[2])
    for i in range(n):
        with mlvc.start_run(name=f"w{wid}-r{i}", params={"worker": wid, "i": i}) as run:
            for step in range(20):
                run.log_metric("loss", 1.0 / (step + 1 + i))
    print("done")
""")

READER = textwrap.dedent("""
    import sys, time
    from mlvc import Repo
    repo = Repo()
    deadline = time.time() + float(sys.argv[1])
    n = 0
    while time.time() < deadline:
        repo.query("SELECT count(*) FROM runs")
        repo.log(5)
        n += 1
    print(n)
""")


def test_concurrent_writers_lose_nothing(project):
    (project / "mlvc.toml").write_text("")
    workers, per = 8, 15
    env = {**os.environ, "PYTHONHASHSEED": "0", "MLVC_INDEX_SYNC": "background"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(w), str(per)],
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for w in range(workers)
    ]
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, "8"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0 and out.strip() == "done" and err == "", err
    out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0 and err == "", err
    assert int(out) > 0
    repo = Repo(project)
    got = repo.query("SELECT count(*) AS runs, count(DISTINCT name) AS names FROM runs").to_pylist()
    assert got == [{"runs": workers * per, "names": workers * per}]
    points = repo.query("SELECT count(*) AS n FROM metrics").to_pylist()[0]["n"]
    assert points == workers * per * 20
    assert repo.fsck() == []


def test_status_counts_logged_artifacts_where_they_were_recorded(repo, project):
    (project / "w.bin").write_bytes(b"1")
    with mlvc.start_run(repo=repo) as run:
        run.log_artifact(project / "w.bin")
    st = repo.status()
    assert st["artifacts"] == {"added": [], "removed": [], "modified": []}
    (project / "w.bin").write_bytes(b"2")
    assert repo.status()["artifacts"]["modified"] == ["w.bin"]


def test_commit_hands_ingest_to_a_detached_worker(repo, project, monkeypatch):
    monkeypatch.setenv("MLVC_INDEX_SYNC", "background")
    ids = [repo.commit(f"r{i}", params={"i": i}, capture_env=False) for i in range(3)]
    deadline = time.time() + 60
    while repo.index.pending() and time.time() < deadline:  # the worker ingests on its own
        time.sleep(0.05)
    got = repo.query("SELECT id FROM runs ORDER BY created").column("id").to_pylist()
    assert got == [i.hex for i in ids]
    assert not (project / ".mlvc" / "logs" / "index-worker.log").exists()
    fd = repo.index.lock.take(exclusive=True, wait=30)  # the worker released the lock
    assert fd is not None
    os.close(fd)
