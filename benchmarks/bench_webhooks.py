#!/usr/bin/env python
"""Webhooks' cost to a commit, and how fast an event reaches a receiver (issue 14, item 8).

1. Commit overhead: ``Repo.commit`` in a repository with no webhook (the baseline) and in one
   with a webhook configured (a receiver on 127.0.0.1 that answers 200), the two interleaved
   commit by commit so load on the shared machine hits both alike. Two webhook cases: a
   deliverer already running (commits in a burst, the usual case), and ``cold`` (the
   deliverer exits at once, so every commit starts one: the worst case). Before each
   commit, in every case, the background work of earlier commits is over (``settle``), so
   each commit pays its own cost in the committing process, which is what the goal is about
   (the deliverer's own CPU on a 2-core machine is not counted).
   The receiver runs in its own process (its threads would take the GIL from the commits).
   Medians per case and their ratio to the baseline, over ``--repeat`` runs (median of the
   runs' medians).
2. Delivery latency: the time from an event's id (taken when it is made, just before it is
   written) to its arrival at the receiver: ``warm`` (events 20 ms apart, the deliverer
   running) and ``cold`` (events 1 s apart, a deliverer started for each). p50/p95.

Markdown on stdout, progress on stderr; ``--quick`` for a short run. Data (a small project,
the repositories) is made at run time in a temp folder; only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def log(msg: str) -> None:
    print(f"[bench_webhooks {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


RECEIVER = r"""
import http.server, json, sys, time
out = open(sys.argv[1], "a", buffering=1)
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        out.write(f"{json.loads(body)['id']} {time.time()}\n")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""


class Receiver:
    """A receiver on 127.0.0.1 that answers 200 and records arrival times by event id, in a
    process of its own: in this one its threads would take the GIL from the commits
    measured (the first version of this benchmark did, charging the receiver to the
    webhook)."""

    def __init__(self, folder: Path) -> None:
        import subprocess

        self.log = folder / "arrivals.txt"
        self.log.touch()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", RECEIVER, str(self.log)], stdout=subprocess.PIPE, text=True
        )
        port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{port}/hook"

    @property
    def arrived(self) -> dict[str, float]:
        found: dict[str, float] = {}
        for line in self.log.read_text().splitlines():
            eid, _, at = line.partition(" ")
            if at:
                found.setdefault(eid, float(at))
        return found

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def project(root: Path, files: int) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "train.py").write_text("print('train')\n")
    for i in range(files):
        (root / "data" / f"part-{i:03d}.csv").write_text(f"x,y\n{i},{i * 2}\n" * 50)
    from mlvc import Repo

    Repo.init(root)
    return root


