"""MLFLOW_TRACKING_URI=mlvc: — the unmodified MLflow client logs into a local repository.

Each MLflow script runs in a real subprocess (MLflow finds the plugin through the installed
entry points), then mlvc (library and CLI) reads what it wrote, and MLflow reads it back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from mlvc import Repo

pytest.importorskip("mlflow")
pytest.importorskip("sklearn")


def run_py(code: str, cwd, env: dict | None = None, ok: bool = True):
    full = dict(os.environ, MLFLOW_TRACKING_URI="mlvc:", **(env or {}))
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=full,
                         capture_output=True, text=True, timeout=180)  # fmt: skip
    if ok and out.returncode != 0:
        raise AssertionError(f"exit {out.returncode}:\n{out.stdout}\n{out.stderr[-4000:]}")
    return out


def last_json(out) -> dict:
    return json.loads(out.stdout.strip().splitlines()[-1])


TRAIN = """
    import json, math
    import mlflow, numpy as np
    from sklearn.linear_model import LogisticRegression

    mlflow.set_experiment("demo")
    X = np.random.RandomState(0).rand(40, 3)
    y = (X[:, 0] > 0.5).astype(int)
    with mlflow.start_run(run_name="first") as run:
        mlflow.log_param("C", 0.5)
        mlflow.log_params({"solver": "lbfgs", "n": 3})
        for i in range(5):
            mlflow.log_metric("loss", 1.0 / (i + 1), step=i)
        mlflow.log_metrics({"acc": 0.9, "gap": float("nan")})
        mlflow.set_tag("team", "vision")
        open("note.txt", "w").write("hello")
        mlflow.log_artifact("note.txt")
        mlflow.log_artifact("note.txt", artifact_path="sub/dir")
        m = LogisticRegression().fit(X, y)
        info = mlflow.sklearn.log_model(m, name="model", input_example=X[:2],
                                        registered_model_name="clf")
    print(json.dumps({"run_id": run.info.run_id, "model_uri": info.model_uri,
                      "pred": m.predict(X[:5]).tolist()}))
"""

READ_BACK = """
    import json, mlflow, numpy as np
    X = np.random.RandomState(0).rand(40, 3)
    rid = {rid!r}
    run = mlflow.get_run(rid)
    df = mlflow.search_runs(experiment_names=["demo"], filter_string="params.C = '0.5'")
    none = mlflow.search_runs(experiment_names=["demo"], filter_string="metrics.acc > 0.95")
    arts = sorted(f.path for f in mlflow.MlflowClient().list_artifacts(rid))
    sub = [f.path for f in mlflow.MlflowClient().list_artifacts(rid, "sub/dir")]
    local = mlflow.artifacts.download_artifacts(run_id=rid, artifact_path="sub/dir/note.txt")
    hist = [(m.step, m.value) for m in mlflow.MlflowClient().get_metric_history(rid, "loss")]
    by_uri = mlflow.sklearn.load_model({uri!r}).predict(X[:5]).tolist()
    by_version = mlflow.pyfunc.load_model("models:/clf/1").predict(X[:5]).tolist()
    print(json.dumps({{
        "params": run.data.params, "status": run.info.status, "team": run.data.tags["team"],
        "gap_is_nan": run.data.metrics["gap"] != run.data.metrics["gap"],
        "found": df["run_id"].tolist(), "none": len(none), "arts": arts, "sub": sub,
        "note": open(local).read(), "hist": hist, "by_uri": by_uri,
        "by_version": [int(v) for v in by_version],
    }}))
