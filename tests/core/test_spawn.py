"""mlvc.core.spawn: detached starts gathered into one process (a commit's index worker and
webhook deliverer), each job holding the lock it was handed until it ends."""

import fcntl
import os
import time

import pytest

from mlvc.core import spawn

JOB = """
import os, sys, threading, time
from pathlib import Path

def main(root, fd):
    root = Path(root)
    (root / "out").write_text(f"{os.getpid()} {type(fd).__name__} {threading.current_thread().name}")
    deadline = time.monotonic() + 20
    while not (root / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    os.close(fd)
    return 0

if __name__ == "__main__":  # started alone: as python -m
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
"""


@pytest.fixture
def jobs(tmp_path):
    """Two job folders, each with a lock file; the module ``mlvc_test_job`` importable."""
    (tmp_path / "mlvc_test_job.py").write_text(JOB)
    roots = [tmp_path / f"job{i}" for i in range(2)]
    for root in roots:
        root.mkdir()
    yield roots
    for root in roots:
        (root / "go").touch()  # no job left waiting
    for root in roots:
        wait_unlocked(root)


def locked(root) -> int:
    """An fd holding the exclusive flock of ``root/lock``."""
    fd = os.open(root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def held(root) -> bool:
    if not (root / "lock").exists():
        return False
    with open(root / "lock", "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def wait_unlocked(root, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while held(root):
        assert time.monotonic() < deadline, "a job did not end"
        time.sleep(0.02)


def start(root, env) -> bool:
    """What the index and the deliverer do: start a job with the locked fd, then close it."""
    fd = locked(root)
    try:
        return spawn.spawn_detached("mlvc_test_job", [str(root), str(fd)], (fd,), env)
    finally:
        os.close(fd)


def out(root, timeout: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout
    while not (root / "out").exists() or not (root / "out").read_text():
        assert time.monotonic() < deadline, "a job never ran"
        time.sleep(0.02)
    return (root / "out").read_text().split()


def test_gathered_starts_run_in_one_process_holding_every_lock(jobs, tmp_path):
    env = {"PYTHONPATH": str(tmp_path)}
    with spawn.gathered():
        assert start(jobs[0], env) and start(jobs[1], env)
        assert all(held(r) for r in jobs)  # kept by duplicates until the one start
        assert not any((r / "out").exists() for r in jobs)  # nothing started yet
    first, second = out(jobs[0]), out(jobs[1])
    assert first[0] == second[0] != str(os.getpid())  # one process ran both
    assert first[1] == second[1] == "int"  # each got its descriptor back as a number
    assert first[2] != second[2]  # in threads of their own
    assert all(held(r) for r in jobs)  # the child holds the locks; this process none
    (jobs[0] / "go").touch()
    wait_unlocked(jobs[0])  # each lock goes when its own job ends
    assert held(jobs[1])


def test_a_start_promised_is_made_when_the_body_raises(jobs, tmp_path):
    with pytest.raises(RuntimeError), spawn.gathered():
        start(jobs[0], {"PYTHONPATH": str(tmp_path)})
        raise RuntimeError("the commit failed after its events were written")
    assert out(jobs[0])


def test_jobs_wanting_different_environments_start_apart(jobs, tmp_path):
    with spawn.gathered(), spawn.gathered():  # nested: the outer one starts
        start(jobs[0], {"PYTHONPATH": str(tmp_path), "MLVC_X": "1"})
        start(jobs[1], {"PYTHONPATH": str(tmp_path), "MLVC_X": "2"})
    assert out(jobs[0])[0] != out(jobs[1])[0]


def test_outside_gathered_a_start_is_immediate(jobs, tmp_path):
    assert start(jobs[0], {"PYTHONPATH": str(tmp_path)})
    assert out(jobs[0])[2] == "MainThread"


@pytest.mark.parametrize("bad_first", [True, False])
def test_a_job_that_cannot_start_does_not_stop_the_other(jobs, tmp_path, bad_first):
    env = {"PYTHONPATH": str(tmp_path)}
    with spawn.gathered():
        if bad_first:
            spawn.spawn_detached("mlvc_no_such_module", [str(tmp_path)], (), env)
        start(jobs[0], env)
        if not bad_first:
            spawn.spawn_detached("mlvc_no_such_module", [str(tmp_path)], (), env)
    assert out(jobs[0])


def test_an_mlvc_folder_in_the_working_directory_is_not_what_runs(jobs, tmp_path, monkeypatch):
    """``python -m`` put the working directory first on sys.path: a project holding an
    ``mlvc`` folder (another checkout, or a hostile clone) ran its own code as mlvc's
    detached helper."""
    project = tmp_path / "project"
    (project / "mlvc").mkdir(parents=True)
    marker = tmp_path / "impostor-ran"
    (project / "mlvc" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.chdir(project)
    env = {"PYTHONPATH": str(tmp_path)}
    with spawn.gathered():
        assert start(jobs[0], env) and start(jobs[1], env)
    assert out(jobs[0])[0] == out(jobs[1])[0]  # mlvc.core.spawn ran both, in one process
    assert not marker.exists()
