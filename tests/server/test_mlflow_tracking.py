"""MLflow's tracking REST API on a real `mlvc server`, driven by the unmodified MLflow client
(in a subprocess) and by raw JSON; what it logs is then read back with `mlvc` itself."""

from __future__ import annotations

import json
import time


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
    # an MLflow client's run goes through the library's paths: it emits run events too
    out = server.mlvc("events", "--json", "--type", "run.*").stdout
    mine = [e for e in map(json.loads, out.splitlines()) if e["data"].get("live_key") == rid]
    assert [e["type"] for e in mine] == ["run.started", "run.finished"]


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
    # diff against another MLflow run (logged raw), then a plain mlvc commit seen by MLflow
    _, got, _ = server.call("POST", f"{API}/runs/create", {"experiment_id": "0"})
    other = got["run"]["info"]["run_id"]
    server.call("POST", f"{API}/runs/log-parameter", {"run_id": other, "key": "lr", "value": "0.5"})
    server.call("POST", f"{API}/runs/update", {"run_id": other, "status": "FINISHED"})
    q2 = f"SELECT run_id FROM live_keys WHERE live_key = '{other}'"
    other_id = json.loads(server.mlvc("query", "--format", "json", q2).stdout)[0]["run_id"]
    diff = server.mlvc("diff", run_id, other_id).stdout
    assert "lr" in diff and "0.5" in diff, diff
    server.mlvc("commit", "-n", "plain-run", "-m", "plain")
    status, got, _ = server.call(
        "POST", f"{API}/runs/search",
        {"experiment_ids": ["0"], "filter": "attributes.run_name = 'plain-run'"},
    )  # fmt: skip
    assert [r["info"]["status"] for r in got["runs"]] == ["FINISHED"]
    plain = got["runs"][0]["info"]["run_id"]
    assert len(plain) == 64
    assert server.call("GET", f"{API}/runs/get", query={"run_id": plain})[0] == 200
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
out["stage_filter"] = names(run_view_type=ViewType.ALL,
                            filter_string="attributes.lifecycle_stage = 'deleted'")
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
    assert got["deleted_only"] == ["trial-0"] and got["stage_filter"] == ["trial-0"]
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


API = "/api/2.0/mlflow"


def _open_run(server) -> str:
    status, body, _ = server.call("POST", f"{API}/runs/create", {"experiment_id": "0"})
    assert status == 200, body
    return body["run"]["info"]["run_id"]


