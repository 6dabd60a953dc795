"""``runs/search`` and ``experiments/search``: MLflow filter strings, ``order_by`` and page
tokens.

A filter is conditions joined by AND: ``metrics.acc > 0.5``, ``params.lr = '0.01'``,
``tags.team LIKE 'v%'``, ``attributes.status = 'FINISHED'``, ``run_name ILIKE '%a%'``,
``attributes.start_time >= 1700000000000``, ``tags.t IN ('a', 'b')``. Each condition is
translated twice: to SQL over the index (recorded runs: semi-joins on ``params``, ``tags``
and ``metric_summary``, ORDER BY and LIMIT pushed down, so no run is loaded in Python), and
to a Python test over the server's open runs. Both are merged in one order; the page token
is the offset into that order, which is total (ties broken by run id), hence stable.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Callable
from typing import Any

from ...index.mlflow_filter import (
    DEFAULT_RESULTS,
    MAX_RESULTS,
    RID,
    VIEW_TYPES,
    Cond,
    parse_filter,
    parse_order,
    runs_sql,
)
from .wire import bad


def live_keys(store, con, oids: list[str]) -> dict[str, str]:
    """The MLflow run id of each recorded run in ``oids``: its live key (the least, for a
    run with two, never made by this server), else its object id. Kept runs (``store.pages``)
    are not looked up."""
    out: dict[str, str] = {}
    missing = []
    for oid in oids:
        rid = store.pages.run_id(oid)
        if rid is None:
            missing.append(oid)
        else:
            out[oid] = rid
    if missing:
        found = con.execute(
            "SELECT run_id, min(live_key) FROM live_keys WHERE run_id IN "
            "(SELECT unnest(?::VARCHAR[])) GROUP BY run_id",
            [missing],
        ).fetchall()
        keys = dict(found)
        out.update({oid: keys.get(oid) or oid for oid in missing})
    return out


def overlay_tags(store) -> tuple[list[tuple], list[tuple]]:
    """Tags changed after runs ended (the overlay): [(rid, key, value)] set, and
    [(rid, key)] whose recorded value no longer holds (set again or deleted)."""
    rows, masks = [], []
    for rid, ov in list(store.overlays.items()):
        tags = dict(ov.get("tags") or {})
        if ov.get("name"):
            tags["mlflow.runName"] = ov["name"]
        rows += [(rid, k, str(v)) for k, v in tags.items()]
        masks += [(rid, k) for k in {*tags, *(ov.get("deleted_tags") or [])}]
    return rows, masks


# -- Python over open runs ----------------------------------------------------------------------


def _value_of(run: dict, family: str, key: str) -> Any:
    if family == "attributes":
        return run["info"].get(key)
    items = run["data"][family]
    for item in items:
        if item["key"] == key:
            v = item["value"]
            if family == "metrics":
                return float(v) if not isinstance(v, str) else float(v.replace("inity", ""))
            return v
    return None


def _like(pattern: str, text: str, fold: bool) -> bool:
    rx = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern)
    return re.fullmatch(rx, text, re.S | (re.I if fold else 0)) is not None


def _matches(run: dict, c: Cond) -> bool:
    v = _value_of(run, c.family, c.key)
    if v is None:
        return False
    if c.op == "IN":
        return v in c.value
    if c.op == "NOT IN":
        return v not in c.value
    if c.op in ("LIKE", "ILIKE"):
        return _like(c.value, str(v), c.op == "ILIKE")
    a, b = v, c.value
    if isinstance(b, float):
        a = float(a)
    ops = {"=": a == b, "!=": a != b}
    if c.op in ops:
        return ops[c.op]
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[c.op]


def _cmp(order, x: tuple, y: tuple) -> int:
    for (_, _, asc), a, b in zip(order, x[2:], y[2:], strict=False):
        if a == b:
            continue
        if a is None:
            return 1
        if b is None:
            return -1
        try:
            lt = a < b
        except TypeError:
            lt = str(a) < str(b)
        return (-1 if lt else 1) * (1 if asc else -1)
    return (_tb(x) > _tb(y)) - (_tb(x) < _tb(y))


def _tb(row: tuple) -> str:
    """The tie-breaker: a recorded run's object id, an open run's key."""
    return row[1] if isinstance(row[1], str) else row[0]


# -- the handlers' halves ---------------------------------------------------------------------------


def token_for(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def offset_of(token: str | None) -> int:
    if not token:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
    except (ValueError, TypeError, KeyError):
        raise bad("parameter 'page_token' is not a token this server gave") from None
    if type(offset) is not int or not 0 <= offset <= 10**9:
        raise bad("parameter 'page_token' is not a token this server gave")
    return offset


def _max_results(args, default: int = DEFAULT_RESULTS, limit: int = MAX_RESULTS) -> int:
    n = args.integer("max_results", default=default)
    if not 1 <= n <= limit:
        raise bad(f"parameter 'max_results' must be between 1 and {limit}, not {n}")
    return n


def _view(args) -> tuple[str, ...]:
    view = str(args.raw("run_view_type") or args.raw("view_type") or "ACTIVE_ONLY")
    if view not in VIEW_TYPES:
        raise bad(f"parameter 'run_view_type' must be ACTIVE_ONLY, DELETED_ONLY or ALL, "
                  f"not {view!r}")  # fmt: skip
    return VIEW_TYPES[view]


def search_runs(
    store, args, open_json: Callable, recorded_page: Callable
) -> tuple[list, str | None]:
    """A page of runs and the next page's token. ``open_json(store, opened)`` answers an
    open run; ``recorded_page(store, con, [(run_id, object id)])`` answers recorded runs
    from the index (one query per table, for the page only)."""
    experiment_ids = args.strings("experiment_ids")
    if not experiment_ids:
        raise bad("missing value for required parameter 'experiment_ids'")
    conds = parse_filter(args.string("filter"))
    order = parse_order(args.strings("order_by")) or [("attributes", "start_time", False)]
    n = _max_results(args)
    offset = offset_of(args.string("page_token"))
    stages = _view(args)
    life = [c for c in conds if c.family == "attributes" and c.key == "lifecycle_stage"]
    for c in life:  # the stage is the overlay's, so it narrows the view instead of the SQL
        view = {"info": {"lifecycle_stage": None}, "data": {}}
        kept = []
        for stage in stages:
            view["info"]["lifecycle_stage"] = stage
            if _matches(view, c):
                kept.append(stage)
        stages = tuple(kept)
    conds = [c for c in conds if c not in life]
    if not stages:
        return [], None
    dead, alive, gone = store.lifecycle()
    want = offset + n + 1

    # open runs: few, tested in Python
    rows: list[tuple] = []
    for opened in list(store.open.values()):
        if opened.experiment_id not in experiment_ids:
            continue
        run = open_json(store, opened)
        stage = run["info"]["lifecycle_stage"]
        if stage not in stages or not all(_matches(run, c) for c in conds):
            continue
        keys = [_value_of(run, f, k) for f, k, _ in order]
        rows.append((run["info"]["run_id"], run, *keys))

    # recorded runs: SQL over the index, ORDER BY and LIMIT pushed down
    # a run's stage: its own (the overlay) or its experiment's, whichever was set last
    gone_exps = "r.experiment_id IN (SELECT eid FROM _mlflow_gone)"
    deleted_filter = ""
    if stages == ("active",) and (dead or gone):
        deleted_filter = (f"{RID} NOT IN (SELECT rid FROM _mlflow_dead) AND "
                          f"({RID} IN (SELECT rid FROM _mlflow_alive) OR NOT {gone_exps})")  # fmt: skip
    elif stages == ("deleted",):
        deleted_filter = (f"({RID} IN (SELECT rid FROM _mlflow_dead) OR "
                          f"({RID} NOT IN (SELECT rid FROM _mlflow_alive) AND {gone_exps}))")  # fmt: skip
    tags = overlay_tags(store)
    sql = runs_sql(conds, order, experiment_ids, deleted_filter, want, bool(tags[0] or tags[1]))
    import pyarrow as pa

    def table(names: tuple, rows) -> dict:
        rows = list(rows)
        return {n: pa.array([r[i] for r in rows], pa.string()) for i, n in enumerate(names)}

    tables = {
        "_mlflow_dead": table(("rid",), ((r,) for r in sorted(dead))),
        "_mlflow_alive": table(("rid",), ((r,) for r in sorted(alive))),
        "_mlflow_gone": table(("eid",), ((e,) for e in sorted(gone))),
        "_mlflow_tags": table(("rid", "key", "value"), tags[0]),
        "_mlflow_masks": table(("rid", "key"), tags[1]),
    }
    with store.ctx.index.connect_readonly() as con:
        for name, cols in tables.items():
            con.register(name, pa.table(cols))
        try:
            found = con.execute(sql).fetchall()
        finally:
            for name in tables:
                con.unregister(name)
        open_ids = set(store.open)
        rids = live_keys(store, con, [r[0] for r in found])
        for r in found:
            if rids[r[0]] not in open_ids:  # a run ending right now: answered as open
                rows.append((rids[r[0]], r[0], *r[1:]))
        rows.sort(key=functools.cmp_to_key(lambda x, y: _cmp(order, x, y)))
        page = rows[offset : offset + n]
        recorded = recorded_page(store, con, [(r[0], r[1]) for r in page if isinstance(r[1], str)])
    runs = []
    for rid, what, *_ in page:
        run = what if isinstance(what, dict) else recorded[rid]
        runs.append(run)
    token = token_for(offset + n) if len(rows) > offset + n else None
    return runs, token


def search_experiments(store, args) -> tuple[list[dict], str | None]:
    conds = parse_filter(args.string("filter"))
    n = _max_results(args, DEFAULT_RESULTS, MAX_RESULTS)
    offset = offset_of(args.string("page_token"))
    stages = _view(args)
    order = []
    for item in args.strings("order_by") or ["last_update_time DESC"]:
        parts = item.split()
        key = parts[0].split(".")[-1]
        if key not in ("name", "experiment_id", "creation_time", "last_update_time"):
            raise bad(f"invalid order_by clause {item!r}")
        order.append((key, len(parts) < 2 or parts[1].upper() != "DESC"))
    exps = []
    for exp in store.experiments.values():
        if exp["lifecycle_stage"] not in stages:
            continue
        ok = True
        for c in conds:
            if c.family == "tags":
                v = (exp.get("tags") or {}).get(c.key)
            elif c.key in ("run_name", "name"):
                v = exp["name"]
            else:
                v = exp.get(c.key)
            view = {"info": {c.key: v}, "data": {"tags": [{"key": c.key, "value": v}]}}
            if v is None or not _matches(view, c):
                ok = False
                break
        if ok:
            exps.append(exp)
    for key, asc in reversed(order):
        exps.sort(key=lambda e, k=key: (int(e[k]) if k == "experiment_id" and
                                        str(e[k]).isdigit() else e[k]),
                  reverse=not asc)  # fmt: skip
    token = token_for(offset + n) if len(exps) > offset + n else None
    return exps[offset : offset + n], token
