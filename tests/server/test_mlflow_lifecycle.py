"""Where mlvc's MLflow API used to differ from MLflow's own server after a run ended, driven by
the unmodified MLflow client on a real `mlvc server` (what MLflow does is read from its
sqlalchemy store: ``_check_run_is_active``, ``delete_experiment``, ``restore_experiment``).

- runs/search sees tags set, changed or deleted after a run ended (and names given then);
- deleting an experiment deletes its runs, restoring it restores every one of them (also one
  deleted on its own before), as MLflow marks them; a run's own later delete or restore wins;
- a deleted run refuses every change with MLflow's words and code, a finished one refuses
  metrics and params (its record is immutable) but takes tags, names and lifecycle.
"""

from __future__ import annotations

import json

API = "/api/2.0/mlflow"


def _last_json(r):
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_search_sees_tags_set_changed_and_deleted_after_the_run_ended(server):
    r = server.mlflow(
        """
        import mlflow, json
        c = mlflow.MlflowClient()
        eid = mlflow.set_experiment("late-tags").experiment_id
        ids = {}
        for name in ("a", "b", "c"):
            with mlflow.start_run(run_name=name) as run:
                mlflow.set_tag("phase", "train")
            ids[name] = run.info.run_id
        c.set_tag(ids["a"], "review", "ok")        # a new tag after the end
        c.set_tag(ids["b"], "phase", "eval")       # a recorded tag changed
        c.delete_tag(ids["c"], "phase")            # a recorded tag deleted
        c.set_tag(ids["c"], "review", "redo")
        c.update_run(ids["c"], name="c-renamed")   # a name given after the end

        def names(f, order=None):
            runs = c.search_runs([eid], filter_string=f, order_by=order)
            return [r.info.run_name for r in runs]

        print(json.dumps({
            "review_ok": names("tags.review = 'ok'"),
            "review_any": sorted(names("tags.review LIKE '%'")),
            "train": names("tags.phase = 'train'"),
            "eval": names("tags.phase = 'eval'"),
            "ordered": names("", ["tags.review DESC"]),
            "renamed": names("attributes.run_name = 'c-renamed'"),
        }))
        """
    )
    got = _last_json(r)
    assert got["review_ok"] == ["a"]
    assert got["review_any"] == ["a", "c-renamed"]
    assert got["train"] == ["a"]  # b's is "eval" now, c's is deleted
    assert got["eval"] == ["b"]
    assert got["ordered"][:2] == ["c-renamed", "a"]  # "redo" > "ok"; b has none: last
    assert got["renamed"] == ["c-renamed"]
    # the records themselves are untouched: mlvc shows the tags the runs were recorded with
    rows = json.loads(
        server.mlvc("query", "--format", "json", "SELECT key, value FROM tags WHERE key = 'review'")
        .stdout
    )  # fmt: skip
    assert rows == []


def test_deleting_an_experiment_deletes_its_runs_and_restoring_restores_them(server):
    r = server.mlflow(
        """
        import mlflow, json
        from mlflow.entities import ViewType
        c = mlflow.MlflowClient()
        eid = c.create_experiment("cascade")
        ids = []
        for i in range(3):
            with mlflow.start_run(experiment_id=eid, run_name=f"r{i}") as run:
                mlflow.log_metric("m", i)
            ids.append(run.info.run_id)
        open_run = c.create_run(eid, run_name="still-open").info.run_id
        c.delete_run(ids[0])                       # deleted on its own first

        def stages():
            return [c.get_run(i).info.lifecycle_stage for i in ids + [open_run]]

        def found(view):
            return len(c.search_runs([eid], run_view_type=view))

        c.delete_experiment(eid)
        after_delete = {"stages": stages(), "active": found(ViewType.ACTIVE_ONLY),
                        "deleted": found(ViewType.DELETED_ONLY)}
        try:
            c.log_metric(open_run, "m", 1.0)
            refused = None
        except mlflow.exceptions.MlflowException as e:
            refused = [e.error_code, e.message]
        c.restore_run(ids[1])                      # its own restore wins over the experiment's
        one_back = stages()
        c.restore_experiment(eid)
        after_restore = {"stages": stages(), "active": found(ViewType.ACTIVE_ONLY),
                         "deleted": found(ViewType.DELETED_ONLY)}
        c.log_metric(open_run, "m", 2.0)
        c.set_terminated(open_run)
        print(json.dumps({"after_delete": after_delete, "refused": refused,
                          "one_back": one_back, "after_restore": after_restore}))
        """
    )
    got = _last_json(r)
    assert got["after_delete"] == {"stages": ["deleted"] * 4, "active": 0, "deleted": 4}
    code, message = got["refused"]
    assert code == "INVALID_PARAMETER_VALUE" and "must be in the 'active' state" in message
    assert got["one_back"] == ["deleted", "active", "deleted", "deleted"]
    # MLflow restores every run of the experiment, the one deleted before it too
    assert got["after_restore"] == {"stages": ["active"] * 4, "active": 4, "deleted": 0}