def test_raw_json_bad_input_is_refused_with_one_line_messages(server):
    rid = _open_run(server)
    m = {"key": "m", "value": 1.0, "timestamp": 1, "step": 0}
    cases = [
        ("POST", "/runs/log-metric", None, b"{not json", 400, "MALFORMED_REQUEST"),
        ("POST", "/runs/log-metric", None, b"[1, 2]", 400, "MALFORMED_REQUEST"),
        # nested past json's recursion limit: was a 500 RecursionError (found by the fuzzer)
        ("POST", "/runs/log-metric", None, b"[" * 100_000, 400, "MALFORMED_REQUEST"),
        ("POST", "/runs/log-metric", None, b'{"a":' * 100_000, 400, "MALFORMED_REQUEST"),
        ("POST", "/runs/log-metric", {"key": "m", "value": 1.0}, None, 400, "INVALID_PARAMETER_VALUE"),
        ("POST", "/runs/log-metric", {"run_id": rid, "key": "m", "value": "high"}, None, 400, "INVALID_PARAMETER_VALUE"),
        ("POST", "/runs/log-metric", {"run_id": rid, "key": "m", "value": 1, "step": "x"}, None, 400, "INVALID_PARAMETER_VALUE"),
        ("POST", "/runs/log-metric", {"run_id": rid, "key": ["m"], "value": 1}, None, 400, "INVALID_PARAMETER_VALUE"),
        ("POST", "/runs/log-metric", {"run_id": "nope", "key": "m", "value": 1}, None, 404, "RESOURCE_DOES_NOT_EXIST"),
        ("POST", "/runs/log-parameter", {"run_id": rid, "key": "p", "value": "x" * 6001}, None, 400, "INVALID_PARAMETER_VALUE"),
        ("POST", "/runs/log-batch", {"run_id": rid, "metrics": [m] * 1001}, None, 400, "INVALID_PARAMETER_VALUE"),
        ("POST", "/runs/log-batch", {"run_id": rid, "params": [{"key": f"k{i}", "value": "1"} for i in range(101)]}, None, 400, "INVALID_PARAMETER_VALUE"),
        ("POST", "/runs/log-batch", {"run_id": rid, "metrics": [m] * 900, "tags": [{"key": f"t{i}", "value": "v"} for i in range(100)], "params": [{"key": "a", "value": "1"}]}, None, 400, "INVALID_PARAMETER_VALUE"),
        ("POST", "/runs/log-batch", {"run_id": rid, "metrics": "lots"}, None, 400, "INVALID_PARAMETER_VALUE"),
        ("POST", "/runs/create", {"experiment_id": "424242"}, None, 404, "RESOURCE_DOES_NOT_EXIST"),
        ("POST", "/runs/update", {"run_id": rid, "status": "DONE"}, None, 400, "INVALID_PARAMETER_VALUE"),
        ("GET", "/experiments/get", None, None, 400, "INVALID_PARAMETER_VALUE"),
        ("GET", "/runs/get?run_id=nope", None, None, 404, "RESOURCE_DOES_NOT_EXIST"),
        ("POST", "/runs/search", {"experiment_ids": ["0"], "filter": "metrics.acc >> 1"}, None, 400, "INVALID_PARAMETER_VALUE"),
        ("POST", "/runs/search", {"experiment_ids": ["0"], "filter": "params.lr = 1 OR x"}, None, 400, "INVALID_PARAMETER_VALUE"),
        ("POST", "/runs/search", {"experiment_ids": ["0"], "max_results": 50001}, None, 400, "INVALID_PARAMETER_VALUE"),
        ("POST", "/runs/search", {"experiment_ids": ["0"], "page_token": "garbage"}, None, 400, "INVALID_PARAMETER_VALUE"),
        ("POST", "/runs/search", {"experiment_ids": ["0"], "order_by": ["metrics.acc SIDEWAYS"]}, None, 400, "INVALID_PARAMETER_VALUE"),
        ("GET", "/metrics/get-history?run_id=nope&metric_key=m", None, None, 404, "RESOURCE_DOES_NOT_EXIST"),
        ("GET", f"/metrics/get-history?run_id={rid}&metric_key=m&max_results=abc", None, None, 400, "INVALID_PARAMETER_VALUE"),
    ]  # fmt: skip
    for method, path, body, raw, code, error in cases:
        status, got, _ = server.call(method, API + path, body, raw=raw)
        assert (status, got["error_code"]) == (code, error), (path, body, got)
        assert "\n" not in got["message"] and "Traceback" not in got["message"]
    # a param changed to another value is refused; the same value again is fine
    p = {"run_id": rid, "key": "lr", "value": "0.1"}
    assert server.call("POST", f"{API}/runs/log-parameter", p)[0] == 200
    assert server.call("POST", f"{API}/runs/log-parameter", p)[0] == 200
    status, got, _ = server.call("POST", f"{API}/runs/log-parameter", {**p, "value": "0.2"})
    assert status == 400 and got["error_code"] == "INVALID_PARAMETER_VALUE"
    # nothing half-written: the refused batches left no point
    status, got, _ = server.call(
        "GET", f"{API}/metrics/get-history", query={"run_id": rid, "metric_key": "m"}
    )
    assert status == 200 and got.get("metrics", []) == []
    # a read token cannot write
    status, got, _ = server.call("POST", f"{API}/runs/create", {}, token="read")
    assert status == 403


