"""The detached index worker (mlvc/index/worker.py) with real processes: one worker at a
time, holding ``index.worker.lock`` for its life and the index lock only around ingests; a
commit made while it lives is ingested by it, without any reader; a worker killed with
SIGKILL loses nothing. And the read-only check parses alike with and without a connection."""

from __future__ import annotations

import os
import signal
import time

import pytest

from mlvc.api.repo import Repo
from mlvc.errors import QueryError
from mlvc.index.user_sql import check_read_only


def _background(monkeypatch, project) -> Repo:
    monkeypatch.setenv("MLVC_INDEX_SYNC", "background")
    return Repo(project)


def _slow_start(monkeypatch, tmp_path) -> None:
    """Detached processes started from now on sleep 2 s before anything (a sitecustomize),
    so a test can act while the worker is starting."""
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text("import time\ntime.sleep(2.0)\n")
    monkeypatch.setenv("PYTHONPATH", str(slow))


def _wait(cond, seconds: float = 60.0) -> bool:
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _worker_pids(root) -> list[int]:
    """This repository's live index workers (their command line names the worker module
    and the project root)."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"mlvc.index.worker" in argv and str(root).encode() in argv:
            out.append(int(entry.name))
    return out


def test_a_commit_while_the_worker_lives_is_ingested_by_it(project, monkeypatch, tmp_path):
    _slow_start(monkeypatch, tmp_path)
    repo = _background(monkeypatch, project)
    index = repo.index
    first = repo.commit("r0", params={"i": 0}, capture_env=False)  # starts the worker
    assert index.worker_lock.take(exclusive=True, wait=0.0) is None  # it lives
    second = repo.commit("r1", params={"i": 1}, capture_env=False)  # starts none
    assert sorted(index.pending()) == sorted([first, second])
    assert len(_worker_pids(project)) == 1
    # no reader: the one worker ingests both once started
    assert _wait(lambda: not index.pending())
    assert _wait(lambda: not _worker_pids(project))
    assert not (project / ".mlvc" / "logs" / "index-worker.log").exists()
    got = repo.query("SELECT id FROM runs ORDER BY created").column("id").to_pylist()
    assert got == [first.hex, second.hex]
    fd = index.worker_lock.take(exclusive=True, wait=0.0)  # the worker let it go
    assert fd is not None
    os.close(fd)


def test_the_index_lock_is_free_while_the_worker_starts(project, monkeypatch, tmp_path):
    """The worker holds only its own lock until its imports are done: a reader that comes
    meanwhile takes the index lock at once (it used to wait for the process start). The
    worker's start is made slow (a sitecustomize that sleeps) to see it."""
    _slow_start(monkeypatch, tmp_path)
    repo = _background(monkeypatch, project)
    index = repo.index
    run = repo.commit("r0", params={"i": 0}, capture_env=False)
    fd = index.lock.take(exclusive=True, wait=0.0)
    assert fd is not None  # free, while the worker starts
    try:
        assert index.worker_lock.take(exclusive=True, wait=0.0) is None  # it lives
        assert index.pending() == [run]
    finally:
        os.close(fd)
    assert _wait(lambda: not index.pending())  # it ingested, once started
    assert _wait(lambda: not _worker_pids(project))
    assert repo.query("SELECT id FROM runs").column("id").to_pylist() == [run.hex]


def test_a_worker_killed_before_it_ingests_loses_nothing(project, monkeypatch, tmp_path):
    _slow_start(monkeypatch, tmp_path)
    repo = _background(monkeypatch, project)
    index = repo.index
    ids = [repo.commit(f"r{i}", params={"i": i}, capture_env=False) for i in range(3)]
    pids = _worker_pids(project)
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGKILL)
    assert _wait(lambda: not _worker_pids(project), 10)
    assert sorted(index.pending()) == sorted(ids)  # still journalled
    # it died with its holder; the kernel drops a dying process's memory (its cmdline reads
    # empty) before its files, so the flock may outlive the pid's disappearance a moment
    taken: list[int] = []
    assert _wait(
        lambda: (
            taken.append(index.worker_lock.take(exclusive=True, wait=0.0)) or taken[-1] is not None
        ),
        10,
    )
    os.close(taken[-1])
    got = repo.query("SELECT id FROM runs").column("id").to_pylist()
    assert sorted(got) == sorted(i.hex for i in ids)
    assert index.pending() == []


STATEMENTS = [
    ("SELECT 1", True),
    ("select * from runs; SELECT 2", True),
    ("WITH x AS (SELECT 1) SELECT * FROM x", True),
    ("FROM runs", True),
    ("VALUES (1), (2)", True),
    ("SHOW TABLES", True),
    ("DESCRIBE runs", True),
    ("EXPLAIN SELECT 1", True),
    ("PRAGMA show_tables", True),
    ("  -- a comment\n SELECT 1", True),
    ("DELETE FROM runs", False),
    ("DROP TABLE runs", False),
    ("SELECT 1; DELETE FROM runs", False),
    ("EXPLAIN DELETE FROM runs", False),
    ("CALL enable_logging()", False),
    ("SET threads = 1", False),
    ("ATTACH 'x.db'", False),
    ("COPY runs TO 'x.csv'", False),
    ("PRAGMA enable_profiling", False),
    ("INSERT INTO runs VALUES (1)", False),
    ("SELEC 1", False),  # a syntax error
]


@pytest.mark.parametrize(("sql", "reads"), STATEMENTS)
def test_the_read_only_check_is_the_same_on_a_connection(sql, reads, tmp_path):
    """The check parses with the reader's own connection (no database of its own to open
    per process): it allows and refuses exactly what the module-level parser does."""
    import duckdb

    con = duckdb.connect(str(tmp_path / "x.duckdb"))
    try:
        for parser in (None, con):
            if reads:
                check_read_only(sql, parser)
            else:
                with pytest.raises(QueryError):
                    check_read_only(sql, parser)
    finally:
        con.close()


def test_mlvc_query_ingests_without_importing_pandas(project, monkeypatch, tmp_path):
    """`mlvc query` holds no user objects: the ingest it does on the way (a run journalled
    while the worker is away) does not import pandas for pyarrow's probe, nor pyarrow's
    dataset layer and its file systems (``Table.group_by`` did: ~0.15 s of CPU), and answers
    with the run."""
    import subprocess
    import sys

    repo = Repo(project)
    first = repo.commit("r0", params={"i": 0}, metrics={"acc": 0.5}, capture_env=False)
    held = repo.index.lock.take(exclusive=True, wait=0.0)  # the commit leaves it journalled
    try:
        run = repo.commit("r1", params={"i": 1}, metrics={"acc": 0.6}, capture_env=False)
    finally:
        os.close(held)
    assert repo.index.pending() == [run]
    code = (
        "import sys\n"
        "from mlvc.cli import main\n"
        "try:\n"
        "    main(['query', '--format', 'csv', 'SELECT id FROM runs ORDER BY message'])\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "print([m for m in ('pandas', 'pyarrow.acero', 'pyarrow.dataset') if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=project, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-4:] == ['"id"', f'"{first.hex}"', f'"{run.hex}"', "[]"]
    assert repo.index.pending() == []
