#!/usr/bin/env python
"""Events (issue 14): what they cost and how fast alerts come.

1. Alert latency: a training process (its own subprocess) logs a metric that crosses an
   alert rule's threshold and back, one transition per flush, and notes when each flush
   returned; the watcher's ``alert.fired``/``alert.resolved`` event carries the time it was
   emitted. p50/p95/max of (event time - flush time) over every transition.
2. Commit time with events on against events off (``MLVC_EVENTS=0``, the same code without
   the event writes): ``Repo.commit`` of a small project, the two interleaved, median of
   each and their ratio (goal: at most 5% more).
3. The ``log_metric`` hot path: points/s of ``run.log_metric`` in a loop, against a bare
   ``list.append`` loop of the same values in the same process, with alert rules configured
   (a watcher running beside it) and without.

Data is made at run time in a temp folder. Markdown report on stdout, progress on stderr;
``--json FILE``; ``--quick`` (fewer repetitions).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(f"[bench_events {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def project(tmp: Path, name: str, toml: str = "") -> Path:
    from mlvc import Repo

    root = tmp / name
    (root / "src").mkdir(parents=True)
    (root / "train.py").write_text("print('hi')\n")
    for i in range(20):
        (root / "src" / f"m{i}.py").write_text(f"X = {i}\n" * 50)
    if toml:
        (root / "mlvc.toml").write_text(textwrap.dedent(toml))
    Repo.init(root)
    return root


RULE = """
[[alerts]]
name = "high"
metric = "loss"
when = "value > 0.5"
"""

TRAINER = """
import sys, time, random, mlvc
n = int(sys.argv[1])
out = []
with mlvc.start_run(name="latency") as run:
    time.sleep(1.0)  # the watcher starts
    for k in range(n):
        for _ in range(10):
            run.log_metric("loss", 1.0 if k % 2 == 0 else 0.0, step=k)
        run.flush()
        out.append((k, time.time()))
        time.sleep(0.25 + random.random() * 0.25)
print(repr(out))
"""


def alert_latency(tmp: Path, n: int) -> dict:
    from mlvc import Repo

    root = project(tmp, "latency", RULE)
    log(f"alert latency: {n} transitions")
    r = subprocess.run([sys.executable, "-c", TRAINER, str(n)], cwd=root, capture_output=True,
                       text=True, timeout=600, check=True)  # fmt: skip
    flushes = dict(eval(r.stdout.strip().splitlines()[-1]))  # noqa: S307 (our own output)
    deadline = time.monotonic() + 10
    repo = Repo(root)
    while time.monotonic() < deadline:
        events = list(repo.events(types=["alert.*"]))
        if len(events) >= n:
            break
        time.sleep(0.1)
    lat = []
    for e in events:
        step = e.data["step"]
        if step in flushes:
            lat.append(e.time_us / 1e6 - flushes[step])
    lat.sort()
    missing = n - len(lat)
    return {
        "transitions": n,
        "events": len(events),
        "missing": missing,
        "p50_ms": 1000 * statistics.median(lat),
        "p95_ms": 1000 * lat[max(0, int(len(lat) * 0.95) - 1)],
        "max_ms": 1000 * lat[-1],
    }


def commit_overhead(tmp: Path, reps: int) -> dict:
    from mlvc import Repo
    from mlvc.core.settings import Settings

    out = {"on": [], "off": []}
    roots = {k: project(tmp, f"commit-{k}") for k in out}
    repos = {
        k: Repo(roots[k], settings=Settings.from_env({**os.environ, "MLVC_EVENTS": v}))
        for k, v in (("on", "1"), ("off", "0"))
    }
    log(f"commit on/off: {reps} each, interleaved")
    for i in range(reps + 2):
        for k in ("on", "off") if i % 2 else ("off", "on"):
            (roots[k] / "src" / "m0.py").write_text(f"X = {i}\n")
            t = time.perf_counter()
            repos[k].commit(f"c{i}", params={"i": i}, metrics={"acc": 0.5}, cwd=roots[k])
            if i >= 2:  # warm-up
                out[k].append(time.perf_counter() - t)
    on, off = statistics.median(out["on"]), statistics.median(out["off"])
    events = len(list(repos["on"].events()))
    return {"reps": reps, "on_ms": on * 1000, "off_ms": off * 1000, "ratio": on / off,
            "events_written": events}  # fmt: skip


HOT = """
import sys, time, json, mlvc
n = int(sys.argv[1])
res = {"append": [], "log_metric": []}
with mlvc.start_run(name="hot") as run:
    for rep in range(5):
        xs = []
        t = time.perf_counter()
        for i in range(n):
            xs.append((i, 0.5))
        res["append"].append(n / (time.perf_counter() - t))
        t = time.perf_counter()
        for i in range(n):
            run.log_metric("loss", 0.5, step=rep * n + i)
        res["log_metric"].append(n / (time.perf_counter() - t))
print(json.dumps(res))
"""


def hot_path(tmp: Path, n: int) -> dict:
    out = {}
    for label, toml in (
        ("no rules", ""),
        ("rules + watcher", RULE + '\n[events]\nstall_after = "1m"\n'),
    ):
        root = project(tmp, f"hot-{label.split()[0]}", toml)
        log(f"log_metric hot path ({label}): {n} points x 5")
        r = subprocess.run([sys.executable, "-c", HOT, str(n)], cwd=root, capture_output=True,
                           text=True, timeout=600, check=True)  # fmt: skip
        res = json.loads(r.stdout.strip().splitlines()[-1])
        append = statistics.median(res["append"])
        lm = statistics.median(res["log_metric"])
        out[label] = {"append_pps": append, "log_metric_pps": lm, "ratio": lm / append}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    os.environ.setdefault("MLVC_AUTHOR", "bench <bench@example.com>")
    load = Path("/proc/loadavg").read_text().split()[:3]
    with tempfile.TemporaryDirectory(prefix="bench-events-") as d:
        tmp = Path(d)
        result = {
            "load_before": load,
            "latency": alert_latency(tmp, 12 if args.quick else 40),
            "commit": commit_overhead(tmp, 8 if args.quick else 25),
            "hot": hot_path(tmp, 50_000 if args.quick else 200_000),
            "load_after": Path("/proc/loadavg").read_text().split()[:3],
        }
        time.sleep(6)  # the watchers exit before the folder goes
    lat, com, hot = result["latency"], result["commit"], result["hot"]
    print("| measure | value |\n| --- | --- |")
    print(
        f"| alert latency, flush to event (n={lat['transitions']}) | p50 {lat['p50_ms']:.0f} ms, "
        f"p95 {lat['p95_ms']:.0f} ms, max {lat['max_ms']:.0f} ms; {lat['missing']} missed |"
    )
    print(
        f"| commit, events on / off (median of {com['reps']}) | {com['on_ms']:.1f} ms / "
        f"{com['off_ms']:.1f} ms = {com['ratio']:.3f}x |"
    )
    for label, h in hot.items():
        print(
            f"| log_metric, {label} | {h['log_metric_pps'] / 1e6:.2f} M points/s; bare "
            f"append {h['append_pps'] / 1e6:.2f} M/s; ratio {h['ratio']:.2f} |"
        )
    print(
        f"\nload average before {' '.join(result['load_before'])}, after "
        f"{' '.join(result['load_after'])}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
