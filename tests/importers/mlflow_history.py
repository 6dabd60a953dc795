"""Generate an MLflow history with the real MLflow client (run as a script by the tests and
the benchmark): ``python mlflow_history.py TRACKING_URI WORKDIR RUNS POINTS``.

Experiments "alpha" and "beta" (and Default); RUNS runs in all, every tenth a parent with
two nested children; each run has params, tags, a series "loss" of POINTS points and a final
"acc"; one run has NaN, +inf and -inf points; a few runs have artifacts, two of them the same
file (deduplicated in mlvc), one a dataset input; run 5 logs an MLflow 3 logged model; one run is deleted, one still
running.
"""

import math
import os
import sys
import time

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from sqlalchemy import event
from sqlalchemy.engine import Engine


@event.listens_for(Engine, "connect")
def _no_fsync(con, _record):  # a test history: sqlite's fsync per commit would dominate
    if type(con).__module__.startswith("sqlite3"):
        con.execute("PRAGMA synchronous=OFF")


uri, work, n_runs, n_points = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
os.chdir(work)
client = MlflowClient(uri)
exps = [client.create_experiment(n) for n in ("alpha", "beta")]
client.set_experiment_tag(exps[0], "team", "vision")
with open("shared.bin", "wb") as f:
    f.write(os.urandom(4096))
os.makedirs("report", exist_ok=True)
os.makedirs("model", exist_ok=True)
with open("model/MLmodel", "w") as f:
    f.write("flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n")
with open("model/model.pkl", "wb") as f:
    f.write(os.urandom(256))
with open("report/summary.txt", "w") as f:
    f.write("a summary\n")
t0 = 1_700_000_000_000
made = 0
parent = None
model_runs = []
while made < n_runs:
    eid = exps[made % 2]
    tags = {"mlflow.source.name": "train.py", "mlflow.user": "alice", "kind": "sweep"}
    if made % 10 in (1, 2) and parent is not None:
        tags["mlflow.parentRunId"] = parent
    run = client.create_run(eid, start_time=t0 + made * 1000, tags=tags, run_name=f"run-{made:05d}")
    rid = run.info.run_id
    if made % 10 == 0:
        parent = rid
    metrics = [Metric("loss", 1.0 / (s + 1), t0 + made * 1000 + s, s) for s in range(n_points)]
    metrics.append(Metric("acc", 0.5 + made / (2 * n_runs), t0 + made * 1000 + n_points, 0))
    if made == 3:
        metrics += [
            Metric("odd", v, t0 + i, i) for i, v in enumerate([math.nan, math.inf, -math.inf, 1.5])
        ]
    params = [
        Param("lr", str(0.001 * (made % 7 + 1))),
        Param("layers", str(made % 4 + 1)),
        Param("opt", "adam" if made % 2 else "sgd"),
        Param("flag", "True"),
    ]
    for i in range(0, len(metrics), 1000):
        client.log_batch(
            rid,
            metrics=metrics[i : i + 1000],
            params=params if i == 0 else [],
            tags=[RunTag("seed", str(made))] if i == 0 else [],
        )
    if made in (5, 6):
        client.log_artifact(rid, "shared.bin")
        client.log_artifact(rid, "report")
        client.log_artifacts(rid, "model", "model")
        model_runs.append(rid)
    if made == 5:  # an MLflow 3 logged model, with its own id, params, tags and files
        from mlflow.entities import LoggedModelStatus

        lm = client.create_logged_model(eid, name="clf-model", source_run_id=rid,
                                        params={"alpha": "0.1"}, tags={"stage": "dev"},
                                        model_type="sklearn")  # fmt: skip
        client.log_model_artifacts(lm.model_id, "model")
        client.finalize_logged_model(lm.model_id, LoggedModelStatus.READY)
    if made == 7:
        from mlflow.data.http_dataset_source import HTTPDatasetSource
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag

        ds = MetaDataset(
            HTTPDatasetSource("http://data.example/train.csv"), name="train", digest="d1g35t"
        )._to_mlflow_entity()
        client.log_inputs(rid, [DatasetInput(ds, [InputTag("mlflow.data.context", "training")])])
    if made == n_runs - 1:
        pass  # left RUNNING
    else:
        status = "FAILED" if made % 13 == 0 else "FINISHED"
        client.set_terminated(rid, status, end_time=t0 + made * 1000 + 900)
    if made == 9:
        client.delete_run(rid)
    made += 1
if model_runs:  # the registry (SQL and file stores both keep one)
    client.create_registered_model("clf", tags={"owner": "vision"}, description="a classifier")
    for i, rid in enumerate(model_runs):
        client.create_model_version(
            "clf", f"runs:/{rid}/model", rid, description=f"v{i + 1}", tags={"round": str(i)}
        )
    client.set_registered_model_alias("clf", "champion", "1")
    client.set_registered_model_alias("clf", "challenger", "2")
print(time.time())
