"""Schema-driven fuzz of mlvc's /api/v1 on a real `mlvc server` (issue 11, item 7).

schemathesis (a dev dependency) reads the server's own OpenAPI document
(``GET /api/v1/openapi.json``) and sends what it describes and what it forbids, in all four
phases (examples, coverage, fuzzing, stateful sequences that follow the document's links),
with every check on (benchmarks/schemathesis.toml): no 5xx, every status and body as
documented, every request the document allows served, every request it forbids refused, a
405 lists its ``Allow``. Derandomized (``--generation-deterministic --seed 0``) and bounded
(examples per operation, and seconds). A longer run:
``.venv/bin/python benchmarks/bench_server_fuzz.py --schemathesis --max-examples 300``.

Below it, one regression case for each problem the fuzz found, asserted by hand.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "benchmarks" / "schemathesis.toml"
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
EXAMPLES = 30  # per operation and phase: about 25 s on 2 shared cores
BUDGET = 35  # seconds at most for the whole run


def live_run(server, name: str, points: int = 3) -> str:
    """A run logged through the live API; returns its id."""
    st, started, _ = server.call("POST", "/api/v1/runs/live", {"name": name, "params": {"lr": 0.1}})
    assert st == 200, started
    key = started["key"]
    batch = {"batch_id": uuid.uuid4().hex,
             "metrics": [["loss", 1.0 / (i + 1), i, time.time_ns()] for i in range(points)]}  # fmt: skip
    st, got, _ = server.call("POST", f"/api/v1/runs/live/{key}/batches", batch)
    assert st == 200 and got["points"] == points, got
    st, ended, _ = server.call("POST", f"/api/v1/runs/live/{key}/end", {})
    assert st == 200, ended
    return ended["run_id"]


@pytest.mark.skipif(not SCHEMATHESIS.exists(), reason="schemathesis (dev extra) not installed")
def test_schemathesis_finds_nothing_in_api_v1(server):
    # something to find: HEAD~1 and HEAD (the document's examples) are runs
    live_run(server, "fuzz-a")
    live_run(server, "fuzz-b")
    cmd = [
        str(SCHEMATHESIS), "--config-file", str(CONFIG), "--no-color", "run",
        f"{server.url}/api/v1/openapi.json",
        "--header", f"Authorization: Bearer {server.tokens['write']}",
        "--max-examples", str(EXAMPLES), "--max-time", str(BUDGET),
        "--seed", "0", "--generation-deterministic",
    ]  # fmt: skip
    r = subprocess.run(cmd, cwd=server.root.parent, capture_output=True, text=True, timeout=180)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-12000:]
    assert "generated" in out and " passed" in out, out[-3000:]
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in out, out[-3000:]  # every phase ran and passed
    st, health, _ = server.call("GET", "/health", token=None)
    assert st == 200, health
    assert "Traceback" not in server.server_log()


# -- what the fuzz found, one case each ------------------------------------------------------


@pytest.mark.parametrize(
    "method, path, allow",
    [
        ("TRACE", "/api/v1/runs", "GET, HEAD"),
        ("DELETE", "/api/v1/query", "POST"),
        ("OPTIONS", "/api/v1/refs/HEAD", "GET, HEAD, PUT"),  # two routes share the path
    ],
)
def test_a_405_lists_the_methods_served(server, method, path, allow):
    st, body, headers = server.call(method, path)
    assert st == 405 and body["error_code"] == "ENDPOINT_NOT_FOUND", body
    assert (headers.get("allow") or headers.get("Allow")) == allow


@pytest.mark.parametrize(
    "method, path, allow",
    [("PUT", "/api/v1/objects/missing", "POST"), ("GET", "/api/v1/runs/live", "POST")],
)
def test_a_literal_path_is_not_taken_for_a_parameter(server, method, path, allow):
    # before: PUT objects/missing was a PUT of object "missing" (400 "not an object id")
    st, body, headers = server.call(method, path, raw=b"x" if method == "PUT" else None)
    assert st == 405, body
    assert (headers.get("allow") or headers.get("Allow")) == allow


@pytest.mark.parametrize(
    "path, field",
    [
        ("/api/v1/runs?limit=", "limit"),
        ("/api/v1/runs?limit=%201", "limit"),
        ("/api/v1/runs?offset=1_0", "offset"),
        ("/api/v1/runs?offset=" + "9" * 40, "offset"),
        ("/api/v1/runs/HEAD?files=", "files"),
        ("/api/v1/runs/HEAD?files=maybe", "files"),
        ("/api/v1/diff?a=HEAD&b=", "b"),
        ("/api/v1/diff?a=HEAD&patch=2", "patch"),
    ],
)
def test_query_arguments_are_what_the_document_says_or_400(server, path, field):
    if "HEAD" in path:
        live_run(server, "args")
    st, body, _ = server.call("GET", path)
    assert st == 400 and body["message"].startswith(f"{field}: "), body


def test_booleans_and_empty_prefix_still_read(server):
    rid = live_run(server, "bools")
    st, shown, _ = server.call("GET", f"/api/v1/runs/{rid}?files=false")
    assert st == 200 and shown["id"] == rid
    st, refs, _ = server.call("GET", "/api/v1/refs?prefix=")
    assert st == 200 and any(r["name"] == "HEAD" for r in refs["refs"])


def test_a_live_start_without_a_body_starts_a_run_without_the_servers_command(server):
    st, started, _ = server.call("POST", "/api/v1/runs/live", raw=b"")
    assert st == 200, started
    st, ended, _ = server.call("POST", f"/api/v1/runs/live/{started['key']}/end", {})
    assert st == 200, ended
    st, shown, _ = server.call("GET", f"/api/v1/runs/{ended['run_id']}")
    assert st == 200 and shown["command"] == [], shown["command"]  # was the server's argv


def test_integral_float_steps_and_times_are_integers(server):
    st, started, _ = server.call("POST", "/api/v1/runs/live", {"name": "floats"})
    key = started["key"]
    batch = {"batch_id": "b1", "metrics": [["m", 0.5, 3.0, 1.7e18]]}  # JSON cannot tell 3 from 3.0
    st, got, _ = server.call("POST", f"/api/v1/runs/live/{key}/batches", batch)
    assert st == 200 and got["points"] == 1, got
    st, got, _ = server.call("POST", f"/api/v1/runs/live/{key}/batches",
                             {"batch_id": "b2", "metrics": [["m", 0.5, 3.5, 1]]})  # fmt: skip
    assert st == 400 and "step must be a 64-bit integer" in got["message"], got
    st, ended, _ = server.call("POST", f"/api/v1/runs/live/{key}/end", {})
    st, rows, _ = server.call(
        "POST", "/api/v1/query",
        {"sql": f"SELECT step FROM metrics WHERE run_id = '{ended['run_id']}' AND key = 'm'"},
    )  # fmt: skip
    assert rows["rows"] == [[3]], rows


def test_a_start_sent_again_is_checked_like_the_first(server):
    client = uuid.uuid4().hex
    st, first, _ = server.call("POST", "/api/v1/runs/live", {"client_id": client})
    assert st == 200, first
    # before: the second answered 200 with the first run's key, the bad tag unseen
    st, again, _ = server.call(
        "POST", "/api/v1/runs/live", {"client_id": client, "tags": {"HEAD": "x"}}
    )
    assert st == 400 and "HEAD" in again["message"], again
    st, same, _ = server.call("POST", "/api/v1/runs/live", {"client_id": client})
    assert st == 200 and same["key"] == first["key"]
    server.call("POST", f"/api/v1/runs/live/{first['key']}/end", {})


def test_the_document_describes_what_the_server_checks(server):
    st, doc, _ = server.call("GET", "/api/v1/openapi.json")
    assert st == 200
    live = doc["paths"]["/api/v1/runs/live"]["post"]
    assert live["requestBody"]["required"] is False
    links = live["responses"]["200"]["links"]
    assert set(links) == {"liveBatch", "liveEnd"}
    ref = doc["paths"]["/api/v1/refs/{name}"]["parameters"][0]
    assert ref["schema"]["pattern"].startswith("^(HEAD|refs")
    alias = doc["paths"]["/api/v1/models/{name}/aliases/{alias}"]["parameters"][1]
    assert alias["schema"]["not"] == {"pattern": "^[0-9]+$"}


@pytest.mark.parametrize(
    "path, body",
    [
        ("/api/2.0/mlflow/runs/log-inputs", b'{"run_id": "\\ud800", "datasets": []}'),
        ("/api/2.0/mlflow/runs/get", b'{"run_id": "a\\uDFFFb"}'),
        (
            "/api/2.0/mlflow/runs/search",
            b'{"experiment_ids": ["0"], "filter": "tags.t = \'\\ud83d\'"}',
        ),
        ("/api/v1/runs/live", b'{"message": "\\udc00"}'),
    ],
)
def test_an_unpaired_surrogate_escape_is_a_400_not_a_500(server, path, body):
    # found by the MLflow-route garbage fuzz (seed 7, 20k requests): the run id reached a
    # DuckDB query, which cannot take it (InvalidInputException: 500)
    method = "GET" if path.endswith("runs/get") else "POST"
    st, got, _ = server.call(method, path, raw=body, headers={"Content-Type": "application/json"})
    assert st == 400 and got["error_code"] == "MALFORMED_REQUEST", got
    assert "surrogate" in got["message"]


def test_a_paired_surrogate_escape_is_text(server):
    body = b'{"name": "emoji", "message": "\\ud83d\\ude00"}'
    st, started, _ = server.call("POST", "/api/v1/runs/live", raw=body,
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    assert st == 200, started
    st, ended, _ = server.call("POST", f"/api/v1/runs/live/{started['key']}/end", {})
    st, shown, _ = server.call("GET", f"/api/v1/runs/{ended['run_id']}")
    assert shown["message"] == "\U0001f600"


def test_a_ref_below_a_ref_is_a_400_not_a_500(server):
    # found by the /api/v1 fuzz (seed 31): FileExistsError making refs/x/ where refs/x is a file
    rid = live_run(server, "df")
    put = {"new": rid, "old": None}
    st, got, _ = server.call("PUT", "/api/v1/refs/refs/tags/df-a", put)
    assert st == 200, got
    st, got, _ = server.call("PUT", "/api/v1/refs/refs/tags/df-a/b", put)
    assert st == 400 and "file or a folder" in got["message"], got
    st, got, _ = server.call("GET", "/api/v1/refs/refs/tags/df-a")
    assert st == 200 and got["id"] == rid
