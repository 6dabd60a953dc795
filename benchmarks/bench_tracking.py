"""Tracking benchmarks (issue 3): live runs from Python, against baselines timed in the same run.

Run as ``.venv/bin/python benchmarks/bench_tracking.py [--quick] [--runs-100k]``; see
benchmarks/README.md. Prints a Markdown report (``--out FILE`` also writes it, ``--json FILE``
the raw samples), progress on stderr.

1. ``log_metric`` rate in one run vs an empty method call and vs MLflow.
2. Commit overhead of a small run (params + 100 points) vs a durable one-file write and MLflow;
   cProfile of where it goes.
3. 32 writer processes x 50 runs into one repo while a reader queries: runs/s, lost, errors;
   vs one writer alone, and MLflow's SQLite store under the same storm.
4. Query latency over 10k (and 100k) synthetic runs, warm and cold, CLI and in-process, vs
   MLflow's ``search_runs`` on its SQLite store holding the same runs.
5. Start-up of ``mlvc --help`` and ``mlvc log`` vs ``python -c pass``.

The machine is small and shared: figures are medians of repetitions, and each is set beside
a baseline timed in the same repetition. Library-side steps run in child processes (this file
with ``--child``), MLflow's in its own venv (``_mlflow_driver.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _mlflow_driver import BASE_US, BATCH, METRICS, PARAMS, STEPS, synthetic  # noqa: E402
from bench_foundation import (  # noqa: E402
    CHILD_ENV,
    CommandFailed,
    can_drop_caches,
    drop_caches,
    rmtree,
    run,
    table,
    wait_for_index,
)

REPO = HERE.parent
PYTHON = sys.executable
MLVC = str(Path(sys.executable).parent / "mlvc")
MLFLOW_PY = HERE / ".mlflow-venv" / "bin" / "python"
DRIVER = str(HERE / "_mlflow_driver.py")
SELF = str(Path(__file__).resolve())

QUERY = (
    'SELECT id, "params.p0", "metrics.m0" FROM runs_wide WHERE "params.p1" > 0.5 '
    'ORDER BY "metrics.m0" LIMIT 10'
)
MLFLOW_QUERY = (
    'search_runs(filter_string="metrics.p1 > 0.5", order_by=["metrics.m0 ASC"], max_results=10)'
)


# -- helpers ---------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def med(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def p95(xs) -> float | None:
    """The 95th percentile (nearest rank)."""
    xs = sorted(x for x in xs if x is not None)
    return xs[max(0, -(-len(xs) * 95 // 100) - 1)] if xs else None


def paired(a: list[float], b: list[float]) -> float | None:
    """Median of per-repetition ratios a[i] / b[i]."""
    return med([x / y for x, y in zip(a, b, strict=False) if y])


def fs(v: float | None) -> str:
    if v is None:
        return "–"
    if v < 0.001:
        return f"{v * 1e6:.0f} µs"
    if v < 1:
        return f"{v * 1000:.1f} ms"
    return f"{v:.2f} s"


def fx(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.3g}x" if v < 100 else f"{v:,.0f}x"


def frate(v: float | None) -> str:
    return "–" if v is None else f"{v:,.0f}"


def last_json(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError(f"no JSON in output: {text.strip()[-300:]!r}")


def child(cwd: Path | str, *args: str) -> dict:
    return last_json(run([PYTHON, SELF, "--child", *map(str, args)], cwd).out)


def mlflow_child(cwd: Path | str, *args: str) -> dict:
    return last_json(run([str(MLFLOW_PY), DRIVER, *map(str, args)], cwd).out)


def mlflow_version() -> str:
    if not MLFLOW_PY.exists():
        return ""
    try:
        p = subprocess.run(
            [str(MLFLOW_PY), DRIVER, "version"], capture_output=True, text=True, timeout=300
        )
        return last_json(p.stdout)["version"] if p.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError, ValueError):
        return ""


def make_project(root: Path, runs: int = 0) -> Path:
    """A small training project under git, as most are, with an mlvc repository."""
    root.mkdir(parents=True)
    (root / "train.py").write_text(
        "import mlvc\n\nwith mlvc.start_run(params={'lr': 0.01}) as run:\n"
        "    for step in range(100):\n        run.log_metric('loss', 1 / (step + 1))\n"
    )
    (root / "README.md").write_text("# a project\n")
    (root / "conf").mkdir()
    (root / "conf" / "model.yaml").write_text("layers: 4\nhidden: 256\n")
    for cmd in (["git", "init", "-q"], ["git", "add", "."], ["git", "commit", "-qm", "start"]):
        run(cmd, root)
    run([MLVC, "init"], root)
    for i in range(runs):
        run([MLVC, "commit", "-q", "-m", f"run {i}", "-p", f"lr={i}"], root)
        wait_for_index(root)
    return root


# -- children: library steps in a fresh process ------------------------------------------------


class Floor:
    """The floor of any ``log_metric``: a Python method call that does nothing."""

    def log_metric(self, key, value, step=None, timestamp=None):
        pass


def child_logmetric(root: str, n: str, reps: str) -> dict:
    import mlvc

    repo = mlvc.Repo(root)
    n = int(n)
    with mlvc.start_run(name="warm-up", repo=repo) as r:  # lazy imports, first capture
        r.log_metric("x", 1.0)
    out = {"floor": [], "calls": [], "total": [], "indexed": [], "ids": [], "stored": 0}
    for rep in range(int(reps)):
        f = Floor()
        t0 = time.perf_counter()
        for i in range(n):
            f.log_metric("loss", i * 0.001, step=i)
        out["floor"].append(time.perf_counter() - t0)
        with mlvc.start_run(name=f"log-metric-{rep}", repo=repo) as r:
            t0 = time.perf_counter()
            for i in range(n):
                r.log_metric("loss", i * 0.001, step=i)
            t1 = time.perf_counter()
        t2 = time.perf_counter()
        # a query waits for the index worker the commit started, then sees the points
        got = repo.query(f"SELECT count(*) FROM metrics WHERE run_id = '{r.id}'").column(0)[0]
        t3 = time.perf_counter()
        out["calls"].append(t1 - t0)
        out["total"].append(t2 - t0)
        out["indexed"].append(t3 - t0)
        out["ids"].append(r.id)
        out["stored"] += got.as_py()
    return out


def child_logratio(root: str, n: str, chunk: str, reps: str, pure: str = "0") -> dict:
    """log_metric against a bare ``points.append(("loss", v, i))`` loop in this process, robust
    to the load of a shared machine: each repetition logs ``n`` points in one run and appends
    ``n`` tuples to one list, alternating chunks of ``chunk`` points between the two (which one
    goes first alternates too), so both see the same load at nearly the same moments (and the
    list grows, as a buffer of every point must). Per repetition: the CPU ratio of the summed
    thread CPU times (this thread's, plus all the CPU of the run's flusher thread on mlvc's
    side: a flush must not count against the bare loop when it lands in its chunk), and the
    wall ratio as the median of the chunks' ratios (a load spike spoils one chunk, not the
    repetition). ``pure`` "1": MLVC_PURE=1, the pure-Python path."""
    if pure == "1":
        os.environ["MLVC_PURE"] = "1"  # before mlvc is imported: its one switch
    import mlvc

    repo = mlvc.Repo(root)
    n, chunk = int(n), int(chunk)
    tc, pt = time.thread_time, time.perf_counter
    with mlvc.start_run(name="warm-up", repo=repo) as r:  # lazy imports, first flush
        for _ in range(chunk):
            r.log_metric("x", 1.0)
        time.sleep(1.2)
    out = {k: [] for k in ("wall", "cpu", "bare_ns", "mlvc_ns", "bare_cpu_ns", "mlvc_cpu_ns")}
    out["flush_cpu_ns"] = []
    out["compiled"] = type(r.log_metric).__name__ == "builtin_function_or_method"

    def bare(c: int, points: list) -> tuple[float, float]:
        c0, t0 = tc(), pt()
        for i in range(c, c + chunk):
            points.append(("loss", i * 0.001, i))
        return pt() - t0, tc() - c0

    def logged(c: int, r) -> tuple[float, float]:
        c0, t0 = tc(), pt()
        for i in range(c, c + chunk):
            r.log_metric("loss", i * 0.001, step=i)
        return pt() - t0, tc() - c0

    for _rep in range(int(reps)):
        bw = bc = mw = mc = 0.0
        ratios = []
        points: list = []
        with mlvc.start_run(name=f"log-ratio-{_rep}", repo=repo) as r:
            clock = time.pthread_getcpuclockid(r._flusher.ident)
            f0 = time.clock_gettime(clock)
            for k, c in enumerate(range(0, n, chunk)):
                if k % 2:
                    (w2, c2), (w1, c1) = logged(c, r), bare(c, points)
                else:
                    (w1, c1), (w2, c2) = bare(c, points), logged(c, r)
                ratios.append(w1 / w2)
                bw, bc, mw, mc = bw + w1, bc + c1, mw + w2, mc + c2
            flush = time.clock_gettime(clock) - f0  # while the thread lives
            r._stop.set()
            r._flusher.join()
            r._flusher = None  # joined: end() need not
            c0 = tc()
            r.flush()  # the last points, counted before leaving the block
            flush += tc() - c0
        del points
        mc += flush
        out["wall"].append(statistics.median(ratios))
        out["cpu"].append(bc / mc)
        out["bare_ns"].append(bw / n * 1e9)
        out["mlvc_ns"].append(mw / n * 1e9)
        out["bare_cpu_ns"].append(bc / n * 1e9)
        out["mlvc_cpu_ns"].append(mc / n * 1e9)
        out["flush_cpu_ns"].append(flush / n * 1e9)
    return out


def child_commit(root: str, reps: str, points: str, profile_runs: str) -> dict:
    import cProfile
    import io
    import pstats

    import mlvc

    repo = mlvc.Repo(root)
    params = {f"p{i}": i * 0.1 for i in range(10)}
    n = int(points)

    def small(name: str, prof=None) -> dict:
        if prof:
            prof.enable()
        t0 = time.perf_counter()
        with mlvc.start_run(name=name, params=params, repo=repo) as r:
            ta = time.perf_counter()
            for i in range(n):
                r.log_metric("loss", 1.0 / (i + 1), step=i)
            tb = time.perf_counter()
        t1 = time.perf_counter()
        if prof:
            prof.disable()
        # until a query sees the run: it waits for the index worker the commit started
        seen = repo.query(f"SELECT count(*) FROM runs WHERE id = '{r.id}'").column(0)[0]
        t2 = time.perf_counter()
        wait_for_index(Path(root))  # the worker must not run on the next run's time
        return {
            "total": t1 - t0,
            "log": tb - ta,
            "start": ta - t0,
            "end": t1 - tb,
            "indexed": t2 - t1,
            "seen": seen.as_py(),
        }

    out = {"first": small("first"), "runs": [], "floor": []}
    for rep in range(int(reps)):
        out["floor"].append(durable_write(Path(root) / ".floor"))
        out["runs"].append(small(f"small-{rep}"))
    prof = cProfile.Profile()
    for rep in range(int(profile_runs)):
        small(f"profiled-{rep}", prof)
    stats = pstats.Stats(prof)
    out["profile_runs"] = int(profile_runs)
    out["profile_total"] = stats.total_tt
    out["profile"] = profile_rows(stats, int(profile_runs))
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(r"mlvc/", 30)
    out["profile_text"] = buf.getvalue()
    return out


def durable_write(folder: Path) -> float:
    """The least a durable commit does: one small file, temp + fsync + rename + dir fsync."""
    folder.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    tmp = folder / f".tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(os.urandom(1024))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / "record")
    fd = os.open(folder, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    return time.perf_counter() - t0


def profile_rows(stats, runs: int) -> list[list]:
    """Cumulative seconds per run of mlvc's functions (and the duckdb/sync calls they make),
    biggest first; the ``with`` block's own wrappers are left out."""
    wrappers = {"__exit__", "end", "_conclude", "commit", "record_run", "small", "start_run"}
    rows = []
    for (path, line, func), (_cc, ncalls, _tt, cum, _callers) in stats.stats.items():
        if "/mlvc/" not in path or func in wrappers or func.startswith("<"):
            continue
        rel = path.split("/mlvc/", 1)[1]
        rows.append([f"mlvc/{rel}:{line} {func}", ncalls / runs, cum / runs])
    rows.sort(key=lambda r: -r[2])
    return rows[:25]


