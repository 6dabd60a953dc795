"""The client side of /api/v1: a training script with MLVC_TRACKING_URI logs to a real
`mlvc server` that is restarted in the middle, and loses no point nor applies one twice;
`mlvc log/show/diff/query` through the server print what they print locally."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from mlvc import Repo
from mlvc.core.layout import Layout
from mlvc.server.auth import TokenStore

POINTS = 10_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m mlvc server` in ``root`` on ``port`` (free by default) of 127.0.0.1."""

    def __init__(self, root, port=None):
        self.root, self.port = root, port or free_port()
        self.env = {**os.environ, "MLVC_INDEX_SYNC": "inline"}
        self.proc = None

    def start(self):
        log = open(self.root / "server.log", "ab")  # noqa: SIM115
        cmd = [sys.executable, "-m", "mlvc", "server", "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                con = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                con.request("GET", "/health")
                if con.getresponse().status == 200:
                    return self
            except OSError:
                pass
            assert self.proc.poll() is None, (self.root / "server.log").read_text()
            time.sleep(0.1)
        raise AssertionError("the server did not start")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(30) in (0, -signal.SIGTERM)


TRAIN = """
import sys, time, mlvc
with mlvc.start_run(name="remote-train", params={"lr": 0.01, "layers": 3}) as run:
    for i in range(%d):
        run.log_metric("loss", 1.0 / (i + 1), step=i)
        if i %% 100 == 0:
            time.sleep(0.04)
    run.set_tag("phase", "done")
print("RUN", run.id)
"""


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    Repo.init(root)
    secret = TokenStore(Layout.of(root)).create("write", "trainer")[1]
    read = TokenStore(Layout.of(root)).create("read", "viewer")[1]
    server = Server(root).start()
    site = {"root": root, "server": server, "token": secret, "read": read}
    yield site
    if site["server"].proc.poll() is None:
        site["server"].stop()
    assert "Traceback" not in (root / "server.log").read_text()
    assert Repo(root).fsck() == []


def mlvc(args, cwd, env=None, ok=True):
    r = subprocess.run([sys.executable, "-m", "mlvc", *args], cwd=cwd, capture_output=True,
                       text=True, env={**os.environ, **(env or {})}, timeout=120)  # fmt: skip
    if ok:
        assert r.returncode == 0, r.stderr
    return r


def remote_env(served, token=None):
    return {"MLVC_TRACKING_URI": f"http://127.0.0.1:{served['server'].port}",
            "MLVC_TRACKING_TOKEN": token or served["token"]}  # fmt: skip


def test_a_server_restart_mid_training_loses_no_point_and_applies_none_twice(served, tmp_path):
    root, server = served["root"], served["server"]
    script = tmp_path / "train.py"
    script.write_text(TRAIN % POINTS)
    elsewhere = tmp_path / "elsewhere"  # no repository here: everything goes to the server
    elsewhere.mkdir()
    env = {**os.environ, **remote_env(served)}
    train = subprocess.Popen([sys.executable, str(script)], cwd=elsewhere, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    live = root / ".mlvc" / "live"
    deadline = time.monotonic() + 30
    while not list(live.glob("*/series/*.arrow")):  # points have arrived
        assert time.monotonic() < deadline and train.poll() is None
        time.sleep(0.05)
    server.stop()  # SIGTERM in the middle of the run
    time.sleep(1.0)  # the script goes on logging into its buffer
    assert train.poll() is None, "the run ended before the restart: make it longer"
    served["server"] = Server(root, server.port).start()  # the same port again
    out, err = train.communicate(timeout=120)
    assert train.returncode == 0, err
    run_id = out.split("RUN ")[1].strip()
    assert f"run {run_id} recorded on" in err
    repo = Repo(root)
    got = repo.query(
        f"SELECT count(*) AS n, count(DISTINCT step) AS steps, min(step) AS lo, max(step) AS hi "
        f"FROM metrics WHERE run_id = '{run_id}' AND key = 'loss'"
    ).to_pylist()[0]
    assert got == {"n": POINTS, "steps": POINTS, "lo": 0, "hi": POINTS - 1}
    shown = repo.show(run_id)
    assert shown["params"] == {"lr": 0.01, "layers": 3} and shown["tags"] == {"phase": "done"}
    assert shown["status"] == "finished" and shown["author"] == "trainer"
    assert shown["command"][-1].endswith("train.py")  # the client's command, not the server's
    # through the server and locally, the read commands print the same
    for args in (["log"], ["log", "--json"], ["show", "--json", run_id], ["show", "HEAD"],
                 ["query", "SELECT key, count(*), max(value) FROM metrics GROUP BY key"],
                 ["query", "SELECT * FROM runs_wide", "-f", "json"]):  # fmt: skip
        local = mlvc(args, root, {"MLVC_TRACKING_URI": ""})
        remote = mlvc(args, elsewhere, remote_env(served, served["read"]))
        assert remote.stdout == local.stdout, args


def test_diff_through_the_server_is_the_local_diff(served):
    root = served["root"]
    repo = Repo(root)
    (root / "a.txt").write_text("one\n")
    repo.commit("first", params={"lr": 0.1}, metrics={"acc": 0.5}, cwd=root, capture_env=False)
    (root / "a.txt").write_text("two\n")
    repo.commit("second", params={"lr": 0.2}, metrics={"acc": 0.7}, cwd=root, capture_env=False)
    for args in (["diff", "HEAD~1", "HEAD"], ["diff", "HEAD~1", "--json"],
                 ["diff", "HEAD~1", "HEAD", "--patch", "--no-color"]):  # fmt: skip
        local = mlvc(args, root, {"MLVC_TRACKING_URI": ""})
        remote = mlvc(args, root.parent, remote_env(served, served["read"]))
        assert remote.stdout == local.stdout and "lr" in local.stdout, args
    for args in (["show", "HEAD:a.txt"], ["show", "HEAD~1:code/a.txt"]):  # streamed by id
        local = mlvc(args, root, {"MLVC_TRACKING_URI": ""})
        remote = mlvc(args, root.parent, remote_env(served, served["read"]))
        assert remote.stdout == local.stdout and local.stdout in ("one\n", "two\n"), args
    r = mlvc(["show", "nosuch"], root.parent, remote_env(served), ok=False)
    assert r.returncode == 4 and "nosuch" in r.stderr


FILES = """
import mlvc
with mlvc.start_run(name="files") as run:
    run.log_metric("loss", 0.5)
    for call in (lambda: mlvc.log_image([[0]], "i.png"), lambda: run.log_table({"a": [1]}, "t.parquet"),
                 lambda: mlvc.log_text("x", "t.txt"), lambda: run.log_figure(None, "f.png")):
        try:
            call()
        except mlvc.MlvcError as e:
            print("REFUSED", e)
print("RUN", run.id)
"""


def test_files_logged_to_a_server_are_refused_by_name_and_the_run_goes_on(served, tmp_path):
    """A run on a server takes no files yet: each way of logging one (the module's
    functions and the run's methods) is one clear error (log_image was an AttributeError),
    and the run's metrics still arrive."""
    script = tmp_path / "files.py"
    script.write_text(FILES)
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                       text=True, env={**os.environ, **remote_env(served)}, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    refused = [line for line in r.stdout.splitlines() if line.startswith("REFUSED")]
    assert len(refused) == 4 and all("cannot be logged to a server" in x for x in refused)
    run_id = r.stdout.split("RUN ")[-1].strip()
    assert Repo(served["root"]).show(run_id)["metrics"] == {"loss": 0.5}


def test_unreachable_server_and_bad_token_are_one_line_errors(served, tmp_path):
    down = {"MLVC_TRACKING_URI": f"http://127.0.0.1:{free_port()}", "MLVC_TRACKING_TOKEN": "x"}
    for args in (["log"], ["query", "SELECT 1"], ["show", "HEAD"]):
        r = mlvc(args, tmp_path, down, ok=False)
        lines = r.stderr.strip().splitlines()
        assert r.returncode != 0 and len(lines) == 1, r.stderr
        assert down["MLVC_TRACKING_URI"] in lines[0] and "mlvc server" in lines[0]
    r = mlvc(["log"], tmp_path, remote_env(served, "mlvc_wrong"), ok=False)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1
    assert "MLVC_TRACKING_TOKEN" in r.stderr and "401" in r.stderr
    script = tmp_path / "t.py"
    script.write_text("import mlvc\nmlvc.start_run(name='x')\n")
    for env, words in ((remote_env(served, served["read"]), "403"),
                       ({**down, "MLVC_TRACKING_START_TIMEOUT": "0.5"}, "cannot reach")):  # fmt: skip
        r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                           text=True, env={**os.environ, **env}, timeout=60)  # fmt: skip
        assert r.returncode != 0 and words in r.stderr
    assert json.loads(mlvc(["log", "--json"], served["root"]).stdout) == []


CAPPED = """
import sys, time, mlvc
run = mlvc.start_run(name="capped")
run.log_metric("warm", 1.0)
print("STARTED", flush=True)
sys.stdin.readline()  # the server is down now
for i in range(5000):
    run.log_metric("loss", i / 10, step=i)
    if i % 100 == 0:
        time.sleep(0.01)  # the sender looks at the buffer every 50 ms: let it see this
print("LOGGED", flush=True)
run.end()
print("RUN", run.id, flush=True)
"""


def test_logging_waits_at_the_buffer_cap_while_the_server_is_down(served, tmp_path):
    """Past MLVC_TRACKING_MAX_BUFFER points held, log_metric waits (after one warning)
    instead of growing the buffer; it goes on once the server takes them, and every point
    arrives once."""
    import threading

    root, server = served["root"], served["server"]
    script = tmp_path / "capped.py"
    script.write_text(CAPPED)
    env = {**os.environ, **remote_env(served), "MLVC_TRACKING_MAX_BUFFER": "1000"}
    train = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)  # fmt: skip
    lines: list[str] = []
    errors: list[str] = []
    readers = [threading.Thread(target=lambda s=s, into=into: into.extend(iter(s.readline, "")))
               for s, into in ((train.stdout, lines), (train.stderr, errors))]  # fmt: skip
    for t in readers:
        t.start()
    deadline = time.monotonic() + 60
    while "STARTED\n" not in lines:
        assert time.monotonic() < deadline and train.poll() is None, errors
        time.sleep(0.05)
    server.stop()
    train.stdin.write("go\n")
    train.stdin.flush()
    deadline = time.monotonic() + 30
    while not any("caps the buffer" in e for e in errors):
        assert time.monotonic() < deadline and train.poll() is None, (lines, errors)
        time.sleep(0.05)
    time.sleep(1.0)
    assert "LOGGED\n" not in lines and train.poll() is None  # waiting, not buffering
    served["server"] = Server(root, server.port).start()
    assert train.wait(120) == 0, errors
    for t in readers:
        t.join(10)
    assert "LOGGED\n" in lines
    run_id = [ln.split()[1] for ln in lines if ln.startswith("RUN ")][0]
    got = (
        Repo(root)
        .query(
            f"SELECT count(*) AS n, count(DISTINCT step) AS steps FROM metrics "
            f"WHERE run_id = '{run_id}' AND key = 'loss'"
        )
        .to_pylist()
    )
    assert got == [{"n": 5000, "steps": 5000}]
    assert sum("caps the buffer" in e for e in errors) == 1, errors


