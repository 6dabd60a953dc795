#!/usr/bin/env python
"""The team server against ``mlflow server`` (issue 11, item 8), through the same REST calls.

Both servers are driven by plain HTTP/1.1 keep-alive clients (``http.client``, stdlib) sending
MLflow's tracking REST API (``/api/2.0/mlflow/...``), so each side pays the same client cost:

1. ``runs/log-batch`` of 1,000 metrics per request from 20 concurrent client processes (each its
   own run) for a fixed time; points/s, then every run's history read back
   (``metrics/get-history``, paged) to count LOST points (acknowledged, not stored), and
   every error by kind ("database is locked"...).
2. ``runs/log-metric`` one call at a time from one client: p50/p99 latency per call, with
   ``GET /health`` on the same connection as the floor of an HTTP round trip.
3. ``runs/create`` sequential and from 8 concurrent clients: runs/s.
4. ``runs/search`` (``metrics.acc > 0.5 and params.lr = '0.01'``, order ``metrics.acc DESC``,
   max_results 100) at 10k and 100k runs: p50/p95. The runs are not logged through REST
   (hours for MLflow): one template run is logged through REST on each server, then copied in
   bulk below the server (mlvc: run objects written by the library + ``rebuild_index``;
   MLflow: rows copied in its own SQLite tables, as bench_tracking.py does), with the same
   values on both sides; the top results of both are compared.
5. Start-up: spawn to ``GET /health`` 200.

MLflow (full package, for ``mlflow server`` and its SQLite store) lives in
benchmarks/.mlflow-venv (``bash benchmarks/peers_mlflow.sh``, run automatically on first use).
An mlvc route that answers 404 ENDPOINT_NOT_FOUND makes that measure "not served" instead of
failing. Markdown report on stdout, progress on stderr; ``--json FILE``; ``--quick`` (< 60 s).
Only loopback addresses are used; every load is bounded in count and time.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
MLFLOW_VENV = HERE / ".mlflow-venv"
API = "/api/2.0/mlflow"
LRS = ("0.1", "0.01", "0.001", "0.0001")
FILTER = "metrics.acc > 0.5 and params.lr = '0.01'"
ORDER = ["metrics.acc DESC"]
MLFLOW_POOL = 0  # --mlflow-pool


def log(msg: str) -> None:
    print(f"[bench_server {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- HTTP ----------------------------------------------------------------------------------------


class NotServed(Exception):
    """The server answered 404 ENDPOINT_NOT_FOUND: it does not serve this route (yet)."""


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class Client:
    """One keep-alive connection to 127.0.0.1:port, reopened once if the server closed it."""

    def __init__(self, port: int, token: str | None = None, timeout: float = 120.0):
        self.port, self.timeout = port, timeout
        self.headers = {"Content-Type": "application/json", "Connection": "keep-alive"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.conn: http.client.HTTPConnection | None = None

    def raw(self, method: str, path: str, body: bytes | None = None, headers=None):
        hdrs = dict(self.headers, **(headers or {}))
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=hdrs)
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.close()
                return resp.status, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def call(self, method: str, route: str, body=None, query: str = "") -> dict:
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        status, out = self.raw(method, f"{API}/{route}{query}", data)
        return decode(status, out)

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None


def decode(status: int, out: bytes) -> dict:
    try:
        doc = json.loads(out) if out else {}
    except ValueError:
        doc = {"message": out[:200].decode("utf-8", "replace")}
    if not isinstance(doc, dict):
        doc = {"message": str(doc)[:200]}
    if status == 404 and doc.get("error_code") == "ENDPOINT_NOT_FOUND":
        raise NotServed(doc.get("message", ""))
    if status >= 400 or status < 200:
        raise HttpError(status, str(doc.get("error_code", "")), str(doc.get("message", ""))[:300])
    return doc


def error_kind(e: BaseException) -> str:
    if isinstance(e, HttpError):
        msg = e.message
        if "database is locked" in msg:
            return f"{e.status} {e.code}: database is locked"
        return f"{e.status} {e.code}: {msg[:120]}"
    return f"{type(e).__name__}: {str(e)[:80]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- servers -------------------------------------------------------------------------------------


class Server:
    name = ""
    token: str | None = None
    env: dict = {}  # noqa: RUF012 - extra environment of the server process

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.logfile = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 120.0) -> float:
        """Spawn; seconds until GET /health answers 200."""
        self.port = free_port()
        self.logfile = open(self.folder / f"server-{self.name}.log", "ab")  # noqa: SIM115
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.folder,
            env=dict(os.environ, **self.env),
            stdout=self.logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} server exited {self.proc.returncode}: {self.tail()}"
                )
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/health")
                ok = c.getresponse().status == 200
                c.close()
                if ok:
                    return time.perf_counter() - t0
            except OSError:
                pass
            if time.perf_counter() - t0 > timeout:
                self.stop()
                raise RuntimeError(
                    f"{self.name} server not healthy in {timeout:.0f} s: {self.tail()}"
                )
            time.sleep(0.01)

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.folder / f"server-{self.name}.log").read_text(errors="replace")[-600:]
        return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        if self.logfile:
            self.logfile.close()
            self.logfile = None

    def client(self) -> Client:
        return Client(self.port, self.token)


class MlvcServer(Server):
    name = "mlvc"

    def __init__(self, folder: Path, workers: int):
        super().__init__(folder)
        self.workers = workers
        folder.mkdir(parents=True, exist_ok=True)
        mlvc = [sys.executable, "-m", "mlvc"]
        subprocess.run([*mlvc, "init"], cwd=folder, check=True, capture_output=True)
        out = subprocess.run(
            [*mlvc, "token", "create", "--scope", "write", "--name", "bench"],
            cwd=folder,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        self.token = out.strip().splitlines()[-1].strip()

    def command(self) -> list[str]:
        return [sys.executable, "-m", "mlvc", "server", "--port", str(self.port),
                "--workers", str(self.workers)]  # fmt: skip


class MlflowServer(Server):
    name = "mlflow"

    def __init__(self, folder: Path, workers: int = 1):
        super().__init__(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.db = folder / "mlflow.db"
        self.workers = workers
        if MLFLOW_POOL:  # SQLAlchemy's pool: 5 + 10 overflow by default
            self.env = {
                "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": str(MLFLOW_POOL),
                "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "0",
            }

    def command(self) -> list[str]:
        return [
            str(MLFLOW_VENV / "bin" / "mlflow"), "server",
            "--backend-store-uri", f"sqlite:///{self.db}",
            "--artifacts-destination", str(self.folder / "artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", str(self.workers),
        ]  # fmt: skip


def mlflow_version() -> str:
    py = MLFLOW_VENV / "bin" / "python"
    check = "import mlflow, sqlalchemy, alembic; print(mlflow.__version__)"
    if not py.exists():
        log("installing MLflow into benchmarks/.mlflow-venv (peers_mlflow.sh)")
        subprocess.run(["bash", str(HERE / "peers_mlflow.sh")], stdout=sys.stderr, check=False)
    try:
        return subprocess.run(
            [str(py), "-c", check], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


# -- statistics ----------------------------------------------------------------------------------


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def pct(xs, q: float):
    xs = sorted(xs)
    if not xs:
        return None
    k = min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))
    return xs[k]


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def fms(v) -> str:
    return "–" if v is None else (f"{v * 1000:.2f} ms" if v < 0.1 else f"{v * 1000:.0f} ms")


def frate(v) -> str:
    return "–" if v is None else f"{v:,.0f}"


def fx(v) -> str:
    return "–" if v is None else (f"{v:.1f}x" if v < 100 else f"{v:,.0f}x")


def table(head: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = [list(r) + [""] * (len(head) - len(r)) for r in rows]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def experiment(c: Client, name: str) -> str:
    """A new experiment; the Default one ("0") where experiments/create is not served."""
    try:
        return str(c.call("POST", "experiments/create", {"name": name})["experiment_id"])
    except NotServed:
        return "0"


def create_run(c: Client, exp: str, name: str) -> str:
    doc = c.call(
        "POST",
        "runs/create",
        {"experiment_id": exp, "run_name": name, "start_time": int(time.time() * 1000)},
    )
    info = doc["run"]["info"]
    return info.get("run_id") or info["run_uuid"]


def end_run(c: Client, run_id: str) -> None:
    c.call(
        "POST",
        "runs/update",
        {"run_id": run_id, "status": "FINISHED", "end_time": int(time.time() * 1000)},
    )


# -- 1. log-batch under load -----------------------------------------------------------------


KEYS_PER_BATCH, STEPS_PER_BATCH = 10, 100  # 1,000 metrics a request


def batch_body(run_id: str, b: int, ts: int) -> bytes:
    """Batch b of a run: keys m0..m9 at steps b*100 .. b*100+99."""
    s0 = b * STEPS_PER_BATCH
    metrics = [
        {"key": f"m{k}", "value": (s0 + s) * 1e-3 + k, "timestamp": ts + s0 + s, "step": s0 + s}
        for k in range(KEYS_PER_BATCH)
        for s in range(STEPS_PER_BATCH)
    ]
    return json.dumps({"run_id": run_id, "metrics": metrics}, separators=(",", ":")).encode()


def child_batch_client(port: str, token: str, exp: str, idx: str, duration: str, cap: str):
    """One client process: create a run, say ready, wait for a line, then log-batch for
    ``duration`` seconds (at most ``cap`` batches); print what was acknowledged."""
    c = Client(int(port), token or None)
    out = {"run_id": None, "acked": [], "errors": {}, "lat": []}
    try:
        out["run_id"] = create_run(c, exp, f"client-{idx}")
    except NotServed:
        out["not_served"] = True
    except Exception as e:  # noqa: BLE001 - reported, counted
        out["errors"][error_kind(e)] = 1
    print("ready", flush=True)
    sys.stdin.readline()
    if out["run_id"]:
        ts = int(time.time() * 1000)
        t_end = time.perf_counter() + float(duration)
        out["start"] = time.time()
        b = 0
        while b < int(cap) and time.perf_counter() < t_end:
            body = batch_body(out["run_id"], b, ts)
            t0 = time.perf_counter()
            try:
                for attempt in range(6):  # 429/503 are retried, as the MLflow client does
                    status, data = c.raw("POST", f"{API}/runs/log-batch", body)
                    if status not in (429, 503) or attempt == 5:
                        break
                    out["retries"] = out.get("retries", 0) + 1
                    time.sleep(0.05 * 2**attempt)
                decode(status, data)
                out["acked"].append(b)
            except NotServed:
                out["not_served"] = True
                break
            except Exception as e:  # noqa: BLE001
                k = error_kind(e)
                out["errors"][k] = out["errors"].get(k, 0) + 1
            out["lat"].append(time.perf_counter() - t0)
            b += 1
        out["end"] = time.time()
        out["sent"] = b
    print(json.dumps(out), flush=True)


def read_history(c: Client, run_id: str, key: str, page: int = 25000) -> list[dict]:
    points, token = [], ""
    for _ in range(10_000):
        q = f"?run_id={run_id}&metric_key={key}&max_results={page}"
        if token:
            q += f"&page_token={token}"
        doc = c.call("GET", "metrics/get-history", query=q)
        points += doc.get("metrics", [])
        token = doc.get("next_page_token", "")
        if not token:
            break
    return points


def load_once(srv: Server, clients: int, duration: float, cap: int, tag: str) -> dict:
    c = srv.client()
    exp = experiment(c, f"batch-{tag}-{uuid.uuid4().hex[:6]}")
    procs = []
    for i in range(clients):
        args = [str(srv.port), srv.token or "", exp, str(i), str(duration), str(cap)]
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, "--child", "batch-client", *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    for p in procs:
        p.stdout.readline()  # ready: runs created
    t0 = time.time()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=duration + 600)
        results.append(json.loads(out.strip().splitlines()[-1]))
    if any(r.get("not_served") for r in results):
        return {"not_served": "runs/create or runs/log-batch"}
    wall = max(r.get("end", t0) for r in results) - min(r.get("start", t0) for r in results)
    acked = sum(len(r["acked"]) for r in results) * KEYS_PER_BATCH * STEPS_PER_BATCH
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    lat = [x for r in results for x in r["lat"]]
    # end every run, then read every point back
    lost = unacked_stored = 0
    read_s = time.perf_counter()
    read_errors = 0
    for r in results:
        if not r["run_id"]:
            continue
        try:
            end_run(c, r["run_id"])
        except Exception as e:  # noqa: BLE001
            k = "runs/update: " + error_kind(e)
            errors[k] = errors.get(k, 0) + 1
        acked_b = set(r["acked"])
        for k in range(KEYS_PER_BATCH):
            try:
                pts = read_history(c, r["run_id"], f"m{k}")
            except Exception as e:  # noqa: BLE001
                read_errors += 1
                kind = "get-history: " + error_kind(e)
                errors[kind] = errors.get(kind, 0) + 1
                lost += len(acked_b) * STEPS_PER_BATCH
                continue
            steps = {int(p["step"]) for p in pts}
            for b in acked_b:
                lo = b * STEPS_PER_BATCH
                lost += sum(1 for s in range(lo, lo + STEPS_PER_BATCH) if s not in steps)
            unacked_stored += sum(1 for s in steps if s // STEPS_PER_BATCH not in acked_b)
    c.close()
    return {
        "points": acked,
        "seconds": wall,
        "rate": acked / wall if wall > 0 else None,
        "errors": errors,
        "failed_requests": sum(sum(r["errors"].values()) for r in results),
        "retries": sum(r.get("retries", 0) for r in results),
        "lost": lost,
        "unacked_stored": unacked_stored,
        "read_s": time.perf_counter() - read_s,
        "p50": pct(lat, 50),
        "p99": pct(lat, 99),
    }


def bench_batch(servers: dict, cfg: dict, raw: dict) -> str:
    out = {name: [] for name in servers}
    for rep in range(cfg["reps"]):
        for name, srv in servers.items():
            log(f"log-batch rep {rep + 1}/{cfg['reps']}: {name}, {cfg['clients']} clients, "
                f"{cfg['duration']:.0f} s")  # fmt: skip
            try:
                res = load_once(srv, cfg["clients"], cfg["duration"], cfg["cap"], f"r{rep}")
            except Exception as e:  # noqa: BLE001
                res = {"failed": error_kind(e)}
            out[name].append(res)
            if res.get("not_served"):
                log(f"  {name}: not served ({res['not_served']})")
            elif "rate" in res:
                log(f"  {name}: {frate(res['rate'])} points/s, lost {res['lost']}, "
                    f"errors {sum(res['errors'].values())}")  # fmt: skip
    raw["batch"] = out
    rows = []
    base = [r.get("rate") for r in out.get("mlflow", [])]
    for name, reps in out.items():
        ns = next((r for r in reps if r.get("not_served") or r.get("failed")), None)
        if ns:
            rows.append([name, ns.get("not_served") and "not served" or ns["failed"]] + [""] * 7)
            continue
        rates = [r["rate"] for r in reps]
        ratios = [ratio(a, b) for a, b in zip(rates, base, strict=False)] if base else []
        errs: dict[str, int] = {}
        for r in reps:
            for k, v in r["errors"].items():
                errs[k] = errs.get(k, 0) + v
        rows.append(
            [
                name,
                frate(med(rates)),
                fx(med(ratios)) if name != "mlflow" else "1.0x (baseline)",
                f"{sum(r['points'] for r in reps):,}",
                f"{sum(r['lost'] for r in reps):,}",
                f"{sum(r['unacked_stored'] for r in reps):,}",
                ("; ".join(f"{v}x {k}" for k, v in errs.items()) or "0")
                + f" ({sum(r.get('retries', 0) for r in reps)} retried 429/503)",
                f"{fms(med([r['p50'] for r in reps]))} / {fms(med([r['p99'] for r in reps]))}",
                f"{med([r['read_s'] for r in reps]):.1f} s",
            ]
        )
    head = ["server", "points/s (median)", "vs MLflow", "points acked (all reps)", "lost",
            "stored but not acked", "errors", "request p50 / p99", "read-back time"]  # fmt: skip
    return (
        f"## 1. log-batch: {cfg['clients']} client processes x 1,000 metrics a request, "
        f"{cfg['duration']:.0f} s, {cfg['reps']} reps\n\n"
        "Each client its own run (10 keys x 100 steps a batch). Lost = points in acknowledged "
        "batches missing from `metrics/get-history` (paged) after `runs/update` FINISHED.\n\n"
        + table(head, rows)
    )


# -- 2. log-metric one at a time ----------------------------------------------------------------


def latencies(srv: Server, n: int) -> dict:
    c = srv.client()
    try:
        exp = experiment(c, f"logmetric-{uuid.uuid4().hex[:6]}")
        rid = create_run(c, exp, "log-metric")
    except NotServed:
        return {"not_served": True}
    ts = int(time.time() * 1000)
    health = []
    for _ in range(n // 4 + 20):
        t0 = time.perf_counter()
        c.raw("GET", "/health")
        health.append(time.perf_counter() - t0)
    lat, errors = [], 0
    for i in range(n + 50):
        body = json.dumps(
            {"run_id": rid, "key": "loss", "value": 1.0 / (i + 1), "timestamp": ts + i, "step": i}
        ).encode()
        t0 = time.perf_counter()
        try:
            decode(*c.raw("POST", f"{API}/runs/log-metric", body))
        except NotServed:
            return {"not_served": True}
        except Exception:  # noqa: BLE001
            errors += 1
        if i >= 50:  # warm-up
            lat.append(time.perf_counter() - t0)
    end_run(c, rid)
    stored = len(read_history(c, rid, "loss"))
    c.close()
    return {
        "p50": pct(lat, 50),
        "p99": pct(lat, 99),
        "mean": statistics.fmean(lat),
        "health_p50": pct(health[20:], 50),
        "errors": errors,
        "stored": stored,
        "sent": n + 50,
    }


def bench_logmetric(servers: dict, cfg: dict, raw: dict) -> str:
    out = {name: [] for name in servers}
    for rep in range(cfg["reps"]):
        for name, srv in servers.items():
            log(f"log-metric rep {rep + 1}: {name}, {cfg['calls']} calls")
            try:
                out[name].append(latencies(srv, cfg["calls"]))
            except Exception as e:  # noqa: BLE001
                out[name].append({"failed": error_kind(e)})
    raw["logmetric"] = out
    base = [r.get("p50") for r in out.get("mlflow", [])]
    rows = []
    for name, reps in out.items():
        bad = next((r for r in reps if r.get("not_served") or r.get("failed")), None)
        if bad:
            rows.append([name, "not served" if bad.get("not_served") else bad["failed"]] + [""] * 5)
            continue
        p50s = [r["p50"] for r in reps]
        rows.append(
            [
                name,
                fms(med(p50s)),
                fms(med([r["p99"] for r in reps])),
                "baseline"
                if name == "mlflow"
                else fx(med([ratio(b, a) for a, b in zip(p50s, base, strict=False)])),
                fms(med([r["health_p50"] for r in reps])),
                sum(r["errors"] for r in reps),
                f"{sum(r['stored'] for r in reps):,} / {sum(r['sent'] for r in reps):,}",
            ]
        )
    head = ["server", "p50", "p99", "speed-up of p50 vs MLflow", "GET /health p50 (floor)",
            "errors", "points stored / sent"]  # fmt: skip
    return (
        f"## 2. log-metric, one call at a time: {cfg['calls']} calls (after 50 warm-up), one "
        f"keep-alive client, {cfg['reps']} reps\n\n" + table(head, rows)
    )


# -- 3. runs/create --------------------------------------------------------------------------


def create_rate(srv: Server, n: int, threads: int) -> dict:
    c = srv.client()
    try:
        exp = experiment(c, f"create-{threads}-{uuid.uuid4().hex[:6]}")
    except NotServed:
        return {"not_served": True}
    c.close()
    errors: list[str] = []
    flags = {"ns": False}
    per = n // threads

    def worker(k):
        cc = srv.client()
        for i in range(per):
            try:
                create_run(cc, exp, f"c{k}-{i}")
            except NotServed:
                flags["ns"] = True
                return
            except Exception as e:  # noqa: BLE001
                errors.append(error_kind(e))
        cc.close()

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt = time.perf_counter() - t0
    if flags["ns"]:
        return {"not_served": True}
    return {"runs": per * threads, "seconds": dt, "rate": per * threads / dt, "errors": errors}


def bench_create(servers: dict, cfg: dict, raw: dict) -> str:
    out: dict = {}
    for threads in (1, 8):
        for rep in range(cfg["reps"]):
            for name, srv in servers.items():
                log(f"runs/create rep {rep + 1}: {name}, {threads} client(s)")
                try:
                    res = create_rate(srv, cfg["creates"], threads)
                except Exception as e:  # noqa: BLE001
                    res = {"failed": error_kind(e)}
                out.setdefault(f"{name}/{threads}", []).append(res)
    raw["create"] = out
    rows = []
    for threads in (1, 8):
        base = [r.get("rate") for r in out.get(f"mlflow/{threads}", [])]
        for name in servers:
            reps = out[f"{name}/{threads}"]
            bad = next((r for r in reps if r.get("not_served") or r.get("failed")), None)
            if bad:
                rows.append(
                    [
                        name,
                        threads,
                        "not served" if bad.get("not_served") else bad["failed"],
                        "",
                        "",
                    ]
                )
                continue
            rates = [r["rate"] for r in reps]
            errs = [e for r in reps for e in r["errors"]]
            rows.append(
                [
                    name,
                    threads,
                    frate(med(rates)),
                    "baseline"
                    if name == "mlflow"
                    else fx(med([ratio(a, b) for a, b in zip(rates, base, strict=False)])),
                    f"{len(errs)}" + (f" ({errs[0]})" if errs else ""),
                ]
            )
    return (
        f"## 3. runs/create: {cfg['creates']} runs per rep, sequential and 8 concurrent "
        f"keep-alive clients (threads), {cfg['reps']} reps\n\n"
        + table(["server", "clients", "runs/s (median)", "vs MLflow", "errors"], rows)
    )


# -- 4. runs/search over many runs -------------------------------------------------------------


def run_values(i: int, seed: int = 7) -> tuple[str, float, float]:
    """(lr, acc, loss) of synthetic run i: the same on both sides."""
    r = random.Random(seed * 1_000_003 + i)
    return LRS[r.randrange(len(LRS))], r.random(), r.random() * 3


TEMPLATE_PARAMS = {"batch_size": "64", "optimizer": "adam", "epochs": "10", "seed": "0"}


def log_template(srv: Server, exp_name: str) -> tuple[str, str]:
    """One run through REST: the shape the bulk copies take (params lr + 4, metrics acc, loss)."""
    c = srv.client()
    exp = experiment(c, exp_name)
    rid = create_run(c, exp, "template")
    lr, acc, loss = run_values(0)
    ts = int(time.time() * 1000)
    params = [{"key": "lr", "value": lr}] + [
        {"key": k, "value": v} for k, v in TEMPLATE_PARAMS.items()
    ]
    metrics = [
        {"key": "acc", "value": acc, "timestamp": ts, "step": 0},
        {"key": "loss", "value": loss, "timestamp": ts, "step": 0},
    ]
    c.call("POST", "runs/log-batch", {"run_id": rid, "params": params, "metrics": metrics})
    end_run(c, rid)
    c.close()
    return exp, rid


def mlflow_bulk(db: Path, n: int) -> float:
    """Copy the template run's rows (runs, tags, params, metrics, latest_metrics) for runs
    1..n-1 in MLflow's own tables (ids, names, times and values changed)."""
    import sqlite3

    t0 = time.perf_counter()
    con = sqlite3.connect(db)
    con.execute("PRAGMA synchronous = OFF")
    (tid,) = con.execute("SELECT run_uuid FROM runs WHERE name = 'template'").fetchone()
    cols, tmpl = {}, {}
    for t in ("runs", "tags", "params", "metrics", "latest_metrics"):
        cols[t] = [r[1] for r in con.execute(f"PRAGMA table_info({t})")]
        tmpl[t] = [
            dict(zip(cols[t], row, strict=True))
            for row in con.execute(f"SELECT * FROM {t} WHERE run_uuid = ?", (tid,))
        ]
    sqls = {
        t: f"INSERT INTO {t} ({', '.join(chr(34) + c + chr(34) for c in cs)}) "
        f"VALUES ({', '.join('?' for _ in cs)})"
        for t, cs in cols.items()
    }
    base_ms = tmpl["runs"][0]["start_time"]
    rows: dict[str, list] = {t: [] for t in cols}
    for i in range(1, n):
        lr, acc, loss = run_values(i)
        rid = uuid.uuid4().hex
        name = f"run{i}"
        start = base_ms + i
        for t in cols:
            for row in tmpl[t]:
                r = dict(row, run_uuid=rid)
                if t == "runs":
                    r.update(name=name, start_time=start, end_time=start + 1000)
                    r["artifact_uri"] = (r.get("artifact_uri") or "").replace(tid, rid)
                elif t == "tags" and r["key"] == "mlflow.runName":
                    r["value"] = name
                elif t == "params" and r["key"] == "lr":
                    r["value"] = lr
                elif t in ("metrics", "latest_metrics"):
                    r["value"] = acc if r["key"] == "acc" else loss
                    r["timestamp"] = start
                rows[t].append(tuple(r[c] for c in cols[t]))
        if i % 10_000 == 0 or i == n - 1:
            with con:
                for t, rs in rows.items():
                    con.executemany(sqls[t], rs)
            rows = {t: [] for t in cols}
    con.close()
    return time.perf_counter() - t0


