"""Scoring throughput of `mlvc models serve` against `mlflow models serve`, same model.

A small scikit-learn model (logistic regression on iris, 4 double columns) is saved once as
an mlvc model and once as an MLflow model (from the same pickle, by MLflow in
benchmarks/.peers-venv, made by peers.sh). Each server runs on 127.0.0.1 on a free port, and
a client with K keep-alive connections (threads) sends a bounded number of POST
/invocations; we report requests/s and p50/p99 latency per payload size.

    .venv/bin/python benchmarks/bench_models.py            # about 3 minutes
    .venv/bin/python benchmarks/bench_models.py --quick    # about 40 seconds
    .venv/bin/python benchmarks/bench_models.py --append benchmarks/RESULTS.md

Only loopback addresses are used; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import pickle
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS = HERE / ".peers-venv"
HOST = "127.0.0.1"
MAX_SECONDS_PER_CASE = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            conn.request("GET", "/ping")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError("server did not answer /ping in time")


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def load(port: int, body: bytes, requests: int, clients: int) -> dict:
    """Send ``requests`` POSTs over ``clients`` keep-alive connections; latencies in ms."""
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    per_client = requests // clients
    deadline = time.monotonic() + MAX_SECONDS_PER_CASE
    headers = {"Content-Type": "application/json"}

    def worker():
        conn = http.client.HTTPConnection(HOST, port, timeout=30)
        mine = []
        for _ in range(per_client):
            if time.monotonic() > deadline:
                break
            t0 = time.perf_counter()
            conn.request("POST", "/invocations", body, headers)
            resp = conn.getresponse()
            resp.read()
            mine.append((time.perf_counter() - t0) * 1000)
            if resp.status != 200:
                with lock:
                    errors[0] += 1
        conn.close()
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat.sort()
    return {
        "n": len(lat),
        "rps": len(lat) / wall,
        "p50": statistics.median(lat),
        "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "errors": errors[0],
    }


def payload(rows: int) -> bytes:
    from sklearn.datasets import load_iris

    X = load_iris(as_frame=True).data.head(rows)
    return json.dumps(
        {"dataframe_split": {"columns": list(X.columns), "data": X.to_numpy().tolist()}}
    ).encode()


def build_models(tmp: Path) -> tuple[Path, Path | None, str]:
    """(mlvc model dir, MLflow model dir or None, note about MLflow)."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    import mlvc.models

    X, y = load_iris(return_X_y=True, as_frame=True)
    clf = LogisticRegression(max_iter=500).fit(X, y)
    mlvc.models.save(clf, tmp / "mlvc-model", input_example=X.head(3))
    (tmp / "clf.pkl").write_bytes(pickle.dumps(clf))
    mlflow_bin = PEERS / "bin" / "mlflow"
    if not mlflow_bin.exists():
        return tmp / "mlvc-model", None, "MLflow not installed (run benchmarks/peers.sh)"
    script = (
        "import pickle, sys, mlflow, mlflow.sklearn\n"
        "from mlflow.models import infer_signature\n"
        "from sklearn.datasets import load_iris\n"
        "X, y = load_iris(return_X_y=True, as_frame=True)\n"
        "clf = pickle.load(open(sys.argv[1], 'rb'))\n"
        "mlflow.sklearn.save_model(clf, sys.argv[2], serialization_format='cloudpickle',\n"
        "    signature=infer_signature(X, clf.predict(X)))\n"
        "print(mlflow.__version__)\n"
    )
    out = subprocess.run(
        [
            str(PEERS / "bin" / "python"),
            "-c",
            script,
            str(tmp / "clf.pkl"),
            str(tmp / "mlflow-model"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if out.returncode != 0:
        return tmp / "mlvc-model", None, f"MLflow could not save the model: {out.stderr[-300:]}"
    return tmp / "mlvc-model", tmp / "mlflow-model", f"MLflow {out.stdout.strip().splitlines()[-1]}"


def serve_cmd(kind: str, model: Path, port: int, workers: int) -> list[str]:
    if kind == "mlvc":
        mlvc_bin = Path(sys.executable).with_name("mlvc")
        return [str(mlvc_bin), "models", "serve", str(model), "--port", str(port),
                "--workers", str(workers)]  # fmt: skip
    return [str(PEERS / "bin" / "mlflow"), "models", "serve", "-m", str(model), "-h", HOST,
            "-p", str(port), "--env-manager", "local", "-w", str(workers)]  # fmt: skip


def run_case(kind, model, workers, bodies, requests, clients) -> dict:
    port = free_port()
    env = {**os.environ, "PATH": f"{PEERS / 'bin'}:{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen(
        serve_cmd(kind, model, port, workers),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    try:
        wait_ready(port, proc)
        out = {}
        for rows, body in bodies.items():
            load(port, body, max(requests // 10, clients), clients)  # warm-up
            out[rows] = load(port, body, requests, clients)
        return out
    finally:
        stop(proc)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} vCPUs, Linux {platform.release()}, Python {platform.python_version()}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer requests")
    ap.add_argument("--requests", type=int, default=None, help="requests per case")
    ap.add_argument("--clients", type=int, default=4, help="concurrent keep-alive connections")
    ap.add_argument("--append", type=Path, default=None, help="append the report to this file")
    args = ap.parse_args()
    requests = args.requests or (300 if args.quick else 2000)
    tmp = Path(tempfile.mkdtemp(prefix="mlvc-bench-models-"))
    try:
        mlvc_dir, mlflow_dir, note = build_models(tmp)
        bodies = {1: payload(1), 100: payload(100)}
        cases = [("mlvc", mlvc_dir, 1), ("mlvc", mlvc_dir, 2)]
        if mlflow_dir is not None:
            cases += [("mlflow", mlflow_dir, 1), ("mlflow", mlflow_dir, 2)]
        rows = []
        for kind, model, workers in cases:
            print(f"{kind} {workers} worker(s)...", file=sys.stderr, flush=True)
            try:
                res = run_case(kind, model, workers, bodies, requests, args.clients)
            except Exception as e:  # report and go on: one failed server is not the run
                rows.append(f"| {kind} | {workers} | FAILED: {e} | | | | |")
                continue
            for n, r in res.items():
                rows.append(
                    f"| {kind} | {workers} | {n} | {r['rps']:.0f} | {r['p50']:.1f} | "
                    f"{r['p99']:.1f} | {r['n']} ({r['errors']} errors) |"
                )
        import sklearn
        import uvicorn

        report = "\n".join(
            [
                "",
                f"### Scoring throughput, {date.today().isoformat()}",
                "",
                f"Machine: {machine()}. scikit-learn {sklearn.__version__}, uvicorn "
                f"{uvicorn.__version__}; {note}. LogisticRegression on iris (4 double columns), "
                f"`dataframe_split` JSON bodies of 1 and 100 rows; {args.clients} keep-alive "
                f"client connections (Python threads on the same 2 cores as the server), "
                f"{requests} requests per row after {max(requests // 10, args.clients)} warm-up.",
                "",
                "| server | workers | rows/request | requests/s | p50 ms | p99 ms | requests |",
                "|---|---|---|---|---|---|---|",
                *rows,
                "",
            ]
        )
        print(report)
        if args.append:
            with open(args.append, "a") as f:
                f.write(report)
        return 0 if not any("FAILED" in r for r in rows) else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