"""


def test_an_mlflow_script_logs_into_the_repository_and_reads_back(project, cli):
    wrote = last_json(run_py(TRAIN, project))

    repo = Repo(project)
    (row,) = repo.log()
    shown = repo.show(row["id"])
    assert shown["params"] == {"C": 0.5, "n": 3, "solver": "lbfgs"}
    assert shown["metrics"]["loss"] == pytest.approx(0.2)
    assert shown["tags"]["team"] == "vision"
    assert shown["tags"]["mlflow.runName"] == "first"
    paths = {f["path"] for f in shown["artifacts"]["entries"]}
    assert {"note.txt", "sub/dir/note.txt"} <= paths
    code = {f["path"] for f in shown["code"]["entries"]}
    assert code, "a run of this process captures its code, as mlvc.start_run does"
    out = cli("query", "SELECT key, count(*) AS n FROM metrics GROUP BY key ORDER BY key",
              "--format", "json")  # fmt: skip
    assert {r["key"]: r["n"] for r in json.loads(out.output)}["loss"] == 5
    assert "clf" in cli("models", "list").output

    back = last_json(run_py(READ_BACK.format(rid=wrote["run_id"], uri=wrote["model_uri"]),
                            project))  # fmt: skip
    assert back["params"] == {"C": "0.5", "n": "3", "solver": "lbfgs"}
    assert back["status"] == "FINISHED" and back["team"] == "vision" and back["gap_is_nan"]
    assert back["found"] == [wrote["run_id"]] and back["none"] == 0
    assert back["arts"] == ["note.txt", "sub"] and back["sub"] == ["sub/dir/note.txt"]
    assert back["note"] == "hello"
    assert back["hist"] == [[i, 1.0 / (i + 1)] for i in range(5)]
    assert back["by_uri"] == wrote["pred"] and back["by_version"] == wrote["pred"]


def test_mlvc_run_gathers_an_mlflow_project_into_its_run(project, cli):
    (project / "mlrun.py").write_text(textwrap.dedent("""
        import mlflow
        with mlflow.start_run(run_name="inner") as run:
            mlflow.log_param("lr", 0.1)
            for i in range(3):
                mlflow.log_metric("loss", 1.0 / (i + 1), step=i)
            open("out.txt", "w").write("x")
            mlflow.log_artifact("out.txt", artifact_path="res")
            with mlflow.start_run(nested=True):
                mlflow.log_param("fold", 1)
        got = mlflow.get_run(run.info.run_id)
        print("status", got.info.status, got.data.params["lr"])
    """))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = f"{os.path.dirname(sys.executable)}:{env['PATH']}"  # its `python`
    out = subprocess.run([sys.executable, "-m", "mlvc", "run", "-n", "train", "mlrun.py"],
                         cwd=project, env=env, capture_output=True, text=True,
                         timeout=180)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    repo = Repo(project)
    runs = repo.log()
    top = [r for r in runs if r["name"] == "train"]
    assert len(top) == 1, runs
    shown = repo.show(top[0]["id"])
    assert shown["params"]["lr"] == 0.1
    assert shown["metrics"]["loss"] == pytest.approx(1 / 3)
    assert "res/out.txt" in {f["path"] for f in shown["artifacts"]["entries"]}
    assert "status FINISHED 0.1" in shown_log(cli, top[0]["id"])
    children = [r for r in runs if r["name"] != "train"]
    assert len(children) == 1
    assert repo.show(children[0]["id"])["params"] == {"fold": 1}


def shown_log(cli, rid: str) -> str:
    return cli("show", f"{rid}:logs/mlrun.py.log").output


def test_mlvc_run_keeps_a_tracking_uri_the_user_set(project, tmp_path):
    other = tmp_path / "other"
    Repo.init(other)
    (project / "m.py").write_text("import mlflow\nmlflow.log_param('where', 'other')\n")
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"mlvc://{other}")
    env["PATH"] = f"{os.path.dirname(sys.executable)}:{env['PATH']}"
    out = subprocess.run([sys.executable, "-m", "mlvc", "run", "m.py"], cwd=project, env=env,
                         capture_output=True, text=True, timeout=180)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    (mine,) = Repo(project).log()
    assert "where" not in Repo(project).show(mine["id"])["params"]
    (theirs,) = Repo(other).log()
    assert Repo(other).show(theirs["id"])["params"] == {"where": "other"}
    assert Repo(other).fsck() == []


def test_hostile_artifact_paths_and_ended_runs_are_refused(project):
    out = run_py("""
        import json, mlflow
        errors = []
        open("f.txt", "w").write("x")
        with mlflow.start_run() as run:
            for bad in ("../up", "a/../../b", "x/\\0"):
                try:
                    mlflow.log_artifact("f.txt", artifact_path=bad)
                    errors.append(None)
                except Exception as e:
                    errors.append(str(e))
        try:
            mlflow.MlflowClient().log_param(run.info.run_id, "late", 1)
        except Exception as e:
            errors.append(str(e))
        print(json.dumps(errors))
    """, project)  # fmt: skip
    errors = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(errors), errors
    assert all("climbs out with '..'" in e for e in errors[:3]), errors
    assert "has ended" in errors[3], errors
    (row,) = Repo(project).log()
    assert Repo(project).show(row["id"])["artifacts"]["entries"] == []


def test_bad_tracking_uris_name_the_problem(tmp_path, monkeypatch):
    from mlvc.errors import MlvcError
    from mlvc.mlflow_plugin import tracking_store

    monkeypatch.chdir(tmp_path)
    with pytest.raises(MlvcError, match="not an mlvc repository"):
        tracking_store("mlvc:")
    with pytest.raises(MlvcError, match="local repository, not host 'example.com'"):
        tracking_store("mlvc://example.com/repo")
    with pytest.raises(MlvcError, match="not an mlvc repository"):
        tracking_store(f"mlvc://{tmp_path}/missing")


def test_processes_logging_at_once_lose_nothing(project, repo):
    script = textwrap.dedent("""
        import mlflow, sys
        with mlflow.start_run(run_name=f"w{sys.argv[1]}"):
            mlflow.log_param("i", int(sys.argv[1]))
            for s in range(100):
                mlflow.log_metric("m", float(s), step=s)
    """)
    env = dict(os.environ, MLFLOW_TRACKING_URI="mlvc:")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i)], cwd=project, env=env,
                              stderr=subprocess.PIPE, text=True) for i in range(3)]  # fmt: skip
    for p in procs:
        assert p.wait(timeout=180) == 0, p.stderr.read()[-2000:]
    counts = repo.query(
        "SELECT r.name, count(*) AS n FROM metrics m JOIN runs r ON r.id = m.run_id "
        "GROUP BY r.name ORDER BY r.name"
    ).to_pylist()
    assert counts == [{"name": f"w{i}", "n": 100} for i in range(3)]