def child_mlvc_bulk(root: str, n: str, part: str, parts: str) -> None:
    """Write runs (part, part+parts, ...) < n as copies of the repository's one run (the
    template logged through REST): a run object and a 2-point series each, ids changed."""
    import dataclasses
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlvc import Repo
    from mlvc.store.typed import write_object

    repo = Repo(root)
    rows = repo.log()
    named = [r["id"] for r in rows if r["name"] == "template"]
    if not named and len(rows) != 1:
        raise SystemExit(f"no run named 'template' among {len(rows)} runs")
    tmpl_id = (named or [rows[0]["id"]])[0]
    tmpl = repo.run(tmpl_id)
    mlflow_id = os.environ.get("BENCH_TEMPLATE_RUN_ID", "")
    series = None
    if tmpl.series is not None:
        from mlvc.core.series_blob import read_series

        series = read_series(repo.store.read_bytes(tmpl.series))
        if not {"key", "value"} <= set(series.column_names):
            series = None  # a layout this script does not know: copies share the template's

    def swap(v, old, new):
        if isinstance(v, str):
            return v.replace(old, new) if old else v
        if isinstance(v, dict):
            return {k: swap(x, old, new) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return type(v)(swap(x, old, new) for x in v)
        return v

    t0 = time.perf_counter()
    made = 0
    for i in range(1 + int(part), int(n), int(parts)):
        lr, acc, loss = run_values(i)
        name = f"run{i}"
        new_id = uuid.uuid4().hex
        params = dict(tmpl.params)
        params["lr"] = lr if isinstance(tmpl.params.get("lr"), str) else float(lr)
        started = tmpl.started + i * 1000
        sid = tmpl.series
        if series is not None:
            vals = [acc if k == "acc" else loss for k in series.column("key").to_pylist()]
            tab = series.set_column(
                series.schema.get_field_index("value"), "value", pa.array(vals, pa.float64())
            )
            buf = io.BytesIO()
            pq.write_table(tab, buf)
            sid = repo.store.add_bytes(buf.getvalue())
        tags = swap(dict(tmpl.tags), mlflow_id, new_id)
        for k in list(tags):
            if tags[k] == "template":
                tags[k] = name
        run = dataclasses.replace(
            tmpl,
            name=name,
            started=started,
            ended=started + 1000,
            params=params,
            metrics={k: (acc if k == "acc" else loss) for k in tmpl.metrics},
            series=sid,
            tags=tags,
            extra=swap(dict(tmpl.extra), mlflow_id, new_id),
        )
        repo.refs.add_run(write_object(repo.store, run))
        made += 1
    repo.store.sync()
    print(json.dumps({"runs": made, "seconds": time.perf_counter() - t0}), flush=True)


def expected_top(n: int) -> list[float]:
    """The acc values the search must return, best first (from the generator itself)."""
    accs = [acc for lr, acc, _ in map(run_values, range(n)) if lr == "0.01" and acc > 0.5]
    return [round(x, 9) for x in sorted(accs, reverse=True)[:100]]


def search_latency(srv: Server, exp: str, reps: int, budget: float) -> dict:
    """A first call, then up to ``reps`` warm calls; after ``budget`` seconds, stop once 3
    warm calls are in (MLflow takes seconds a call at 100k runs)."""
    c = Client(srv.port, srv.token, timeout=1800)
    t_start = time.perf_counter()
    body = {"experiment_ids": [exp], "filter": FILTER, "order_by": ORDER, "max_results": 100}
    lat, first = [], None
    top: list = []
    for i in range(reps + 1):
        t0 = time.perf_counter()
        doc = c.call("POST", "runs/search", body)
        dt = time.perf_counter() - t0
        if i == 0:
            first = dt
            for r in doc.get("runs", []):
                ms = {m["key"]: m["value"] for m in r.get("data", {}).get("metrics", [])}
                top.append(ms.get("acc"))
        else:
            lat.append(dt)
            if len(lat) >= 3 and time.perf_counter() - t_start > budget:
                break
    c.close()
    return {"first": first, "p50": pct(lat, 50), "p95": pct(lat, 95), "n": len(lat), "top": top}


def build_and_search(kind: str, work: Path, n: int, cfg: dict) -> dict:
    folder = work / f"search-{kind}-{n}"
    res: dict = {"runs": n}
    if kind == "mlflow":
        # rows go into SQLite under the running server (it caches no run), saving a restart
        srv: Server = MlflowServer(folder)
        res["start_s"] = srv.start()
        try:
            exp, _ = log_template(srv, "search")
            log(f"  mlflow: copying {n:,} runs into its SQLite tables")
            res["build_s"] = mlflow_bulk(srv.db, n)
            res.update(search_latency(srv, exp, cfg["search_reps"], cfg["search_budget"]))
        finally:
            srv.stop()
        return res
    else:
        srv = MlvcServer(folder, cfg["workers"])
        srv.start()
        try:
            exp, rid = log_template(srv, "search")
        finally:
            srv.stop()
        log(f"  mlvc: writing {n:,} runs through the library, then rebuild_index")
        t0 = time.perf_counter()
        parts = 2
        env = dict(os.environ, BENCH_TEMPLATE_RUN_ID=rid)
        ps = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    "mlvc-bulk",
                    str(folder),
                    str(n),
                    str(k),
                    str(parts),
                ],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            for k in range(parts)
        ]
        for p in ps:
            p.communicate()
            if p.returncode:
                raise RuntimeError(f"mlvc bulk writer exited {p.returncode}")
        subprocess.run(
            [sys.executable, "-c", f"from mlvc import Repo; Repo({str(folder)!r}).rebuild_index()"],
            check=True,
        )
        res["build_s"] = time.perf_counter() - t0
    res["start_s"] = srv.start()
    try:
        res.update(search_latency(srv, exp, cfg["search_reps"], cfg["search_budget"]))
    finally:
        srv.stop()
    return res


