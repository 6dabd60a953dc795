"""The MLflow client's reads of a history (run as a script by the fidelity test):
``python mlflow_reads.py TRACKING_URI OUT_DIR`` prints one JSON document of answers, so the
answers of the source store and of `mlvc server` over the imported repository compare.

Normalized, for both sides alike, only what must differ: artifact locations (the files moved
into mlvc's store, served by its proxy), and ±max float read back as ±inf (MLflow's SQL store
writes a logged ±inf as ±max, as MySQL holds no inf; the file store and REST keep inf).
Floats are compared by repr, so NaN equals NaN. Registry answers: see ``version_dict``.
"""

import hashlib
import json
import os
import sys

from mlflow import MlflowClient
from mlflow.entities import ViewType

uri, out_dir = sys.argv[1], sys.argv[2]
client = MlflowClient(uri)
MAX = sys.float_info.max


def num(v):
    v = float(v)
    return repr(float("inf") if v == MAX else float("-inf") if v == -MAX else v)


def run_dict(r):
    i = r.info
    return {
        "info": [
            i.run_id,
            i.run_name,
            i.experiment_id,
            i.user_id,
            i.status,
            i.start_time,
            i.end_time,
            i.lifecycle_stage,
        ],
        "params": dict(sorted(r.data.params.items())),
        "tags": dict(sorted(r.data.tags.items())),
        "metrics": {k: num(v) for k, v in sorted(r.data.metrics.items())},
        "inputs": sorted(
            [
                d.dataset.name,
                d.dataset.digest,
                d.dataset.source_type,
                d.dataset.source,
                sorted((t.key, t.value) for t in d.tags),
            ]
            for d in (r.inputs.dataset_inputs if r.inputs else [])
        ),
    }


def exp_dict(e):
    return [
        e.experiment_id,
        e.name,
        e.lifecycle_stage,
        dict(sorted(e.tags.items())),
        e.creation_time,
    ]


out = {}
alpha = client.get_experiment_by_name("alpha")
beta = client.get_experiment_by_name("beta")
out["experiments"] = [exp_dict(alpha), exp_dict(beta)]
out["search_experiments"] = sorted(e.name for e in client.search_experiments())
ids = [alpha.experiment_id, beta.experiment_id]
every = client.search_runs(ids, max_results=5000, run_view_type=ViewType.ALL)
out["all_runs"] = sorted(r.info.run_id for r in every)
active = client.search_runs(ids, max_results=5000)
out["active_count"] = len(active)
deleted = client.search_runs(ids, max_results=5000, run_view_type=ViewType.DELETED_ONLY)
out["deleted"] = sorted(r.info.run_id for r in deleted)
page = client.search_runs(
    [alpha.experiment_id],
    "params.opt = 'adam' and metrics.acc > 0.7",
    order_by=["start_time DESC"],
    max_results=30,
)
out["filtered_page"] = [run_dict(r) for r in page]
parent = sorted(every, key=lambda r: r.info.start_time)[0].info.run_id
kids = client.search_runs(ids, f"tags.mlflow.parentRunId = '{parent}'")
out["children"] = sorted(r.info.run_name for r in kids)
by_name = {r.info.run_name: r.info.run_id for r in every}
sample = [
    "run-00000",
    "run-00001",
    "run-00003",
    "run-00005",
    "run-00006",
    "run-00007",
    "run-00009",
    "run-00013",
    "run-00500",
]
out["get_run"] = {n: run_dict(client.get_run(by_name[n])) for n in sample if n in by_name}
out["history"] = {
    n: {
        k: [(m.step, m.timestamp, num(m.value)) for m in client.get_metric_history(by_name[n], k)]
        for k in ("loss", "acc", "odd")
    }
    for n in ("run-00003", "run-00500")
    if n in by_name
}
files = {}
for n in ("run-00005", "run-00006"):
    rid = by_name[n]
    listing = [(f.path, f.is_dir, f.file_size) for f in client.list_artifacts(rid)]
    listing += [(f.path, f.is_dir, f.file_size) for f in client.list_artifacts(rid, "report")]
    dest = os.path.join(out_dir, n)
    os.makedirs(dest, exist_ok=True)
    local = client.download_artifacts(rid, "", dest)
    digests = {}
    for root, _dirs, names in os.walk(local):
        for name in names:
            p = os.path.join(root, name)
            with open(p, "rb") as f:
                digests[os.path.relpath(p, local)] = hashlib.sha256(f.read()).hexdigest()
    files[n] = {"list": sorted(listing), "sha256": dict(sorted(digests.items()))}
out["artifacts"] = files


def version_dict(v, aliases=True):
    """A model version; its number as text and no user as "" (MLflow's SQL store answers
    1 and None where its REST API answers "1" and ""); ``aliases=False`` for
    search_model_versions, where MLflow's SQL store leaves aliases out."""
    return [v.name, str(v.version), v.creation_timestamp, v.last_updated_timestamp,
            v.description, v.user_id or "", v.current_stage, v.source, v.run_id, v.status,
            dict(sorted(v.tags.items())), sorted(v.aliases) if aliases else None]  # fmt: skip


models = client.search_registered_models()
out["registered_models"] = [
    [
        m.name,
        m.creation_timestamp,
        m.description,
        dict(sorted(m.tags.items())),
        sorted((a.alias, str(a.version)) for a in m.aliases)
        if isinstance(m.aliases, list)
        else sorted((k, str(v)) for k, v in m.aliases.items()),
    ]
    for m in models
]
if models:
    out["by_alias"] = version_dict(client.get_model_version_by_alias("clf", "champion"))
    out["versions"] = sorted(
        version_dict(v, aliases=False) for v in client.search_model_versions("name = 'clf'")
    )


def logged_dict(m):
    """A logged model (its artifact location left out: the files moved into mlvc)."""
    return [m.model_id, m.name, m.experiment_id, m.source_run_id, str(m.status), m.model_type,
            m.creation_timestamp, m.last_updated_timestamp, dict(sorted(m.tags.items())),
            dict(sorted(m.params.items())), len(m.metrics or [])]  # fmt: skip


logged = client.search_logged_models(experiment_ids=ids)
out["logged_models"] = sorted(logged_dict(m) for m in logged)
if logged:
    first = sorted(logged, key=lambda m: m.model_id)[0]
    out["get_logged_model"] = logged_dict(client.get_logged_model(first.model_id))
    out["logged_model_files"] = sorted(
        (f.path, f.is_dir, f.file_size) for f in client.list_logged_model_artifacts(first.model_id)
    )
print(json.dumps(out, sort_keys=True))
