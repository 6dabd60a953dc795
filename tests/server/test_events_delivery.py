"""The server's side of events: the SSE stream GET /api/v1/events, webhooks for runs logged
over REST by the real MLflow client, and pre-alias vetoes answered as failed REST calls."""

from __future__ import annotations

import http.client
import json
import os
import time

from webhook_receiver import Receiver, executable, wait_idle

from mlvc import Repo
from mlvc.refs import registry


def sse(srv, query: str = "follow=false", headers: dict | None = None, token="read"):
    """(status, frames, comments) of one event-stream request read to its end."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    heads = {"Authorization": f"Bearer {srv.tokens.get(token, token)}", **(headers or {})}
    conn.request("GET", f"/api/v1/events?{query}", headers=heads)
    resp = conn.getresponse()
    text = resp.read().decode()
    conn.close()
    frames, comments = [], []
    for block in text.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            if line.startswith(":"):
                comments.append(line[1:].strip())
            elif ": " in line:
                k, v = line.split(": ", 1)
                fields[k] = v
        if "data" in fields:
            frames.append(fields)
    return resp.status, frames, comments, dict(resp.getheaders())


def test_the_event_stream_sends_resumes_filters_and_keeps_alive(own_server):
    srv = own_server()
    for _ in range(2):
        srv.mlvc("commit", "-m", "x")
    srv.mlvc("gc")
    status, frames, _, heads = sse(srv)
    assert status == 200 and heads["content-type"].startswith("text/event-stream")
    kinds = [f["event"] for f in frames]
    assert kinds.count("commit.created") == 2 and "gc.completed" in kinds
    for f in frames:
        data = json.loads(f["data"])
        assert data["id"] == f["id"] and data["type"] == f["event"]
    ids = [f["id"] for f in frames]
    assert ids == sorted(ids)
    # a reconnecting EventSource sends the last id it saw
    _, after, _, _ = sse(srv, headers={"Last-Event-ID": ids[0]})
    assert [f["id"] for f in after] == ids[1:]
    _, gc_only, _, _ = sse(srv, "follow=false&types=gc.*,nothing.*")
    assert [f["event"] for f in gc_only] == ["gc.completed"]
    # `type`, repeatable as the CLI's --type, filters too (it was ignored: all came)
    _, picked, _, _ = sse(srv, "follow=false&type=gc.*&type=nothing.*")
    assert [f["event"] for f in picked] == ["gc.completed"]
    assert sse(srv, "follow=false&type=RUN")[0] == 400
    # following: the stream stays open, with keep-alive comments, until its timeout
    start = time.monotonic()
    _, _, comments, _ = sse(srv, f"after={ids[-1]}&keepalive=1&timeout=3")
    assert 2.5 < time.monotonic() - start < 15
    assert comments.count("keep-alive") >= 2
    # read scope; bad arguments are a 400 naming them
    assert sse(srv, token=None)[0] == 401
    assert sse(srv, "after=evt_nope")[0] == 400
    assert sse(srv, "types=RUN")[0] == 400
    status, doc, _ = srv.call("GET", "/api/v1/openapi.json", token="read")
    assert (
        "text/event-stream" in doc["paths"]["/api/v1/events"]["get"]["responses"]["200"]["content"]
    )


def test_a_follower_sees_an_event_as_it_happens(own_server):
    srv = own_server()
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.request("GET", "/api/v1/events?types=commit.*",
                 headers={"Authorization": f"Bearer {srv.tokens['read']}"})  # fmt: skip
    resp = conn.getresponse()
    assert resp.status == 200
    start = time.monotonic()
    srv.mlvc("commit", "-m", "live")
    buf = b""
    while b"event: commit.created" not in buf:
        buf += resp.fp.read1(4096)
        assert time.monotonic() - start < 20
    conn.close()
    # a SIGTERM ends open streams, so the server stops at once rather than after its drain
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.request("GET", "/api/v1/events", headers={"Authorization": f"Bearer {srv.tokens['read']}"})
    assert conn.getresponse().status == 200
    start = time.monotonic()
    srv.stop()
    assert time.monotonic() - start < 10


MLFLOW_RUN = """
import mlflow
mlflow.set_experiment("hooked")
with mlflow.start_run(run_name="over-rest") as run:
    mlflow.log_param("lr", 0.1)
    mlflow.log_metric("loss", 0.5, step=1)
print(run.info.run_id)
"""


def test_runs_logged_by_the_mlflow_client_reach_the_webhooks(own_server):
    srv = own_server()
    with Receiver() as rx:
        out = srv.mlvc("webhook", "add", rx.url, "--allow-private", "--events", "run.*",
                       "--events", "commit.*", "--json")  # fmt: skip
        secret = json.loads(out.stdout)["new_secret"]
        srv.mlflow(MLFLOW_RUN)
        got = rx.wait(3, timeout=60)
        wait_idle(srv.root)
    from standardwebhooks.webhooks import Webhook

    payloads = [
        Webhook(secret).verify(g.body, {k.lower(): v for k, v in g.headers.items()}) for g in got
    ]
    payloads.sort(key=lambda p: p["id"])  # ids are time-ordered
    kinds = [p["type"] for p in payloads]
    assert kinds == ["run.started", "commit.created", "run.finished"], kinds
    finished = payloads[-1]["data"]
    assert finished["name"] == "over-rest" and finished["status"] == "finished"
    assert finished["run_id"] in Repo(srv.root).resolve(finished["run_id"]).hex


PRE_ALIAS = """#!/bin/sh
echo "champion needs an EXACT reproduction first" >&2
exit 1
"""


def test_a_pre_alias_hook_fails_the_rest_and_mlflow_calls(own_server):
    srv = own_server()
    srv.mlvc("commit", "-m", "m")
    repo = Repo(srv.root)
    tree = repo.run(repo.head()).sections["code"]
    registry.create_version(repo.refs, "clf", tree, "test", None, "someone")
    executable(srv.root / ".mlvc" / "hooks" / "pre-alias", PRE_ALIAS)
    status, err, _ = srv.call("PUT", "/api/v1/models/clf/aliases/champion", {"version": 1})
    assert status == 409
    assert err["message"] == (
        "the pre-alias hook refused the change (exit 1): champion needs an EXACT reproduction first"
    )
    r = srv.mlflow(
        'import mlflow\nmlflow.MlflowClient().set_registered_model_alias("clf", "champion", "1")',
        ok=False,
    )
    assert r.returncode != 0 and "champion needs an EXACT reproduction first" in r.stderr
    assert registry.aliases(repo.refs, "clf") == {}
    os.chmod(srv.root / ".mlvc" / "hooks" / "pre-alias", 0o644)  # ignored, as git does
    status, _, _ = srv.call("PUT", "/api/v1/models/clf/aliases/champion", {"version": 1})
    assert status == 200 and registry.aliases(repo.refs, "clf") == {"champion": 1}
