"""mlvc's own REST API (/api/v1) on a real `mlvc server` process: runs as the CLI shows them,
read-only SQL as JSON and Arrow, objects re-hashed on PUT, refs with compare-and-swap, the
registry's aliases, live batches applied once, tokens and bad input."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest
from blake3 import blake3

from mlvc import Repo
from mlvc.core.layout import Layout
from mlvc.events import read_events
from mlvc.refs import registry
from mlvc.render.text import to_json
from mlvc.server.auth import TokenStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m mlvc server` in ``root`` on a free port of 127.0.0.1."""

    def __init__(self, root, *args, env=None):
        self.root, self.args, self.port = root, args, free_port()
        self.env = {**os.environ, "MLVC_INDEX_SYNC": "inline", **(env or {})}
        self.proc = None

    def start(self):
        log = open(self.root / f"server-{self.port}.log", "ab")  # noqa: SIM115
        cmd = [sys.executable, "-m", "mlvc", "server", "--port", str(self.port), *self.args]
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self.request("GET", "/health")[0] == 200:
                    return self
            except OSError:
                pass
            assert self.proc.poll() is None, (self.root / f"server-{self.port}.log").read_text()
            time.sleep(0.1)
        raise AssertionError("the server did not start")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises it when done
        assert "Traceback" not in (self.root / f"server-{self.port}.log").read_text()

    def request(self, method, path, body=None, token=None, headers=None):
        con = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        head = dict(headers or {})
        if token:
            head["Authorization"] = f"Bearer {token}"
        if isinstance(body, dict | list):
            body = json.dumps(body).encode()
            head.setdefault("Content-Type", "application/json")
        try:
            con.request(method, path, body=body, headers=head)
            r = con.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            con.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A repository with three committed runs, a write and a read token, and a server."""
    root = tmp_path_factory.mktemp("v1") / "proj"
    root.mkdir()
    (root / "train.py").write_text("print('hi')\n")
    old = os.environ.get("MLVC_AUTHOR")
    os.environ["MLVC_AUTHOR"] = "Test Author <test@example.com>"
    os.environ["MLVC_INDEX_SYNC"] = "inline"
    repo = Repo.init(root)
    runs = []
    for i in range(3):
        (root / "train.py").write_text(f"print({i})\n")
        runs.append(repo.commit(f"run {i}", name=f"r{i}", params={"lr": 0.1 * (i + 1)},
                                metrics={"acc": 0.5 + i / 10}, cwd=root, capture_env=False))  # fmt: skip
    tokens = TokenStore(Layout.of(root))
    write = tokens.create("write", "writer")[1]
    read = tokens.create("read", "reader")[1]
    server = Server(root, "--lease", "4", env={"MLVC_SERVE_MAX_BODY": str(16 << 20)}).start()
    yield {"root": root, "runs": runs, "write": write, "read": read, "server": server}
    server.stop()
    assert Repo(root).fsck() == []
    if old is None:
        os.environ.pop("MLVC_AUTHOR", None)


def call(site, method, path, body=None, token="write", headers=None):
    status, head, data = site["server"].request(
        method, path, body, site[token] if token else None, headers
    )
    is_json = head.get("content-type", "").startswith("application/json")
    parsed = json.loads(data) if is_json and data else data
    return status, parsed


def test_runs_list_show_and_diff_are_what_the_cli_prints(site):
    repo = Repo(site["root"])
    status, got = call(site, "GET", "/api/v1/runs?limit=2", token="read")
    assert status == 200 and got["head"] == repo.head().hex
    assert got["runs"] == json.loads(to_json(repo.log(2)))
    assert [
        r["id"] for r in call(site, "GET", "/api/v1/runs?offset=1", token="read")[1]["runs"]
    ] == [r["id"] for r in repo.log()[1:]]
    for ref in ("HEAD~1", "r0", site["runs"][2][:8]):
        status, shown = call(site, "GET", f"/api/v1/runs/{ref}", token="read")
        assert status == 200 and shown == json.loads(to_json(repo.show(ref)))
    status, d = call(site, "GET", "/api/v1/diff?a=r0&b=r2", token="read")
    local = repo.diff("r0", "r2")
    assert d == {**json.loads(to_json(local.to_dict())), "unchanged_metrics": 0}
    assert d["params"]["changed"]["lr"][0] == pytest.approx(0.1)
    status, err = call(site, "GET", "/api/v1/runs/nosuchrun", token="read")
    assert status == 404 and "nosuchrun" in err["message"]


def test_query_answers_json_and_arrow_and_refuses_writes(site):
    import pyarrow as pa

    sql = "SELECT name, status FROM runs ORDER BY name"
    status, got = call(site, "POST", "/api/v1/query", {"sql": sql}, token="read")
    assert status == 200 and got["columns"] == ["name", "status"]
    assert got["rows"] == [["r0", "finished"], ["r1", "finished"], ["r2", "finished"]]
    status, data = call(site, "POST", "/api/v1/query", {"sql": sql}, token="read",
                        headers={"Accept": "application/vnd.apache.arrow.stream"})  # fmt: skip
    assert status == 200
    assert pa.ipc.open_stream(pa.py_buffer(data)).read_all().equals(Repo(site["root"]).query(sql))
    for bad in ({"sql": "DELETE FROM runs"}, {"sql": 5}, {}, {"sql": "SELEC nothing"}):
        status, err = call(site, "POST", "/api/v1/query", bad, token="read")
        assert status == 400 and err["message"], bad
    assert call(site, "POST", "/api/v1/query", token="read")[0] == 400  # no body
    assert Repo(site["root"]).query("SELECT count(*) AS n FROM runs")["n"][0].as_py() >= 3


def test_objects_are_rehashed_on_put_and_streamed_back(site):
    repo_store = lambda: Repo(site["root"]).store  # noqa: E731 - a fresh view each time
    small = b"hello objects\n" * 10
    oid = blake3(small).hexdigest()
    wrong = blake3(b"something else").hexdigest()
    status, err = call(site, "PUT", f"/api/v1/objects/{wrong}", small)
    assert status == 400 and "nothing was stored" in err["message"]
    assert call(site, "HEAD", f"/api/v1/objects/{wrong}", token="read")[0] == 404
    assert call(site, "HEAD", f"/api/v1/objects/{oid}", token="read")[0] == 404
    status, got = call(site, "POST", "/api/v1/objects/missing", {"ids": [oid, wrong]}, "read")
    assert status == 200 and got["missing"] == [oid, wrong]
    assert call(site, "PUT", f"/api/v1/objects/{oid}", small)[0] == 201
    assert call(site, "PUT", f"/api/v1/objects/{oid}", small)[0] == 200  # already there
    status, head, _ = site["server"].request("HEAD", f"/api/v1/objects/{oid}", token=site["read"])
    assert status == 200 and int(head["content-length"]) == len(small)
    assert call(site, "GET", f"/api/v1/objects/{oid}", token="read") == (200, small)
    # a big one is stored in chunks from a spilled body, and comes back whole
    big = os.urandom(6 << 20)
    big_id = blake3(big).hexdigest()
    assert call(site, "PUT", f"/api/v1/objects/{big_id}", big)[0] == 201
    assert call(site, "GET", f"/api/v1/objects/{big_id}", token="read") == (200, big)
    from mlvc.core.ids import ObjectId

    store = repo_store()
    assert store.has(ObjectId.parse(big_id)) and not store.has(ObjectId.parse(wrong))
    assert len(store.children(ObjectId.parse(big_id))) > 1  # chunked like a local file
    # over the body limit: 413 from the headers alone, nothing stored
    huge_id = blake3(b"huge").hexdigest()
    con = http.client.HTTPConnection("127.0.0.1", site["server"].port, timeout=30)
    con.putrequest("PUT", f"/api/v1/objects/{huge_id}")
    con.putheader("Authorization", f"Bearer {site['write']}")
    con.putheader("Content-Length", str((16 << 20) + 1))
    con.endheaders()
    r = con.getresponse()
    assert r.status == 413 and "MLVC_SERVE_MAX_BODY" in json.loads(r.read())["message"]
    con.close()
    assert call(site, "HEAD", f"/api/v1/objects/{huge_id}", token="read")[0] == 404
    assert call(site, "GET", "/api/v1/objects/not-an-id", token="read")[0] == 400


def test_refs_move_by_compare_and_swap_only(site):
    r0, r1, r2 = site["runs"]
    path = "/api/v1/refs/refs/tags/best"
    assert call(site, "GET", path, token="read")[0] == 404
    assert call(site, "PUT", path, {"new": r0, "old": None})[0] == 200
    status, err = call(site, "PUT", path, {"new": r1, "old": None})
    assert status == 409 and r0 in err["message"]
    assert call(site, "PUT", path, {"new": r1, "old": r0})[0] == 200
    assert call(site, "PUT", path, {"new": r2, "old": r0})[0] == 409  # stale: moved since
    assert Repo(site["root"]).resolve("best").hex == r1  # what mlvc show best now names
    status, got = call(site, "GET", "/api/v1/refs?prefix=refs/tags/", token="read")
    assert got["refs"] == [{"name": "refs/tags/best", "id": r1, "symbolic": None}]
    unknown = blake3(b"never stored").hexdigest()
    status, err = call(site, "PUT", path, {"new": unknown, "old": r1})
    assert status == 400 and "not stored" in err["message"]
    assert call(site, "PUT", path, {"new": r2})[0] == 400  # old must be said
    for bad in ("refs/../escape", "refs/tags/x.lock", "nothere/x", "refs/tags/.hidden"):
        assert call(site, "PUT", f"/api/v1/refs/{bad}", {"new": r2, "old": None})[0] in (400, 404)
    assert not (site["root"] / ".mlvc" / "escape").exists()
    assert Repo(site["root"]).resolve("best").hex == r1


def test_registry_aliases_move_and_are_logged_with_the_token_name(site):
    repo = Repo(site["root"])
    tree = repo.run(site["runs"][0]).sections["code"]
    for _ in range(2):
        registry.create_version(repo.refs, "clf", tree, "test", None, "someone")
    status, got = call(site, "GET", "/api/v1/models", token="read")
    assert status == 200 and [m["name"] for m in got["models"]] == ["clf"]
    alias = "/api/v1/models/clf/aliases/prod"
    assert call(site, "PUT", alias, {"version": 1})[1]["version"] == 1
    assert call(site, "PUT", alias, {"version": 2})[1]["version"] == 2
    status, model = call(site, "GET", "/api/v1/models/clf", token="read")
    assert model["aliases"] == {"prod": 2} and [v["version"] for v in model["versions"]] == [1, 2]
    history = registry.alias_history(Repo(site["root"]).refs, "clf", "prod")
    assert [(h["version"], h["by"]) for h in history] == [(1, "writer"), (2, "writer")]
    assert call(site, "PUT", alias, {"version": 1}, token="read")[0] == 403
    assert call(site, "PUT", alias, {"version": 9})[0] == 404
    assert call(site, "PUT", alias, {"version": [1]})[0] == 400
    assert call(site, "DELETE", alias)[1]["previous"] == 2
    assert call(site, "GET", "/api/v1/models/nomodel", token="read")[0] == 404
    # the server's registry changes emit what the CLI's do, naming the token's user
    got = [(e.type, e.data["version"], e.data["by"])
           for e in read_events(Repo(site["root"]).ctx, types=["model_version_alias.*"])
           if e.data["name"] == "clf"]  # fmt: skip
    assert got == [
        ("model_version_alias.created", 1, "writer"),
        ("model_version_alias.created", 2, "writer"),
        ("model_version_alias.deleted", 2, "writer"),
    ]


def test_tokens_are_required_and_scoped(site):
    status, err = call(site, "GET", "/api/v1/runs", token=None)
    assert status == 401 and "token" in err["message"]
    status, err = call(site, "PUT", f"/api/v1/objects/{blake3(b'x').hexdigest()}", b"x", "read")
    assert status == 403 and "write" in err["message"]
    assert call(site, "POST", "/api/v1/runs/live", {"name": "nope"}, token="read")[0] == 403
    # a write of its own: the test may run first in its worker (pytest -n)
    assert call(site, "PUT", f"/api/v1/objects/{blake3(b'x').hexdigest()}", b"x", "write")[0] < 300
    audit = (site["root"] / ".mlvc" / "logs" / "audit.log").read_text().splitlines()
    assert any(json.loads(ln)["who"] == "writer" for ln in audit)


def test_live_batches_apply_once_and_end_as_a_recorded_run(site):
    status, started = call(site, "POST", "/api/v1/runs/live",
                           {"name": "remote", "params": {"lr": 0.5}, "tags": {"k": "v"}})  # fmt: skip
    assert status == 200
    key = started["key"]
    batch = {"batch_id": str(uuid.uuid4()), "params": {"epochs": 3},
             "metrics": [["loss", 1.0 / (i + 1), i, time.time_ns()] for i in range(500)]}  # fmt: skip
    path = f"/api/v1/runs/live/{key}/batches"
    assert call(site, "POST", path, batch)[1] == {"applied": True, "points": 500, "refused": []}
    assert call(site, "POST", path, batch)[1]["applied"] is False  # sent again: applied once
    partly = {"batch_id": "b2", "metrics": [["bad key!", 1, 0, 1], ["acc", "nan", 0, 1]]}
    got = call(site, "POST", path, partly)[1]
    assert got["points"] == 1 and "bad key!" in got["refused"][0]
    for bad in ({"metrics": []}, {"batch_id": "x", "metrics": [["a", 1, 1.5, 1]]},
                {"batch_id": "x", "metrics": [["a", True, 1, 1]]},
                {"batch_id": "x", "params": [1]}, {"batch_id": ""}):  # fmt: skip
        status, err = call(site, "POST", path, bad)
        assert status == 400 and err["message"], bad
    status, ended = call(site, "POST", f"/api/v1/runs/live/{key}/end", {"status": "finished"})
    assert status == 200
    assert call(site, "POST", f"/api/v1/runs/live/{key}/end", {})[1] == ended  # idempotent
    assert call(site, "POST", path, {"batch_id": "late"})[0] == 400
    repo = Repo(site["root"])
    shown = repo.show(ended["run_id"])
    assert shown["params"] == {"lr": 0.5, "epochs": 3} and shown["tags"] == {"k": "v"}
    assert shown["author"] == "writer" and shown["status"] == "finished"
    n = repo.query(f"SELECT count(*) AS n FROM metrics WHERE run_id = '{ended['run_id']}'")
    assert n["n"][0].as_py() == 501
    assert call(site, "POST", "/api/v1/runs/live/nokey/batches", {"batch_id": "x"})[0] == 404
    mine = [e for e in read_events(repo.ctx, types=["run.*"]) if e.data.get("live_key") == key]
    assert [e.type for e in mine] == ["run.started", "run.finished"]
    assert mine[1].data["run_id"] == ended["run_id"] and mine[1].data["author"] == "writer"


ARROW = {"Content-Type": "application/vnd.apache.arrow.stream"}


def arrow_body(head, columns, meta_key=b"mlvc.batch", compression=None):
    """An Arrow IPC stream of ``columns`` with ``head`` as JSON in its schema's metadata."""
    import pyarrow as pa

    table = pa.table(columns)
    if head is not None:
        table = table.replace_schema_metadata({meta_key: json.dumps(head).encode()})
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def past_its_dictionary(now: int) -> bytes:
    """A live batch whose dictionary-encoded keys hold an index past the dictionary (a
    body of sound layout with one index changed in place)."""
    import numpy as np
    import pyarrow as pa

    keys = pa.array(["loss", "acc", "loss"]).dictionary_encode()
    body = arrow_body({"batch_id": "d"}, {"key": keys, "value": [1.0, 2.0, 3.0],
                                          "step": [5, 6, 7], "timestamp_ns": [now] * 3})  # fmt: skip
    was, now_ = (np.array(v, dtype=np.int32).tobytes() for v in ([0, 1, 0], [0, 9, 0]))
    assert body.count(was) == 1
    return body.replace(was, now_)


