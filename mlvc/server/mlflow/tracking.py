"""Handlers of MLflow's tracking API: experiments, runs, metrics (mlvc.server.mlflow.store
keeps what they change). Each takes a ``Call`` and returns the proto-JSON answer."""

from __future__ import annotations

from typing import Any

from ...core.params import typed_value
from ...errors import MlvcError, ParamConflict
from ..app import ApiError
from .search import offset_of as _page
from .search import search_experiments, search_runs
from .search import token_for as _token
from .store import Open, TrackingStore, now_ms
from .wire import Args, bad, key_values, metric_out, not_found, to_number

TERMINAL = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}
STATUSES = ("RUNNING", "SCHEDULED", *TERMINAL)
MAX_METRICS, MAX_PARAMS, MAX_TAGS, MAX_ENTRIES = 1000, 100, 100, 1000
MAX_PARAM_VALUE, MAX_TAG_VALUE, MAX_KEY = 6000, 8000, 250


def store_of(call) -> TrackingStore:
    return call.state.extras["mlflow.runs"]


# -- values ----------------------------------------------------------------------------------


def param_in(text: str) -> Any:
    """A param as mlvc stores it: typed when its text reads back the same, else the text."""
    value = typed_value(text)
    return value if param_text(value) == text else text


def param_text(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _key(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise bad(f"{what} key must be a non-empty string, not {value!r:.60}")
    if len(value) > MAX_KEY:
        raise bad(f"{what} key {value[:60]!r}... is over {MAX_KEY} characters")
    return value


def _text(value: Any, what: str, limit: int) -> str:
    if value is None:
        value = ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise bad(f"{what} must be a string, not {value!r:.60}")
    value = str(value)
    if len(value) > limit:
        raise bad(f"{what} is {len(value)} characters, over MLflow's limit of {limit}")
    return value


def _int(value: Any, what: str, default: int | None = None) -> int:
    if value is None or value == "":
        if default is None:
            raise bad(f"missing value for required parameter '{what}'")
        return default
    if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
        raise bad(f"parameter '{what}' must be an integer, not {value!r:.60}")
    try:
        out = int(value)
    except (TypeError, ValueError, OverflowError):
        raise bad(f"parameter '{what}' must be an integer, not {value!r:.60}") from None
    if not -(2**63) <= out < 2**63:
        raise bad(f"parameter '{what}' is out of the 64-bit range")
    return out


def _mlvc(fn, *args):
    """Call into mlvc; its refusals (UsageError, ParamConflict) become 400s."""
    try:
        return fn(*args)
    except ParamConflict as e:
        raise bad(str(e)) from None
    except MlvcError as e:
        if e.http_status >= 500:
            raise
        raise bad(e.message) from None


# -- experiments -----------------------------------------------------------------------------


def experiment_json(exp: dict) -> dict:
    out = {k: v for k, v in exp.items() if k != "tags"}
    out["tags"] = key_values(exp.get("tags") or {})
    return out


def _tags_of(args: Args, field: str = "tags") -> dict[str, str]:
    out = {}
    for t in args.objects(field):
        out[_key(t.get("key"), "tag")] = _text(t.get("value"), "tag value", MAX_TAG_VALUE)
    return out


def create_experiment(call):
    args = Args(call)
    name = args.string("name", required=True)
    location = args.string("artifact_location")
    eid = store_of(call).create_experiment(name, location, _tags_of(args), call.principal.name)
    return {"experiment_id": eid}


def get_experiment(call):
    args = Args(call)
    exp = store_of(call).experiment_or_404(args.string("experiment_id", required=True))
    return {"experiment": experiment_json(exp)}


def get_experiment_by_name(call):
    name = Args(call).string("experiment_name", required=True)
    exp = store_of(call).experiment_by_name(name)
    if exp is None:
        raise not_found(f"no experiment named {name!r}")
    return {"experiment": experiment_json(exp)}


def experiments_search(call):
    args = Args(call)
    exps, token = search_experiments(store_of(call), args)
    out: dict[str, Any] = {"experiments": [experiment_json(e) for e in exps]}
    if token:
        out["next_page_token"] = token
    return out


def update_experiment(call):
    args = Args(call)
    eid = args.string("experiment_id", required=True)
    name = args.string("new_name", required=True)
    store_of(call).change_experiment(eid, call.principal.name, "rename", name=name)
    return {}


def _stage(call, stage: str):
    eid = Args(call).string("experiment_id", required=True)
    store_of(call).change_experiment(eid, call.principal.name, stage, lifecycle_stage=stage)
    return {}


def delete_experiment(call):
    if Args(call).string("experiment_id") == "0":
        raise bad("the Default experiment (id 0) cannot be deleted")
    return _stage(call, "deleted")


def restore_experiment(call):
    return _stage(call, "active")


def set_experiment_tag(call):
    args = Args(call)
    eid = args.string("experiment_id", required=True)
    key = _key(args.raw("key"), "tag")
    value = _text(args.raw("value"), "tag value", MAX_TAG_VALUE)
    store = store_of(call)
    tags = dict(store.experiment_or_404(eid).get("tags") or {})
    tags[key] = value
    store.change_experiment(eid, call.principal.name, f"set tag {key}", tags=tags)
    return {}


def delete_experiment_tag(call):
    args = Args(call)
    eid = args.string("experiment_id", required=True)
    key = _key(args.raw("key"), "tag")
    store = store_of(call)
    tags = dict(store.experiment_or_404(eid).get("tags") or {})
    if key not in tags:
        raise not_found(f"experiment {eid} has no tag {key!r}")
    del tags[key]
    store.change_experiment(eid, call.principal.name, f"delete tag {key}", tags=tags)
    return {}


# -- runs: reading ---------------------------------------------------------------------------


def artifact_uri(experiment_id: str, run_id: str) -> str:
    return f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts"


def _run_id(args: Args) -> str:
    rid = args.string("run_id") or args.string("run_uuid")
    if not rid:
        raise bad("missing value for required parameter 'run_id'")
    return rid


def _latest(points) -> list[dict]:
    """Latest point per key (highest step, then latest time) from (key, step, µs, value)."""
    best: dict[str, tuple] = {}
    for k, s, t, v in points:
        if k not in best or (s, t) >= best[k][:2]:
            best[k] = (s, t, v)
    return [metric_out(k, v, t // 1000, s) for k, (s, t, v) in sorted(best.items())]


def _series_points(table) -> list[tuple]:
    cols = [table[c].to_pylist() for c in ("key", "step", "timestamp", "value")]
    return list(zip(*cols, strict=True))


def _apply_overlay(store: TrackingStore, rid: str, info: dict, tags: dict) -> None:
    ov = store.overlay(rid)
    for k in ov.get("deleted_tags") or []:
        tags.pop(k, None)
    tags.update(ov.get("tags") or {})
    if ov.get("name"):
        info["run_name"] = ov["name"]
        tags["mlflow.runName"] = ov["name"]
    info["lifecycle_stage"] = store.stage_of(rid, info["experiment_id"])


def _open_json(store: TrackingStore, opened: Open, status: str = "running") -> dict:
    run = opened.run
    with opened.lock:
        if not run.has_ended:
            run.flush()
        # a run with no metric block yet (just created) has no points: no folder to read
        points = _series_points(run.staged.read_series()) if run.has_points else []
        params = run.params
        tags = run.tags
        extra = dict(run.staged.extra)
    info = {
        "run_id": run.key,
        "run_uuid": run.key,
        "run_name": tags.get("mlflow.runName") or run.name,
        "experiment_id": opened.experiment_id,
        "user_id": opened.user,
        "status": status.upper(),
        "start_time": run.started // 1000,
        "artifact_uri": artifact_uri(opened.experiment_id, run.key),
        "lifecycle_stage": "active",
    }
    _apply_overlay(store, run.key, info, tags)
    return _run_json(info, _latest(points), params, tags, extra)


def _run_json(info: dict, metrics: list, params: dict, tags: dict, extra: dict) -> dict:
    data = {
        "metrics": metrics,
        "params": [{"key": k, "value": param_text(v)} for k, v in sorted(params.items())],
        "tags": key_values(dict(sorted(tags.items()))),
    }
    out: dict[str, Any] = {"info": info, "data": data}
    inputs = extra.get("mlflow_inputs")
    # as MLflow's proto JSON: a run with no inputs answers {} (an importer reading this
    # server then knows runs/search left nothing out, and asks no runs/get)
    out["inputs"] = {"dataset_inputs": inputs} if isinstance(inputs, list) and inputs else {}
    outputs = extra.get("mlflow_outputs")
    if isinstance(outputs, list) and outputs:
        out["outputs"] = {"model_outputs": outputs}
    return out


def recorded_info(rid: str, run, experiment_id: str, tags: dict) -> dict:
    return {
        "run_id": rid,
        "run_uuid": rid,
        "run_name": tags.get("mlflow.runName") or run.name,
        "experiment_id": experiment_id,
        "user_id": run.author,
        "status": TERMINAL_OUT.get(run.status, "FINISHED"),
        "start_time": run.started // 1000,
        "end_time": run.ended // 1000,
        "artifact_uri": artifact_uri(experiment_id, rid),
        "lifecycle_stage": "active",
    }


TERMINAL_OUT = {v: k for k, v in TERMINAL.items()}


def _recorded_json(store: TrackingStore, rid: str, oid, run) -> dict:
    eid = run.extra.get("experiment_id") if isinstance(run.extra.get("experiment_id"), str) else "0"
    tags = dict(run.tags)
    info = recorded_info(rid, run, eid, tags)
    points = []
    if run.series is not None:
        try:
            points = _series_points(_read_series(store, run.series))
        except Exception:  # a damaged series: the final values still answer
            points = []
    metrics = _latest(points) if points else [
        metric_out(k, float(v), run.ended // 1000, 0) for k, v in sorted(run.metrics.items())
    ]  # fmt: skip
    _apply_overlay(store, rid, info, tags)
    return _run_json(info, metrics, dict(run.params), tags, dict(run.extra))


def _read_series(store: TrackingStore, oid):
    """A recorded series blob as (key, step, timestamp µs, value)."""
    import pyarrow as pa

    from ...core.series_blob import read_series

    t = read_series(store.ctx.store.read_bytes(oid))
    ts = t["timestamp"]
    if pa.types.is_timestamp(ts.type):
        ts = ts.cast(pa.timestamp("us", "UTC")).cast(pa.int64())
    return pa.table({"key": t["key"].cast(pa.string()), "step": t["step"],
                     "timestamp": ts, "value": t["value"]})  # fmt: skip


def recorded_page(store: TrackingStore, con, pairs: list[tuple[str, str]]) -> dict[str, dict]:
    """runs/search answers for recorded runs. A recorded run never changes, so what the
    index holds for it is kept by object id (``store.pages``) and only the runs not kept yet
    are read (one query per table over those runs; no run object is loaded); the overlay
    (tags, name, lifecycle changed since) is applied on every answer. A metric's timestamp
    is the run's end."""
    out: dict[str, dict] = {}
    missing = []
    for rid, oid in pairs:
        parts = store.pages.get(oid)
        if parts is None:
            missing.append((rid, oid))
        else:
            out[rid] = _page_json(store, rid, parts)
    if not missing:
        return out
    import pyarrow as pa

    by_oid = {oid: rid for rid, oid in missing}
    con.register("_mlflow_page", pa.table({"id": pa.array(list(by_oid), pa.string())}))
    try:
        where = "WHERE {} IN (SELECT id FROM _mlflow_page)"
        runs = con.execute(
            "SELECT id, name, author, status, epoch_ms(started), epoch_ms(ended), experiment_id "
            "FROM runs " + where.format("id")
        ).fetchall()
        params = con.execute(
            "SELECT run_id, key, value, type FROM params " + where.format("run_id")
        ).fetchall()
        tags = con.execute(
            "SELECT run_id, key, value FROM tags " + where.format("run_id")
        ).fetchall()
        metrics = con.execute(
            "SELECT run_id, key, last, last_step FROM metric_summary " + where.format("run_id")
        ).fetchall()
    finally:
        con.unregister("_mlflow_page")
    p_of: dict[str, dict] = {}
    for oid, k, v, t in params:
        p_of.setdefault(oid, {})[k] = (
            {"true": "True", "false": "False"}.get(v, v) if t == "bool" else v
        )
    t_of: dict[str, dict] = {}
    for oid, k, v in tags:
        t_of.setdefault(oid, {})[k] = v
    m_of: dict[str, list] = {}
    for oid, k, last, step in sorted(metrics, key=lambda m: m[1]):
        m_of.setdefault(oid, []).append((k, last, step))
    for oid, name, author, status, started, ended, eid in runs:
        rid = by_oid[oid]
        tags_here = dict(sorted(t_of.get(oid, {}).items()))
        eid = eid or "0"
        info = {
            "run_id": rid,
            "run_uuid": rid,
            "run_name": tags_here.get("mlflow.runName") or name or "",
            "experiment_id": eid,
            "user_id": author or "",
            "status": TERMINAL_OUT.get(status, "FINISHED"),
            "start_time": started or 0,
            "end_time": ended or 0,
            "artifact_uri": artifact_uri(eid, rid),
            "lifecycle_stage": "active",
        }
        mets = [metric_out(k, v, ended or 0, step or 0) for k, v, step in m_of.get(oid, [])]
        params_here = dict(sorted(p_of.get(oid, {}).items()))
        parts = (info, mets, params_here, tags_here, _run_links(store, oid))
        store.pages.put(oid, parts)
        out[rid] = _page_json(store, rid, parts)
    return out


def _page_json(store: TrackingStore, rid: str, parts: tuple) -> dict:
    """A recorded run's answer from its kept parts (shared: copied before the overlay)."""
    info, mets, params, tags, links = parts
    info, tags = dict(info), dict(tags)
    _apply_overlay(store, rid, info, tags)
    return _run_json(info, [dict(m) for m in mets], dict(params), tags, links)


def _run_links(store: TrackingStore, oid: str) -> dict:
    """A recorded run's dataset inputs and model outputs (``extra.mlflow_inputs`` /
    ``mlflow_outputs``: the index keeps neither), read from its run object once: runs/search
    answers them as runs/get does. A run object that cannot be read answers none."""
    from ...core.ids import ObjectId
    from ...store.typed import read_run

    try:
        extra = read_run(store.ctx.store, ObjectId.parse(oid)).extra
    except (MlvcError, ValueError, OSError):
        return {}
    return {
        k: extra[k] for k in ("mlflow_inputs", "mlflow_outputs") if isinstance(extra.get(k), list)
    }


def run_json(store: TrackingStore, rid: str) -> dict:
    opened = store.open.get(rid)  # reading keeps no run alive: only writes renew its lease
    if opened is not None:
        return _open_json(store, opened)
    found = store.run_record(rid)
    if found is None:
        handed = store.handed.get(rid)
        if handed is not None:  # ended, not yet recorded by the `mlvc run` it joined
            return _open_json(store, *handed)
        raise not_found(f"no run with id {rid!r}")
    return _recorded_json(store, rid, *found)


def get_run(call):
    return {"run": run_json(store_of(call), _run_id(Args(call)))}


def runs_search(call):
    args = Args(call)
    store = store_of(call)
    runs, token = search_runs(store, args, _open_json, recorded_page)
    out: dict[str, Any] = {"runs": runs}
    if token:
        out["next_page_token"] = token
    return out


# -- runs: writing ---------------------------------------------------------------------------


def create_run(call):
    args = Args(call)
    store = store_of(call)
    eid = args.string("experiment_id") or "0"
    exp = store.experiment_or_404(eid)
    if exp["lifecycle_stage"] != "active":
        raise bad(f"experiment {eid} is deleted; restore it before logging runs to it")
    tags = _tags_of(args)
    name = args.string("run_name") or tags.get("mlflow.runName") or ""
    if name:
        tags["mlflow.runName"] = name
    user = call.principal.name
    opened = _mlvc(store.create_run, eid, name, tags, args.integer("start_time"), user)
    return {"run": _open_json(store, opened)}


def _open_or_refuse(call, rid: str) -> Open:
    """The open run ``rid``; 404 if unknown, 400 if it has ended (mlvc runs are immutable
    once recorded: only tags, name and lifecycle change after, through the overlay)."""
    store = store_of(call)
    opened = store.touch(rid)
    if opened is not None:
        store.check_active(rid, opened.experiment_id)
        return opened
    if store.run_record(rid) is None:
        raise not_found(f"no run with id {rid!r}")
    store.check_active(rid)
    raise bad(
        f"run {rid} has ended and is recorded; mlvc runs are immutable, so metrics and "
        "params cannot be added (tags can); start a new run"
    )


def update_run(call):
    args = Args(call)
    store = store_of(call)
    rid = _run_id(args)
    status = args.string("status")
    if status is not None and status not in STATUSES:
        raise bad(f"parameter 'status' must be one of {', '.join(STATUSES)}, not {status!r}")
    name = args.string("run_name")
    opened = store.touch(rid)
    if opened is None:
        found = store.run_record(rid)
        if found is None and rid in store.handed:
            return {"run_info": run_json(store, rid)["info"]}
        if found is None:
            raise not_found(f"no run with id {rid!r}")
        store.check_active(rid)
        if name:
            _set_overlay_name(call, rid, name)
        return {"run_info": run_json(store, rid)["info"]}
    store.check_active(rid, opened.experiment_id)
    if name:
        with opened.lock:
            _mlvc(opened.run.set_tags, {"mlflow.runName": name})
    if status in TERMINAL:
        store.end_run(rid, TERMINAL[status])
    return {"run_info": run_json(store, rid)["info"]}


def _set_overlay_name(call, rid: str, name: str) -> None:
    def change(ov):
        ov["name"] = name

    store_of(call).change_overlay(rid, call.principal.name, "rename", change)


def _lifecycle(call, stage: str):
    rid = _run_id(Args(call))
    store = store_of(call)
    if rid not in store.open and store.run_record(rid) is None:
        raise not_found(f"no run with id {rid!r}")

    store.set_stage(rid, stage, call.principal.name)
    return {}


def delete_run(call):
    return _lifecycle(call, "deleted")


def restore_run(call):
    return _lifecycle(call, "active")


def _metric(m: dict, where: str = "") -> tuple[str, float, int, int]:
    key = _key(m.get("key"), "metric")
    if m.get("value") is None:
        raise bad(f"missing value for required parameter 'value'{where}")
    value = to_number(m.get("value"), "value")
    ts = _int(m.get("timestamp"), "timestamp", default=now_ms())
    step = _int(m.get("step"), "step", default=0)
    return key, value, ts, step


def _log_points(call, opened: Open, points: list[tuple[str, float, int, int]]) -> None:
    run = opened.run
    with opened.lock:
        try:
            for key, value, ts, step in points:
                _mlvc(run.log_metric, key, value, step, ts / 1000)
        finally:
            store_of(call).logged(opened)


def log_metric(call):
    args = Args(call)
    point = _metric(call.body or {})
    rid = _run_id(args)
    opened = _open_or_refuse(call, rid)
    _log_points(call, opened, _not_copies(store_of(call), rid, [call.body or {}], [point]))
    return {}


def _not_copies(store: TrackingStore, rid: str, items: list[dict], points: list) -> list:
    """``points`` without the copies MLflow sends when a model is logged in a run: the run's
    points again, each with the new ``model_id`` (MLflow's own store keeps one row of
    each, its metrics' key includes key, step, time and value, not the model)."""
    linked = {i for i, m in enumerate(items) if m.get("model_id")}
    if not linked:
        return points
    seen: dict[str, set] = {}
    out = []
    for i, (key, value, ts, step) in enumerate(points):
        if i in linked:
            if key not in seen:
                seen[key] = {(s, t // 1000, _same(v)) for s, t, v in _history(store, rid, key)}
            if (step, ts, _same(value)) in seen[key]:
                continue
        out.append((key, value, ts, step))
    return out


def _same(value: float) -> float | str:
    return "nan" if value != value else value


def _params(items: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in items:
        key = _key(p.get("key"), "param")
        text = _text(p.get("value"), f"param {key!r} value", MAX_PARAM_VALUE)
        out[key] = param_in(text)
    return out


def _log_params(opened: Open, params: dict[str, Any]) -> None:
    with opened.lock:
        for k, v in params.items():  # an identical value logged again is fine
            _mlvc(opened.run.log_param, k, v)


def log_param(call):
    args = Args(call)
    params = _params([{"key": args.raw("key"), "value": args.raw("value")}])
    _log_params(_open_or_refuse(call, _run_id(args)), params)
    return {}


def _set_tags(call, rid: str, tags: dict[str, str]) -> None:
    store = store_of(call)
    opened = store.touch(rid)
    if opened is not None:
        store.check_active(rid, opened.experiment_id)
        with opened.lock:
            _mlvc(opened.run.set_tags, tags)
        return
    if store.run_record(rid) is None:
        raise not_found(f"no run with id {rid!r}")
    store.check_active(rid)

    def change(ov):
        ov.setdefault("tags", {}).update(tags)
        ov["deleted_tags"] = [k for k in ov.get("deleted_tags") or [] if k not in tags]
        if "mlflow.runName" in tags:
            ov["name"] = tags["mlflow.runName"]

    store.change_overlay(rid, call.principal.name, "set tags", change)


def set_tag(call):
    args = Args(call)
    key = _key(args.raw("key"), "tag")
    _set_tags(call, _run_id(args), {key: _text(args.raw("value"), "tag value", MAX_TAG_VALUE)})
    return {}


def delete_tag(call):
    args = Args(call)
    rid = _run_id(args)
    key = _key(args.raw("key"), "tag")
    store = store_of(call)
    current = run_json(store, rid)["data"]["tags"]
    store.check_active(rid)
    if not any(t["key"] == key for t in current):
        raise not_found(f"run {rid} has no tag {key!r}")
    opened = store.touch(rid)
    if opened is not None:
        with opened.lock:
            opened.run.delete_tag(key)
        return {}

    def change(ov):
        (ov.get("tags") or {}).pop(key, None)
        ov["deleted_tags"] = sorted({*(ov.get("deleted_tags") or []), key})

    store.change_overlay(rid, call.principal.name, f"delete tag {key}", change)
    return {}


def log_batch(call):
    args = Args(call)
    rid = _run_id(args)
    metrics, params, tags = args.objects("metrics"), args.objects("params"), args.objects("tags")
    for what, items, limit in (("metrics", metrics, MAX_METRICS), ("params", params, MAX_PARAMS),
                               ("tags", tags, MAX_TAGS)):  # fmt: skip
        if len(items) > limit:
            raise bad(f"a batch holds at most {limit} {what}; this one has {len(items)}")
    if len(metrics) + len(params) + len(tags) > MAX_ENTRIES:
        raise bad(f"a batch holds at most {MAX_ENTRIES} metrics, params and tags in all")
    points = [_metric(m, f" (metrics[{i}])") for i, m in enumerate(metrics)]
    new_params = _params(params)
    new_tags = {_key(t.get("key"), "tag"): _text(t.get("value"), "tag value", MAX_TAG_VALUE)
                for t in tags}  # fmt: skip
    if not (points or new_params):  # tags alone may change a recorded run (the overlay)
        if new_tags:
            _set_tags(call, rid, new_tags)
        elif store_of(call).touch(rid) is None and store_of(call).run_record(rid) is None:
            raise not_found(f"no run with id {rid!r}")
        else:
            store_of(call).check_active(rid)
        return {}
    opened = _open_or_refuse(call, rid)
    _log_params(opened, new_params)
    if new_tags:
        with opened.lock:
            _mlvc(opened.run.set_tags, new_tags)
    _log_points(call, opened, _not_copies(store_of(call), rid, metrics, points))
    return {}


def _extra_list(call, field: str, items: list) -> dict:
    opened = _open_or_refuse(call, _run_id(Args(call)))
    with opened.lock:
        extra = opened.run.staged.meta.setdefault("extra", {})
        extra[field] = [*(extra.get(field) or []), *items][:1000]
        opened.run.save()
    return {}


def log_inputs(call):
    args = Args(call)
    datasets = args.objects("datasets")
    models = args.objects("models")
    return _extra_list(call, "mlflow_inputs", datasets + models)


def log_outputs(call):
    return _extra_list(call, "mlflow_outputs", Args(call).objects("models"))


def log_model(call):
    args = Args(call)
    text = _text(args.raw("model_json"), "model_json", 1_000_000)
    opened = _open_or_refuse(call, _run_id(args))
    with opened.lock:
        extra = opened.run.staged.meta.setdefault("extra", {})
        extra["mlflow_models"] = [*(extra.get("mlflow_models") or []), text][:100]
        opened.run.save()
    return {}


# -- metric history --------------------------------------------------------------------------


def _history(store: TrackingStore, rid: str, key: str) -> list[tuple]:
    """(step, timestamp µs, value) of one metric of one run, in logged order by step."""
    opened = store.open.get(rid)
    if opened is not None:
        with opened.lock:
            opened.run.flush()
            table = opened.run.staged.read_series()
    else:
        found = store.run_record(rid)
        if found is None:
            raise not_found(f"no run with id {rid!r}")
        run = found[1]
        if run.series is None:
            return [(0, run.ended, float(run.metrics[key]))] if key in run.metrics else []
        try:
            table = _read_series(store, run.series)
        except ValueError as e:  # damaged, or a Parquet blob that would inflate past its bound
            message = f"run {rid}'s metric series is unreadable: {e}"
            raise ApiError(500, "INTERNAL_ERROR", message) from None
    pts = [(s, t, v) for k, s, t, v in _series_points(table) if k == key]
    return sorted(pts, key=lambda p: (p[0], p[1]))


def get_history(call):
    args = Args(call)
    rid = _run_id(args)
    key = _key(args.raw("metric_key"), "metric")
    size = args.integer("max_results", default=25000)
    if not 1 <= size <= 25000:
        raise bad("parameter 'max_results' must be between 1 and 25000")
    start = _page(args.string("page_token"))
    pts = _history(store_of(call), rid, key)
    page = pts[start : start + size]
    out: dict[str, Any] = {"metrics": [metric_out(key, v, t // 1000, s) for s, t, v in page]}
    if start + size < len(pts):
        out["next_page_token"] = _token(start + size)
    return out


def get_history_bulk_interval(call):
    args = Args(call)
    rids = args.strings("run_ids")
    if not rids:
        raise bad("missing value for required parameter 'run_ids'")
    if len(rids) > 100:
        raise bad("parameter 'run_ids' holds at most 100 runs")
    key = _key(args.raw("metric_key"), "metric")
    lo, hi = args.integer("start_step"), args.integer("end_step")
    size = args.integer("max_results", default=320)
    if not 1 <= size <= 2500:
        raise bad("parameter 'max_results' must be between 1 and 2500")
    out = []
    for rid in rids:
        pts = [p for p in _history(store_of(call), rid, key)
               if (lo is None or p[0] >= lo) and (hi is None or p[0] <= hi)]  # fmt: skip
        for s, t, v in _sample(pts, size):
            out.append({**metric_out(key, v, t // 1000, s), "run_id": rid})
    return {"metrics": out}


def _sample(pts: list[tuple], n: int) -> list[tuple]:
    """At most ``n`` points spread evenly by position, the first and last kept."""
    if len(pts) <= n:
        return pts
    if n == 1:
        return pts[-1:]
    idx = sorted({round(i * (len(pts) - 1) / (n - 1)) for i in range(n)})
    return [pts[i] for i in idx]
