"""MLflow-style experiments: named groups of runs, kept as JSON blobs behind refs.

``refs/mlflow/experiments/<id>`` names a blob ``{"experiment_id", "name",
"artifact_location", "lifecycle_stage", "tags", "creation_time", "last_update_time"}``; a
run belongs to the experiment whose id its ``extra["experiment_id"]`` holds ("0",
"Default", when none). The same records serve ``mlvc server``'s MLflow API, the MLflow
plugin and ``mlvc.set_experiment``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING

from ..errors import MlvcError
from ..store.locks import writing

if TYPE_CHECKING:
    from ..workspace.context import RepoContext

log = logging.getLogger("mlvc.runs.experiments")
EXPERIMENTS = "refs/mlflow/experiments"
DEFAULT_ID, DEFAULT_NAME = "0", "Default"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def read_blob(ctx: RepoContext, ref: str) -> dict | None:
    """The JSON object a ref names; None when absent or damaged (logged)."""
    oid = ctx.refs.read_or_none(ref)
    if oid is None:
        return None
    try:
        value = json.loads(ctx.store.read_bytes(oid))
    except (MlvcError, ValueError):
        log.warning("%s names a damaged blob; ignored", ref)
        return None
    return value if isinstance(value, dict) else None


def write_blob(ctx: RepoContext, ref: str, value: dict, who: str, why: str) -> None:
    """Store ``value`` as a blob, durably, then point ``ref`` at it (objects before refs)."""
    data = json.dumps(value, sort_keys=True).encode()
    with writing(ctx.dir, ctx.store):
        oid = ctx.store.add_bytes(data)
        ctx.store.flush()
        ctx.store.sync()
        ctx.refs.write(ref, oid, why, who)


def new_experiment(eid: str, name: str, tags: dict, location: str | None = None) -> dict:
    t = now_ms()
    return {
        "experiment_id": eid,
        "name": name,
        "artifact_location": location or f"mlflow-artifacts:/{eid}",
        "lifecycle_stage": "active",
        "tags": tags,
        "creation_time": t,
        "last_update_time": t,
    }


def load(ctx: RepoContext) -> dict[str, dict]:
    """Every experiment by id ("0", Default, always there: unwritten until first needed)."""
    out = {}
    for name in ctx.refs.names(EXPERIMENTS.removeprefix("refs/")):
        exp = read_blob(ctx, f"{EXPERIMENTS}/{name}")
        if exp is not None and exp.get("experiment_id") == name:
            out[name] = exp
    out.setdefault(DEFAULT_ID, new_experiment(DEFAULT_ID, DEFAULT_NAME, {}))
    return out


def next_id(experiments: dict[str, dict]) -> str:
    return str(max((int(i) for i in experiments if i.isdigit()), default=0) + 1)


def ensure(ctx: RepoContext, name: str, who: str) -> str:
    """The id of the experiment called ``name``, created when there is none."""
    experiments = load(ctx)
    for eid, exp in experiments.items():
        if exp["name"] == name:
            return eid
    eid = next_id(experiments)
    write_blob(ctx, f"{EXPERIMENTS}/{eid}", new_experiment(eid, name, {}), who,
               f"create experiment {name}")  # fmt: skip
    return eid