def test_a_server_from_before_arrow_batches_gets_json(tmp_path):
    """A server of an mlvc from before Arrow batches reads every body as JSON and answers
    400 "the body is not valid JSON" to an Arrow stream (what its _json_body said): the
    client sends that batch again as JSON rows, and the rest of the run too. The old server
    is stood in for by a stdlib HTTP server answering as it did (that version is not
    installed here)."""
    import http.server
    import threading

    from mlvc.api.remote import Client, RemoteRun

    got = {"rows": [], "arrow": 0, "ids": []}

    class Old(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self, status, doc):
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"] or 0))
            try:
                doc = json.loads(body)
            except (ValueError, UnicodeDecodeError) as e:
                got["arrow"] += 1
                return self.answer(400, {"error_code": "MALFORMED_REQUEST",
                                         "message": f"the body is not valid JSON: {e}"})  # fmt: skip
            if self.path.endswith("/live"):
                return self.answer(200, {"key": "k1"})
            if self.path.endswith("/batches"):
                got["rows"] += doc.get("metrics", [])
                got["ids"].append(doc["batch_id"])
                return self.answer(200, {"applied": True, "points": len(doc.get("metrics", [])),
                                         "refused": []})  # fmt: skip
            return self.answer(200, {"run_id": "ab" * 32})

    old = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Old)
    threading.Thread(target=old.serve_forever, daemon=True).start()
    try:
        run = RemoteRun(Client(f"http://127.0.0.1:{old.server_port}", "t"), name="old")
        for i in range(1000):
            run.log_metric("loss", float("nan") if i == 3 else 1 / (i + 1), step=i)
        run.log_metric("acc", float("-inf"))
        run.flush()
        time.sleep(1.5)  # a first batch goes, the rest after
        for i in range(1000, 2000):
            run.log_metric("loss", 1 / (i + 1), step=i)
        assert run.end().hex == "ab" * 32
    finally:
        old.shutdown()
    assert got["arrow"] == 1  # tried once, then JSON for the rest of the run
    loss = [r for r in got["rows"] if r[0] == "loss"]
    assert [r[2] for r in loss] == list(range(2000)) and loss[3][1] == "nan"
    assert [r[:3] for r in got["rows"] if r[0] == "acc"] == [["acc", "-inf", 0]]
    assert len(got["ids"]) == len(set(got["ids"])) >= 2