def test_nan_and_infinity_round_trip_as_mlflow_json_writes_them(server):
    rid = _open_run(server)
    batch = [{"key": "v", "value": v, "timestamp": 5, "step": i}
             for i, v in enumerate(["NaN", "Infinity", "-Infinity", 1.5])]  # fmt: skip
    assert server.call("POST", f"{API}/runs/log-batch", {"run_id": rid, "metrics": batch})[0] == 200
    status, got, _ = server.call(
        "GET", f"{API}/metrics/get-history", query={"run_id": rid, "metric_key": "v"}
    )
    assert [m["value"] for m in got["metrics"]] == ["NaN", "Infinity", "-Infinity", 1.5]
    server.call("POST", f"{API}/runs/update", {"run_id": rid, "status": "FINISHED"})
    status, got, _ = server.call(
        "GET", f"{API}/metrics/get-history", query={"run_id": rid, "metric_key": "v"}
    )
    assert [m["value"] for m in got["metrics"]] == ["NaN", "Infinity", "-Infinity", 1.5]


def test_hostile_artifact_paths_are_refused(server):
    rid = _open_run(server)
    base = f"/api/2.0/mlflow-artifacts/artifacts/0/{rid}/artifacts"
    for path in ["../../etc/passwd", "a/../../b", "a\\b", "a%00b", ".mlvc/config", ".git/x"]:
        status, got, _ = server.call("PUT", f"{base}/{path}", raw=b"x")
        assert status in (400, 404), (path, status, got)
        assert isinstance(got, dict) and "\n" not in got["message"]
    status, got, _ = server.call("PUT", "/api/2.0/mlflow-artifacts/artifacts//abs", raw=b"x")
    assert 400 <= status < 500
    status, got, _ = server.call("PUT", f"{base}/ok.txt", raw=b"fine")
    assert status == 200
    status, got, _ = server.call("PUT", f"{base}/ok.txt/inner", raw=b"clash")
    assert status == 400
    status, got, _ = server.call(
        "PUT", "/api/2.0/mlflow-artifacts/artifacts/0/models/m-1/artifacts/x", raw=b"x"
    )
    assert status == 404
    status, got, _ = server.call(
        "GET", "/api/2.0/mlflow-artifacts/artifacts", query={"path": f"0/{rid}/artifacts"}
    )
    assert got == {"files": [{"path": "ok.txt", "is_dir": False, "file_size": 4}]}


def _points(server, rid: str, key: str) -> list:
    status, got, _ = server.call(
        "GET", f"{API}/metrics/get-history", query={"run_id": rid, "metric_key": key}
    )
    assert status == 200, got
    return [(m["step"], m["value"]) for m in got.get("metrics", [])]


def test_a_run_goes_on_across_a_server_restart_and_loses_no_point(server):
    rid = _open_run(server)
    batch = [{"key": "loss", "value": float(i), "timestamp": 1000 + i, "step": i}
             for i in range(300)]  # fmt: skip
    assert server.call("POST", f"{API}/runs/log-batch", {"run_id": rid, "metrics": batch})[0] == 200
    server.call("POST", f"{API}/runs/log-parameter", {"run_id": rid, "key": "a", "value": "1"})
    server.restart()  # SIGTERM right after logging: the shutdown flush makes them durable
    status, got, _ = server.call("GET", f"{API}/runs/get", query={"run_id": rid})
    assert status == 200 and got["run"]["info"]["status"] == "RUNNING"
    for i in range(300, 310):
        m = {"run_id": rid, "key": "loss", "value": float(i), "timestamp": 1000 + i, "step": i}
        assert server.call("POST", f"{API}/runs/log-metric", m)[0] == 200
    assert (
        server.call("POST", f"{API}/runs/update", {"run_id": rid, "status": "FINISHED"})[0] == 200
    )
    assert _points(server, rid, "loss") == [(i, float(i)) for i in range(310)]
    q = ("SELECT r.status, count(*) AS n FROM runs r JOIN live_keys k ON k.run_id = r.id "
         f"JOIN metrics m ON m.run_id = r.id WHERE k.live_key = '{rid}' GROUP BY 1")  # fmt: skip
    assert json.loads(server.mlvc("query", "--format", "json", q).stdout) == [
        {"status": "finished", "n": 310}
    ]


