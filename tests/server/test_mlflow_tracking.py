"""MLflow's tracking REST API on a real `mlvc server`, driven by the unmodified MLflow client
(in a subprocess) and by raw JSON; what it logs is then read back with `mlvc` itself."""

from __future__ import annotations

import json


def test_the_shared_server_answers_health_and_unknown_routes(server):
    status, body, _ = server.call("GET", "/health", token=None)
    assert status == 200 and body["status"] == "ok"
    status, body, _ = server.call("GET", "/api/2.0/mlflow/no/such/route")
    assert status == 404 and body["error_code"] == "ENDPOINT_NOT_FOUND"
    assert json.dumps(body).count("\n") == 0


TYPICAL = """
import mlflow, os, json
mlflow.set_experiment("exp-a")
with mlflow.start_run(run_name="first") as run:
    mlflow.log_params({"lr": 0.01, "layers": 3, "opt": "adam"})
    for step in range(5):
        mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
    mlflow.log_metrics({"acc": 0.9, "f1": 0.8})
    mlflow.set_tags({"team": "vision", "stage": "dev"})
    mlflow.log_text("hello\\n", "notes/hello.txt")
    mlflow.log_dict({"a": 1}, "cfg.json")
    with open("blob.bin", "wb") as f:
        f.write(bytes(range(256)) * 1000)
    mlflow.log_artifact("blob.bin")
    rid = run.info.run_id
print(json.dumps({"run_id": rid}))
"""


def test_a_typical_script_logs_a_run_that_mlflow_reads_back(server):
    r = server.mlflow(TYPICAL)
    rid = json.loads(r.stdout.strip().splitlines()[-1])["run_id"]
    check = server.mlflow(
        f"""
        import mlflow, json, os, tempfile
        from mlflow import MlflowClient
        c = MlflowClient()
        run = c.get_run({rid!r})
        hist = c.get_metric_history({rid!r}, "loss")
        d = mlflow.artifacts.download_artifacts(run_id={rid!r}, dst_path=tempfile.mkdtemp())
        files = sorted(os.path.relpath(os.path.join(a, f), d) for a, _, fs in os.walk(d) for f in fs)
        print(json.dumps({{
            "status": run.info.status, "name": run.info.run_name, "params": run.data.params,
            "metrics": run.data.metrics, "tags": {{k: v for k, v in run.data.tags.items()
                                                  if not k.startswith("mlflow.")}},
            "hist": [(m.step, m.value) for m in hist], "files": files,
            "blob": open(os.path.join(d, "blob.bin"), "rb").read() == bytes(range(256)) * 1000,
            "exp": c.get_experiment(run.info.experiment_id).name,
        }}))
        """
    )
    got = json.loads(check.stdout.strip().splitlines()[-1])
    assert got["status"] == "FINISHED" and got["name"] == "first"
    assert got["params"] == {"lr": "0.01", "layers": "3", "opt": "adam"}
    assert got["metrics"] == {"loss": 0.2, "acc": 0.9, "f1": 0.8}
    assert got["tags"] == {"team": "vision", "stage": "dev"}
    assert got["hist"] == [[s, 1.0 / (s + 1)] for s in range(5)]
    assert got["files"] == ["blob.bin", "cfg.json", "notes/hello.txt"]
    assert got["blob"] and got["exp"] == "exp-a"
