"""A real `mlvc server` process for the server tests, shared by a test module.

``server`` (module-scoped) starts ``python -m mlvc server`` in a fresh repository with a
write, a read and an admin token, and gives helpers:

    server.url                       http://127.0.0.1:PORT
    server.root                      the repository (a project folder)
    server.tokens                    {"write": ..., "read": ..., "admin": ...}
    server.call(method, path, body=None, token="write", query=None, raw=None, headers=None)
                                     -> (status, parsed JSON or bytes, headers)
    server.mlflow(script, token="write", ok=True)
                                     runs a Python snippet in a subprocess with the MLflow
                                     client pointed at the server; returns CompletedProcess
    server.mlvc(*args, ok=True)      runs the mlvc CLI in the repository
    server.restart(*extra_args)      SIGTERM, wait, start again on the same port
    server.stop()

``start_server(root, *args)`` starts another one (e.g. with ``--lease 2``) for a test of its
own; stop it with ``.stop()``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

PY = sys.executable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(
        MLVC_INDEX_SYNC="inline",
        GIT_CONFIG_NOSYSTEM="1",
        MLVC_AUTHOR="Test Author <test@example.com>",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class ServerProcess:
    def __init__(self, root: Path, args: tuple[str, ...] = ()):
        self.root = Path(root)
        self.args = list(args)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tokens: dict[str, str] = {}
        self.proc: subprocess.Popen | None = None
        self.log = self.root.parent / f"server-{self.port}.log"

    # -- the repository --------------------------------------------------------------------

    def mlvc(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(
            [PY, "-m", "mlvc", *args], cwd=self.root, env=_env(), capture_output=True,
            text=True, timeout=120,
        )  # fmt: skip
        if ok and r.returncode != 0:
            raise AssertionError(f"mlvc {' '.join(args)} failed ({r.returncode}):\n{r.stderr}")
        return r

    def make_tokens(self) -> None:
        for scope in ("write", "read", "admin"):
            out = self.mlvc("token", "create", "--scope", scope, "--name", f"{scope}-user")
            self.tokens[scope] = out.stdout.strip().splitlines()[-1]

    # -- the process -----------------------------------------------------------------------

    def start(self, *extra: str) -> ServerProcess:
        args = [PY, "-m", "mlvc", "server", "--port", str(self.port), *self.args, *extra]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                args, cwd=self.root, env=_env(), stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mlvc server exited:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"mlvc server did not answer /health:\n{self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def restart(self, *extra: str) -> ServerProcess:
        self.stop()
        return self.start(*extra)

    def server_log(self) -> str:
        return self.log.read_text(errors="replace")

    # -- requests --------------------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        body=None,
        token: str | None = "write",
        query: dict | list | None = None,
        raw: bytes | None = None,
        headers: dict | None = None,
    ):
        """(status, JSON or bytes, headers) of one request; ``token`` is a scope name, a
        literal secret, or None."""
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(url, data=data, method=method)
        if body is not None and raw is None:
            req.add_header("Content-Type", "application/json")
        if token is not None:
            req.add_header("Authorization", f"Bearer {self.tokens.get(token, token)}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                status, payload, hdrs = r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            status, payload, hdrs = e.code, e.read(), dict(e.headers)
        if "json" in hdrs.get("content-type", hdrs.get("Content-Type", "")):
            return status, json.loads(payload or b"null"), hdrs
        return status, payload, hdrs

    def mlflow(
        self, script: str, token: str = "write", ok: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        """Run ``script`` (Python, dedented) with the MLflow client pointed at this server."""
        env = _env(
            MLFLOW_TRACKING_URI=self.url,
            MLFLOW_TRACKING_TOKEN=self.tokens.get(token, token),
            MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
            MLFLOW_ENABLE_ASYNC_LOGGING="false",
            GIT_PYTHON_REFRESH="quiet",
        )
        r = subprocess.run(
            [PY, "-c", textwrap.dedent(script)], cwd=self.root.parent, env=env,
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if ok and r.returncode != 0:
            raise AssertionError(
                f"MLflow script failed ({r.returncode}):\n{r.stderr[-4000:]}\n"
                f"server log:\n{self.server_log()[-3000:]}"
            )
        return r


def new_repo(tmp: Path) -> Path:
    root = tmp / "proj"
    root.mkdir(parents=True)
    (root / "train.py").write_text("print('training')\n")
    subprocess.run(
        [PY, "-m", "mlvc", "init"], cwd=root, env=_env(), check=True, capture_output=True
    )
    return root


def start_server(root: Path, *args: str) -> ServerProcess:
    """Another server on ``root`` (tokens made if the repository has none of ours)."""
    srv = ServerProcess(root, args)
    srv.make_tokens()
    return srv.start()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real `mlvc server` in a fresh repository, shared by the module's tests."""
    root = new_repo(tmp_path_factory.mktemp("server"))
    srv = start_server(root)
    yield srv
    code = srv.stop()
    # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly
    assert code in (0, -signal.SIGTERM), (
        f"the server exited with {code}:\n{srv.server_log()[-3000:]}"
    )
    assert "Traceback" not in srv.server_log(), srv.server_log()[-5000:]
    fsck = srv.mlvc("fsck", ok=False)
    assert fsck.returncode == 0, f"fsck found problems:\n{fsck.stdout}{fsck.stderr}"


@pytest.fixture
def own_server(tmp_path):
    """``own_server(*args)``: a server of the test's own (e.g. ``--lease 2``) in a fresh
    repository, stopped at the end."""
    started: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        srv = start_server(new_repo(tmp_path / f"srv{len(started)}"), *args)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()