def test_a_run_left_alone_past_its_lease_is_killed_with_its_points(own_server):
    srv = own_server("--lease", "2")
    rid = _open_run(srv)
    batch = [{"key": "x", "value": float(i), "timestamp": 7, "step": i} for i in range(20)]
    assert srv.call("POST", f"{API}/runs/log-batch", {"run_id": rid, "metrics": batch})[0] == 200
    for i in range(6):  # a run that keeps writing more often than its lease stays open
        time.sleep(0.6)
        tag = {"run_id": rid, "key": "beat", "value": str(i)}
        assert srv.call("POST", f"{API}/runs/set-tag", tag)[0] == 200
    status, got, _ = srv.call("GET", f"{API}/runs/get", query={"run_id": rid})
    assert got["run"]["info"]["status"] == "RUNNING"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # searching reads, and keeps no run alive
        status, got, _ = srv.call(
            "POST", f"{API}/runs/search", {"experiment_ids": ["0"]}, token="read"
        )
        if got["runs"] and got["runs"][0]["info"]["status"] == "KILLED":
            break
        time.sleep(0.5)
    assert got["runs"][0]["info"]["status"] == "KILLED", got
    assert _points(srv, rid, "x") == [(i, float(i)) for i in range(20)]
    q = "SELECT status, author FROM runs"
    assert json.loads(srv.mlvc("query", "--format", "json", q).stdout) == [
        {"status": "killed", "author": "write-user"}
    ]


def test_search_merges_open_and_recorded_runs_in_one_order(server):
    _, got, _ = server.call("POST", f"{API}/experiments/create", {"name": "merge"})
    eid = got["experiment_id"]
    ids = []
    for i in range(4):
        _, got, _ = server.call("POST", f"{API}/runs/create",
                                {"experiment_id": eid, "run_name": f"m{i}"})  # fmt: skip
        rid = got["run"]["info"]["run_id"]
        ids.append(rid)
        m = {"run_id": rid, "key": "score", "value": float(i), "timestamp": 1, "step": 0}
        assert server.call("POST", f"{API}/runs/log-metric", m)[0] == 200
        if i % 2 == 0:  # m0 and m2 are recorded; m1 and m3 stay open
            server.call("POST", f"{API}/runs/update", {"run_id": rid, "status": "FINISHED"})
    body = {"experiment_ids": [eid], "order_by": ["metrics.score DESC"], "max_results": 3}
    _, page1, _ = server.call("POST", f"{API}/runs/search", body, token="read")
    _, page2, _ = server.call("POST", f"{API}/runs/search",
                              {**body, "page_token": page1["next_page_token"]}, token="read")  # fmt: skip
    got = [(r["info"]["run_name"], r["info"]["status"]) for r in page1["runs"] + page2["runs"]]
    assert got == [("m3", "RUNNING"), ("m2", "FINISHED"), ("m1", "RUNNING"), ("m0", "FINISHED")]
    assert "next_page_token" not in page2
    _, running, _ = server.call(
        "POST", f"{API}/runs/search",
        {"experiment_ids": [eid], "filter": "attributes.status = 'RUNNING' and metrics.score < 2"},
    )  # fmt: skip
    assert [r["info"]["run_id"] for r in running["runs"]] == [ids[1]]
    for rid in ids[1::2]:
        server.call("POST", f"{API}/runs/update", {"run_id": rid, "status": "KILLED"})


def test_a_run_with_a_tag_mlvc_cannot_store_is_refused_before_it_exists(server):
    search = {"experiment_ids": ["0"], "max_results": 1000}
    before = server.call("POST", f"{API}/runs/search", search)[1]["runs"]
    status, got, _ = server.call(
        "POST", f"{API}/runs/create", {"experiment_id": "0", "tags": [{"key": "a b", "value": "1"}]}
    )
    assert status == 400 and "a b" in got["message"]
    after = server.call("POST", f"{API}/runs/search", search)[1]["runs"]
    assert len(after) == len(before)


def test_a_run_whose_lease_expired_while_the_server_was_down_is_killed_at_start(own_server):
    srv = own_server("--lease", "2")
    rid = _open_run(srv)
    m = {"run_id": rid, "key": "x", "value": 1.0, "timestamp": 7, "step": 3}
    assert srv.call("POST", f"{API}/runs/log-metric", m)[0] == 200
    srv.stop()
    time.sleep(2.5)
    srv.start()
    status, got, _ = srv.call("GET", f"{API}/runs/get", query={"run_id": rid})
    assert status == 200 and got["run"]["info"]["status"] == "KILLED"
    assert got["run"]["info"]["user_id"] == "write-user"
    assert _points(srv, rid, "x") == [(3, 1.0)]