def bench_search(servers: dict, work: Path, cfg: dict, raw: dict) -> str:
    out: dict = {}
    for n in cfg["search_runs"]:
        for name in servers:
            log(f"runs/search at {n:,} runs: {name}")
            try:
                out[f"{name}/{n}"] = build_and_search(name, work, n, cfg)
            except NotServed:
                out[f"{name}/{n}"] = {"not_served": True}
            except Exception as e:  # noqa: BLE001
                out[f"{name}/{n}"] = {"failed": error_kind(e)}
            shutil.rmtree(work / f"search-{name}-{n}", ignore_errors=True)
    raw["search"] = out
    rows = []
    for n in cfg["search_runs"]:
        ref = out.get(f"mlflow/{n}", {})
        for name in servers:
            r = out[f"{name}/{n}"]
            if r.get("not_served") or r.get("failed"):
                rows.append(
                    [f"{n:,}", name, "not served" if r.get("not_served") else r["failed"]]
                    + [""] * 5
                )
                continue
            truth = expected_top(n)
            same = "yes" if [round(x or 0, 9) for x in r["top"]] == truth else "NO"
            rows.append(
                [
                    f"{n:,}",
                    name,
                    r["n"],
                    fms(r["p50"]),
                    fms(r["p95"]),
                    "baseline" if name == "mlflow" else fx(ratio(ref.get("p50"), r["p50"])),
                    fms(r["first"]),
                    f"{len(r['top'])}, correct: {same}",
                    f"{r['build_s']:.0f} s / start {r['start_s']:.1f} s",
                ]
            )
    head = ["runs", "server", "n", "p50", "p95", "speed-up of p50 vs MLflow", "first call",
            "runs returned", "bulk build / server start"]  # fmt: skip
    return (
        f"## 4. runs/search `{FILTER}` order `{ORDER[0]}`, max_results 100, "
        f"up to {cfg['search_reps']} warm calls after a first (at least 3; fewer when a "
        f"server needs more than {cfg['search_budget']:.0f} s for them: see n)\n\n"
        "One template run logged through REST on each server, then copied in bulk below the "
        "server (MLflow: rows in its SQLite tables; mlvc: run objects through the library and "
        "`rebuild_index`), lr drawn from 4 values and acc uniform, the same on both sides.\n\n"
        + table(head, rows)
    )


