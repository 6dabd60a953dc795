"""Fault injection for live runs and reaping (heavy): kill -9 a tracked run at random points
(while it logs, while it ends, while a reaper records it), then check with `mlvc fsck`,
`mlvc log` and `mlvc runs` that every run is recorded exactly once with every flushed point.

"Flushed" is what was on disk when the process died: the trainer is stopped (SIGSTOP), its
metric blocks are counted, then it is killed (SIGKILL), so the count is exact. A run killed
before its start had captured its inputs has logged nothing and may leave no run.

Run with: pytest -m heavy tests/test_runs_faults.py -s  (MLVC_FAULT_TRIALS, MLVC_FAULT_SEED)
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mlvc import Repo
from mlvc.core.layout import Layout
from mlvc.runs.staging import StagedRun
from mlvc.runs.staging.run import RECORDED

pytestmark = pytest.mark.heavy

BIN = Path(sys.executable).parent

TRAINER = textwrap.dedent("""
    import sys, time
    import mlvc
    name, n, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    run = mlvc.start_run(name=name, params={"trial": name})
    print("started", run.key, flush=True)
    for i in range(n):
        run.log_metric("loss", 1.0 / (i + 1))
        if i % every == every - 1:
            run.flush()
            time.sleep(0.002)
    print("ending", flush=True)
    run.end()
    print("ended", flush=True)
    time.sleep(60)
