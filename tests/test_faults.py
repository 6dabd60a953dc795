"""Fault injection (``pytest -m heavy``): kill -9 mlvc at random instants, lose nothing.

Runs benchmarks/bench_faults.py with a modest number of trials over every scenario (commit,
commit with the stat cache, gc, gc during a live run, index rebuild, the detached index
worker, a tracked run, reproduce, commit + gc); the full 200+ trial run is the benchmark's
(benchmarks/RESULTS.md). Each trial's oracle is fsck, ``log`` and a verified checkout of
every run, plus the flushed metric points of killed tracked runs.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.heavy

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_faults.py"
TRIALS = int(os.environ.get("MLVC_FAULT_TRIALS", "30"))


def test_kill_9_at_random_points_loses_nothing(tmp_path):
    out = tmp_path / "faults.json"
    r = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--trials",
            str(TRIALS),
            "--seed",
            "24",
            "--reps",
            "1",
            "--json",
            str(out),
            "--keep-failures",
            str(tmp_path / "failed"),
            "--dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert out.exists(), r.stderr[-3000:]
    summary = json.loads(out.read_text())
    totals = summary["totals"]
    assert totals["trials"] >= len(summary["scenarios"]), totals
    report = r.stdout[-6000:]
    assert totals["lost_runs"] == 0, report
    assert totals["fsck_problems"] == 0, report
    assert totals["lost_points"] == 0, report
    assert totals["tracebacks"] == 0, report
    assert totals["oracle_failures"] == 0, report
    assert r.returncode == 0, report
