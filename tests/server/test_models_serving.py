"""The scoring server: payload parsing, and a real server answering real HTTP requests."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pyarrow as pa
import pytest

import mlvc
import mlvc.models as mm
from mlvc.models import payload
from mlvc.models.errors import BadPayload, UnsupportedMediaType

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")


class Fragile:
    """Adds one; fails on negative input (a model error, not a bad request)."""

    def predict(self, data):
        x = np.asarray(data["x"])
        if (x < 0).any():
            raise ValueError("negative input")
        return x + 1


# -- payloads -------------------------------------------------------------------------------


def test_json_formats_parse_to_the_same_table():
    forms = [
        {"dataframe_split": {"columns": ["x", "y"], "data": [[1.0, "a"], [2.0, "b"]]}},
        {
            "dataframe_split": {
                "columns": ["x", "y"],
                "index": [0, 1],
                "data": [[1, "a"], [2.0, "b"]],
            }
        },
        {"dataframe_records": [{"x": 1.0, "y": "a"}, {"x": 2.0, "y": "b"}]},
        {"instances": [{"x": 1.0, "y": "a"}, {"x": 2.0, "y": "b"}]},
        {"inputs": {"x": [1.0, 2.0], "y": ["a", "b"]}},
    ]
    for doc in forms:
        t = payload.parse(json.dumps(doc).encode(), "application/json; charset=utf-8")
        assert t.to_pydict() == {"x": [1.0, 2.0], "y": ["a", "b"]}, doc
    arr = payload.parse(b'{"inputs": [[1, 2], [3, 4]]}', None)
    assert isinstance(arr, np.ndarray) and arr.shape == (2, 2)


@pytest.mark.parametrize(
    "body, ctype, needle",
    [
        (b"{", "application/json", "not valid JSON"),
        (b"[1, 2]", "application/json", "must be an object"),
        (b'{"columns": []}', "application/json", "exactly one of the keys"),
        (b'{"inputs": [1], "instances": [1]}', "application/json", "exactly one of the keys"),
        (b'{"dataframe_split": {"columns": ["a"], "data": [[1, 2]]}}', None, "row 0"),
        (b'{"dataframe_split": {"columns": ["a"], "data": [[1], ["x"]]}}', None, "mixes types"),
        (b'{"dataframe_records": [1, 2]}', None, "list of objects"),
        (b'{"inputs": [[1, 2], [3]]}', None, "not a regular array"),
        (b'{"inputs": []}', None, "no rows"),
        (b"a,b\n1,2,3\n", "text/csv", "CSV body cannot be read"),
        (b"not arrow", payload.ARROW, "not an Arrow IPC stream"),
    ],
)
def test_bad_payloads_say_what_is_wrong(body, ctype, needle):
    with pytest.raises(BadPayload) as e:
        payload.parse(body, ctype)
    assert needle in str(e.value)


def test_csv_and_arrow_and_unsupported_types():
    schema = pa.schema([("zip", pa.string()), ("n", pa.float64())])
    t = payload.parse(b"zip,n\n01234,1\n", "text/csv", schema)
    assert t.to_pydict() == {"zip": ["01234"], "n": [1.0]}  # typed by the signature
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, pa.schema([("x", pa.int64())])) as w:
        w.write_table(pa.table({"x": [1, 2]}))
    assert payload.parse(sink.getvalue().to_pybytes(), payload.ARROW).num_rows == 2
    with pytest.raises(UnsupportedMediaType, match="'text/plain' is not supported"):
        payload.parse(b"x", "text/plain")


def test_predictions_are_plain_json():
    pd = pytest.importorskip("pandas")
    assert payload.jsonable(np.array([1.5, np.nan])) == [1.5, None]
    assert payload.jsonable(pd.DataFrame({"a": [1]})) == [{"a": 1}]
    assert payload.jsonable({"p": np.int64(3)}) == {"p": 3}
    assert json.loads(payload.predictions_json(np.array([[1, 2]]))) == {"predictions": [[1, 2]]}


# -- a real server --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url, body=None, ctype="application/json", accept=None):
    headers = {"Content-Type": ctype} if body is not None else {}
    if accept:
        headers["Accept"] = accept
    req = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers.get("content-type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type"), e.read()


@pytest.fixture
def server(repo, project):
    """`mlvc models serve` of a registered model, in its own process on a free port."""
    with mlvc.start_run(repo=repo):
        mm.log_model(Fragile(), "frag", input_example={"x": [1.0, 2.0]},
                     registered_model_name="frag")  # fmt: skip
    mm.set_alias("frag", "live", 1, repo=repo)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlvc",
            "-C",
            str(project),
            "models",
            "serve",
            "models:/frag@live",
            "--port",
            str(port),
            "--workers",
            "2",
        ],  # fmt: skip
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if request(base + "/ping")[0] == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"server did not start:\n{proc.stdout.read()}")
        time.sleep(0.2)
    yield base
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_server_endpoints(server):
    status, _, body = request(server + "/ping")
    assert status == 200
    status, _, body = request(server + "/version")
    doc = json.loads(body)
    assert doc["mlvc_version"] == mlvc.__version__ and doc["flavor"] == "python_function"
    assert len(doc["model_id"]) == 64 and doc["uri"] == "models:/frag@live"
    meta = json.loads(request(server + "/metadata")[2])
    assert meta["signature"]["inputs"]["columns"] == [
        {"name": "x", "type": "double", "nullable": True}
    ]
    assert meta["input_example"] == {"dataframe_split": {"columns": ["x"], "data": [[1.0], [2.0]]}}
    # the example in /metadata is a ready-to-send payload
    status, _, body = request(server + "/invocations", json.dumps(meta["input_example"]).encode())
    assert status == 200 and json.loads(body) == {"predictions": [2.0, 3.0]}


def test_server_scoring_formats(server):
    url = server + "/invocations"
    docs = [
        {"dataframe_split": {"columns": ["x"], "data": [[1], [2]]}},
        {"dataframe_records": [{"x": 1}, {"x": 2}]},
        {"instances": [{"x": 1}, {"x": 2}]},
        {"inputs": {"x": [1, 2]}},
        {"inputs": [1, 2]},  # a 1-D list for a one-column model
    ]
    for doc in docs:
        status, ctype, body = request(url, json.dumps(doc).encode())
        assert (status, json.loads(body)) == (200, {"predictions": [2.0, 3.0]}), doc
        assert ctype.startswith("application/json")
    status, _, body = request(url, b"x\n1\n2\n", "text/csv")
    assert (status, json.loads(body)) == (200, {"predictions": [2.0, 3.0]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, pa.schema([("x", pa.float64())])) as w:
        w.write_table(pa.table({"x": [1.0, 2.0]}))
    status, ctype, body = request(url, sink.getvalue().to_pybytes(), payload.ARROW, payload.ARROW)
    assert status == 200 and ctype == payload.ARROW
    assert pa.ipc.open_stream(body).read_all().to_pydict() == {"predictions": [2.0, 3.0]}


def test_server_errors_and_survival(server):
    url = server + "/invocations"
    status, _, body = request(url, b'{"dataframe_split": {"columns": ["y"], "data": [[1]]}}')
    assert status == 400
    assert json.loads(body) == {
        "error_code": "BAD_REQUEST",
        "message": "missing column 'x': the model expects x: float",
    }
    status, _, body = request(url, b'{"inputs": {"x": ["a"]}}')
    assert status == 400 and "column 'x' has type text" in json.loads(body)["message"]
    status, _, body = request(url, b"{nope")
    assert status == 400 and "not valid JSON" in json.loads(body)["message"]
    status, _, body = request(url, b"x", "text/plain")
    assert status == 415
    for _ in range(4):  # the model's own failure: 500, and the workers keep serving
        status, _, body = request(url, b'{"inputs": {"x": [-1]}}')
        assert status == 500
        assert json.loads(body)["message"] == "the model failed: ValueError: negative input"
    assert request(url, b'{"inputs": {"x": [1]}}')[:1] == (200,)
    assert request(server + "/ping")[0] == 200


def test_serve_without_the_extra_is_a_clear_error(cli, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_uvicorn(name, *args, **kwargs):
        if name == "uvicorn":
            raise ImportError("No module named 'uvicorn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvicorn)
    r = cli("models", "serve", "models:/x/1", ok=False)
    assert r.exit_code == 20  # its own code: an optional dependency is missing
    assert r.output.strip() == (
        "mlvc: error: `mlvc models serve` needs the serve extra: pip install 'mlvc[serve]'"
    )
