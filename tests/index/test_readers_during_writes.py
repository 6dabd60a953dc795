"""Readers while several processes commit (DESIGN.md invariant 4, issue 16 item 5): a query
answers with every run committed before it began, whatever the committers and their index
workers are doing at that moment, a writer killed with SIGKILL included."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from mlvc.api.repo import Repo

# A writer: records RUNS live runs, printing "<run id> <time.time() after the commit>" for
# each as soon as its ``with`` block has ended (the run's ref is written by then).
WRITER = """
import sys, time
import mlvc
repo = mlvc.Repo(sys.argv[1])
for i in range(int(sys.argv[3])):
    with mlvc.start_run(name=f"w{sys.argv[2]}-{i}", params={"i": i}, repo=repo) as run:
        for step in range(20):
            run.log_metric("loss", 1.0 / (step + 1))
    print(run.id, repr(time.time()), flush=True)
"""


def _writers(root, n: int, runs: int) -> list[subprocess.Popen]:
    # the default index sync: each commit hands its ingest to a detached worker
    env = {**os.environ, "MLVC_INDEX_SYNC": "background"}
    return [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), str(w), str(runs)],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(n)
    ]


def _committed(outs: list[str]) -> dict[str, float]:
    """run id -> when its writer reported it committed."""
    out = {}
    for text in outs:
        for line in text.splitlines():
            oid, at = line.split()
            out[oid] = float(at)
    return out


def _read_while(procs, repo: Repo) -> list[tuple[float, set[str]]]:
    """Query in a loop until every writer has exited: (when the query began, ids it saw)."""
    seen = []
    while any(p.poll() is None for p in procs):
        began = time.time()
        ids = set(repo.query("SELECT id FROM runs").column("id").to_pylist())
        seen.append((began, ids))
    return seen


def _assert_each_query_saw_what_came_before(seen, committed: dict[str, float]) -> None:
    assert seen, "the writers finished before the reader queried once"
    for began, ids in seen:
        missing = {oid for oid, at in committed.items() if at < began} - ids
        assert not missing, f"a query begun at {began} lacked {len(missing)} committed runs"


def test_every_query_sees_every_run_committed_before_it(project):
    repo = Repo(project)
    procs = _writers(project, 3, 5)
    seen = _read_while(procs, repo)
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-500:] for _, err in outs]
    committed = _committed([out for out, _ in outs])
    assert len(committed) == 15
    _assert_each_query_saw_what_came_before(seen, committed)
    final = set(repo.query("SELECT id FROM runs").column("id").to_pylist())
    assert final == set(committed)
    assert repo.index.pending() == []


def test_a_writer_killed_mid_storm_loses_no_committed_run(project):
    """SIGKILL one writer while it (or the index worker it started) may be mid-commit or
    mid-ingest: every run it reported stays visible, the others' too, and fsck is clean
    (the fixture checks it)."""
    repo = Repo(project)
    procs = _writers(project, 3, 6)
    victim = procs[0]
    lines = []
    while len(lines) < 2:  # it has committed two runs: kill it inside the next ones
        line = victim.stdout.readline()
        assert line, victim.stderr.read()[-500:]
        lines.append(line)
    time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    seen = _read_while(procs, repo)
    rest, _ = victim.communicate(timeout=60)
    outs = [p.communicate(timeout=120) for p in procs[1:]]
    assert [p.returncode for p in procs[1:]] == [0, 0], [err[-500:] for _, err in outs]
    committed = _committed(["".join(lines) + rest, *(out for out, _ in outs)])
    assert len(committed) >= 14
    _assert_each_query_saw_what_came_before(seen, committed)
    final = set(repo.query("SELECT id FROM runs").column("id").to_pylist())
    assert set(committed) <= final  # plus, maybe, the victim's unreported or killed runs


def test_a_downgraded_lock_admits_readers_and_keeps_writers_out(tmp_path):
    from mlvc.index.lock import IndexLock

    lock = IndexLock(tmp_path / "index.lock", tmp_path)
    fd = lock.take(exclusive=True, wait=0.0)
    assert lock.take(exclusive=False, wait=0.0) is None
    lock.downgrade(fd)
    other = lock.take(exclusive=False, wait=0.0)
    assert other is not None  # another reader gets in
    assert lock.take(exclusive=True, wait=0.0) is None  # a writer does not
    os.close(other)
    assert lock.take(exclusive=True, wait=0.0) is None  # still held by the downgraded fd
    os.close(fd)
    again = lock.take(exclusive=True, wait=0.0)
    assert again is not None
    os.close(again)
