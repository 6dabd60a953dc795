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

import contextlib
import json
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


@contextlib.contextmanager
def _as_test_author():
    """Runs made here are by the tests' author, whatever the machine's git config says."""
    old = os.environ.get("MLVC_AUTHOR"), os.getcwd()
    os.environ["MLVC_AUTHOR"] = "Test Author <test@example.com>"
    try:
        yield
    finally:
        if old[0] is None:
            os.environ.pop("MLVC_AUTHOR", None)
        else:
            os.environ["MLVC_AUTHOR"] = old[0]
        os.chdir(old[1])


def make_runs(root: Path, runs: list[dict]) -> list[str]:
    """A repository at ``root`` with one run per dict (``Repo.commit`` arguments, plus
    ``files``: {relative path: bytes} written before the commit); returns the run ids."""
    from mlvc import Repo

    root.mkdir(parents=True, exist_ok=True)
    repo = Repo.init(root) if not (root / ".mlvc").is_dir() else Repo(root)
    ids = []
    with _as_test_author():
        os.chdir(root)
        for spec in runs:
            spec = dict(spec)
            for rel, content in spec.pop("files", {}).items():
                path = root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
            ids.append(repo.commit(capture_env=False, **spec))
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


XSS = '<img src=x onerror="window.__pwned=1">'
SCRIPT = "</script><script>window.__pwned=2</script>"


def tiny_png() -> bytes:
    """A 2x2 red PNG, written by hand (no imaging library needed)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))  # fmt: skip


def make_showcase(root: Path) -> dict[str, str]:
    """A repository with a run holding every section the run page shows: params, metrics
    over steps, tags, artifacts (PNG, CSV, JSON, Parquet, a log, an HTML page), a model
    registered twice with an alias, a child run, a reproduction-like relative, and hostile
    text (XSS, SCRIPT) in its message, a param, a tag and an artifact's name."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import mlvc
    import mlvc.models as mm
    from mlvc import Repo

    root.mkdir(parents=True, exist_ok=True)
    repo = Repo.init(root)
    with _as_test_author():
        os.chdir(root)
        (root / "train.py").write_text("print('train')\n")
        out = root / "out"
        out.mkdir()
        (out / "confusion.png").write_bytes(tiny_png())
        (out / "preds.csv").write_text("x,y\n" + "".join(f"{i},{i * 2}\n" for i in range(80)))
        (out / "report.json").write_text(json.dumps({"acc": 0.9, "note": SCRIPT}))
        (out / "page.html").write_text(f"<html><body>{SCRIPT}</body></html>")
        (out / f"{XSS}.txt").write_text("hostile name\n")
        pq.write_table(pa.table({"a": list(range(120)), "b": [f"v{i}" for i in range(120)]}),
                       out / "table.parquet")  # fmt: skip
        (out / "train.log").write_text("epoch 1 loss 0.5\nepoch 2 loss 0.3\n")
        with mlvc.start_run(name="showcase", repo=repo, message=f"showcase {XSS}",
                            params={"lr": 0.01, "note": XSS, "html": SCRIPT},
                            tags={"team": "vision", "evil": XSS}) as run:  # fmt: skip
            for step in range(20):
                run.log_metric("loss", 1 / (step + 1), step=step)
                run.log_metric("acc", step / 20, step=step)
            for name in ("confusion.png", "preds.csv", "report.json", "page.html",
                         f"{XSS}.txt", "table.parquet"):  # fmt: skip
                mlvc.log_artifact(str(out / name))
            mlvc.log_artifact(str(out / "train.log"), "logs/train.log")
            mm.log_model(lambda d: d, "echo", input_example={"x": [1.0, 2.0]},
                         registered_model_name="demo")  # fmt: skip
        first = run.id
        with mlvc.start_run(name="second", repo=repo, params={"lr": 0.02}) as run2:
            run2.log_metric("loss", 0.2, step=0)
            mm.log_model(lambda d: d, "echo", registered_model_name="demo")
        mm.set_alias("demo", "prod", 1, repo=repo)
        mm.set_alias("demo", "prod", 2, repo=repo)
        mm.set_alias("demo", "staging", 1, repo=repo)
        return {"showcase": first, "second": run2.id}