# -- 5. start-up -------------------------------------------------------------------------------


def bench_startup(servers: dict, first: dict, cfg: dict, raw: dict) -> str:
    """Stop each running server and start it again on its store, ``startup_reps`` times; it is
    left running. ``first`` holds the first start of each (which creates the store)."""
    out: dict = {}
    for name, srv in servers.items():
        times = []
        try:
            for _ in range(cfg["startup_reps"]):
                srv.stop()
                times.append(srv.start())
            out[name] = {"seconds": times, "first": first.get(name)}
        except Exception as e:  # noqa: BLE001
            out[name] = {"failed": error_kind(e)}
        log(f"start-up {name}: {fms(med(times))}")
    raw["startup"] = out
    base = med(out.get("mlflow", {}).get("seconds", []))
    rows = []
    for name, r in out.items():
        if "failed" in r:
            rows.append([name, r["failed"], "", "", ""])
            continue
        m = med(r["seconds"])
        rows.append(
            [
                name,
                fms(m),
                fms(min(r["seconds"])),
                "baseline" if name == "mlflow" else fx(ratio(base, m)),
                fms(r["first"]),
            ]
        )
    return (
        "## 5. Start-up: spawn to GET /health 200 on an existing store, "
        f"{cfg['startup_reps']} reps\n\n"
        + table(["server", "median", "min", "speed-up vs MLflow", "first start (new store)"], rows)
    )


