"""What the web UI's tests and benchmarks share: a real ``mlvc server`` over a generated
repository, and Debian's Chromium through Playwright (tests/ui/conftest.py has the fixtures).

    make_runs(root, [Repo.commit kwargs + files])   a repository with those runs
    start_ui_server(root, *args) -> UiServer        ``mlvc server`` on a free port, with
                                                    .tokens {"read", "write"}, .url, .stop()
    launch_chromium(playwright)                     the headless browser the tests use
    login(page, server, scope, path)                opens ``path?token=...`` (cookie set)
    shot(page, name)                                a PNG in tests/ui/screenshots/
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM = os.environ.get("MLVC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SCREENSHOTS = Path(__file__).parent / "screenshots"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLVC_TRACKING_URI", None)
    env.update(MLVC_INDEX_SYNC="inline", GIT_CONFIG_NOSYSTEM="1", PYTHONUNBUFFERED="1",
               MLVC_AUTHOR="Test Author <test@example.com>")  # fmt: skip
    return env


def make_runs(root: Path, runs: list[dict]) -> list[str]:
    """A repository at ``root`` with one run per dict (``Repo.commit`` arguments, plus
    ``files``: {relative path: bytes} written before the commit); returns the run ids."""
    from mlvc import Repo

    root.mkdir(parents=True, exist_ok=True)
    repo = Repo.init(root) if not (root / ".mlvc").is_dir() else Repo(root)
    ids = []
    old = os.getcwd()
    os.chdir(root)
    try:
        for spec in runs:
            spec = dict(spec)
            for rel, content in spec.pop("files", {}).items():
                path = root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
            ids.append(repo.commit(capture_env=False, **spec))
    finally:
        os.chdir(old)
    return ids


class UiServer:
    """A real ``mlvc server`` process with a read and a write token."""

    def __init__(self, root: Path, *args: str):
        self.root, self.args = Path(root), list(args)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.root.parent / f"ui-server-{self.port}.log"
        self.tokens: dict[str, str] = {}
        self.proc: subprocess.Popen | None = None

    def mlvc(self, *args: str) -> str:
        r = subprocess.run([sys.executable, "-m", "mlvc", *args], cwd=self.root,
                           env=server_env(), capture_output=True, text=True, timeout=120)  # fmt: skip
        assert r.returncode == 0, r.stderr
        return r.stdout

    def start(self) -> UiServer:
        for scope in ("read", "write"):
            if scope not in self.tokens:
                out = self.mlvc("token", "create", "--scope", scope, "--name", f"{scope}-user")
                self.tokens[scope] = out.strip().splitlines()[-1]
        args = [sys.executable, "-m", "mlvc", "server", "--port", str(self.port), *self.args]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, cwd=self.root, env=server_env(), stdout=log,
                                         stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mlvc server exited:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"mlvc server did not start:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def check(self) -> None:
        """The repository is whole (fsck finds nothing) once the server has stopped."""
        from mlvc import Repo

        self.stop()
        assert Repo(self.root).fsck() == []


def start_ui_server(root: Path, *args: str) -> UiServer:
    return UiServer(root, *args).start()


SMALL = [
    dict(message="baseline", name="base", params={"lr": 0.1, "opt": "sgd", "layers": 2},
         metrics={"acc": 0.81, "loss": 0.52}, tags={"team": "vision"},
         files={"train.py": b"print('train')\n"}),
    dict(message="bigger", params={"lr": 0.01, "opt": "adam", "layers": 4},
         metrics={"acc": 0.88, "loss": 0.31}, tags={"team": "vision"}),
    dict(message="tiny", name="tiny", params={"lr": 0.3, "opt": "sgd", "layers": 1},
         metrics={"acc": 0.62, "loss": 0.95}, tags={"team": "nlp"}),
]  # fmt: skip


def login(page, server: UiServer, scope: str = "read", path: str = "/") -> None:
    sep = "&" if "?" in path else "?"
    page.goto(f"{server.url}{path}{sep}token={server.tokens[scope]}")


def shot(page, name: str, full_page: bool = False) -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    out = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(out), full_page=full_page)
    return out


def copy_shot(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)


def launch_chromium(playwright):
    """Debian's chromium, headless (Playwright gives each launch a fresh user-data-dir)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