def test_inputs_outputs_and_bulk_interval_history(server):
    rid = _open_run(server)
    ds = {"dataset": {"name": "train", "digest": "abc", "source_type": "local",
                      "source": "{\"uri\": \"data.csv\"}"},
          "tags": [{"key": "mlflow.data.context", "value": "training"}]}  # fmt: skip
    assert (
        server.call("POST", f"{API}/runs/log-inputs", {"run_id": rid, "datasets": [ds]})[0] == 200
    )
    out = {"run_id": rid, "models": [{"model_id": "m-1", "step": 3}]}
    assert server.call("POST", f"{API}/runs/outputs", out)[0] == 200
    batch = [{"key": "loss", "value": float(i), "timestamp": 9, "step": i} for i in range(100)]
    server.call("POST", f"{API}/runs/log-batch", {"run_id": rid, "metrics": batch})
    server.call("POST", f"{API}/runs/update", {"run_id": rid, "status": "FINISHED"})
    _, got, _ = server.call("GET", f"{API}/runs/get", query={"run_id": rid})
    assert got["run"]["inputs"]["dataset_inputs"] == [ds]
    assert got["run"]["outputs"]["model_outputs"] == out["models"]
    q = {"run_ids": [rid], "metric_key": "loss", "start_step": 10, "end_step": 60,
         "max_results": 6}  # fmt: skip
    status, got, _ = server.call(
        "GET", f"{API}/metrics/get-history-bulk-interval", query=q, token="read"
    )
    steps = [m["step"] for m in got["metrics"]]
    assert status == 200 and len(steps) == 6 and steps[0] == 10 and steps[-1] == 60
    assert all(m["run_id"] == rid for m in got["metrics"]) and steps == sorted(steps)
    status, got, _ = server.call(
        "GET", f"{API}/metrics/get-history",
        query={"run_id": rid, "metric_key": "loss", "max_results": 40},
    )  # fmt: skip
    pages = [got["metrics"]]
    while "next_page_token" in got:
        _, got, _ = server.call(
            "GET", f"{API}/metrics/get-history",
            query={"run_id": rid, "metric_key": "loss", "max_results": 40,
                   "page_token": got["next_page_token"]},
        )  # fmt: skip
        pages.append(got["metrics"])
    assert [len(p) for p in pages] == [40, 40, 20]
    assert [m["step"] for p in pages for m in p] == list(range(100))


def test_search_runs_answers_a_recorded_runs_dataset_inputs_to_the_mlflow_client(server):
    """runs/search carries each recorded run's dataset inputs, as runs/get does (it answered
    none for recorded runs: the index keeps no inputs)."""
    r = server.mlflow(
        """
        import json, mlflow, numpy as np
        from mlflow import MlflowClient
        mlflow.set_experiment("with-inputs")
        ds = mlflow.data.from_numpy(np.arange(6.0).reshape(3, 2), source="data.npy", name="train")
        with mlflow.start_run(run_name="fed") as run:
            mlflow.log_input(ds, context="training")
        with mlflow.start_run(run_name="plain"):
            mlflow.log_metric("x", 1.0)
        c = MlflowClient()
        eid = run.info.experiment_id
        def seen(r):
            return [(d.dataset.name, d.dataset.digest, sorted((t.key, t.value) for t in d.tags))
                    for d in (r.inputs.dataset_inputs if r.inputs else [])]
        print(json.dumps({
            "search": {r.info.run_name: seen(r) for r in c.search_runs([eid])},
            "get": seen(c.get_run(run.info.run_id)),
            "digest": ds.digest,
        }))
        """
    )
    got = _last_json(r)
    want = [["train", got["digest"], [["mlflow.data.context", "training"]]]]
    assert got["get"] == want
    assert got["search"] == {"fed": want, "plain": []}