def test_a_deleted_run_refuses_changes_as_mlflow_does_and_a_finished_one_takes_tags(server):
    r = server.mlflow(
        """
        import mlflow, json
        c = mlflow.MlflowClient()
        with mlflow.start_run() as run:
            mlflow.log_param("p", 1)
        rid = run.info.run_id

        def refused(fn, *args, **kw):
            try:
                fn(*args, **kw)
            except mlflow.exceptions.MlflowException as e:
                return [e.error_code, e.message]
            return None

        finished = {"metric": refused(c.log_metric, rid, "late", 1.0),
                    "param": refused(c.log_param, rid, "q", "2"),
                    "tag": refused(c.set_tag, rid, "late", "yes")}
        c.delete_run(rid)
        deleted = {"metric": refused(c.log_metric, rid, "late", 1.0),
                   "tag": refused(c.set_tag, rid, "t", "v"),
                   "delete_tag": refused(c.delete_tag, rid, "late"),
                   "update": refused(c.update_run, rid, name="x"),
                   "batch": refused(c.log_batch, rid, tags=[mlflow.entities.RunTag("a", "b")])}
        c.restore_run(rid)
        restored = refused(c.set_tag, rid, "after", "restore")
        print(json.dumps({"finished": finished, "deleted": deleted, "restored": restored,
                          "tags": c.get_run(rid).data.tags}))
        """
    )
    got = _last_json(r)
    assert got["finished"]["tag"] is None
    for what in ("metric", "param"):  # an immutable record: see docs/coming-from-mlflow.md
        code, message = got["finished"][what]
        assert code == "INVALID_PARAMETER_VALUE" and "immutable" in message
    for what, (code, message) in got["deleted"].items():
        assert code == "INVALID_PARAMETER_VALUE", what
        assert message.endswith("must be in the 'active' state. Current state is deleted."), what
    assert got["restored"] is None
    assert got["tags"]["late"] == "yes" and got["tags"]["after"] == "restore"


def test_raw_json_logging_to_a_deleted_open_run_is_refused(server):
    status, body, _ = server.call("POST", f"{API}/runs/create", {"experiment_id": "0"})
    rid = body["run"]["info"]["run_id"]
    assert server.call("POST", f"{API}/runs/delete", {"run_id": rid})[0] == 200
    status, body, _ = server.call(
        "POST", f"{API}/runs/log-metric", {"run_id": rid, "key": "m", "value": 1, "timestamp": 1}
    )
    assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE", body
    assert (
        body["message"] == f"The run {rid} must be in the 'active' state. Current state is deleted."
    )
    assert server.call("POST", f"{API}/runs/restore", {"run_id": rid})[0] == 200
    status, body, _ = server.call(
        "POST", f"{API}/runs/log-metric", {"run_id": rid, "key": "m", "value": 1, "timestamp": 1}
    )
    assert status == 200, body
    status, body, _ = server.call(
        "POST", f"{API}/runs/update", {"run_id": rid, "status": "FINISHED"}
    )
    assert status == 200 and body["run_info"]["status"] == "FINISHED", body
