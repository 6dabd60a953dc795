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


def _last_json(r):
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_mlflow_runs_are_ordinary_mlvc_runs(server):
    rid = _last_json(server.mlflow(TYPICAL))["run_id"]
    q = f"SELECT run_id FROM live_keys WHERE live_key = '{rid}'"
    run_id = json.loads(server.mlvc("query", "--format", "json", q).stdout)[0]["run_id"]
    log = server.mlvc("log", "--json")
    assert run_id in [r["id"] for r in json.loads(log.stdout)]
    show = json.loads(server.mlvc("show", run_id, "--json").stdout)
    assert show["params"]["lr"] == 0.01 and show["params"]["opt"] == "adam"
    assert show["author"] == "write-user"
    assert show["tags"]["team"] == "vision"
    text = json.dumps(show)
    assert "blob.bin" in text and "notes/hello.txt" in text
    q = server.mlvc(
        "query", "--format", "json",
        "SELECT r.experiment_id, count(*) AS n FROM runs r JOIN metrics m ON m.run_id = r.id "
        f"JOIN live_keys k ON k.run_id = r.id WHERE k.live_key = '{rid}' AND m.key = 'loss' "
        "GROUP BY 1",
    )  # fmt: skip
    rows = json.loads(q.stdout)
    exp = _last_json(
        server.mlflow(
            "import mlflow; print(__import__('json').dumps("
            "mlflow.get_experiment_by_name('exp-a').experiment_id))"
        )
    )
    assert rows == [{"experiment_id": exp, "n": 5}]


SEARCH = """
import mlflow, json
from mlflow import MlflowClient
mlflow.set_experiment("sweep")
ids = {}
for i, lr in enumerate(["0.1", "0.01", "0.001", "0.0001"]):
    with mlflow.start_run(run_name=f"trial-{i}") as run:
        mlflow.log_param("lr", lr)
        mlflow.log_metric("acc", 0.5 + i / 10)
        mlflow.set_tag("kind", "even" if i % 2 == 0 else "odd")
        ids[i] = run.info.run_id
exp = mlflow.get_experiment_by_name("sweep").experiment_id
c = MlflowClient()
def names(**kw):
    return [r.info.run_name for r in c.search_runs([exp], **kw)]
out = {
    "default": names(),
    "acc": names(filter_string="metrics.acc > 0.65", order_by=["metrics.acc DESC"]),
    "param": names(filter_string="params.lr = '0.01'"),
    "tag_like": names(filter_string="tags.kind LIKE 'ev%' and attributes.status = 'FINISHED'",
                      order_by=["attributes.start_time ASC"]),
    "in": names(filter_string="tags.kind IN ('odd') AND run_name != 'trial-1'"),
    "name": names(filter_string="attributes.run_name ILIKE 'TRIAL-2'"),
}
page1 = c.search_runs([exp], max_results=3, order_by=["metrics.acc ASC"])
page2 = c.search_runs([exp], max_results=3, order_by=["metrics.acc ASC"],
                      page_token=page1.token)
out["pages"] = [[r.info.run_name for r in page1], [r.info.run_name for r in page2],
                page2.token]
pdf = mlflow.search_runs(experiment_names=["sweep"], filter_string="metrics.acc >= 0.7")
out["pandas"] = sorted(pdf["tags.mlflow.runName"].tolist())
c.delete_run(ids[0])
out["after_delete"] = names()
from mlflow.entities import ViewType
out["deleted_only"] = names(run_view_type=ViewType.DELETED_ONLY)
c.restore_run(ids[0])
out["after_restore"] = len(names())
print(json.dumps(out))
"""


def test_search_runs_filters_orders_and_pages(server):
    got = _last_json(server.mlflow(SEARCH))
    assert got["default"] == ["trial-3", "trial-2", "trial-1", "trial-0"]
    assert got["acc"] == ["trial-3", "trial-2"]
    assert got["param"] == ["trial-1"]
    assert got["tag_like"] == ["trial-0", "trial-2"]
    assert got["in"] == ["trial-3"]
    assert got["name"] == ["trial-2"]
    assert got["pages"] == [["trial-0", "trial-1", "trial-2"], ["trial-3"], None]
    assert got["pandas"] == ["trial-2", "trial-3"]
    assert got["after_delete"] == ["trial-3", "trial-2", "trial-1"]
    assert got["deleted_only"] == ["trial-0"]
    assert got["after_restore"] == 4