# -- main --------------------------------------------------------------------------------------


def machine(phase: str) -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{phase}: nproc {os.cpu_count()}, CPU {model or '?'}, load average {load}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small smoke version (< 60 s)")
    ap.add_argument("--only", default="", help="comma-separated measures, e.g. 1,4")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 3, quick 1)")
    ap.add_argument("--duration", type=float, default=None, help="seconds of log-batch load")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--search-runs", default=None, help="run counts, default 10000,100000")
    ap.add_argument("--workers", type=int, default=8, help="mlvc server request threads")
    ap.add_argument(
        "--mlflow-pool",
        type=int,
        default=0,
        help="MLflow server's SQLAlchemy pool size (default: MLflow's own, 5 + 10 overflow)",
    )
    ap.add_argument("--no-mlflow", action="store_true")
    ap.add_argument("--no-mlvc", action="store_true")
    ap.add_argument("--dir", default=None, help="where to make the temporary folder")
    ap.add_argument("--json", default=None, help="write raw samples as JSON")
    ap.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        {"batch-client": child_batch_client, "mlvc-bulk": child_mlvc_bulk}[kind](*rest)
        return 0

    global MLFLOW_POOL
    MLFLOW_POOL = args.mlflow_pool
    q = args.quick
    cfg = {
        "reps": args.reps or (1 if q else 3),
        "duration": args.duration or (3.0 if q else 15.0),
        "clients": args.clients,
        "cap": 2000,
        "calls": 200 if q else 2000,
        "creates": 80 if q else 800,
        "search_runs": [
            int(x) for x in (args.search_runs or ("1000" if q else "10000,100000")).split(",")
        ],
        "search_reps": 10 if q else 40,
        "search_budget": 5.0 if q else 60.0,
        "startup_reps": 1 if q else 5,
        "workers": args.workers,
    }
    only = {int(x) for x in args.only.split(",") if x}
    names = ([] if args.no_mlvc else ["mlvc"]) + ([] if args.no_mlflow else ["mlflow"])
    version = ""
    if "mlflow" in names:
        version = mlflow_version()
        if not version:
            log("MLflow not installed: its side is skipped")
            names.remove("mlflow")
    os.makedirs(args.dir or tempfile.gettempdir(), exist_ok=True)  # --dir made if new
    work = Path(tempfile.mkdtemp(prefix="bench-server-", dir=args.dir))
    raw: dict = {"config": cfg, "mlflow": version, "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    facts = [machine("before")]
    sections: list[str] = []
    servers: dict[str, Server] = {}

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        if not only or only & {1, 2, 3, 5}:
            first = {}
            for name in names:
                srv = (
                    MlflowServer(work / name)
                    if name == "mlflow"
                    else MlvcServer(work / name, cfg["workers"])
                )
                servers[name] = srv
                first[name] = srv.start()
            if not only or 5 in only:
                sections.append(bench_startup(servers, first, cfg, raw))
            if not only or 2 in only:
                sections.append(bench_logmetric(servers, cfg, raw))
            if not only or 3 in only:
                sections.append(bench_create(servers, cfg, raw))
            if not only or 1 in only:
                sections.append(bench_batch(servers, cfg, raw))
            for srv in servers.values():
                srv.stop()
        if not only or 4 in only:
            sections.append(bench_search({n: None for n in names}, work, cfg, raw))
    finally:
        for srv in servers.values():
            srv.stop()
        shutil.rmtree(work, ignore_errors=True)
    facts.append(machine("after"))
    raw["machine"] = facts
    order = {"## 1": 1, "## 2": 2, "## 3": 3, "## 4": 4, "## 5": 5}
    sections.sort(key=lambda s: order.get(s[:4], 9))
    head = [
        "# Team server benchmark: `mlvc server` vs `mlflow server`",
        "",
        f"- date: {raw['date']}" + ("  (--quick)" if q else ""),
        f"- {facts[0]}",
        f"- {facts[1]}",
        f"- mlvc server: `--workers {cfg['workers']}` (request threads, one process); "
        f"MLflow {version or 'not installed'}: `mlflow server --backend-store-uri sqlite:///... "
        "--workers 1` (benchmarks/.mlflow-venv)"
        + (f", SQLAlchemy pool {MLFLOW_POOL}" if MLFLOW_POOL else ", its default SQLAlchemy pool"),
        "- clients: stdlib `http.client`, one keep-alive connection each, JSON bodies as the "
        "MLflow client sends them; loopback only",
        "",
    ]
    print("\n".join(head) + "\n" + "\n\n".join(sections))
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
