"""What webhook tests share: a real HTTP receiver on 127.0.0.1 (a ThreadingHTTPServer in a
thread that records every request and answers with a settable status, or after a delay),
and helpers to find and wait for a repository's deliverer."""

from __future__ import annotations

import fcntl
import http.server
import json
import os
import socket
import threading
import time
from dataclasses import dataclass

import pytest

from mlvc.core.layout import Layout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Received:
    path: str
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


class Receiver:
    def __init__(self, port: int | None = None, status: int = 200, delay: float = 0.0):
        self.port = port or free_port()
        self.status, self.delay = status, delay
        self.got: list[Received] = []
        self.gate = threading.Event()  # cleared: requests wait for it (a hung receiver)
        self.gate.set()
        self.started = 0  # requests read, answered or not
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                owner.started += 1
                if owner.delay:
                    time.sleep(owner.delay)
                owner.gate.wait(30)
                owner.got.append(Received(self.path, dict(self.headers), body))
                self.send_response(owner.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.gate.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait(self, n: int = 1, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.got) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.got) >= n, f"received {len(self.got)} of {n} requests in {timeout} s"
        return self.got

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture(autouse=True)
def _quick_deliverer(monkeypatch):
    """Deliverers started by a test linger briefly and back off in milliseconds."""
    monkeypatch.setenv("MLVC_WEBHOOK_LINGER", "0.3")
    monkeypatch.setenv("MLVC_WEBHOOK_BACKOFF_SCALE", "0.001")
    monkeypatch.setenv("MLVC_WEBHOOK_TIMEOUT", "5")


def deliverer_pid(root) -> int | None:
    """The pid of the deliverer holding the lock of the repository at ``root``, or None."""
    path = Layout.of(root).deliver_lock
    if not path.exists():
        return None
    with open(path, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = path.read_text().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(f, fcntl.LOCK_UN)
        return None


def wait_for(condition, timeout: float = 10.0) -> None:
    """Wait until ``condition()`` is true (fail after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def kill_deliverer(root) -> None:
    """kill -9 the running deliverer of the repository at ``root``, and wait for it."""
    import signal

    pid = deliverer_pid(root)
    assert pid and pid > 0
    os.kill(pid, signal.SIGKILL)
    wait_idle(root)


def wait_idle(root, timeout: float = 20.0) -> None:
    """Wait until no deliverer runs in the repository at ``root``."""
    deadline = time.monotonic() + timeout
    while deliverer_pid(root) is not None:
        assert time.monotonic() < deadline, "the deliverer did not exit"
        time.sleep(0.05)


@pytest.fixture
def idle_at_end(project):
    """The test's deliverers have exited before the repository is checked and removed."""
    yield project
    wait_idle(project)


def executable(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, 0o755)