def test_live_batches_as_arrow_apply_once_like_json(site):
    """The columnar form the mlvc client sends: the same run as the JSON form would make,
    applied once, with bad points refused one by one and bad bodies refused whole (400)."""
    import pyarrow as pa

    key = call(site, "POST", "/api/v1/runs/live", {"name": "arrow"})[1]["key"]
    path = f"/api/v1/runs/live/{key}/batches"
    n, now = 1000, time.time_ns()
    keys = pa.DictionaryArray.from_arrays(pa.array([i % 2 for i in range(n)], pa.int32()),
                                          pa.array(["loss", "acc"]))  # fmt: skip
    columns = {"key": keys, "value": [float(i) if i else float("nan") for i in range(n)],
               "step": list(range(n)), "timestamp_ns": [now + i for i in range(n)]}  # fmt: skip
    body = arrow_body({"batch_id": "a1", "params": {"lr": 0.1}, "tags": {"t": "x"}}, columns)
    assert call(site, "POST", path, body, headers=ARROW)[1] == {
        "applied": True, "points": n, "refused": []}  # fmt: skip
    assert call(site, "POST", path, body, headers=ARROW)[1]["applied"] is False  # once
    partly = arrow_body({"batch_id": "a2"}, {"key": ["bad key!", "ok"], "value": [1.0, None],
                                             "step": [0, 1], "timestamp_ns": [now, now]})  # fmt: skip
    got = call(site, "POST", path, partly, headers=ARROW)[1]
    assert got["points"] == 1 and "bad key!" in got["refused"][0]
    good = {"key": ["x"], "value": [1.0], "step": [0], "timestamp_ns": [now]}
    for body in (
        b"not arrow at all",
        b"",
        arrow_body(None, good),  # no batch header
        arrow_body({"batch_id": "b"}, good, meta_key=b"other"),
        arrow_body({"batch_id": ""}, good),
        arrow_body({"batch_id": "b"}, {**good, "value": ["1.0"]}),  # text values
        arrow_body({"batch_id": "b"}, {**good, "step": [0.5]}),  # a float step
        arrow_body({"batch_id": "b"}, {**good, "step": [None]}),
        arrow_body({"batch_id": "b"}, {**good, "key": [None]}),
        arrow_body({"batch_id": "b"}, {**good, "timestamp_ns": pa.array([2**64 - 1], pa.uint64())}),
        arrow_body({"batch_id": "b"}, {**good, "extra": [1]}),
        arrow_body({"batch_id": "b"}, {"key": ["x"], "value": [1.0], "step": [0]}),
        arrow_body({"batch_id": "b"}, good)[:-40],  # cut short
        arrow_body({"batch_id": "b"}, good, compression="zstd"),  # could inflate unbounded
        past_its_dictionary(now),  # values pyarrow's reader does not check: a crash later
    ):
        status, err = call(site, "POST", path, body, headers=ARROW)
        assert status == 400 and err["message"] and "\n" not in err["message"], (status, err)
    ended = call(site, "POST", f"/api/v1/runs/live/{key}/end", {})[1]
    repo = Repo(site["root"])
    shown = repo.show(ended["run_id"])
    assert shown["params"] == {"lr": 0.1} and shown["tags"] == {"t": "x"}
    rows = repo.query(
        f"SELECT key, count(*) AS n, max(step) AS hi, sum(CASE WHEN isnan(value) THEN 1 END) "
        f"AS nans FROM metrics WHERE run_id = '{ended['run_id']}' GROUP BY key ORDER BY key"
    ).to_pylist()
    assert rows == [{"key": "acc", "n": 500, "hi": 999, "nans": None},
                    {"key": "loss", "n": 500, "hi": 998, "nans": 1},
                    {"key": "ok", "n": 1, "hi": 1, "nans": 1}]  # fmt: skip


