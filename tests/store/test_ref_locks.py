"""A ref's lock left by a writer killed mid-write is removed by the next writer; a live
writer's lock is never taken from it, however old."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from mlvc.errors import RefLocked
from mlvc.refs import store as refstore

# A writer that dies (SIGKILL) or hangs with the lock of refs/tags/best held: ``os.replace``
# is where it renames its lock over the ref.
WRITER = textwrap.dedent(
    """
    import os, signal, sys, time
    from mlvc import Repo
    repo = Repo(sys.argv[1])
    run = repo.resolve("HEAD")
    def stop(*args):
        print("locked", flush=True)
        if sys.argv[2] == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)
    os.replace = stop
    repo.tag(run.hex, "best")
    """
)


def hold_lock(root, how: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), how], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def lock_of(root):
    return root / ".mlvc" / "refs" / "tags" / "best.lock"


def make_old(path, seconds=60):
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_a_lock_left_by_a_killed_writer_is_removed_by_the_next(repo, project):
    first = repo.commit("first")
    second = repo.commit("second")
    proc = hold_lock(project, "die")
    assert proc.wait() == -signal.SIGKILL
    assert lock_of(project).exists()
    make_old(lock_of(project))  # the dead writer's lock, as the next command finds it later
    start = time.monotonic()
    repo.tag(second.hex, "best")  # before: RefLocked after 10 s ("delete the lock file")
    assert time.monotonic() - start < 5
    assert repo.resolve("best") == second != first
    assert not lock_of(project).exists()


def test_a_live_writers_lock_is_not_taken_however_old(repo, project, monkeypatch):
    run = repo.commit("first")
    proc = hold_lock(project, "hang")
    try:
        make_old(lock_of(project))
        monkeypatch.setattr(refstore, "LOCK_WAIT", 0.5)
        with pytest.raises(RefLocked, match="best.lock is held by another process"):
            repo.tag(run.hex, "best")
        assert lock_of(project).exists()  # still the live writer's
    finally:
        proc.kill()
        proc.wait()
    lock_of(project).unlink()


def test_a_fresh_lock_nobody_flocks_yet_is_left_alone(repo, project, monkeypatch):
    """A writer flocks its lock right after creating it: a lock file younger than
    STALE_LOCK is waited for even when unflocked."""
    run = repo.commit("first")
    lock_of(project).parent.mkdir(parents=True, exist_ok=True)
    lock_of(project).write_text("")
    monkeypatch.setattr(refstore, "LOCK_WAIT", 0.3)
    with pytest.raises(RefLocked):
        repo.tag(run.hex, "best")
    assert lock_of(project).exists()
    make_old(lock_of(project))
    repo.tag(run.hex, "best")
    assert repo.resolve("best") == run