def wait_free(path: Path, timeout: float = 60) -> None:
    """Wait until nobody holds the flock of ``path`` (a background process exited)."""
    import fcntl

    deadline = time.monotonic() + timeout
    while path.exists() and time.monotonic() < deadline:
        with open(path, "rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                time.sleep(0.02)


def wait_idle(root: Path, timeout: float = 60) -> None:
    """Wait until the repository's webhook deliverer exited: its lock free, then its
    process gone (it lets go of the lock, looks at the journal once more, then shuts its
    interpreter down; a commit measured meanwhile would share the CPU with that)."""
    from mlvc.core.layout import Layout

    lock = Layout.of(root).deliver_lock
    wait_free(lock, timeout)
    try:
        pid = lock.read_text().strip()
    except OSError:
        return
    deadline = time.monotonic() + timeout
    while pid.isdigit() and time.monotonic() < deadline:
        try:  # a zombie (this process's child, not reaped yet) has exited too
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return
        except (OSError, IndexError):
            return
        time.sleep(0.005)


def settle(repos: dict, done: dict[str, int], timeout: float = 60) -> None:
    """Wait until no case's background work from earlier commits runs: index workers done,
    every commit's event delivered and the cold deliverer gone (the warm one stays, idle).
    Each commit then pays only its own cost; without this, whichever case came after
    another's background work paid for it (cold, which waited for its deliverer, once
    measured 0.67-0.83x the baseline)."""
    from mlvc.events import outbox

    deadline = time.monotonic() + timeout
    for case, repo in repos.items():
        wait_free(repo.layout.index_lock)
        if case == "none":
            continue
        while len(outbox.attempts(repo.layout)) < done[case] and time.monotonic() < deadline:
            time.sleep(0.01)
        if case.startswith("webhook-cold"):
            wait_idle(repo.root)


CASES = ("none", "webhook", "webhook-cold", "webhook-cold-2starts")


@contextlib.contextmanager
def two_starts(on: bool):
    """With ``on``, a commit starts the deliverer and the index worker as two processes (as
    mlvc did before 2026-12-01) instead of one (mlvc.core.spawn.gathered): the old cold
    case, measured in the same run as a baseline."""
    from mlvc.core import spawn

    if not on:
        yield
        return
    saved = spawn.gathered
    spawn.gathered = contextlib.nullcontext
    try:
        yield
    finally:
        spawn.gathered = saved


def each_commit(tmp: Path, rx: Receiver, n: int, files: int, measure) -> None:
    """``n`` commits per case, interleaved, each once the earlier ones' background work is
    over; ``measure(case, commit)`` makes each (``commit()`` commits)."""
    from mlvc import Repo
    from mlvc.events import webhooks

    repos = {}
    for case in CASES:
        root = project(tmp / case, files)
        if case != "none":
            webhooks.add(Repo(root).layout, rx.url, allow_private=True)
        repos[case] = Repo(root)
    done = dict.fromkeys(repos, 0)
    for i in range(n):
        for case, repo in repos.items():
            # cold: the deliverer exits as soon as it is idle, so each commit starts one;
            # warm: it outlives the pauses settle makes
            os.environ["MLVC_WEBHOOK_LINGER"] = "0" if case.startswith("webhook-cold") else "60"
            settle(repos, done)
            (repo.root / "train.py").write_text(f"print('train {i}')\n")
            with two_starts(case == "webhook-cold-2starts"):
                measure(case, lambda: repo.commit(f"c{i}", params={"i": i}))  # noqa: B023
            done[case] += 1
    settle(repos, done)
    for repo in repos.values():
        _stop_deliverer(repo.root)


def commit_overhead(tmp: Path, rx: Receiver, n: int, files: int) -> dict[str, float]:
    """Median seconds per commit per case, and the median commit-by-commit ratios."""
    times: dict[str, list[float]] = {k: [] for k in CASES}

    def timed(case: str, commit) -> None:
        start = time.perf_counter()
        commit()
        times[case].append(time.perf_counter() - start)

    each_commit(tmp, rx, n, files, timed)
    out = {k: statistics.median(v) for k, v in times.items()}
    for case in CASES[1:]:  # the median of commit-by-commit ratios: steadier under load
        ratios = [t / b for t, b in zip(times[case], times["none"], strict=True)]
        out[f"{case}/none"] = statistics.median(ratios)
    return out


def process_starts(tmp: Path, rx: Receiver, n: int, files: int) -> dict[str, tuple]:
    """Per case, under cProfile: process starts (``fork_exec`` calls) per commit and the ms
    per commit spent in them. Counting is immune to the machine's load, unlike the times."""
    import cProfile
    import pstats

    profiles = {k: cProfile.Profile() for k in CASES}

    def profiled(case: str, commit) -> None:
        profiles[case].enable()
        commit()
        profiles[case].disable()

    each_commit(tmp, rx, n, files, profiled)
    out = {}
    for case, prof in profiles.items():
        calls = seconds = 0.0
        for (_file, _line, name), (_cc, nc, tt, _ct, _callers) in pstats.Stats(prof).stats.items():
            if "fork_exec" in name:
                calls, seconds = calls + nc, seconds + tt
        out[case] = (calls / n, seconds * 1000 / n)
    return out


def _stop_deliverer(root: Path, timeout: float = 30) -> None:
    """End a lingering deliverer (the warm case's: the one holding the lock) and wait.
    A deliverer just started holds the lock before it has written its pid: try again."""
    import fcntl
    import signal

    from mlvc.core.layout import Layout

    path = Layout.of(root).deliver_lock
    deadline = time.monotonic() + timeout
    while path.exists() and time.monotonic() < deadline:
        with open(path, "rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return  # none runs
            except BlockingIOError:
                pid = f.read().strip()
        if pid.isdigit():
            try:
                os.kill(int(pid), signal.SIGTERM)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def latency(tmp: Path, rx: Receiver, n: int, gap: float, linger: str) -> list[float]:
    """Seconds from each event's id time to its arrival."""
    from mlvc import Repo
    from mlvc.events import emit, webhooks

    root = project(tmp, 1)
    repo = Repo(root)
    webhooks.add(repo.layout, rx.url, allow_private=True)
    os.environ["MLVC_WEBHOOK_LINGER"] = linger
    sent = []
    for i in range(n):
        if linger == "0":
            wait_idle(root)
        sent.append(emit(repo.ctx, "gc.completed", {"i": i}))
        time.sleep(gap)
    return arrivals(rx, root, sent)


def commit_latency(tmp: Path, rx: Receiver, n: int, gap: float) -> list[float]:
    """Seconds from each ``commit.created`` event's id time to its arrival, each commit
    starting the deliverer (in one process with the index worker: the usual cold case)."""
    from mlvc import Repo
    from mlvc.events import read_events, webhooks

    root = project(tmp, 20)
    repo = Repo(root)
    webhooks.add(repo.layout, rx.url, allow_private=True)
    os.environ["MLVC_WEBHOOK_LINGER"] = "0"
    for i in range(n):
        wait_idle(root)
        wait_free(repo.layout.index_lock)
        (root / "train.py").write_text(f"print('train {i}')\n")
        repo.commit(f"c{i}")
        time.sleep(gap)
    sent = list(read_events(repo.layout, types=["commit.created"]))
    return arrivals(rx, root, sent)


def arrivals(rx: Receiver, root: Path, sent: list) -> list[float]:
    """Seconds from each of the ``sent`` events' id time to its arrival (waiting up to a
    minute for them all), once the deliverer has exited."""
    deadline = time.monotonic() + 60
    while any(e.id not in rx.arrived for e in sent) and time.monotonic() < deadline:
        time.sleep(0.05)
    wait_idle(root)
    arrived = rx.arrived
    return [arrived[e.id] - e.time_us / 1e6 for e in sent if e.id in arrived]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--commits", type=int, default=30)
    ap.add_argument("--files", type=int, default=200, help="data files in the project")
    ap.add_argument("--no-latency", action="store_true", help="measure commit overhead only")
    a = ap.parse_args()
    if a.quick:
        a.repeat, a.commits, a.files = 1, 8, 50
    os.environ.setdefault("MLVC_AUTHOR", "bench <bench@example.com>")
    load = Path("/proc/loadavg").read_text().split()[:3]
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as tmp:
        rx = Receiver(Path(tmp))
        try:
            for r in range(a.repeat):
                log(f"commit overhead, run {r + 1}/{a.repeat}: {a.commits} commits per case")
                runs.append(commit_overhead(Path(tmp) / f"c{r}", rx, a.commits, a.files))
            log(f"process starts under cProfile: {a.commits} commits per case")
            starts = process_starts(Path(tmp) / "profiled", rx, a.commits, a.files)
            n_warm, n_cold = (40, 8) if a.quick else (200, 30)
            if a.no_latency:
                n_warm = n_cold = 0
            log(f"latency: {n_warm} events 20 ms apart (deliverer running)")
            warm = latency(Path(tmp) / "warm", rx, n_warm, 0.02, "5")
            log(f"latency: {n_cold} events, a deliverer started for each")
            cold = latency(Path(tmp) / "cold", rx, n_cold, 0.3, "0")
            log(f"latency: {n_cold} commits, each starting the deliverer")
            by_commit = commit_latency(Path(tmp) / "cold-commit", rx, n_cold, 0.3)
        finally:
            rx.stop()  # even when a run fails: no receiver left behind
    base = statistics.median(r["none"] for r in runs)
    print(f"load average at start: {' '.join(load)}; {a.repeat} run(s) of {a.commits} commits "
          f"per case, {a.files} data files\n")  # fmt: skip
    print("| case | median commit (ms) | vs no webhook | paired ratio (median, min-max of runs) |")
    print("|---|---:|---:|---:|")
    for case in CASES:
        med = statistics.median(r[case] for r in runs)
        paired = [r[f"{case}/none"] for r in runs] if case != "none" else [1.0]
        spread = f"{min(paired):.3f}-{max(paired):.3f}"
        print(f"| {case} | {med * 1000:.1f} | {med / base:.3f}x | "
              f"{statistics.median(paired):.3f}x ({spread}) |")  # fmt: skip
    print(f"\nper run (ms, {' / '.join(CASES)}): " + "; ".join(
        " / ".join(f"{r[k] * 1000:.1f}" for k in CASES) for r in runs
    ))  # fmt: skip
    print("\n| case (under cProfile) | process starts per commit | ms in them per commit |")
    print("|---|---:|---:|")
    for case in CASES:
        print(f"| {case} | {starts[case][0]:.2f} | {starts[case][1]:.2f} |")
    print("\n| delivery latency | events | p50 (ms) | p95 (ms) |")
    print("|---|---:|---:|---:|")
    for name, values in (
        ("warm (deliverer running)", warm),
        ("cold (deliverer started)", cold),
        ("cold, a commit (one start with the index worker)", by_commit),
    ):
        if not values:
            continue
        print(f"| {name} | {len(values)} | {pct(values, 0.5) * 1000:.1f} | "
              f"{pct(values, 0.95) * 1000:.1f} |")  # fmt: skip
    print(f"\nload average at end: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")


if __name__ == "__main__":
    main()
