#!/usr/bin/env python
"""`mlvc import mlflow` speed (issue 15): metric points/s from ``mlflow.db`` and runs/min
over REST, each against a baseline measured in the same run.

1. **SQL store.** The real MLflow (benchmarks/.mlflow-venv, ``peers_mlflow.sh``) writes a
   history of RUNS runs x POINTS points into ``mlflow.db`` (tests/importers/mlflow_history.py).
   Timed: ``mlvc import mlflow sqlite:///mlflow.db`` into a fresh repository (the whole
   command: start-up, reading, Parquet series, run records, index), against the floor of
   reading the same metrics table raw with the standard library's ``sqlite3`` (fetchall).
2. **REST.** ``mlflow server`` (the same venv) serves a history of REST_RUNS runs without
   artifacts; timed: ``mlvc import mlflow http://...`` against MLflow's own client reading
   the same (``search_runs`` pages plus one ``get_metric_history`` per run and key, as
   ``mlflow`` does, one request at a time).

Medians of ``--repeat`` runs; markdown on stdout, progress on stderr. ``--quick`` is smaller.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV = HERE / ".mlflow-venv"
GEN = ROOT / "tests" / "importers" / "mlflow_history.py"
MLVC = [sys.executable, "-m", "mlvc"]


def log(msg: str) -> None:
    print(f"[bench_import {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def mlflow_python() -> str:
    py = VENV / "bin" / "python"
    if not py.exists():
        subprocess.run(["bash", str(HERE / "peers_mlflow.sh")], check=True)
    return str(py)


def env() -> dict[str, str]:
    e = dict(os.environ, MLVC_INDEX_SYNC="inline", GIT_PYTHON_REFRESH="quiet")
    e.pop("MLFLOW_TRACKING_URI", None)
    return e


def timed(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, the command and its children)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{r.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def fresh_repo(base: Path, i: int) -> Path:
    root = base / f"repo{i}"
    root.mkdir()
    subprocess.run([*MLVC, "init"], cwd=root, env=env(), check=True, capture_output=True)
    return root


def raw_sqlite(db: Path) -> tuple[float, float]:
    """The floor: the standard library's sqlite3 fetching the same rows (wall, CPU)."""
    code = (
        "import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1]); t=time.perf_counter();"
        "p=time.process_time();"
        "rows=c.execute('SELECT run_uuid,key,step,timestamp,value,is_nan FROM metrics')"
        ".fetchall(); print(time.perf_counter()-t, time.process_time()-p, len(rows))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(db)], capture_output=True, text=True)
    wall, cpu, _n = out.stdout.split()
    return float(wall), float(cpu)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def grow(src: Path, dst: Path, k: int) -> None:
    """``dst``: ``src`` with each run copied k-1 more times under new run ids (its metrics,
    params, tags, latest metrics too): k times the points, for the cost per point with the
    fixed costs (start-up, imports, opening the index) spread over more of them."""
    import shutil
    import sqlite3

    shutil.copyfile(src, dst)
    con = sqlite3.connect(dst)
    con.execute("CREATE TEMP TABLE orig AS SELECT run_uuid FROM runs")
    tables = ("runs", "metrics", "params", "tags", "latest_metrics")
    cols = {t: [r[1] for r in con.execute(f"PRAGMA table_info({t})")] for t in tables}
    for i in range(1, k):
        new = f"substr(run_uuid, 1, 28) || printf('%04d', {i})"
        for t, cs in cols.items():
            sel = ", ".join(new if c == "run_uuid" else f"name || '-{i}'"
                            if (t, c) == ("runs", "name") else f'"{c}"' for c in cs)  # fmt: skip
            names = ", ".join(f'"{c}"' for c in cs)
            con.execute(f"INSERT INTO {t} ({names}) SELECT {sel} FROM {t} "
                        "WHERE run_uuid IN (SELECT run_uuid FROM orig)")  # fmt: skip
        con.commit()
    con.close()


def bench_sql(
    py: str, base: Path, runs: int, points: int, repeat: int, db: Path | None, k: int = 1
) -> dict:
    work = base / "sql"
    work.mkdir()
    if db is None:  # --sql-db reuses a history generated before (it takes minutes)
        db = work / "mlflow.db"
        log(f"MLflow writes {runs} runs x {points} points into {db}")
        subprocess.run([py, str(GEN), f"sqlite:///{db}", str(work), str(runs), str(points)],
                       env=env(), check=True, capture_output=True)  # fmt: skip
    if k > 1:
        log(f"copying each run of {db} {k - 1} more times (--grow {k})")
        grow(db, work / f"mlflow-x{k}.db", k)
        db = work / f"mlflow-x{k}.db"
    import sqlite3

    con = sqlite3.connect(db)
    total = con.execute("SELECT count(*) FROM metrics m JOIN runs r USING (run_uuid) "
                        "WHERE r.status != 'RUNNING'").fetchone()[0]  # fmt: skip
    con.close()
    ours, floor = [], []
    for i in range(repeat):
        floor.append(raw_sqlite(db))
        ours.append(timed([*MLVC, "import", "mlflow", f"sqlite:///{db}", "-q"],
                          fresh_repo(base / "sql", i)))  # fmt: skip
        log(f"sql {i}: mlvc {ours[-1][0]:.2f} s (CPU {ours[-1][1]:.2f} s), raw sqlite3 "
            f"{floor[-1][0]:.2f} s (CPU {floor[-1][1]:.2f} s)")  # fmt: skip
    return {"points": total, "mlvc": statistics.median(w for w, _ in ours),
            "mlvc_cpu": statistics.median(c for _, c in ours),
            "raw": statistics.median(w for w, _ in floor),
            "raw_cpu": statistics.median(c for _, c in floor)}  # fmt: skip


def bench_rest(
    py: str, base: Path, runs: int, repeat: int, db: Path | None, client_repeat: int
) -> dict:
    work = base / "rest"
    work.mkdir()
    if db is None:  # --rest-db reuses a history generated before
        db = work / "mlflow.db"
        log(f"MLflow writes {runs} runs for the REST source")
        subprocess.run([py, str(GEN), f"sqlite:///{db}", str(work), str(runs), "5"],
                       env=env(), check=True, capture_output=True)  # fmt: skip
    import sqlite3

    con = sqlite3.connect(db)
    runs = con.execute("SELECT count(*) FROM runs").fetchone()[0]
    con.close()
    port = free_port()
    server = subprocess.Popen(
        [py, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{db}", "--workers", "2"],
        cwd=work, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("mlflow server did not start") from None
                time.sleep(0.3)
        client = (
            "import sys,time; from mlflow import MlflowClient; c=MlflowClient(sys.argv[1]);"
            "t=time.perf_counter(); ids=[e.experiment_id for e in c.search_experiments()];"
            "rs=c.search_runs(ids, max_results=50000);"
            "[c.get_metric_history(r.info.run_id, k) for r in rs for k in r.data.metrics];"
            "print(time.perf_counter()-t)"
        )
        reader = (  # the floor: mlvc's REST reader asking for every run's details, no recording
            "import sys,time; from mlvc.importers.mlflow.rest import RestSource;"
            "s=RestSource(sys.argv[1]); t=time.perf_counter();"
            "rs=[r for r in s.runs([e.experiment_id for e in s.experiments()]) if r.ended];"
            "[list(s.details(rs[i:i+500])) for i in range(0, len(rs), 500)];"
            "print(time.perf_counter()-t); s.close()"
        )
        ours, theirs, floor = [], [], []
        for i in range(repeat):
            out = subprocess.run([sys.executable, "-c", reader, url], env=env(),
                                 capture_output=True, text=True, check=True)  # fmt: skip
            floor.append(float(out.stdout.split()[-1]))
            if i < client_repeat:  # MLflow's client is slow (a request per run and key)
                out = subprocess.run([py, "-c", client, url], env=env(), capture_output=True,
                                     text=True, check=True)  # fmt: skip
                theirs.append(float(out.stdout.split()[-1]))
            ours.append(timed([*MLVC, "import", "mlflow", url, "-q"], fresh_repo(work, i)))
            log(f"rest {i}: mlvc {ours[-1][0]:.2f} s (CPU {ours[-1][1]:.2f} s), reading alone "
                f"{floor[-1]:.2f} s, MlflowClient "
                f"reads {theirs[-1] if i < client_repeat else float('nan'):.2f} s")  # fmt: skip
    finally:
        server.terminate()
        server.wait(30)
    return {"runs": runs - 1, "mlvc": statistics.median(w for w, _ in ours),
            "mlvc_cpu": statistics.median(c for _, c in ours), "client_n": len(theirs),
            "client": statistics.median(theirs), "read": statistics.median(floor)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sql-db", type=Path, help="an mlflow.db generated before (reused)")
    ap.add_argument("--rest-db", type=Path, help="the same for the REST source")
    ap.add_argument("--skip-rest", action="store_true")
    ap.add_argument("--client-repeat", type=int, help="MlflowClient's runs (default --repeat)")
    ap.add_argument("--grow", type=int, default=1,
                    help="import the SQL history copied K times over (K x the points)")  # fmt: skip
    a = ap.parse_args()
    runs, points, rest_runs = (50, 2000, 500) if a.quick else (100, 10_000, 2000)
    py = mlflow_python()
    load = Path("/proc/loadavg").read_text().split()[:3]
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        base = Path(tmp)
        sql = bench_sql(py, base, runs, points, a.repeat, a.sql_db, a.grow)
        n_client = a.repeat if a.client_repeat is None else min(a.client_repeat, a.repeat)
        rest = None if a.skip_rest else bench_rest(py, base, rest_runs, a.repeat, a.rest_db,
                                                   max(n_client, 1))  # fmt: skip
    after = Path("/proc/loadavg").read_text().split()[:3]
    print(
        f"## Import from MLflow (bench_import.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n"
    )
    print(f"Load average at start: {' '.join(load)}, at the end: {' '.join(after)}; "
          f"medians of {a.repeat} runs.\n")  # fmt: skip
    print("| measure | mlvc | baseline | ratio |")
    print("|---|---|---|---|")
    n = sql["points"]
    print(
        f"| `import mlflow sqlite:///` {n:,} points, whole command | "
        f"{sql['mlvc']:.2f} s = {n / sql['mlvc']:,.0f} points/s | raw `sqlite3` fetchall "
        f"{sql['raw']:.2f} s = {n / sql['raw']:,.0f} points/s | {sql['mlvc'] / sql['raw']:.2f}x |"
    )
    print(
        f"| the same, CPU time (user + system) | {sql['mlvc_cpu']:.2f} s = "
        f"{n / sql['mlvc_cpu']:,.0f} points/s | raw `sqlite3` fetchall CPU {sql['raw_cpu']:.2f} s "
        f"= {n / sql['raw_cpu']:,.0f} points/s | {sql['mlvc_cpu'] / sql['raw_cpu']:.2f}x |"
    )
    if rest is None:
        return
    r = rest["runs"]
    print(
        f"| `import mlflow http://` {r:,} runs (`mlflow server`), whole command | "
        f"{rest['mlvc']:.2f} s = {r / rest['mlvc'] * 60:,.0f} runs/min | MlflowClient reads "
        f"{rest['client']:.2f} s (median of {rest['client_n']}) = "
        f"{r / rest['client'] * 60:,.0f} runs/min | {rest['mlvc'] / rest['client']:.2f}x |"
    )
    print(
        f"| the same, mlvc's CPU time (user + system) | {rest['mlvc_cpu']:.2f} s = "
        f"{r / rest['mlvc_cpu'] * 60:,.0f} runs/min | | |"
    )
    print(
        f"| mlvc's REST reader alone (every run's details, nothing recorded) | "
        f"{rest['read']:.2f} s = {r / rest['read'] * 60:,.0f} runs/min | | |"
    )


if __name__ == "__main__":
    main()
