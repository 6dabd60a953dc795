#!/usr/bin/env python
"""Fuzzing the team server (issue 11, item 7): no request may crash it or get a 5xx.

Two fuzzers:

* **garbage** (this file, stdlib only): MLflow's tracking routes under ``/api/2.0/mlflow`` and
  the artifact proxy, each with a plausible body in which fields are replaced by values of
  random JSON types, huge and non-finite numbers, long and hostile strings, deep nesting;
  whole bodies that are not JSON, not UTF-8, truncated, of the wrong top-level type, or over
  the size limit; hostile query strings; artifact paths with ``..``, NUL, absolute paths and
  bad percent escapes. The oracle: no status >= 500 (except 503 with ``Retry-After``, the
  documented overload answer), no Python traceback in any body, error bodies are
  ``{"error_code", "message"}`` JSON, no file appears outside the store for a hostile path,
  ``GET /health`` still answers 200 every 100 requests and at the end. A route that answers
  404 ENDPOINT_NOT_FOUND to its plausible body is not served (yet) and is skipped.
  tests/server/test_fuzz_mlflow.py runs it CI-sized; this script runs it longer, and can
  point it at ``mlflow server`` for comparison (``--target mlflow``).
* **schemathesis** (``--schemathesis``): the schema-driven fuzz of mlvc's ``/api/v1`` from
  its OpenAPI document (``GET /api/v1/openapi.json``), every check on (the configuration:
  benchmarks/schemathesis.toml). schemathesis is in the dev extra (a test tool, never an
  mlvc runtime dependency; benchmarks/.fuzz-venv is made for it when it is missing).
  tests/server/test_fuzz_v1.py runs it CI-sized and derandomized.

Examples::

    .venv/bin/python benchmarks/bench_server_fuzz.py --requests 20000 --seed 1
    .venv/bin/python benchmarks/bench_server_fuzz.py --target mlflow --requests 3000
    .venv/bin/python benchmarks/bench_server_fuzz.py --schemathesis --max-examples 200

Only 127.0.0.1 is used; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
API = "/api/2.0/mlflow"
ART = "/api/2.0/mlflow-artifacts/artifacts"

# (method, route, plausible body or query). "{exp}" / "{run}" are replaced by ids of a real
# experiment and run made at the start (when the server serves runs/create), so a mutated body
# reaches the code behind the id checks too.
ROUTES: list[tuple[str, str, dict]] = [
    ("POST", "experiments/create", {"name": "fz", "artifact_location": "", "tags": []}),
    ("GET", "experiments/get", {"experiment_id": "{exp}"}),
    ("GET", "experiments/get-by-name", {"experiment_name": "fz"}),
    ("POST", "experiments/search", {"max_results": 10, "filter": "name = 'fz'", "order_by": []}),
    ("POST", "experiments/update", {"experiment_id": "{exp}", "new_name": "fz2"}),
    (
        "POST",
        "experiments/set-experiment-tag",
        {"experiment_id": "{exp}", "key": "k", "value": "v"},
    ),
    ("POST", "experiments/delete", {"experiment_id": "{exp}"}),
    ("POST", "experiments/restore", {"experiment_id": "{exp}"}),
    (
        "POST",
        "runs/create",
        {"experiment_id": "{exp}", "run_name": "r", "start_time": 1, "tags": []},
    ),
    ("GET", "runs/get", {"run_id": "{run}"}),
    (
        "POST",
        "runs/update",
        {"run_id": "{run}", "status": "RUNNING", "end_time": 2, "run_name": "r"},
    ),
    (
        "POST",
        "runs/search",
        {
            "experiment_ids": ["{exp}"],
            "filter": "metrics.acc > 0.5",
            "order_by": ["metrics.acc DESC"],
            "max_results": 10,
            "run_view_type": "ACTIVE_ONLY",
        },
    ),
    (
        "POST",
        "runs/log-metric",
        {"run_id": "{run}", "key": "m", "value": 1.5, "timestamp": 1, "step": 0},
    ),
    ("POST", "runs/log-parameter", {"run_id": "{run}", "key": "p", "value": "1"}),
    (
        "POST",
        "runs/log-batch",
        {
            "run_id": "{run}",
            "metrics": [{"key": "m", "value": 1.0, "timestamp": 1, "step": 1}],
            "params": [{"key": "q", "value": "2"}],
            "tags": [{"key": "t", "value": "v"}],
        },
    ),
    ("POST", "runs/set-tag", {"run_id": "{run}", "key": "t", "value": "v"}),
    ("POST", "runs/delete-tag", {"run_id": "{run}", "key": "t"}),
    (
        "POST",
        "runs/log-inputs",
        {
            "run_id": "{run}",
            "datasets": [
                {
                    "dataset": {"name": "d", "digest": "x", "source_type": "local", "source": "{}"},
                    "tags": [],
                }
            ],
        },
    ),
    ("GET", "metrics/get-history", {"run_id": "{run}", "metric_key": "m", "max_results": 10}),
    (
        "GET",
        "metrics/get-history-bulk-interval",
        {"run_ids": "{run}", "metric_key": "m", "max_results": 10},
    ),
    ("POST", "runs/delete", {"run_id": "{run}"}),
    ("POST", "runs/restore", {"run_id": "{run}"}),
    ("POST", "registered-models/create", {"name": "fzm", "tags": []}),
    ("GET", "registered-models/get", {"name": "fzm"}),
    ("GET", "registered-models/search", {"max_results": 10, "filter": "name = 'fzm'"}),
    (
        "POST",
        "model-versions/create",
        {"name": "fzm", "source": "runs:/{run}/model", "run_id": "{run}"},
    ),
    ("POST", "registered-models/alias", {"name": "fzm", "alias": "champion", "version": "1"}),
    ("GET", "registered-models/alias", {"name": "fzm", "alias": "champion"}),
    ("POST", "logged-models", {"experiment_id": "{exp}", "name": "lm"}),
]

HOSTILE_PATHS = [
    "../../../../../../tmp/{sentinel}",
    "..%2f..%2f..%2f..%2ftmp%2f{sentinel}",
    "%2e%2e/%2e%2e/%2e%2e/tmp/{sentinel}",
    "/tmp/{sentinel}",
    "//tmp/{sentinel}",
    "a/%00/b",
    "a%00b",
    "a\\..\\..\\{sentinel}",
    "%ZZ%",
    "%C0%AE%C0%AE/%C0%AE%C0%AE/{sentinel}",
    "a/" * 300 + "deep",
    "x" * 5000,
    "%FF%FE",
    "./../{sentinel}",
]


def must_refuse(path: str) -> bool:
    """An artifact path the server must refuse: a ``..`` segment, NUL or absolute (as decoded)."""
    try:
        text = urllib.parse.unquote(path, errors="strict")
    except UnicodeDecodeError:
        return False
    return "\x00" in text or text.startswith("/") or ".." in text.split("/")


def strange_value(rng: random.Random, depth: int = 0):
    """A value of a random JSON type, biased to edge cases."""
    kind = rng.randrange(16)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**31, 2**63, -(2**63) - 1, 2**64, 10**30, -(10**30)])
    if kind == 3:
        return rng.choice([0.0, -0.0, 1e308, -1e308, 5e-324, 1.5, 1e-300])
    if kind == 4:
        return float(rng.choice(["nan", "inf", "-inf"]))  # sent as NaN/Infinity tokens
    if kind == 5:
        return rng.choice(["", " ", "0", "-1", "1e999", "NaN", "null", "true", "[]", "{}"])
    if kind == 6:
        return "x" * rng.choice([256, 1000, 5000, 70_000, 600_000])
    if kind == 7:
        return rng.choice(["\x00", "a\x00b", "\u202e", "é", "\ud800", "\U0001f600", "\n\r\t"])
    if kind == 8:
        return rng.choice(HOSTILE_PATHS).replace("{sentinel}", "mlvc-fuzz-x")
    if kind == 9:
        return rng.choice(["' OR 1=1 --", "metrics.acc >", "params.lr = '", "a = 'b' and", ";"])
    if kind == 10 and depth < 3:
        return [strange_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 11 and depth < 3:
        return {str(strange_value(rng, 3))[:20]: strange_value(rng, depth + 1) for _ in range(3)}
    if kind == 12:  # a list of entries, over MLflow's batch limits (small values)
        small = [None, 1, -1, 1e308, float("nan"), "", "k", "\x00", [], {}]
        n = rng.choice([1, 1001, 5000])
        return [{"key": rng.choice(small), "value": rng.choice(small)} for _ in range(n)]
    if kind == 13:
        return uuid.uuid4().hex
    if kind == 14:
        return rng.choice(["RUNNING", "FINISHED", "FAILED", "KILLED", "SCHEDULED", "BOGUS", 3])
    return rng.random()


def deep(n: int) -> str:
    return "[" * n + "]" * n


def garbage_body(rng: random.Random, good: dict) -> tuple[bytes, dict]:
    """A body (bytes) and extra headers: mostly a good body with one field mutated."""
    kind = rng.randrange(20)
    headers: dict = {}
    if kind < 11:
        body = dict(good)
        keys = list(body) + ["unknown_field", "run_uuid", "experiment_ids"]
        k = rng.choice(keys)
        if rng.random() < 0.15:
            body.pop(k, None)
        else:
            body[k] = strange_value(rng)
        text = json.dumps(body, allow_nan=True)
        return text.encode("utf-8", "surrogatepass"), headers
    if kind == 11:
        return b"", headers
    if kind == 12:
        return b"{not json", headers
    if kind == 13:
        return rng.choice([b"[]", b'"str"', b"1", b"null", b"true"]), headers
    if kind == 14:
        return b'{"name": "\xff\xfe\xc0\xaf"}', headers  # invalid UTF-8
    if kind == 15:
        return deep(rng.choice([100, 5000, 100_000])).encode(), headers
    if kind == 16:
        return b'{"a":' + deep(3000).encode() + b"}", headers
    if kind == 17:
        text = json.dumps(good)
        return text[: rng.randrange(1, max(2, len(text)))].encode(), headers
    if kind == 18:
        headers["Content-Type"] = rng.choice(
            ["text/plain", "application/x-www-form-urlencoded", ""]
        )
        return json.dumps(good).encode(), headers
    # oversized: over the server's JSON limit (8 MiB by default); a valid JSON string
    return b'{"run_id": "' + b"a" * (9 << 20) + b'"}', headers


def garbage_query(rng: random.Random, good: dict) -> str:
    items = [(k, str(v)) for k, v in good.items()]
    kind = rng.randrange(8)
    if kind == 0:
        items = []
    elif kind == 1 and items:
        items.pop(rng.randrange(len(items)))
    elif kind == 2 and items:
        k = rng.randrange(len(items))
        items[k] = (items[k][0], str(strange_value(rng))[:3000])
    elif kind == 3:
        items += items  # repeated
    elif kind == 4:
        return "?" + rng.choice(["%ZZ", "a=%", "=&=&", "run_id=%00", "max_results=1e999"])
    elif kind == 5 and items:
        k = rng.randrange(len(items))
        items[k] = (items[k][0], rng.choice(["-1", "0", "99999999999999999999", "NaN", "x"]))
    qs = urllib.parse.urlencode(items, safe="", errors="surrogatepass")  # lone surrogates too
    return "?" + qs if qs else ""


@dataclass
class Report:
    requests: int = 0
    by_status: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    served: list = field(default_factory=list)
    seconds: float = 0.0
    n_failures: int = 0  # all of them; ``failures`` keeps the first 200

    def fail(self, what: str, method: str, path: str, body: bytes, status, resp: bytes) -> None:
        self.n_failures += 1
        if len(self.failures) < 200:
            self.failures.append(
                {
                    "what": what,
                    "request": f"{method} {path[:200]}",
                    "body": body[:300].decode("utf-8", "replace"),
                    "status": status,
                    "response": resp[:400].decode("utf-8", "replace"),
                }
            )


class Conn:
    def __init__(self, port: int, token: str | None):
        self.port, self.token = port, token
        self.c: http.client.HTTPConnection | None = None

    def send(self, method: str, path: str, body: bytes | None, headers: dict | None = None):
        h = {"Content-Type": "application/json"}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        h.update(headers or {})
        if body is not None:
            h["Content-Length"] = str(len(body))
        for attempt in (0, 1):
            if self.c is None:
                self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                self.c.putrequest(method, path, skip_accept_encoding=True)
                for k, v in h.items():
                    if v != "":
                        self.c.putheader(k, v)
                self.c.endheaders(body)
                r = self.c.getresponse()
                data = r.read()
                hdrs = dict(r.getheaders())
                if r.getheader("Connection", "").lower() == "close":
                    self.close()
                return r.status, data, hdrs
            except (http.client.InvalidURL, UnicodeError, ValueError):
                self.close()  # the client itself would not send this: not the server's fault
                return "unsendable", b"", {}
            except (http.client.HTTPException, ConnectionError, TimeoutError, OSError):
                self.close()
                if attempt:
                    return None, b"", {}
        return None, b"", {}

    def close(self):
        if self.c is not None:
            try:
                self.c.close()
            except OSError:
                pass
            self.c = None


def check(rep: Report, method, path, body, status, data, hdrs) -> None:
    rep.requests += 1
    rep.by_status[str(status)] = rep.by_status.get(str(status), 0) + 1
    if status == "unsendable":
        return
    if status is None:
        # a body over the JSON limit may be answered (413, 404) and the connection closed
        # before the client has sent it all: not a failure; /health is checked anyway
        if body is None or len(body) < (1 << 20):
            rep.fail("connection dropped (no response)", method, path, body or b"", status, data)
        return
    if status >= 500 and not (status == 503 and "retry-after" in {k.lower() for k in hdrs}):
        rep.fail(f"{status} server error", method, path, body or b"", status, data)
    if b"Traceback (most recent call last)" in data or b'File "/' in data:
        rep.fail("traceback in the response", method, path, body or b"", status, data)
    if 400 <= status < 500 and status not in (405, 413, 431) and data:
        try:
            doc = json.loads(data)
            ok = isinstance(doc, dict) and "error_code" in doc and "message" in doc
        except ValueError:
            ok = False
        if not ok:
            rep.fail(
                "error body is not {error_code, message}", method, path, body or b"", status, data
            )


def healthy(port: int) -> bool:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("GET", "/health")
        ok = c.getresponse().status == 200
        c.close()
        return ok
    except OSError:
        return False


def fuzz(
    port: int,
    token: str | None,
    requests: int = 2000,
    seed: int = 0,
    budget: float = 25.0,
    store: Path | None = None,
) -> Report:
    """Send up to ``requests`` garbage requests (or stop after ``budget`` seconds) and check
    every answer; ``store`` is the server's folder, for checking hostile paths wrote nothing
    outside it."""
    rng = random.Random(seed)
    rep = Report()
    conn = Conn(port, token)
    t0 = time.perf_counter()
    sentinel = f"mlvc-fuzz-{uuid.uuid4().hex[:8]}"
    ids = {"exp": "0", "run": uuid.uuid4().hex}

    def path_of(route):
        return f"{API}/{route}"

    def fill(obj):
        if isinstance(obj, str):
            return obj.replace("{exp}", ids["exp"]).replace("{run}", ids["run"])
        if isinstance(obj, list):
            return [fill(x) for x in obj]
        if isinstance(obj, dict):
            return {k: fill(v) for k, v in obj.items()}
        return obj

    # real ids, when served
    st, data, _ = conn.send(
        "POST", path_of("experiments/create"), json.dumps({"name": f"fz-{sentinel}"}).encode()
    )
    if st == 200:
        ids["exp"] = str(json.loads(data).get("experiment_id", "0"))
    st, data, _ = conn.send(
        "POST",
        path_of("runs/create"),
        json.dumps({"experiment_id": ids["exp"], "start_time": 1}).encode(),
    )
    if st == 200:
        info = json.loads(data).get("run", {}).get("info", {})
        ids["run"] = info.get("run_id") or info.get("run_uuid") or ids["run"]

    # which routes are served: their plausible request must not answer ENDPOINT_NOT_FOUND
    live = []
    for method, route, good in ROUTES:
        g = fill(good)
        if method == "GET":
            q = "?" + urllib.parse.urlencode(g)
            st, data, hdrs = conn.send("GET", path_of(route) + q, None)
        else:
            st, data, hdrs = conn.send(method, path_of(route), json.dumps(g).encode())
        check(rep, method, path_of(route), b"", st, data, hdrs)
        if st == 404 and b"ENDPOINT_NOT_FOUND" in data:
            rep.skipped.append(f"{method} {route}")
        else:
            live.append((method, route, g))
            rep.served.append(f"{method} {route}")
    st, data, _ = conn.send("GET", f"{ART}/fz-probe.txt", None)
    art = not (st == 404 and b"ENDPOINT_NOT_FOUND" in data)
    (rep.served if art else rep.skipped).append("artifacts proxy")

    i = 0
    while i < requests and time.perf_counter() - t0 < budget:
        i += 1
        if art and (not live or rng.random() < 0.12):
            p = rng.choice(HOSTILE_PATHS).replace("{sentinel}", sentinel)
            method = rng.choice(["PUT", "GET", "DELETE", "GET-list"])
            if method == "GET-list":
                path, method, body = f"{ART}?path={p}", "GET", None
            else:
                path = f"{ART}/{p}"
                body = b"fuzz" if method == "PUT" else None
            st, data, hdrs = conn.send(
                method, path, body, {"Content-Type": "application/octet-stream"}
            )
            check(rep, method, path, body, st, data, hdrs)
            if method == "PUT" and st is not None and st < 300 and must_refuse(p):
                rep.fail("hostile artifact path accepted", method, path, b"", st, data)
        elif not live or rng.random() < 0.03:
            # routes nobody serves, and wrong methods: a 404/405 answer, never a crash
            method = rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH"])
            route = rng.choice(
                [f"{API}/{uuid.uuid4().hex[:6]}", f"{API}/runs/../../health", "/health",
                 f"{API}/" + rng.choice(HOSTILE_PATHS).replace("{sentinel}", sentinel),
                 "/api/2.0/mlflow", "/ajax-api/2.0/mlflow/runs/get?run_id=%00"]
            )  # fmt: skip
            body, headers = garbage_body(rng, {"run_id": ids["run"]})
            st, data, hdrs = conn.send(method, route, body, headers)
            check(rep, method, route, body, st, data, hdrs)
        else:
            method, route, good = rng.choice(live)
            if method == "GET":
                path = path_of(route) + garbage_query(rng, good)
                st, data, hdrs = conn.send("GET", path, None)
                body = None
            else:
                body, headers = garbage_body(rng, good)
                path = path_of(route)
                st, data, hdrs = conn.send(method, path, body, headers)
            check(rep, method, path, body, st, data, hdrs)
        if i % 100 == 0 and not healthy(port):
            rep.fail("GET /health failed", "GET", "/health", b"", None, b"")
            break
    conn.close()
    if not healthy(port):
        rep.fail("GET /health failed at the end", "GET", "/health", b"", None, b"")
    for where in [Path("/tmp") / sentinel] + ([store.parent / sentinel] if store else []):
        if where.exists():
            rep.fail(f"hostile path wrote {where}", "PUT", "", b"", None, b"")
    rep.seconds = time.perf_counter() - t0
    return rep


# -- running a server --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlvc(folder: Path) -> tuple[subprocess.Popen, int, str]:
    folder.mkdir(parents=True, exist_ok=True)
    mlvc = [sys.executable, "-m", "mlvc"]
    subprocess.run([*mlvc, "init"], cwd=folder, check=True, capture_output=True)
    out = subprocess.run(
        [*mlvc, "token", "create", "--scope", "write", "--name", "fuzz"],
        cwd=folder,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    token = out.strip().splitlines()[-1]
    port = free_port()
    proc = subprocess.Popen(
        [*mlvc, "server", "--port", str(port)],
        cwd=folder,
        stdout=open(folder / "server.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    wait_healthy(proc, port)
    return proc, port, token


def start_mlflow(folder: Path) -> tuple[subprocess.Popen, int, None]:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    mlflow = HERE / ".mlflow-venv" / "bin" / "mlflow"
    if not mlflow.exists():
        subprocess.run(["bash", str(HERE / "peers_mlflow.sh")], stdout=sys.stderr, check=False)
    proc = subprocess.Popen(
        [
            str(mlflow),
            "server",
            "--backend-store-uri",
            f"sqlite:///{folder / 'mlflow.db'}",
            "--artifacts-destination",
            str(folder / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],  # fmt: skip
        cwd=folder,
        stdout=open(folder / "server.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    wait_healthy(proc, port, 180)
    return proc, port, None


def wait_healthy(proc: subprocess.Popen, port: int, timeout: float = 60) -> None:
    t0 = time.monotonic()
    while not healthy(port):
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}")
        if time.monotonic() - t0 > timeout:
            proc.terminate()
            raise RuntimeError("server not healthy")
        time.sleep(0.05)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def schemathesis(port: int, token: str, max_examples: int, seed: int) -> int:
    st = Path(sys.executable).with_name("schemathesis")  # in the dev extra
    venv = HERE / ".fuzz-venv"
    if not st.exists():
        st = venv / "bin" / "schemathesis"
    if not st.exists():  # schemathesis is a test tool here, never an mlvc dependency
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "schemathesis"],
                       check=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}/api/v1/openapi.json"
    if not healthy(port):
        return 1
    st_code, data, _ = Conn(port, token).send("GET", "/api/v1/openapi.json", None)
    if st_code != 200:
        print(
            f"/api/v1/openapi.json answered {st_code} {data[:120]!r}: not served, nothing to fuzz"
        )
        return 0
    cmd = [
        str(st), "--config-file", str(HERE / "schemathesis.toml"), "run", url,
        "--header", f"Authorization: Bearer {token}",
        "--max-examples", str(max_examples),
        "--seed", str(seed),
    ]  # fmt: skip
    print("$ " + " ".join(c if "Bearer" not in c else "'Authorization: Bearer ...'" for c in cmd),
          file=sys.stderr)  # fmt: skip
    rc = subprocess.run(cmd).returncode
    print(f"schemathesis exit {rc}; server healthy afterwards: {healthy(port)}")
    return rc if healthy(port) else 1


def render(rep: Report, target: str, seed: int) -> str:
    lines = [
        f"# Garbage fuzz of the MLflow routes: {target}",
        "",
        f"- seed {seed}, {rep.requests:,} requests in {rep.seconds:.1f} s",
        f"- statuses: {', '.join(f'{k}: {v}' for k, v in sorted(rep.by_status.items()))}",
        f"- routes fuzzed ({len(rep.served)}): {', '.join(rep.served) or 'none'}",
        f"- not served, skipped ({len(rep.skipped)}): {', '.join(rep.skipped) or 'none'}",
        f"- failures: {rep.n_failures} (distinct kinds among the first 200 below)",
    ]
    seen = set()
    for f in rep.failures:
        key = (f["what"], f["request"].split("?")[0][:80])
        if key in seen:
            continue
        seen.add(key)
        lines.append(f"  - {f['what']}: `{f['request'][:120]}` body `{f['body'][:80]!r}` -> "
                     f"{f['status']} `{f['response'][:160]!r}`")  # fmt: skip
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", choices=["mlvc", "mlflow"], default="mlvc")
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--budget", type=float, default=600.0, help="seconds at most")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--port", type=int, default=0, help="fuzz a running server instead")
    ap.add_argument("--token", default=None)
    ap.add_argument("--schemathesis", action="store_true", help="fuzz /api/v1 from its OpenAPI")
    ap.add_argument("--max-examples", type=int, default=100)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-fuzz-") as tmp:
        folder = Path(tmp) / "srv"
        proc = None
        if args.port:
            port, token = args.port, args.token
        elif args.target == "mlflow":
            proc, port, token = start_mlflow(folder)
        else:
            proc, port, token = start_mlvc(folder)
        try:
            if args.schemathesis:
                return schemathesis(port, token or "", args.max_examples, args.seed)
            rep = fuzz(port, token, args.requests, args.seed, args.budget, folder)
        finally:
            if proc:
                stop(proc)
        print(render(rep, args.target, args.seed))
        if args.json:
            Path(args.json).write_text(json.dumps(rep.__dict__, indent=1))
        return 1 if rep.failures else 0


if __name__ == "__main__":
    sys.exit(main())