def test_a_live_run_without_requests_for_the_lease_is_killed(site):
    key = call(site, "POST", "/api/v1/runs/live", {"name": "silent"})[1]["key"]
    call(site, "POST", f"/api/v1/runs/live/{key}/batches",
         {"batch_id": "1", "metrics": [["x", 1, 0, time.time_ns()]]})  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = Repo(site["root"]).query("SELECT status FROM runs WHERE name = 'silent'")
        if rows.num_rows:
            break
        time.sleep(0.5)
    assert rows["status"].to_pylist() == ["killed"]
    assert call(site, "POST", f"/api/v1/runs/live/{key}/batches", {"batch_id": "2"})[0] == 400
    killed = [e for e in read_events(Repo(site["root"]).ctx, types=["run.killed"])]
    assert [e.data["name"] for e in killed if e.data.get("live_key") == key] == ["silent"]


def test_openapi_describes_every_route(site):
    from mlvc.server.app import create_app

    status, doc = call(site, "GET", "/api/v1/openapi.json", token="read")
    assert status == 200 and doc["openapi"].startswith("3.")
    app = create_app(site["root"])
    for route in app.routes:
        if not route.path.startswith("/api/v1") or route.name == "method_not_allowed":
            continue  # the second: the 405 answers of paths for the methods they lack
        path = route.path.replace(":path}", "}")
        assert path in doc["paths"], path
        for method in route.methods - {"HEAD"} if "GET" in route.methods else route.methods:
            assert method.lower() in doc["paths"][path], (method, path)