def test_a_script_that_raises_ends_failed_and_nested_runs_keep_their_parent(server):
    r = server.mlflow(
        """
        import mlflow, json
        mlflow.set_experiment("failing")
        ids = {}
        try:
            with mlflow.start_run(run_name="outer") as outer:
                ids["outer"] = outer.info.run_id
                with mlflow.start_run(run_name="inner", nested=True) as inner:
                    ids["inner"] = inner.info.run_id
                    mlflow.log_metric("x", 1.0)
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        c = mlflow.MlflowClient()
        print(json.dumps({
            "outer": c.get_run(ids["outer"]).info.status,
            "inner": c.get_run(ids["inner"]).info.status,
            "parent": c.get_run(ids["inner"]).data.tags.get("mlflow.parentRunId"),
            "children": [r.info.run_id for r in c.search_runs(
                [c.get_run(ids["outer"]).info.experiment_id],
                filter_string=f"tags.mlflow.parentRunId = '{ids['outer']}'")],
            "ids": ids,
        }))
        """
    )
    got = _last_json(r)
    assert got["outer"] == "FAILED" and got["inner"] == "FINISHED"
    assert got["parent"] == got["ids"]["outer"]
    assert got["children"] == [got["ids"]["inner"]]
    status = json.loads(
        server.mlvc("query", "--format", "json", "SELECT r.status FROM runs r JOIN live_keys k "
                    f"ON k.run_id = r.id WHERE k.live_key = '{got['ids']['outer']}'").stdout
    )  # fmt: skip
    assert status == [{"status": "failed"}]


def test_tags_rename_and_lifecycle_change_after_the_run_ended(server):
    r = server.mlflow(
        """
        import mlflow, json
        c = mlflow.MlflowClient()
        with mlflow.start_run(run_name="done") as run:
            mlflow.set_tag("keep", "1")
            mlflow.set_tag("drop", "1")
        rid = run.info.run_id
        c.set_tag(rid, "late", "yes")
        c.delete_tag(rid, "drop")
        c.update_run(rid, name="renamed")
        try:
            c.log_metric(rid, "after", 1.0)
            refused = None
        except mlflow.exceptions.MlflowException as e:
            refused = e.error_code
        run = c.get_run(rid)
        print(json.dumps({"tags": {k: v for k, v in run.data.tags.items()
                                   if not k.startswith("mlflow.")},
                          "name": run.info.run_name, "refused": refused}))
        """
    )
    got = _last_json(r)
    assert got["tags"] == {"keep": "1", "late": "yes"}
    assert got["name"] == "renamed" and got["refused"] == "INVALID_PARAMETER_VALUE"


def test_experiments_create_get_rename_delete_restore_and_tags(server):
    r = server.mlflow(
        """
        import mlflow, json
        c = mlflow.MlflowClient()
        eid = c.create_experiment("exp-life", tags={"owner": "ann"})
        try:
            c.create_experiment("exp-life")
            dup = None
        except mlflow.exceptions.MlflowException as e:
            dup = e.error_code
        c.rename_experiment(eid, "exp-life-2")
        c.set_experiment_tag(eid, "phase", "2")
        c.delete_experiment(eid)
        deleted = c.get_experiment(eid).lifecycle_stage
        names = [e.name for e in c.search_experiments()]
        c.restore_experiment(eid)
        e = c.get_experiment_by_name("exp-life-2")
        print(json.dumps({"dup": dup, "deleted": deleted, "hidden": "exp-life-2" not in names,
                          "stage": e.lifecycle_stage, "tags": e.tags, "default":
                          c.get_experiment("0").name, "loc": e.artifact_location}))
        """
    )
    got = _last_json(r)
    assert got["dup"] == "RESOURCE_ALREADY_EXISTS" and got["deleted"] == "deleted"
    assert got["hidden"] and got["stage"] == "active" and got["default"] == "Default"
    assert got["tags"] == {"owner": "ann", "phase": "2"}
    assert got["loc"].startswith("mlflow-artifacts:/")