@pytest.mark.parametrize(
    "name, value",
    [
        ("MLVC_TRACKING_MAX_BUFFER", "lots"),
        ("MLVC_TRACKING_MAX_BUFFER", "0"),
        ("MLVC_TRACKING_MAX_BUFFER", "1.5"),
        ("MLVC_TRACKING_START_TIMEOUT", "soon"),
        ("MLVC_TRACKING_START_TIMEOUT", "nan"),
        ("MLVC_TRACKING_START_TIMEOUT", "-1"),
    ],
)
def test_bad_tracking_settings_are_one_usage_error_naming_them(monkeypatch, name, value):
    from mlvc.api.remote import Client, RemoteRun
    from mlvc.errors import UsageError

    monkeypatch.setenv(name, value)
    with pytest.raises(UsageError, match=f"^{name}='{value}' is not a") as e:
        RemoteRun(Client(f"http://127.0.0.1:{free_port()}"), name="x")
    assert "\n" not in str(e.value)


def test_a_damaged_query_answer_is_a_refusal_not_a_crash():
    """The client reads a server's Arrow answer checked whole: a damaged one (offsets that
    go back, sent by a real HTTP server here) is a one-line ServerRefused, not a table
    that crashes the client's process when used."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import numpy as np
    import pyarrow as pa

    from mlvc.api.remote import Client, RemoteRepo
    from mlvc.errors import ServerRefused

    sink = pa.BufferOutputStream()
    table = pa.table({"s": ["hello", "world", "again"]})
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    was, now = (np.array(v, dtype=np.int32).tobytes() for v in ([0, 5, 10, 15], [0, 12, 10, 15]))
    body = sink.getvalue().to_pybytes()
    assert body.count(was) == 1
    body = body.replace(was, now)

    class Answer(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.apache.arrow.stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        remote = RemoteRepo(Client(f"http://127.0.0.1:{httpd.server_address[1]}"))
        with pytest.raises(ServerRefused, match="not a readable Arrow stream") as e:
            remote.query("SELECT 1")
        assert "\n" not in str(e.value)
    finally:
        httpd.shutdown()
        httpd.server_close()