def test_a_leased_run_outlives_its_dead_process_until_the_lease_runs_out(repo):
    from mlvc.runs.live import LiveRun
    from mlvc.runs.reaper import reap_dead_runs

    run = LiveRun.create(repo.ctx, name="leased", capture=False)
    run.log_metric("x", 1.0, step=0)
    run.flush()
    run._stop.set()  # this process stops writing it: it stands for a server that died
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run.staged.meta.update({"pid": dead.pid, "proc_start": ""})
    run.staged.set_lease(time.time() + 60)
    run.staged.save()
    assert reap_dead_runs(repo.ctx) == [] and run.staged.path.is_dir()
    run.staged.set_lease(time.time() - 1)
    run.staged.save()
    (recorded,) = reap_dead_runs(repo.ctx)
    assert repo.show(recorded.hex)["status"] == "killed"
    assert repo.query("SELECT count(*) AS n FROM metrics")["n"][0].as_py() == 1


def test_a_ref_moves_by_compare_and_swap_under_its_lock(repo, project):
    from mlvc.errors import RefMoved

    a = repo.commit("a", cwd=project, capture_env=False)
    b = repo.commit("b", cwd=project, capture_env=False)
    repo.refs.write("refs/tags/t", a.oid, expected=None)
    with pytest.raises(RefMoved):
        repo.refs.write("refs/tags/t", b.oid, expected=None)
    with pytest.raises(RefMoved):
        repo.refs.write("refs/tags/t", b.oid, expected=b.oid)
    repo.refs.write("refs/tags/t", b.oid, expected=a.oid)
    assert repo.resolve("t") == b.oid