def child_storm_writer(root: str, writer: str, runs: str, points: str) -> None:
    """Import, say ready, wait for a line on stdin, then record ``runs`` small runs."""
    import traceback

    import mlvc

    repo = mlvc.Repo(root)
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.time()
    done, errors, ids = 0, 0, []
    for i in range(int(runs)):
        try:
            params = {"writer": int(writer), "i": i, "lr": 0.001 * (i + 1)}
            with mlvc.start_run(name=f"w{writer}-{i}", params=params, repo=repo) as r:
                for s in range(int(points)):
                    r.log_metric("loss", 1.0 / (s + 1), step=s)
            ids.append(r.id)
            done += 1
        except Exception:
            errors += 1
            traceback.print_exc()
    print(
        json.dumps({"start": t0, "end": time.time(), "done": done, "errors": errors, "ids": ids}),
        flush=True,
    )


STORM_OPS = ("mlvc query", "Repo.log", "mlvc log -n 5", "Repo.query")
STORM_BASELINES = {
    "python -c pass": [PYTHON, "-c", "pass"],
    "python: import duckdb, select 1": [
        PYTHON,
        "-c",
        "import duckdb; duckdb.connect().execute('select 1')",
    ],
}


def child_storm_reader(root: str, stop: str) -> None:
    """Until the stop file appears: `mlvc query`, Repo.log, `mlvc log`, Repo.query and two
    baselines in turn (a bare ``python -c pass`` and a python that imports duckdb and runs
    ``select 1``: the floor of any `mlvc query` process in the same storm).
    Any non-zero exit, exception or stderr output is an error."""
    import resource
    import traceback

    import mlvc
    from mlvc.index import lock as index_lock

    repo = mlvc.Repo(root)
    waited = [0.0]  # seconds this process spent in IndexLock.take (waiting for the index lock)
    take = index_lock.IndexLock.take

    def timed_take(self, exclusive, wait):
        t = time.perf_counter()
        try:
            return take(self, exclusive, wait)
        finally:
            waited[0] += time.perf_counter() - t

    index_lock.IndexLock.take = timed_take
    print("ready", flush=True)
    ops: dict[str, list[float]] = {k: [] for k in (*STORM_OPS, *STORM_BASELINES)}
    # where each call's wall time went: CPU (the child's, for commands), time runnable but
    # not running (/proc/self/schedstat, in-process calls only) and waiting for the index lock
    parts: dict[str, dict[str, list[float | None]]] = {
        k: {"cpu": [], "runq": [], "lock": []} for k in ops
    }

    def usage():
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            with open("/proc/self/schedstat") as f:
                runq = int(f.read().split()[1]) / 1e9
        except OSError:
            runq = 0.0
        return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime, runq, waited[0]

    errors: list[str] = []
    cli = {
        "mlvc query": [MLVC, "query", "--format", "csv", "SELECT count(*) AS n FROM runs"],
        "mlvc log -n 5": [MLVC, "log", "-n", "5"],
        **STORM_BASELINES,
    }
    k = 0
    while not os.path.exists(stop):
        name = list(ops)[k % len(ops)]
        k += 1
        t0 = time.perf_counter()
        u0 = usage()
        try:
            if name in cli:
                p = subprocess.run(
                    cli[name], cwd=root, capture_output=True, text=True, env=CHILD_ENV, timeout=120
                )
                if p.returncode != 0 or p.stderr.strip():
                    errors.append(f"{name}: exit {p.returncode}: {p.stderr.strip()[-300:]}")
            elif name == "Repo.log":
                repo.log(limit=5)
            else:
                repo.query("SELECT count(*) FROM metrics")
        except Exception as e:
            errors.append(f"{name}: {type(e).__name__}: {e}")
            traceback.print_exc()
        ops[name].append(time.perf_counter() - t0)
        u1 = usage()
        parts[name]["cpu"].append(u1[1] - u0[1] if name in cli else u1[0] - u0[0])
        parts[name]["runq"].append(None if name in cli else u1[2] - u0[2])
        parts[name]["lock"].append(None if name in cli else u1[3] - u0[3])
    print(json.dumps({"ops": ops, "parts": parts, "errors": errors}), flush=True)


