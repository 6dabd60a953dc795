"""A commit's background work starts as one process: the index worker and the webhook
deliverer (mlvc.core.spawn.gathered around publish_runs). Both jobs get done, and a kill -9
of that process loses neither the run's index entry nor its event."""

import os
import signal
from pathlib import Path

import pytest
from webhook_receiver import (
    Receiver,
    _quick_deliverer,
    deliverer_pid,
    idle_at_end,
    wait_for,
    wait_idle,
)

from mlvc import Repo
from mlvc.events import outbox, webhooks

__all__ = ["_quick_deliverer", "idle_at_end"]  # fixtures used by name


@pytest.fixture
def repo(project, monkeypatch) -> Repo:
    """The repository with its index worker detached, as outside the tests."""
    monkeypatch.setenv("MLVC_INDEX_SYNC", "background")
    return Repo(project)


def indexed(repo: Repo) -> int:
    return repo.query("SELECT count(*) AS n FROM runs").to_pylist()[0]["n"]


def test_a_commit_starts_one_process_for_its_index_worker_and_deliverer(
    project, repo, idle_at_end, monkeypatch
):
    monkeypatch.setenv("MLVC_WEBHOOK_LINGER", "3")  # long enough to look at the process
    with Receiver() as rx:
        webhooks.add(repo.layout, rx.url, allow_private=True, events=["commit.*"])
        oid = repo.commit("first")
        wait_for(lambda: (deliverer_pid(repo.root) or 0) > 0, timeout=30)  # pid written
        pid = deliverer_pid(repo.root)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"mlvc.core.spawn" in cmdline  # the gathered start, not the deliverer alone
        assert b'"mlvc.index.worker"' in b" ".join(cmdline)  # ... with the index worker
        got = rx.wait(1)
    assert got[0].json()["data"]["run_id"] == oid
    assert indexed(repo) == 1


def test_killing_the_commits_background_process_loses_neither_run_nor_event(
    project, repo, idle_at_end
):
    with Receiver() as rx:
        rx.gate.clear()  # the first delivery hangs: the shared process is busy when killed
        webhooks.add(repo.layout, rx.url, allow_private=True, events=["commit.*"])
        first = repo.commit("first")
        wait_for(lambda: rx.started > 0, timeout=30)
        os.kill(deliverer_pid(repo.root), signal.SIGKILL)
        wait_idle(repo.root)
        rx.gate.set()
        (project / "train.py").write_text("print('second')\n")
        second = repo.commit("second")  # starts the next deliverer
        wait_for(lambda: {first, second} <= {g.json()["data"]["run_id"] for g in rx.got}, 30)
        wait_idle(repo.root)
    assert not list(outbox.pending(repo.layout))
    assert indexed(repo) == 2


def test_a_snapshot_with_alert_rules_gets_its_alert_sent_and_indexed(project, repo, idle_at_end):
    """A snapshot commit in a project with rules gathers three jobs (the alert watcher, the
    deliverer, the index worker) into one process: the alert it fires is delivered too."""
    (project / "mlvc.toml").write_text(
        '[[alerts]]\nname = "loss-nan"\nmetric = "loss"\nwhen = "isnan(value)"\n'
    )
    with Receiver() as rx:
        webhooks.add(repo.layout, rx.url, allow_private=True, events=["alert.*", "commit.*"])
        oid = repo.commit(message="diverged", metrics={"loss": float("nan")}, capture_env=False)
        wait_for(lambda: len(rx.got) >= 2, timeout=30)
        wait_idle(repo.root)
    by_type = {g.json()["type"]: g.json()["data"] for g in rx.got}
    assert by_type["alert.fired"]["run_id"] == oid.hex
    assert by_type["commit.created"]["run_id"] == oid.hex
    assert indexed(repo) == 1
    lock = Path(project / ".mlvc" / "alerts" / "watcher.lock")
    wait_for(lambda: _free(lock), timeout=20)  # the watcher thread ends too


def _free(path: Path) -> bool:
    import fcntl

    with open(path, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