def test_a_batch_is_applied_once_even_if_the_server_died_before_noting_it(tmp_path):
    root = tmp_path / "crash"
    root.mkdir()
    repo = Repo.init(root)
    token = TokenStore(Layout.of(root)).create("write", "w")[1]
    server = Server(root).start()
    status, _, data = server.request("POST", "/api/v1/runs/live", {"name": "c"}, token)
    key = json.loads(data)["key"]
    batch = {"batch_id": "once", "metrics": [["m", float(i), i, time.time_ns()] for i in range(50)]}
    path = f"/api/v1/runs/live/{key}/batches"
    assert json.loads(server.request("POST", path, batch, token)[2])["applied"] is True
    server.proc.kill()  # kill -9: no shutdown hook runs
    server.proc.wait()
    meta_path = root / ".mlvc" / "live" / key / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["v1_batches"]  # as if it died between the block's rename and meta.json's
    meta_path.write_text(json.dumps(meta))
    server = Server(root).start()  # adopts the run: the lease outlived the dead process
    try:
        assert json.loads(server.request("POST", path, batch, token)[2])["applied"] is False
        status, _, data = server.request("POST", f"/api/v1/runs/live/{key}/end", {}, token)
        run_id = json.loads(data)["run_id"]
    finally:
        server.stop()
    n = repo.query(f"SELECT count(*) AS n FROM metrics WHERE run_id = '{run_id}'")
    assert n["n"][0].as_py() == 50
    assert Repo(root).fsck() == []


def test_a_body_of_non_json_whitespace_is_refused_not_read_as_no_body(site):
    """schemathesis (stateful, CI) found POST .../end with the body b'\\x0c' answered 200:
    bytes.strip() took the form feed for whitespace, so the body counted as absent."""
    status, started = call(site, "POST", "/api/v1/runs/live", {"name": "ws"})
    assert status == 200
    end = f"/api/v1/runs/live/{started['key']}/end"
    for raw in (b"\x0c", b"\x0b", b" \x0c\n"):
        status, err = call(site, "POST", end, raw, headers={"Content-Type": "application/json"})
        assert status == 400 and "not valid JSON" in err["message"], raw
    status, ended = call(
        site, "POST", end, b" \r\n\t", headers={"Content-Type": "application/json"}
    )
    assert status == 200 and ended["run_id"]  # JSON whitespace alone is no body, as before