def child_make_runs(root: str, n: str, part: str, parts: str, fmt: str = "parquet") -> dict:
    """Write synthetic runs n (batches part, part+parts, ...) through the library's objects:
    a metric series blob and a run object each, and the run's ref. The values come in
    bulk from ``synthetic`` (numpy, a batch of 1,000 runs at a time), so MLflow gets the same.
    ``fmt``: the series blob as runs recorded before Arrow IPC stored it (``parquet``, zstd),
    or as new runs store it (``ipc``: ``series_blob``); ``ipc-commits``: as ``ipc``, each run
    in a pack of its own, as a commit leaves it (indexes merged every 16, as syncs do)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlvc import Repo
    from mlvc.core.objects import Run
    from mlvc.runs.finish import series_blob
    from mlvc.store.typed import write_object

    repo = Repo(root)
    n, part, parts = int(n), int(part), int(parts)
    fmt, _, packs = fmt.partition("-")
    import numpy as np

    keys = pa.array([f"m{k}" for k in range(METRICS) for _ in range(STEPS)], pa.string())
    steps_np = np.tile(np.arange(STEPS, dtype=np.int64), METRICS)
    steps = pa.array(steps_np)
    t0 = time.perf_counter()
    made = 0
    for b in range(part, (n + BATCH - 1) // BATCH, parts):
        m = min(BATCH, n - b * BATCH)
        values, params = synthetic(b, m)
        plist = params.tolist()
        for j in range(m):
            i = b * BATCH + j
            start_us = BASE_US + i * 60_000_000
            ts = pa.array(start_us + steps_np * 100_000, pa.timestamp("us", "UTC"))
            series = pa.table(
                {"key": keys, "step": steps, "timestamp": ts, "value": pa.array(values[j])}
            )
            if fmt == "ipc":
                sid = series_blob(repo.store, series, presorted=True)
            else:
                buf = io.BytesIO()
                pq.write_table(series, buf, compression="zstd")
                sid = repo.store.add_bytes(buf.getvalue())
            last = values[j, STEPS - 1 :: STEPS].tolist()
            run_obj = Run(
                name=f"run{i}",
                message=f"synthetic run {i}",
                author="bench",
                started=start_us,
                ended=start_us + 30_000_000,
                params={f"p{k}": plist[j][k] for k in range(PARAMS)},
                metrics={f"m{k}": last[k] for k in range(METRICS)},
                series=sid,
            )
            repo.refs.add_run(write_object(repo.store, run_obj))
            made += 1
            if packs == "commits":
                repo.store.flush()
                if made % 16 == 0:
                    repo.store.consolidate()
    repo.store.sync()
    return {"runs": made, "seconds": time.perf_counter() - t0}


def child_rebuild(root: str) -> dict:
    from mlvc import Repo

    t0 = time.perf_counter()
    n = Repo(root).rebuild_index()
    return {"runs": n, "seconds": time.perf_counter() - t0}


def child_lib_query(root: str, reps: str) -> dict:
    """``Repo.query`` in this process: the first call (opens the index), then warm calls."""
    from mlvc import Repo

    t0 = time.perf_counter()
    repo = Repo(root)
    t1 = time.perf_counter()
    res = repo.query(QUERY)
    out = {"open_s": t1 - t0, "first_s": time.perf_counter() - t1, "rows": res.num_rows}
    out["top"] = res.column("metrics.m0").to_pylist()
    out["warm"] = []
    for _ in range(int(reps)):
        t0 = time.perf_counter()
        repo.query(QUERY)
        out["warm"].append(time.perf_counter() - t0)
    out["count"] = repo.query("SELECT count(*) FROM runs_wide").column(0)[0].as_py()
    out["points"] = repo.query("SELECT count(*) FROM metrics").column(0)[0].as_py()
    return out


CHILDREN = {
    "logmetric": child_logmetric,
    "logratio": child_logratio,
    "commit": child_commit,
    "storm-writer": child_storm_writer,
    "storm-reader": child_storm_reader,
    "make-runs": child_make_runs,
    "rebuild": child_rebuild,
    "lib-query": child_lib_query,
}


# -- 1. log_metric ---------------------------------------------------------------------------


def bench_logmetric(work: Path, cfg: dict, mlflow: str, raw: dict) -> str:
    n, reps = cfg["points"], cfg["reps"]
    root = make_project(work / "logmetric")
    log(f"[1] log_metric: {n:,} points x {reps} in one run, vs an empty method call")
    got = child(root, "logmetric", root, n, reps)
    raw["logmetric"] = got
    wait_for_index(root)
    floor = [n / s for s in got["floor"]]
    calls = [n / s for s in got["calls"]]
    total = [n / s for s in got["total"]]
    indexed = [n / s for s in got["indexed"]]
    rows = [
        ["empty Python method call (the floor)", f"{n:,}", frate(med(floor)), "1x", "–", ""],
        [
            "mlvc `run.log_metric`, calls only",
            f"{n:,}",
            frate(med(calls)),
            fx(paired(got["calls"], got["floor"])),
            "",
            "",
        ],
        [
            "mlvc `run.log_metric`, calls + leaving the `with` (flush, Parquet series, commit)",
            f"{n:,}",
            frate(med(total)),
            fx(paired(got["total"], got["floor"])),
            "",
            f"leaving took {fs(med([t - c for t, c in zip(got['total'], got['calls'], strict=True)]))}",
        ],
        [
            "mlvc, calls + leaving + until `Repo.query` counts the points (index worker done)",
            f"{n:,}",
            frate(med(indexed)),
            fx(paired(got["indexed"], got["floor"])),
            "",
            f"after the block {fs(med([t - c for t, c in zip(got['indexed'], got['total'], strict=True)]))}",
        ],
    ]
    ratios = logratio_variants(root, n, cfg, raw)
    wait_for_index(root)
    rmtree(root)
    rows += ratio_rows(ratios, n, cfg)
    notes = []
    if got["stored"] != n * reps:
        notes.append(f"**LOST POINTS**: the index holds {got['stored']:,} of {n * reps:,}")
    if mlflow:
        log(f"[1] MLflow log_metric / log_batch / async ({cfg['ml_points']:,} points max)")
        uri = f"sqlite:///{work / 'mlflow-logmetric.db'}"
        try:
            ml = mlflow_child(
                work,
                "logmetric",
                uri,
                cfg["ml_points"],
                cfg["ml_budget"],
                reps,
                cfg["ml_batch"],
                cfg["ml_async"],
            )
            raw["logmetric_mlflow"] = ml
            floor_call = med(got["floor"]) / n  # seconds per empty call
            mlvc_total = med(total)
            for key, label in (
                ("sync", "MLflow `mlflow.log_metric` (SQLite), calls + `end_run`"),
                ("batch", "MLflow `MlflowClient.log_batch`, 1,000 points per call"),
                ("async", "MLflow `mlflow.log_metric(..., synchronous=False)` + flush"),
            ):
                if not ml.get(key):
                    rows.append([label, "", f"FAILED: {ml.get(key + '_error', '?')}", "", "", ""])
                    continue
                pts = ml[key][0]["points"]
                rate = med([x["points"] / x["total_s"] for x in ml[key]])
                per = med([x["total_s"] / x["points"] for x in ml[key]])
                rows.append(
                    [
                        label,
                        f"{pts:,}",
                        frate(rate),
                        fx(per / floor_call),
                        fx(mlvc_total / rate) if rate else "–",
                        "",
                    ]
                )
            stored = ml.get("stored", {})
            notes.append(
                f"MLflow {ml.get('version')}: `import mlflow` took {fs(ml['import_s'])}, its first "
                f"run (creating the SQLite schema) {fs(ml['first_run_s'])}; points read back: "
                + ", ".join(f"{k} {v}" for k, v in stored.items())
            )
        except (CommandFailed, ValueError, KeyError) as e:
            rows.append(["MLflow", "", f"FAILED: {str(e)[:200]}", "", "", ""])
    else:
        rows.append(["MLflow", "", "mlflow: not installed", "", "", ""])
    head = [
        "logging loop",
        "points",
        "points/s",
        "time per point vs floor",
        "mlvc (incl. commit) / this",
        "note",
    ]
    return (
        f"### 1. `log_metric` in one run (median of {reps})\n\n"
        'The loop: `for i in range(N): run.log_metric("loss", i * 0.001, step=i)`, timed in '
        "the logging process. MLflow runs at a few milliseconds per call, so its loop is bounded "
        f"to {cfg['ml_points']:,} points or {cfg['ml_budget']:.0f} s; its rates are per point "
        "all the same. The last column is how many times more points/s mlvc sustains (its "
        "calls + commit figure).\n\n"
        + table(head, rows)
        + ("\n\n" + "\n".join(f"- {x}" for x in notes) if notes else "")
    )


def logratio_variants(root: Path, n: int, cfg: dict, raw: dict) -> dict:
    """child_logratio for each variant (this code; MLVC_PURE=1; ``cfg["compare"]``, another
    interpreter's mlvc such as main's venv), in ``rounds`` rounds that take turns, so that
    every variant sees the load of every part of the run."""
    variants = {"this code": (PYTHON, "0"), "this code, MLVC_PURE=1": (PYTHON, "1")}
    if cfg.get("compare"):
        variants[f"{cfg['compare']} (compare)"] = (cfg["compare"], "0")
    rounds = cfg["ratio_rounds"]
    per = max(1, -(-cfg["ratio_reps"] // rounds))
    log(
        f"[1] log_metric vs a bare list-append loop, interleaved: {n:,} points, "
        f"{len(variants)} variants x {rounds} rounds x {per} repetitions"
    )
    out: dict = {name: {"load": []} for name in variants}
    for _ in range(rounds):
        for name, (python, pure) in variants.items():
            load = os.getloadavg()[0]
            argv = [python, SELF, "--child", "logratio", str(root), str(n)]
            got = last_json(run([*argv, str(cfg["ratio_chunk"]), str(per), pure], root).out)
            got["load"] = [load, os.getloadavg()[0]]
            for k, v in got.items():
                if isinstance(v, list):
                    out[name].setdefault(k, []).extend(v)
                else:
                    out[name][k] = v
    raw["logratio"] = out
    return out


def ratio_rows(ratios: dict, n: int, cfg: dict) -> list[list]:
    def spread(xs):
        return f"{fx(med(xs))} ({fx(min(xs))}-{fx(max(xs))})"

    rows = []
    for name, r in ratios.items():
        what = "compiled" if r.get("compiled") else "pure Python"
        load = f"load {min(r['load']):.1f}-{max(r['load']):.1f}"
        rows += [
            [
                f"{name} ({what}): `run.log_metric` / a bare `points.append((key, v, i))` "
                f"loop, chunks of {cfg['ratio_chunk']:,} interleaved (goal >= 0.5x): CPU",
                f"{n:,}",
                f"{med(r['mlvc_cpu_ns']):.0f} ns vs {med(r['bare_cpu_ns']):.0f} ns a point "
                f"(flush {med(r['flush_cpu_ns']):.0f} ns)",
                spread(r["cpu"]),
                "",
                f"thread CPU, the flusher's included; median of {len(r['cpu'])} (min-max); {load}",
            ],
            [
                f"{name}: the same, wall (median chunk ratio)",
                f"{n:,}",
                f"{med(r['mlvc_ns']):.0f} ns vs {med(r['bare_ns']):.0f} ns a point",
                spread(r["wall"]),
                "",
                "",
            ],
        ]
    return rows


# -- 2. commit overhead ----------------------------------------------------------------------


def bench_commit(work: Path, cfg: dict, mlflow: str, raw: dict) -> str:
    reps = cfg["commit_reps"]
    root = make_project(work / "commit")
    log(f"[2] commit overhead: {reps} small runs (10 params + 100 points), then a profile")
    got = child(root, "commit", root, reps, 100, cfg["profile_runs"])
    raw["commit"] = got
    wait_for_index(root)
    over = [r["total"] - r["log"] for r in got["runs"]]
    seen = [r["indexed"] for r in got["runs"]]
    starts = [r["start"] for r in got["runs"]]
    ends = [r["end"] for r in got["runs"]]
    rows = [
        [
            "durable write of one 1 KiB file (temp + fsync + rename + dir fsync): the floor",
            fs(med(got["floor"])),
            "",
            "",
            "1x",
            "",
            "",
        ],
        [
            "mlvc `with start_run(params=...)` minus the 100 `log_metric` calls",
            fs(med(over)),
            fs(med(starts)),
            fs(med(ends)),
            fx(paired(over, got["floor"])),
            "yes" if med(over) < 0.1 else "**no**",
            fs(med(seen)),
        ],
        [
            "mlvc, first run in a fresh process (lazy imports included)",
            fs(got["first"]["total"] - got["first"]["log"]),
            fs(got["first"]["start"]),
            fs(got["first"]["end"]),
            "",
            "",
            fs(got["first"]["indexed"]),
        ],
    ]
    notes = []
    unseen = [r for r in got["runs"] if r["seen"] != 1]
    if unseen:
        notes.append(f"**{len(unseen)} runs were not in the index** when queried after the block")
    if mlflow:
        log("[2] MLflow start_run/log_params/end_run")
        try:
            ml = mlflow_child(work, "commit", f"sqlite:///{work / 'mlflow-commit.db'}", reps, 100)
            raw["commit_mlflow"] = ml
            mover = [r["total_s"] - r["log_s"] for r in ml["runs"]]
            rows.append(
                [
                    "MLflow `with start_run(): log_params(...)` minus the 100 `log_metric` calls",
                    fs(med(mover)),
                    fs(med([r["start_s"] for r in ml["runs"]])),
                    fs(med([r["end_s"] for r in ml["runs"]])),
                    fx(paired(mover, got["floor"])),
                    "",
                    "0 (written in place)",
                ]
            )
            notes.append(
                f"MLflow's 100 `log_metric` calls themselves took {fs(med([r['log_s'] for r in ml['runs']]))} "
                f"per run (mlvc's: {fs(med([r['log'] for r in got['runs']]))}); mlvc's commit "
                f"overhead is {fx(paired(over, mover))} MLflow's start+end."
            )
        except (CommandFailed, ValueError, KeyError) as e:
            rows.append(["MLflow", f"FAILED: {str(e)[:200]}", "", "", "", "", ""])
    else:
        rows.append(["MLflow", "mlflow: not installed", "", "", "", "", ""])
    prof = got["profile"]
    prof_rows = [[f"`{name}`", f"{calls:g}", fs(cum)] for name, calls, cum in prof[:15]]
    head = [
        "step",
        "overhead",
        "entering (capture)",
        "leaving (commit)",
        "vs floor",
        "< 100 ms",
        "then until `Repo.query` sees the run",
    ]
    return (
        f"### 2. Commit overhead of a small run (median of {reps})\n\n"
        "A project of 4 files under git; `with mlvc.start_run(name=..., params=10 params, "
        "repo=...)` around 100 `log_metric` calls. Overhead = the block's wall time minus the "
        "logging loop. A commit hands the index ingest to a detached worker process; the last "
        "column is the time from the end of the block until a `Repo.query` (which waits for "
        "that worker) sees the run.\n\n"
        + table(head, rows)
        + ("\n\n" + "\n".join(f"- {x}" for x in notes) if notes else "")
        + f"\n\ncProfile of {got['profile_runs']} more runs (cProfile slows Python code, so "
        "these are larger than the table's), mlvc functions by cumulative time per run:\n\n"
        + table(["function", "calls per run", "cumulative per run"], prof_rows)
    )


# -- 3. concurrent writers -------------------------------------------------------------------


def storm(
    cwd: Path,
    writers: list[list[str]],
    reader: list[str] | None,
    stop: Path,
    logs: Path,
    timeout: float,
    reader_session: bool = False,
) -> dict:
    """Start writers (each prints 'ready', waits for a line, works, prints JSON), start the
    reader (``reader_session``: in a session of its own, as a user's terminal or a server is;
    else in the writers' session), release the writers together, wait, stop the reader.
    Returns everything seen."""
    logs.mkdir(parents=True, exist_ok=True)
    procs, errs = [], []
    for k, cmd in enumerate(writers):
        err = open(logs / f"writer-{k}.err", "w+")  # noqa: SIM115 (closed below)
        errs.append(err)
        procs.append(
            subprocess.Popen(
                cmd,
                cwd=cwd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=CHILD_ENV,
                text=True,
            )
        )
    for p in procs:
        p.stdout.readline()  # 'ready' ('' if it died: its stderr says why)
    rproc = rerr = None
    if reader:
        rerr = open(logs / "reader.err", "w+")  # noqa: SIM115 (closed below)
        rproc = subprocess.Popen(
            reader,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=rerr,
            env=CHILD_ENV,
            text=True,
            start_new_session=reader_session,
        )
        rproc.stdout.readline()
    t0 = time.time()
    try:
        for p in procs:
            try:
                p.stdin.write("go\n")
                p.stdin.close()
            except BrokenPipeError:
                pass
            p.stdin = None  # closed: communicate() must not flush it
        outs, timed_out = [], False
        for p in procs:
            try:
                out, _ = p.communicate(timeout=max(1.0, timeout - (time.time() - t0)))
            except subprocess.TimeoutExpired:
                timed_out = True
                p.kill()
                out, _ = p.communicate()
            outs.append(out)
        wall = time.time() - t0
        stop.touch()
        reader_out = None
        if rproc:
            try:
                reader_out = last_json(rproc.communicate(timeout=300)[0])
            except (subprocess.TimeoutExpired, ValueError) as e:
                rproc.kill()
                reader_out = {"ops": {}, "errors": [f"reader: {e}"]}
    finally:  # on any failure, leave no process writing into a folder about to be removed
        stop.touch()
        for p in [*procs, *([rproc] if rproc else [])]:
            if p.poll() is None:
                p.kill()
                p.wait()
    results, stderr = [], []
    for p, out, err in zip(procs, outs, errs, strict=True):
        err.seek(0)
        text = err.read().strip()
        err.close()
        if text:
            stderr.append(text)
        try:
            results.append(last_json(out))
        except ValueError:
            results.append({"done": 0, "errors": 1, "ids": [], "exit": p.returncode})
            stderr.append(f"writer exited {p.returncode} without a result")
    reader_err = ""
    if rerr:
        rerr.seek(0)
        reader_err = rerr.read().strip()
        rerr.close()
    starts = [r["start"] for r in results if "start" in r]
    ends = [r["end"] for r in results if "end" in r]
    done = sum(r["done"] for r in results)
    busy = (max(ends) - min(starts)) if starts and ends else wall
    return {
        "wall": wall,
        "busy": busy,
        "done": done,
        "errors": sum(r["errors"] for r in results),
        "ids": [i for r in results for i in r.get("ids", [])],
        "stderr": stderr,
        "reader": reader_out,
        "reader_stderr": reader_err,
        "timed_out": timed_out,
        "runs_per_s": done / busy if busy else None,
    }


def verify_mlvc(root: Path, ids: list[str], points: int) -> dict:
    """Count what reached the index, through the CLI as a user would."""
    sql = (
        "SELECT (SELECT count(*) FROM runs) AS runs, "
        "(SELECT count(*) FROM metrics WHERE key = 'loss') AS points, "
        "(SELECT count(*) FROM (SELECT run_id FROM metrics WHERE key = 'loss' GROUP BY run_id "
        f"HAVING count(*) = {points})) AS complete"
    )
    p = run([MLVC, "query", "--format", "json", sql], root, check=False)
    out = {"query_rc": p.rc, "query_err": p.err.strip()[-300:]}
    try:
        data = json.loads(p.out)
        row = data[0] if isinstance(data, list) else data
        out.update({k: row[k] for k in ("runs", "points", "complete")})
    except (ValueError, KeyError, IndexError, TypeError):
        out["parse_error"] = p.out[:300]
    p = run([MLVC, "query", "--format", "csv", "SELECT id FROM runs"], root, check=False)
    indexed = {x.strip('"') for x in p.out.split()[1:]} if p.rc == 0 else set()
    out["missing"] = len(set(ids) - indexed)
    out["refs"] = len(os.listdir(root / ".mlvc" / "refs" / "runs"))
    out["journal_left"] = len(os.listdir(root / ".mlvc" / "journal"))
    live = root / ".mlvc" / "live"
    out["live_left"] = len(os.listdir(live)) if live.is_dir() else 0
    return out


def bench_storm(work: Path, cfg: dict, mlflow: str, raw: dict) -> str:
    w, r, reps, pts = cfg["writers"], cfg["storm_runs"], cfg["storm_reps"], 100
    samples = []
    for rep in range(reps):
        root = make_project(work / f"storm-single-{rep}")
        log(f"[3] rep {rep + 1}/{reps}: one writer x {r} runs (baseline)")
        single = storm(
            root,
            [[PYTHON, SELF, "--child", "storm-writer", str(root), "0", str(r), str(pts)]],
            None,
            work / f"stop-s{rep}",
            work / f"logs-s{rep}",
            cfg["storm_timeout"],
        )
        single["verify"] = verify_mlvc(root, single["ids"], pts)
        wait_for_index(root)
        rmtree(root)
        root = make_project(work / f"storm-{rep}")
        log(f"[3] rep {rep + 1}/{reps}: {w} writers x {r} runs + a reader")
        writers = [
            [PYTHON, SELF, "--child", "storm-writer", str(root), str(k), str(r), str(pts)]
            for k in range(w)
        ]
        reader = [PYTHON, SELF, "--child", "storm-reader", str(root), str(work / f"stop-{rep}")]
        if cfg["storm_daemon"]:
            run([MLVC, "daemon", "start", "--idle", "900"], root)
        try:
            many = storm(
                root,
                writers,
                reader,
                work / f"stop-{rep}",
                work / f"logs-{rep}",
                cfg["storm_timeout"],
                reader_session=cfg["storm_reader"] == "own",
            )
        finally:
            if cfg["storm_daemon"]:
                run([MLVC, "daemon", "stop"], root, check=False)
        t0 = time.perf_counter()
        many["verify"] = verify_mlvc(root, many["ids"], pts)
        many["verify_s"] = time.perf_counter() - t0
        if rep == reps - 1:
            log("[3] mlvc fsck of the storm's repository")
            p = run([MLVC, "fsck"], root, check=False)
            many["fsck"] = {"rc": p.rc, "seconds": p.seconds, "out": (p.out + p.err)[-500:]}
        wait_for_index(root)
        rmtree(root)
        samples.append({"single": single, "many": many})
    raw["storm"] = samples

    def lost(s, expect):
        v = s["verify"]
        return expect - min(v.get("runs", 0), v.get("complete", 0)) + v.get("missing", 0)

    def errors(s):
        n = s["errors"] + len(s["stderr"])
        if s["reader"]:
            n += len(s["reader"].get("errors", [])) + bool(s["reader_stderr"])
        return n + (s["verify"]["query_rc"] != 0)

    single_rate = [s["single"]["runs_per_s"] for s in samples]
    many_rate = [s["many"]["runs_per_s"] for s in samples]
    rows = [
        [
            f"mlvc: 1 writer x {r} runs (baseline)",
            str(reps),
            frate2(med(single_rate)),
            "1x",
            str(sum(lost(s["single"], r) for s in samples)),
            str(sum(errors(s["single"]) for s in samples)),
            "–",
        ],
        [
            f"mlvc: {w} writers x {r} runs + reader",
            str(reps),
            frate2(med(many_rate)),
            fx(paired(many_rate, single_rate)),
            str(sum(lost(s["many"], w * r) for s in samples)),
            str(sum(errors(s["many"]) for s in samples)),
            str(sum(len(s["many"]["reader"]["errors"]) for s in samples if s["many"]["reader"])),
        ],
    ]
    # every storm's calls pooled (a storm gives ~10 calls of each: too few for a p95)
    ops: dict[str, list[float]] = {}
    parts: dict[str, dict[str, list]] = {}
    for s in samples:
        got = s["many"]["reader"] or {}
        for k, v in got.get("ops", {}).items():
            ops.setdefault(k, []).extend(v)
            for what, xs in got.get("parts", {}).get(k, {}).items():
                parts.setdefault(k, {}).setdefault(what, []).extend(x for x in xs if x is not None)

    def part(k: str, what: str) -> str:
        xs = parts.get(k, {}).get(what)
        return fs(med(xs)) if xs else "–"

    reader_rows = [
        [f"`{k}`", str(len(v)), fs(med(v)), fs(p95(v)), fs(max(v) if v else None)]
        + [part(k, "cpu"), part(k, "runq"), part(k, "lock")]
        for k, v in ops.items()
    ]
    floor = ops.get("python: import duckdb, select 1")
    if floor and ops.get("mlvc query"):
        q = ops["mlvc query"]
        cpu_q, cpu_f = parts["mlvc query"].get("cpu"), parts[
            "python: import duckdb, select 1"
        ].get("cpu")
        reader_rows.append(
            [
                "`mlvc query` / the duckdb baseline",
                "",
                fx(med(q) / med(floor)),
                fx(p95(q) / p95(floor)),
                "",
                fx(med(cpu_q) / med(cpu_f)) if cpu_q and cpu_f else "–",
                "",
                "",
            ]
        )
    notes = []
    for k, s in enumerate(samples):
        m = s["many"]
        v = m["verify"]
        notes.append(
            f"rep {k + 1}: {m['done']} runs reported done by the writers in {m['busy']:.1f} s "
            f"(wall from release to last exit {m['wall']:.1f} s); the index then held "
            f"{v.get('runs')} runs, {v.get('points')} `loss` points, {v.get('complete')} runs "
            f"with all {pts}; {v['missing']} writer-reported ids missing; refs/runs "
            f"{v['refs']}; journal entries left {v['journal_left']}; live runs left "
            f"{v['live_left']}; the first query after the storm (it ingests what the index workers left) took {m['verify_s']:.1f} s"
            + (" — **TIMED OUT**" if m["timed_out"] else "")
        )
        for text in (
            m["stderr"][:2]
            + ([m["reader_stderr"]] if m["reader_stderr"] else [])
            + (m["reader"]["errors"][:3] if m["reader"] else [])
        ):
            notes.append("error output: `" + text.strip().splitlines()[-1][:300] + "`")
    fsck = samples[-1]["many"].get("fsck")
    if fsck:
        notes.append(
            f"`mlvc fsck` afterwards: exit {fsck['rc']} in {fsck['seconds']:.1f} s: "
            f"`{fsck['out'].strip()[-200:]}`"
        )

    if mlflow:
        mr, mreps = cfg["ml_storm_runs"], 1
        try:
            for tag, nw in (("single", 1), ("many", w)):
                log(
                    f"[3] MLflow: {nw} writer(s) x {mr} runs (SQLite)"
                    + (" + a reader" if nw > 1 else "")
                )
                db = work / f"mlflow-storm-{tag}.db"
                uri = f"sqlite:///{db}"
                mlflow_child(work, "storm-count", uri)  # creates the schema before the storm
                writers = [
                    [str(MLFLOW_PY), DRIVER, "storm-writer", uri, str(k), str(mr), str(pts)]
                    for k in range(nw)
                ]
                reader = None
                if nw > 1:
                    reader = [str(MLFLOW_PY), DRIVER, "storm-reader", uri, str(work / "ml-stop")]
                s = storm(
                    work,
                    writers,
                    reader,
                    work / f"ml-stop-{tag}" if nw == 1 else work / "ml-stop",
                    work / f"ml-logs-{tag}",
                    cfg["storm_timeout"],
                    reader_session=cfg["storm_reader"] == "own",
                )
                count = mlflow_child(work, "storm-count", uri)
                s["count"] = {k: count[k] for k in ("runs", "finished", "points")}
                s["missing"] = len(set(s["ids"]) - set(count["ids"]))
                raw[f"storm_mlflow_{tag}"] = {k: v for k, v in s.items() if k != "ids"}
                expect = nw * mr
                lost_n = expect - count["finished"] + s["missing"]
                nerr = s["errors"] + len(s["stderr"])
                rerrs = 0
                if s["reader"]:
                    rerrs = s["reader"].get("errors", 0)
                    nerr += rerrs + bool(s["reader_stderr"])
                rows.append(
                    [
                        f"MLflow: {nw} writer(s) x {mr} runs" + (" + reader" if nw > 1 else ""),
                        str(mreps),
                        frate2(s["runs_per_s"]),
                        "",
                        str(lost_n),
                        str(nerr),
                        str(rerrs) if nw > 1 else "–",
                    ]
                )
                notes.append(
                    f"MLflow {nw} writer(s): {s['done']} runs done in {s['busy']:.1f} s; the store "
                    f"then held {count['runs']} runs ({count['finished']} FINISHED) and "
                    f"{count['points']} points of {expect * pts}; writer exceptions "
                    f"{s['errors']}"
                )
                for text in s["stderr"][:2] + ([s["reader_stderr"]] if s["reader_stderr"] else []):
                    notes.append(
                        "MLflow error output: `" + text.strip().splitlines()[-1][:300] + "`"
                    )
                if s["reader"] and nw > 1:
                    lat = s["reader"].get("latency", [])
                    reader_rows.append(
                        [
                            "MLflow `search_runs` (max 5)",
                            str(len(lat)),
                            fs(med(lat)),
                            fs(max(lat) if lat else None),
                        ]
                    )
        except (CommandFailed, ValueError, KeyError) as e:
            rows.append(["MLflow", "", f"FAILED: {str(e)[:200]}", "", "", "", ""])
    else:
        rows.append(["MLflow", "", "mlflow: not installed", "", "", "", ""])
    head = [
        "writers",
        "reps",
        "runs/s",
        "vs 1 writer",
        "lost runs (all reps)",
        "errors (all reps)",
        "reader errors",
    ]
    return (
        f"### 3. Concurrent writers into one repository (median of {reps})\n\n"
        f"Each writer process imports mlvc, then all are released at once; each records {r} "
        "runs of 3 params and 100 `log_metric` points (unique names). A reader process loops "
        "`mlvc query`, `Repo.log`, `mlvc log -n 5` and `Repo.query` meanwhile, "
        + (
            "in a session of its own (as a user's terminal or a server is: the kernel's "
            "autogroup shares the CPU between sessions first)"
            if cfg["storm_reader"] == "own"
            else "in the writers' session (the worst case: it competes with every writer)"
        )
        + (
            ", with `mlvc daemon` running (its commands run in the command server's session)"
            if cfg["storm_daemon"]
            else ""
        )
        + ". runs/s = runs "
        "done / (last writer's end - first writer's start). Lost = runs not in the index with "
        "all 100 points afterwards; errors = writer exceptions, any stderr output, reader "
        "failures. MLflow writers do the same with `start_run`, `log_params` and one "
        "`log_batch` of the 100 points (its fastest path), on one SQLite file; one repetition.\n\n"
        + table(head, rows)
        + f"\n\nReader latency during the storms ({reps}, calls pooled):\n\n"
        + table(
            [
                "reader operation",
                "calls",
                "median",
                "p95 (goal <= 1 s)",
                "max",
                "CPU (median)",
                "runnable, not running (median)",
                "waiting for the index lock (median)",
            ],
            reader_rows,
        )
        + "\n\n"
        + "\n".join(f"- {x}" for x in notes)
    )


def frate2(v: float | None) -> str:
    return "–" if v is None else f"{v:,.1f}"


# -- 4. query latency ------------------------------------------------------------------------


def bench_query(work: Path, n: int, cfg: dict, mlflow: str, cold: bool, raw: dict) -> str:
    root = work / f"runs-{n}"
    root.mkdir()
    run([MLVC, "init"], root)
    parts = 2
    log(f"[4] writing {n:,} synthetic runs ({n * METRICS * STEPS:,} points) in {parts} processes")
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [PYTHON, SELF, "--child", "make-runs", str(root), str(n), str(k), str(parts)],
            stdout=subprocess.PIPE,
            env=CHILD_ENV,
            text=True,
        )
        for k in range(parts)
    ]
    made = sum(last_json(p.communicate()[0])["runs"] for p in procs)
    t_write = time.perf_counter() - t0
    log(f"[4] {made:,} runs written in {t_write:.0f} s; rebuilding the index")
    reb = child(root, "rebuild", root)
    sec = {"n": n, "write_s": t_write, "rebuild_s": reb["seconds"], "rebuilt": reb["runs"]}
    raw[f"query_{n}"] = sec
    reps, creps = cfg["q_reps"], cfg["q_cold_reps"]
    s = {
        k: []
        for k in (
            "py",
            "cli",
            "py_cold",
            "cli_cold",
            "lib_cold",
            "ml_once",
            "ml_once_cold",
            "py_ml",
        )
    }
    for rep in range(reps):
        log(f"[4] {n:,} runs: warm rep {rep + 1}/{reps}")
        s["py"].append(run([PYTHON, "-c", "pass"], root).seconds)
        p = run([MLVC, "query", QUERY], root)
        s["cli"].append(p.seconds)
        if rep == 0:
            sec["cli_out"] = p.out
    lib = child(root, "lib-query", root, 20)
    sec["lib"] = lib
    if cold:
        for rep in range(creps):
            log(f"[4] {n:,} runs: cold rep {rep + 1}/{creps}")
            drop_caches()
            s["py_cold"].append(run([PYTHON, "-c", "pass"], root).seconds)
            drop_caches()
            s["cli_cold"].append(run([MLVC, "query", QUERY], root).seconds)
            drop_caches()
            s["lib_cold"].append(child(root, "lib-query", root, 0)["first_s"])
    notes = [
        f"writing {made:,} runs (a Parquet series blob + a run object + a ref each, values "
        f"made in bulk by numpy) took {t_write:.0f} s in {parts} processes; `Repo.rebuild_index()` "
        f"of them {reb['seconds']:.0f} s; the index then held {lib['count']:,} runs and "
        f"{lib['points']:,} metric points",
    ]
    if lib["rows"] != 10 or lib["count"] != n:
        notes.append(f"**unexpected**: {lib['rows']} rows returned, {lib['count']} runs indexed")
    ml = None
    if mlflow:
        db = work / f"mlflow-{n}.db"
        k = min(cfg["ml_client_runs"], n)
        log(f"[4] MLflow: {k} runs via MlflowClient.log_batch, the rest ({n - k:,}) as rows")
        try:
            history = n <= cfg["ml_history_max"]
            mk = mlflow_child(work, "make-runs", db, n, k, int(history))
            sec["mlflow_make"] = mk
            per_run = mk["client_s"] / mk["client_runs"]
            notes.append(
                f"MLflow: {mk['client_runs']} runs through `create_run` + `log_batch` (501 "
                f"metrics, 20 params) + `set_terminated` took {mk['client_s']:.1f} s, "
                f"{per_run * 1000:.0f} ms per run: {n:,} runs that way would take "
                f"{per_run * n / 60:.0f} min. The other {mk['bulk_runs']:,} were inserted as rows "
                f"copied from those runs' rows, in MLflow's own schema, in {mk['bulk_s']:.0f} s"
                + (
                    "."
                    if history
                    else " — without their metric history (the `metrics` table: 500 rows a run, about "
                    "12 GB at 100k runs); `search_runs` reads only `latest_metrics`, which is "
                    "complete, and a smaller file can only make MLflow's cold figure look better."
                )
            )
            # one MLflow search over 100k runs takes minutes here: one sample of each there
            big = n > cfg["ml_history_max"]
            e2e_reps, search_reps, ml_creps = (
                (1, 1, 1) if big else (cfg["ml_e2e_reps"], cfg["ml_search_reps"], creps)
            )
            for rep in range(e2e_reps):
                log(f"[4] MLflow {n:,} runs: warm rep {rep + 1}/{e2e_reps}")
                s["py_ml"].append(run([str(MLFLOW_PY), "-c", "pass"], work).seconds)
                s["ml_once"].append(
                    run([str(MLFLOW_PY), DRIVER, "search-once", str(db)], work).seconds
                )
            ml = mlflow_child(work, "search", db, search_reps)
            sec["mlflow_search"] = ml
            if cold:
                for rep in range(ml_creps):
                    log(f"[4] MLflow {n:,} runs: cold rep {rep + 1}/{ml_creps}")
                    drop_caches()
                    s["ml_once_cold"].append(
                        run([str(MLFLOW_PY), DRIVER, "search-once", str(db)], work).seconds
                    )
            same = [round(x, 12) for x in ml["top"]] == [round(x, 12) for x in lib["top"]]
            notes.append(
                "the top-10 `m0` values of mlvc and MLflow are "
                + (
                    "identical (same runs, same answer)"
                    if same
                    else f"**different**: mlvc {lib['top'][:3]}..., MLflow {ml['top'][:3]}..."
                )
            )
        except (CommandFailed, ValueError, KeyError) as e:
            notes.append(f"MLflow FAILED: {str(e)[:300]}")
            ml = None
    sec["samples"] = s
    rmtree(root)

    rows = [
        [
            "`python -c pass` (baseline)",
            fs(med(s["py"])),
            "1x",
            fs(med(s["py_cold"])) if cold else "–",
            "1x" if cold else "–",
        ],
        [
            "`mlvc query SQL` (CLI, end to end)",
            fs(med(s["cli"])),
            fx(paired(s["cli"], s["py"])),
            fs(med(s["cli_cold"])) if cold else "–",
            fx(paired(s["cli_cold"], s["py_cold"])) if cold else "–",
        ],
        [
            "`Repo.query(SQL)` in process, first call (opens the index)",
            fs(lib["first_s"]),
            "",
            fs(med(s["lib_cold"])) if cold else "–",
            "",
        ],
        ["`Repo.query(SQL)` in process, warm (median of 20)", fs(med(lib["warm"])), "", "", ""],
    ]
    if ml:
        rows += [
            ["MLflow venv `python -c pass` (baseline)", fs(med(s["py_ml"])), "1x", "", ""],
            [
                "MLflow: fresh process, `import mlflow` + `search_runs`",
                fs(med(s["ml_once"])),
                fx(paired(s["ml_once"], s["py_ml"])),
                fs(med(s["ml_once_cold"])) if cold else "–",
                "",
            ],
            [
                f"MLflow `MlflowClient().{MLFLOW_QUERY.split('(')[0]}` in process, first call",
                fs(ml["first_s"]),
                "",
                "",
                "",
            ],
            [
                f"MLflow `search_runs` in process, warm (median of {len(ml['warm'])})",
                fs(med(ml["warm"])),
                "",
                "",
                "",
            ],
            [
                "**mlvc / MLflow**, end to end (fresh process)",
                fx(paired(s["cli"], s["ml_once"])),
                "",
                fx(paired(s["cli_cold"], s["ml_once_cold"])) if cold else "–",
                "",
            ],
            [
                "**mlvc / MLflow**, in process warm",
                fx(med(lib["warm"]) / med(ml["warm"])),
                "",
                "",
                "",
            ],
        ]
    elif not mlflow:
        rows.append(["MLflow", "mlflow: not installed", "", "", ""])
    head = [
        "query",
        "warm",
        "vs `python -c pass`",
        "cold" if cold else "cold (not measured)",
        "cold vs `python -c pass` cold",
    ]
    return (
        f"### 4. Query over {n:,} runs: {PARAMS} params, {METRICS} metrics x {STEPS} steps "
        f"({n * METRICS * STEPS:,} metric points) — warm median of {reps}"
        + (f", cold median of {creps}" if cold else "")
        + f"\n\nmlvc: `{QUERY}`\n\nMLflow (its params are strings and its filter allows only "
        "=, !=, LIKE, IN on them, so each MLflow run also has `p1` logged as a metric, the "
        f"same value): `MlflowClient().{MLFLOW_QUERY}`, which returns whole Run objects.\n\n"
        + table(head, rows)
        + "\n\n"
        + "\n".join(f"- {x}" for x in notes)
    )


# -- 5. start-up -----------------------------------------------------------------------------


def bench_startup(work: Path, cfg: dict, raw: dict) -> str:
    root = make_project(work / "startup", runs=5)
    reps = cfg["startup_reps"]
    log(f"[5] start-up x {reps}")
    cmds = {
        "`python -c pass` (baseline)": [PYTHON, "-c", "pass"],
        "`python -c 'import mlvc'`": [PYTHON, "-c", "import mlvc"],
        "`mlvc --help`": [MLVC, "--help"],
        "`mlvc log -n 5` (repo of 5 runs)": [MLVC, "log", "-n", "5"],
    }
    s = {k: [] for k in cmds}
    for _ in range(reps):
        for k, argv in cmds.items():
            s[k].append(run(argv, root).seconds)
    raw["startup"] = s
    rmtree(root)
    base = s["`python -c pass` (baseline)"]
    rows = []
    for k, v in s.items():
        goal = ""
        if k == "`mlvc --help`":
            goal = "yes" if med(v) < 0.15 else "**no**"
        rows.append([k, fs(med(v)), fx(paired(v, base)), fs(med(v) - med(base)), goal])
    return f"### 5. Start-up (median of {reps})\n\n" + table(
        ["command", "wall", "vs `python -c pass`", "above `python -c pass`", "< 150 ms"], rows
    )


# -- report ----------------------------------------------------------------------------------


def machine_facts(where: Path, mlflow: str, cold: bool) -> list[str]:
    def sh(cmd: str) -> str:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()

    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    commit = sh(f"git -C {REPO} rev-parse --short HEAD")
    dirty = sh(f"git -C {REPO} status --porcelain -- mlvc")
    df = sh(f"df -T {where} | tail -1 | awk '{{print $1\" \"$2}}'")
    mem = sh("free -g | awk '/^Mem:/ {print $2}'")
    return [
        f"- date: {sh('date -u')}",
        f"- machine: {sh('nproc')} cores (`nproc`), {cpu or platform.processor()}, "
        f"{mem} GiB memory; temp dir on {df}",
        f"- python {platform.python_version()}; mlvc at commit {commit}"
        + (" (mlvc/ had uncommitted changes by other engineers)" if dirty else ""),
        f"- mlflow: {mlflow or 'not installed'} (own venv, SQLite tracking store); cold cache: "
        + ("page cache dropped before each cold sample" if cold else "not measured"),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--runs-100k", action="store_true", help="also query over 100,000 runs")
    ap.add_argument("--only", default="1,2,3,4,5", help="comma-separated benchmarks (1-5)")
    ap.add_argument(
        "--storm-reps",
        type=int,
        default=None,
        help="repetitions of the 32-writer storm (default 1: ~8 min each here)",
    )
    ap.add_argument(
        "--storm-reader",
        choices=("same", "own"),
        default="same",
        help="the storm's reader in the writers' session (default) or in a session of its own",
    )
    ap.add_argument(
        "--storm-daemon",
        action="store_true",
        help="run `mlvc daemon` during the storm (the reader's `mlvc query` goes through it)",
    )
    ap.add_argument("--runs", default=None, help="run counts of benchmark 4 (default 10000)")
    ap.add_argument("--no-mlflow", action="store_true", help="skip MLflow")
    ap.add_argument(
        "--compare",
        default=None,
        help="benchmark 1's ratio also with this Python's mlvc (e.g. main's .venv/bin/python)",
    )
    ap.add_argument("--no-cold", action="store_true", help="skip cold-cache variants")
    ap.add_argument("--dir", default=None, help="where to make the temp dir")
    ap.add_argument("--out", default=None, help="also write the Markdown report here")
    ap.add_argument("--json", default=None, help="write raw samples as JSON here")
    ap.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        result = CHILDREN[args.child[0]](*args.child[1:])
        if result is not None:
            print(json.dumps(result))
        return 0
    only = {int(x) for x in args.only.split(",") if x.strip()}
    if args.quick:
        cfg = dict(
            points=200_000,
            reps=3,
            ratio_chunk=10_000,
            ratio_reps=3,
            ratio_rounds=1,
            ml_points=200,
            ml_budget=5.0,
            ml_batch=5_000,
            ml_async=2_000,
            commit_reps=5,
            profile_runs=3,
            writers=8,
            storm_runs=10,
            storm_reps=1,
            ml_storm_runs=3,
            storm_timeout=600,
            q_runs=[1000],
            q_reps=3,
            q_cold_reps=1,
            ml_client_runs=20,
            ml_search_reps=5,
            startup_reps=5,
            ml_e2e_reps=2,
            ml_history_max=10_000,
        )
    else:
        cfg = dict(
            points=1_000_000,
            reps=3,
            ratio_chunk=10_000,
            ratio_reps=9,
            ratio_rounds=3,
            ml_points=2_000,
            ml_budget=10.0,
            ml_batch=10_000,
            ml_async=1_000,
            commit_reps=10,
            profile_runs=5,
            writers=32,
            storm_runs=50,
            storm_reps=1,
            ml_storm_runs=5,
            storm_timeout=1800,
            q_runs=[10_000],
            q_reps=5,
            q_cold_reps=3,
            ml_client_runs=50,
            ml_search_reps=5,
            startup_reps=10,
            ml_e2e_reps=3,
            ml_history_max=10_000,
        )
    if args.runs_100k:
        cfg["q_runs"] = [*cfg["q_runs"], 100_000]
    if args.runs:
        cfg["q_runs"] = [int(x) for x in args.runs.split(",")]
    if args.storm_reps:
        cfg["storm_reps"] = args.storm_reps
    cfg["compare"] = args.compare
    cfg["storm_reader"], cfg["storm_daemon"] = args.storm_reader, args.storm_daemon
    mlflow = "" if args.no_mlflow else mlflow_version()
    cold = not args.no_cold and can_drop_caches()
    os.makedirs(args.dir or tempfile.gettempdir(), exist_ok=True)  # --dir made if new
    work = Path(tempfile.mkdtemp(prefix="mlvc-bench-tracking-", dir=args.dir))

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    load0 = os.getloadavg()
    t_all = time.perf_counter()
    raw: dict = {"cfg": cfg}
    sections = []
    try:
        facts = machine_facts(work, mlflow, cold)
        steps = [
            (1, lambda: bench_logmetric(work, cfg, mlflow, raw)),
            (2, lambda: bench_commit(work, cfg, mlflow, raw)),
            (3, lambda: bench_storm(work, cfg, mlflow, raw)),
            *[
                (4, (lambda n=n: bench_query(work, n, cfg, mlflow, cold, raw)))
                for n in cfg["q_runs"]
            ],
            (5, lambda: bench_startup(work, cfg, raw)),
        ]
        for number, step in steps:
            if number not in only:
                continue
            try:
                sections.append(step())
            except (CommandFailed, OSError, ValueError, KeyError) as e:
                sections.append(f"### {number}. FAILED\n\n`{str(e)[:500]}`")
                log(f"benchmark {number} failed: {e}")
    finally:
        rmtree(work)
    load1 = os.getloadavg()
    total = time.perf_counter() - t_all
    facts.append(
        f"- mode: {'--quick' if args.quick else 'full'}"
        + (" --runs-100k" if args.runs_100k else "")
        + (f" --runs {args.runs}" if args.runs else "")
        + (f" --only {args.only}" if args.only != "1,2,3,4,5" else "")
        + f"; whole run {total / 60:.1f} min; load average (1/5/15 min) "
        f"{' '.join(f'{x:.1f}' for x in load0)} at start, {' '.join(f'{x:.1f}' for x in load1)} "
        "at end: the box is shared with other engineers' tests, so absolute times are noisy; "
        "read the ratios"
    )
    report = "\n".join(facts) + "\n\n" + "\n\n".join(sections) + "\n"
    print(report)
    if args.out:
        Path(args.out).write_text(report)
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1, default=str))
    return 1 if any("FAILED" in s for s in sections) else 0


if __name__ == "__main__":
    sys.exit(main())
