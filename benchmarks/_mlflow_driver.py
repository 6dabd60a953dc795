"""MLflow's side of bench_tracking.py, run in benchmarks/.mlflow-venv (see peers_mlflow.sh).

Run as ``.mlflow-venv/bin/python _mlflow_driver.py COMMAND ARGS...``; each command prints one
JSON object on stdout. mlflow is imported inside the commands only, so bench_tracking.py (in
mlvc's venv, without mlflow) can import ``synthetic`` from here and generate the very same
runs for mlvc: both sides then answer the same query with the same values.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid

BATCH = 1000  # runs per generated batch; run i lives in batch i // BATCH
PARAMS, METRICS, STEPS = 20, 5, 100
BASE_US = 1_700_000_000_000_000


def synthetic(batch: int, m: int, seed: int = 1):
    """(values[m, METRICS*STEPS], params[m, PARAMS]) of batch ``batch``: uniform in [0, 1).

    Metric k of run j is ``values[j, k*STEPS:(k+1)*STEPS]`` at steps 0..STEPS-1; param k is
    ``params[j, k]``. Seeded per batch, so any process can make any batch.
    """
    import numpy as np

    rng = np.random.default_rng([seed, batch])
    return rng.random((m, METRICS * STEPS)), rng.random((m, PARAMS))


def emit(obj) -> None:
    print(json.dumps(obj), flush=True)


def _mlflow(uri: str):
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow


# -- 1. log_metric in one run ----------------------------------------------------------------


def cmd_logmetric(uri: str, n_max: str, budget: str, reps: str, batch_points: str, async_pts: str):
    """Per rep: log_metric in a loop (at most n_max points or ``budget`` seconds), then
    log_batch of batch_points points in calls of 1,000, then log_metric(synchronous=False)."""
    t0 = time.perf_counter()
    mlflow = _mlflow(uri)
    from mlflow.entities import Metric

    out = {"import_s": time.perf_counter() - t0, "version": mlflow.__version__}
    t0 = time.perf_counter()
    with mlflow.start_run(run_name="warm-up"):
        mlflow.log_metric("x", 1.0, step=0)
    out["first_run_s"] = time.perf_counter() - t0  # creates the schema
    out["sync"], out["batch"], out["async"] = [], [], []
    n_max, budget = int(n_max), float(budget)
    for _rep in range(int(reps)):
        with mlflow.start_run(run_name="log_metric") as run:
            t0 = time.perf_counter()
            deadline = t0 + budget
            n = 0
            while n < n_max and (n % 50 or time.perf_counter() < deadline):
                mlflow.log_metric("loss", n * 0.001, step=n)
                n += 1
            t1 = time.perf_counter()
        t2 = time.perf_counter()
        out["sync"].append({"points": n, "calls_s": t1 - t0, "total_s": t2 - t0})

        client = mlflow.MlflowClient()
        with mlflow.start_run(run_name="log_batch") as run:
            rid = run.info.run_id
            t0 = time.perf_counter()
            ts = int(time.time() * 1000)
            npts = int(batch_points)
            for b0 in range(0, npts, 1000):
                ms = [Metric("loss", i * 0.001, ts, i) for i in range(b0, min(b0 + 1000, npts))]
                client.log_batch(rid, metrics=ms, synchronous=True)
            t1 = time.perf_counter()
        t2 = time.perf_counter()
        out["batch"].append({"points": npts, "calls_s": t1 - t0, "total_s": t2 - t0})

        try:
            with mlflow.start_run(run_name="async") as run:
                t0 = time.perf_counter()
                npts = int(async_pts)
                for i in range(npts):
                    mlflow.log_metric("loss", i * 0.001, step=i, synchronous=False)
                t1 = time.perf_counter()
                mlflow.flush_async_logging()
            t2 = time.perf_counter()
            out["async"].append({"points": npts, "calls_s": t1 - t0, "total_s": t2 - t0})
        except Exception as e:  # older MLflow without async logging
            out["async_error"] = f"{type(e).__name__}: {e}"
    # every point must be there
    runs = mlflow.search_runs(output_format="list", max_results=1000)
    out["stored"] = {}
    for r in runs:
        if r.info.run_name in ("log_metric", "log_batch", "async"):
            hist = client.get_metric_history(r.info.run_id, "loss")
            out["stored"].setdefault(r.info.run_name, []).append(len(hist))
    emit(out)


# -- 2. commit overhead of a small run --------------------------------------------------------


def cmd_commit(uri: str, reps: str, points: str):
    """start_run + log_params(10) + ``points`` x log_metric + end_run; the metric loop is
    timed on its own and subtracted by the caller."""
    t0 = time.perf_counter()
    mlflow = _mlflow(uri)
    out = {"import_s": time.perf_counter() - t0}
    params = {f"p{i}": i * 0.1 for i in range(10)}
    t0 = time.perf_counter()
    with mlflow.start_run(run_name="warm-up"):
        mlflow.log_params(params)
    out["first_run_s"] = time.perf_counter() - t0
    out["runs"] = []
    for rep in range(int(reps)):
        t0 = time.perf_counter()
        with mlflow.start_run(run_name=f"small-{rep}"):
            mlflow.log_params(params)
            ta = time.perf_counter()
            for i in range(int(points)):
                mlflow.log_metric("loss", i * 0.01, step=i)
            tb = time.perf_counter()
        t1 = time.perf_counter()
        out["runs"].append(
            {"total_s": t1 - t0, "log_s": tb - ta, "start_s": ta - t0, "end_s": t1 - tb}
        )
    emit(out)


# -- 3. concurrent writers ---------------------------------------------------------------------


def cmd_storm_writer(uri: str, writer: str, runs: str, points: str):
    """Import, say ready, wait for a line on stdin, then record ``runs`` runs; every
    exception is printed (stderr) and counted, and the writer goes on with its next run."""
    import traceback

    mlflow = _mlflow(uri)
    from mlflow.entities import Metric

    client = mlflow.MlflowClient()
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.time()
    done, errors, ids = 0, 0, []
    for i in range(int(runs)):
        try:
            with mlflow.start_run(run_name=f"w{writer}-{i}") as run:
                mlflow.log_params({"writer": writer, "i": i, "lr": 0.001 * (i + 1)})
                ts = int(time.time() * 1000)
                ms = [Metric("loss", 1.0 / (s + 1), ts, s) for s in range(int(points))]
                client.log_batch(run.info.run_id, metrics=ms)
            ids.append(run.info.run_id)
            done += 1
        except Exception:
            errors += 1
            traceback.print_exc()
    emit({"start": t0, "end": time.time(), "done": done, "errors": errors, "ids": ids})


def cmd_storm_reader(uri: str, stop: str):
    """search_runs in a loop until the stop file appears; counts answers and errors."""
    import traceback

    mlflow = _mlflow(uri)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("Default").experiment_id
    print("ready", flush=True)
    ok, errors, lat = 0, 0, []
    while not os.path.exists(stop):
        t0 = time.perf_counter()
        try:
            client.search_runs([exp], order_by=["attributes.start_time DESC"], max_results=5)
            ok += 1
        except Exception:
            errors += 1
            traceback.print_exc()
        lat.append(time.perf_counter() - t0)
        time.sleep(0.05)
    emit({"ok": ok, "errors": errors, "latency": lat})


def cmd_storm_count(uri: str):
    mlflow = _mlflow(uri)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("Default").experiment_id
    runs = client.search_runs([exp], max_results=50000)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    points = 0
    for r in finished:
        points += len(client.get_metric_history(r.info.run_id, "loss"))
    emit(
        {
            "runs": len(runs),
            "finished": len(finished),
            "points": points,
            "ids": [r.info.run_id for r in runs],
        }
    )


# -- 4. many runs and search_runs --------------------------------------------------------------


def cmd_make_runs(db: str, n: str, via_client: str, history: str = "1"):
    """``via_client`` runs through MlflowClient (create_run + log_batch + set_terminated),
    the rest as rows copied from those runs' rows in MLflow's own schema (see README).
    ``history`` "0" leaves those rows' metric history out (``search_runs`` reads only
    ``latest_metrics``): 100k runs of history are 50M rows, about 12 GB of SQLite."""
    mlflow = _mlflow(f"sqlite:///{db}")
    from mlflow.entities import Metric, Param

    n, k = int(n), max(1, int(via_client))
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("Default").experiment_id
    out = {"version": mlflow.__version__}
    t0 = time.perf_counter()
    made = 0
    for b in range(0, (min(k, n) + BATCH - 1) // BATCH):
        values, params = synthetic(b, min(BATCH, n - b * BATCH))
        for j in range(min(BATCH, k - b * BATCH)):
            i = b * BATCH + j
            start_ms = (BASE_US + i * 60_000_000) // 1000
            run = client.create_run(exp, start_time=start_ms, run_name=f"run{i}")
            ms = [
                Metric(f"m{m}", float(values[j, m * STEPS + s]), start_ms + s * 100, s)
                for m in range(METRICS)
                for s in range(STEPS)
            ]
            ms.append(Metric("p1", float(params[j, 1]), start_ms, 0))  # see bench README
            ps = [Param(f"p{p}", repr(float(params[j, p]))) for p in range(PARAMS)]
            client.log_batch(run.info.run_id, metrics=ms, params=ps)
            client.set_terminated(run.info.run_id, end_time=start_ms + 30_000)
            made += 1
    out["client_runs"], out["client_s"] = made, time.perf_counter() - t0
    t0 = time.perf_counter()
    out["bulk_runs"] = _bulk_rows(db, made, n, history != "0")
    out["bulk_s"] = time.perf_counter() - t0
    emit(out)


def _bulk_rows(db: str, first: int, n: int, history: bool) -> int:
    """Insert runs first..n-1 by copying the rows of a client-made run, changing only ids,
    names, times and values; the same tables, columns and indexes MLflow itself fills."""
    import sqlite3

    con = sqlite3.connect(db)
    # Loading speed only; the database is the same afterwards. Ids start with the run's
    # number so rows go in at the end of the run_uuid indexes (MLflow's ids are opaque hex).
    con.execute("PRAGMA synchronous = OFF")
    con.execute("PRAGMA journal_mode = MEMORY")
    (tmpl_id,) = con.execute("SELECT run_uuid FROM runs ORDER BY start_time LIMIT 1").fetchone()
    cols = {}
    for table in ("runs", "tags", "params", "metrics", "latest_metrics"):
        cols[table] = [r[1] for r in con.execute(f"PRAGMA table_info({table})")]
    run_row = dict(
        zip(
            cols["runs"],
            con.execute("SELECT * FROM runs WHERE run_uuid = ?", (tmpl_id,)).fetchone(),
            strict=True,
        )
    )
    tag_rows = [
        dict(zip(cols["tags"], r, strict=True))
        for r in con.execute("SELECT * FROM tags WHERE run_uuid = ?", (tmpl_id,))
    ]

    def insert(table, rows):
        names = cols[table]
        sql = (
            f"INSERT INTO {table} ({', '.join(chr(34) + c + chr(34) for c in names)}) "
            f"VALUES ({', '.join('?' for _ in names)})"
        )
        con.executemany(sql, rows)

    def order(table, **row):
        return tuple(row[c] for c in cols[table])

    # metric rows are made as tuples in column order: 50M of them for 100k runs
    mcols, lcols = cols["metrics"], cols["latest_metrics"]
    m_at = [mcols.index(c) for c in ("key", "value", "timestamp", "run_uuid", "step", "is_nan")]
    l_at = [lcols.index(c) for c in ("key", "value", "timestamp", "run_uuid", "step", "is_nan")]

    def row(at, width, *vals):
        r = [None] * width
        for k, v in zip(at, vals, strict=True):
            r[k] = v
        return tuple(r)

    done = 0
    for b in range(first // BATCH, (n + BATCH - 1) // BATCH):
        values, params = synthetic(b, min(BATCH, n - b * BATCH))
        values, params = values.tolist(), params.tolist()
        lo = max(first, b * BATCH)
        runs, tags, prm, met, latest = [], [], [], [], []
        for i in range(lo, min(n, (b + 1) * BATCH)):
            j = i - b * BATCH
            rid = f"{i:08x}{uuid.uuid4().hex[8:]}"
            start_ms = (BASE_US + i * 60_000_000) // 1000
            r = dict(
                run_row,
                run_uuid=rid,
                name=f"run{i}",
                start_time=start_ms,
                end_time=start_ms + 30_000,
                artifact_uri=run_row["artifact_uri"].replace(tmpl_id, rid),
            )
            runs.append(order("runs", **r))
            for t in tag_rows:
                v = f"run{i}" if t["key"] == "mlflow.runName" else t["value"]
                tags.append(order("tags", **dict(t, run_uuid=rid, value=v)))
            pj = params[j]
            prm += [
                order("params", key=f"p{p}", value=repr(pj[p]), run_uuid=rid) for p in range(PARAMS)
            ]
            vj = values[j]
            w = len(mcols)
            for m in range(METRICS):
                key = f"m{m}"
                for s in range(STEPS):
                    met.append(row(m_at, w, key, vj[m * STEPS + s], start_ms + s * 100, rid, s, 0))
                last = STEPS - 1
                latest.append(
                    row(
                        l_at,
                        len(lcols),
                        key,
                        vj[m * STEPS + last],
                        start_ms + last * 100,
                        rid,
                        last,
                        0,
                    )
                )
            met.append(row(m_at, w, "p1", pj[1], start_ms, rid, 0, 0))
            latest.append(row(l_at, len(lcols), "p1", pj[1], start_ms, rid, 0, 0))
        with con:
            insert("runs", runs)
            insert("tags", tags)
            insert("params", prm)
            if history:
                insert("metrics", met)
            insert("latest_metrics", latest)
        done += len(runs)
    con.close()
    return done


def cmd_search(db: str, reps: str):
    """In one process: import, first search_runs, then ``reps`` warm ones."""
    t0 = time.perf_counter()
    mlflow = _mlflow(f"sqlite:///{db}")
    client = mlflow.MlflowClient()
    out = {"import_s": time.perf_counter() - t0}
    exp = client.get_experiment_by_name("Default").experiment_id
    t0 = time.perf_counter()
    runs = _search(client, exp)
    out["first_s"] = time.perf_counter() - t0
    out["top"] = [r.data.metrics["m0"] for r in runs]
    out["warm"] = []
    for _ in range(int(reps)):
        t0 = time.perf_counter()
        _search(client, exp)
        out["warm"].append(time.perf_counter() - t0)
    out["count"] = con_count(db)
    emit(out)


def cmd_search_once(db: str):
    """A fresh process answering the query once: MLflow's end-to-end figure."""
    mlflow = _mlflow(f"sqlite:///{db}")
    client = mlflow.MlflowClient()
    runs = _search(client, "0")
    emit({"top": [r.data.metrics["m0"] for r in runs]})


def _search(client, exp):
    return client.search_runs(
        [exp], filter_string="metrics.p1 > 0.5", order_by=["metrics.m0 ASC"], max_results=10
    )


def con_count(db: str) -> int:
    import sqlite3

    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT count(*) FROM runs").fetchone()[0]
    finally:
        con.close()


def cmd_version():
    import mlflow

    emit({"version": mlflow.__version__})


COMMANDS = {
    "version": cmd_version,
    "logmetric": cmd_logmetric,
    "commit": cmd_commit,
    "storm-writer": cmd_storm_writer,
    "storm-reader": cmd_storm_reader,
    "storm-count": cmd_storm_count,
    "make-runs": cmd_make_runs,
    "search": cmd_search,
    "search-once": cmd_search_once,
}

if __name__ == "__main__":
    COMMANDS[sys.argv[1]](*sys.argv[2:])