""")

REAPER = "from mlvc import Repo; Repo().reap()"

END_POINTS = ("end-stored", "end-published")
REAP_POINTS = ("reap-claimed", "reap-stored", "reap-published")


@dataclass
class Trial:
    name: str
    kind: str  # "loop" | "end" | "start" | fault point
    points: int  # logged by the script in all
    key: str = ""
    expect_points: int | None = None  # None: the run may not exist (killed while starting)
    expect_status: set[str] = field(default_factory=lambda: {"killed", "finished"})
    reaper: str = ""  # how a reaper was killed on it afterwards


def _env(**more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLVC_", "PYTHONHASHSEED"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        MLVC_AUTHOR="Fault Injector <faults@example.com>",
        GIT_CONFIG_NOSYSTEM="1",
    )
    env.update(more)
    return env


def _flushed(live: Path) -> tuple[int | None, bool]:
    """(points on disk, already stored) of a staged run; (None, True) once it is gone."""
    if not live.is_dir():
        return None, True
    return StagedRun(live).read_series().num_rows, (live / RECORDED).exists()


def _stop_count_kill(proc: subprocess.Popen, live: Path, trial: Trial, ended: bool) -> None:
    """Freeze the trainer, note what is on disk, kill it: the oracle for this trial."""
    try:
        os.kill(proc.pid, signal.SIGSTOP)
    except ProcessLookupError:
        pass
    on_disk, stored = _flushed(live)
    proc.kill()
    proc.wait()
    if ended or stored or on_disk is None:
        trial.expect_points = trial.points
        trial.expect_status = {"finished"}
    else:
        trial.expect_points = on_disk
        trial.expect_status = {"killed"}


def _read_line(proc: subprocess.Popen, want: str, timeout: float = 60) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"trainer exited before {want!r}: {proc.stderr.read()}")
        if line.startswith(want):
            return line
    raise AssertionError(f"no {want!r} within {timeout}s")


def _train(root: Path, trial: Trial, rng: random.Random) -> None:
    every = rng.choice([50, 200, 1000, 5000])
    env = _env(MLVC_FAULT=trial.kind) if trial.kind in END_POINTS else _env()
    proc = subprocess.Popen(
        [sys.executable, "-c", TRAINER, trial.name, str(trial.points), str(every)],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if trial.kind == "start":  # anywhere from interpreter start to the first points
            time.sleep(rng.uniform(0.05, 1.5))
            live = _only_new_live(root, proc)
            if live is not None and "inputs" in _meta(live):
                _stop_count_kill(proc, live, trial, ended=False)
            else:
                proc.kill()
                proc.wait()
                # killed before its inputs were captured: nothing logged, so maybe no run
            return
        trial.key = _read_line(proc, "started").split()[1]
        live = Layout.of(root).live / trial.key
        if trial.kind in END_POINTS:
            proc.wait(timeout=120)
            assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
            trial.expect_points, trial.expect_status = trial.points, {"finished"}
            return
        if trial.kind == "end":
            _read_line(proc, "ending")
            time.sleep(rng.uniform(0, 0.4))
        else:
            time.sleep(rng.uniform(0, 1.2))
        _stop_count_kill(proc, live, trial, ended=False)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


_seen_keys: set[str] = set()


def _only_new_live(root: Path, proc: subprocess.Popen) -> Path | None:
    """The staged run the trainer made (stopped first, so it cannot change under us)."""
    try:
        os.kill(proc.pid, signal.SIGSTOP)
    except ProcessLookupError:
        return None
    base = Layout.of(root).live
    for d in sorted(base.iterdir()) if base.is_dir() else []:
        if d.name.startswith(".") or d.name in _seen_keys:
            continue
        if _meta(d).get("pid") == proc.pid:
            _seen_keys.add(d.name)
            return d
    return None


def _meta(d: Path) -> dict:
    try:
        return json.loads((d / "meta.json").read_text())
    except (OSError, ValueError):
        return {}


def _kill_a_reaper(root: Path, trial: Trial, rng: random.Random) -> None:
    point = rng.choice([*REAP_POINTS, "random", "random"])
    env = _env(MLVC_FAULT=point) if point in REAP_POINTS else _env()
    proc = subprocess.Popen([sys.executable, "-c", REAPER], cwd=root, env=env)
    if point == "random":
        time.sleep(rng.uniform(0.1, 1.5))
        proc.kill()
    proc.wait(timeout=120)
    trial.reaper = point


def _mlvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "mlvc"), *args], cwd=root, env=_env(), capture_output=True, text=True
    )


def test_kill_9_at_random_points_loses_no_run_and_no_flushed_point(tmp_path):
    n_trials = int(os.environ.get("MLVC_FAULT_TRIALS", "50"))
    seed = int(os.environ.get("MLVC_FAULT_SEED", "9"))
    rng = random.Random(seed)
    root = tmp_path / "proj"
    root.mkdir()
    (root / "train.py").write_text("print('x')\n")
    Repo.init(root)
    kinds = ["loop"] * 5 + ["end"] * 3 + ["start"] + list(END_POINTS)
    trials: list[Trial] = []
    started = time.time()
    for i in range(n_trials):
        trial = Trial(f"t{i:03d}", rng.choice(kinds), rng.choice([2_000, 20_000, 120_000]))
        _train(root, trial, rng)
        if trial.expect_status == {"killed"} and rng.random() < 0.6:
            _kill_a_reaper(root, trial, rng)
        trials.append(trial)
    elapsed = time.time() - started

    fsck = _mlvc(root, "fsck")
    runs_out = _mlvc(root, "runs")  # reaps what is left, then lists what runs
    log = _mlvc(root, "log", "-n", "100000")
    fsck_again = _mlvc(root, "fsck")
    for done in (fsck, log, runs_out, fsck_again):
        assert "Traceback" not in done.stderr, done.stderr
    assert fsck_again.returncode == 0, fsck_again.stdout + fsck_again.stderr
    assert log.returncode == 0 and runs_out.returncode == 0, log.stderr + runs_out.stderr
    assert runs_out.stdout.strip() == "no live runs", runs_out.stdout

    repo = Repo(root)
    rows = repo.query(
        "SELECT r.name, r.status, r.id, count(m.step) AS points FROM runs r "
        "LEFT JOIN metrics m ON m.run_id = r.id GROUP BY r.name, r.status, r.id"
    ).to_pylist()
    by_name: dict[str, list[dict]] = {}
    for row in rows:
        by_name.setdefault(row["name"], []).append(row)
    problems = []
    for t in trials:
        got = by_name.get(t.name, [])
        if t.expect_points is None:
            if len(got) > 1:
                problems.append(f"{t.name} ({t.kind}): recorded {len(got)} times")
            continue
        if len(got) != 1:
            problems.append(f"{t.name} ({t.kind}, reaper {t.reaper}): recorded {len(got)} times")
            continue
        row = got[0]
        if row["points"] != t.expect_points:
            problems.append(
                f"{t.name} ({t.kind}, reaper {t.reaper}): {row['points']} points, "
                f"{t.expect_points} flushed"
            )
        if row["status"] not in t.expect_status:
            problems.append(f"{t.name} ({t.kind}): status {row['status']}, {t.expect_status}")
    assert len(rows) == sum(len(v) for v in by_name.values())
    leftovers = list((Layout.of(root).live).iterdir())
    assert repo.fsck() == []

    counts: dict[str, int] = {}
    for t in trials:
        counts[t.kind] = counts.get(t.kind, 0) + 1
    reapers: dict[str, int] = {}
    for t in trials:
        if t.reaper:
            reapers[t.reaper] = reapers.get(t.reaper, 0) + 1
    recorded = sum(1 for t in trials if t.name in by_name)
    flushed = sum(t.expect_points or 0 for t in trials)
    print(
        f"\nfault injection (seed {seed}): {n_trials} trials in {elapsed:.0f}s; kinds {counts}; "
        f"reapers killed {reapers}; {recorded} runs recorded, {len(rows)} rows in the index; "
        f"{flushed} flushed points expected; {len(problems)} problems; leftovers {leftovers}"
    )
    assert problems == [], problems
    assert leftovers == []
