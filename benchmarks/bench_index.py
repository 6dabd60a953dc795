"""Index benchmarks (issue 16, items 4-5), each beside a baseline timed in the same run.

Run as ``.venv/bin/python benchmarks/bench_index.py [--runs 10000] [--reuse DIR] [--reps 3]
[--compare /work/main/.venv/bin/python]`` (``--compare``: the rebuilds of section 1 and the
ingests of section 2 also with another checkout's interpreter, alternately, and their ratios
pair by pair; ``--reuse``: a fixture project made once, e.g. of 100,000 runs).
Prints a Markdown report (``--out FILE`` also writes it), progress on stderr.

1. Rebuild of N synthetic runs (20 params, 5 metrics x 100 steps; bench_tracking's values),
   their series blobs as new runs write them (Arrow IPC) and as runs recorded before did
   (Parquet), each vs DuckDB inserting the same rows (Arrow tables read back from the index) into
   a fresh file: wall and CPU seconds (CPU: this machine is shared, so wall depends on load).
2. Ingest of one run bringing a new param key into the N-run index vs one run with the
   keys the index has (runs_wide grows by a side table instead of a rewrite).
3. Ingest of one run with a 1M-point metric series (its blob as a finished run writes it) vs
   reading the blob and DuckDB inserting the same Arrow table.
4. ``log_metric`` vs a bare list-append loop in the same process.
5. Reads just after a named commit (the index's refs fingerprint too recent to trust alone)
   vs the same reads once the names have settled, in one process and through a server's
   kept reader, with 1,000 named runs in the repository.
6. Settled reads with EVENTS events in the journal (~3.6 a run is what runs logged through
   the library make: 50,000 is ~14,000 runs' worth) vs the same reads with none.

Library steps run in child processes (this file with ``--child``). The storm of writers with a
reader is ``bench_tracking.py --only 3``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
SELF = str(Path(__file__).resolve())
TRACKING = str(HERE / "bench_tracking.py")
T0 = 1_800_000_000_000_000
FORMATS = {
    "ipc": "Arrow IPC (new runs)",
    "parquet": "Parquet (runs recorded before)",
    "ipc-commits": "Arrow IPC, a pack per run (as commits leave them)",
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu() -> float:
    """CPU seconds of this process and its finished children."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def runq() -> float:
    """Seconds this process's threads spent runnable but waiting for a CPU
    (/proc/<pid>/task/*/schedstat): on a shared machine, the part of wall time that is load."""
    total = 0
    for f in Path("/proc/self/task").glob("*/schedstat"):
        try:
            total += int(f.read_text().split()[1])
        except (OSError, IndexError, ValueError):  # a thread that ended meanwhile
            pass
    return total / 1e9


def child(*args, python: str = PYTHON, env: dict | None = None) -> dict:
    """A child step run by ``python`` (another checkout's venv with ``--compare``: its own
    mlvc answers the same public calls), with ``env`` added to its environment."""
    out = subprocess.run(
        [python, SELF, "--child", *map(str, args)], capture_output=True, text=True,
        check=False, env={**os.environ, **(env or {})},
    )  # fmt: skip
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.3g} ({min(xs):.3g}-{max(xs):.3g})"


# -- children ------------------------------------------------------------------------------


@contextlib.contextmanager
def served(root: Path):
    """A real `mlvc server` on a free port of 127.0.0.1 serving ``root``; yields the
    environment that sends a training script's run to it."""
    import socket

    from bench_foundation import wait_http

    from mlvc.core.layout import Layout
    from mlvc.server.auth import TokenStore

    token = TokenStore(Layout.of(root)).create("write", "bench")[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlvc = str(Path(PYTHON).parent / "mlvc")
    with open(root / "server.log", "ab") as out:
        proc = subprocess.Popen([mlvc, "server", "--port", str(port)], cwd=root, stdout=out,
                                stderr=out)  # fmt: skip
    try:
        wait_http(
            f"http://127.0.0.1:{port}/health", proc, 30, f"mlvc server (see {root}/server.log)"
        )
        yield {"MLVC_TRACKING_URI": f"http://127.0.0.1:{port}", "MLVC_TRACKING_TOKEN": token}
    finally:
        proc.terminate()
        proc.wait(30)


def logmetric_row(label: str, n: int, r: dict) -> str:
    return (
        f"| {label} | {spread([n / x / 1e6 for x in r['mlvc']])} | "
        f"{spread([b / m for b, m in zip(r['bare'], r['mlvc'], strict=True)])} | "
        f"{spread([b / m for b, m in zip(r['bare_cpu'], r['mlvc_cpu'], strict=True)])} |"
    )


def child_rebuild(root: str) -> dict:
    """Rebuild the index; then insert the same rows, read back as Arrow, into a fresh file."""

    from mlvc import Repo

    repo = Repo(root)
    s0 = resource.getrusage(resource.RUSAGE_SELF)
    c0, t0, q0 = cpu(), time.perf_counter(), runq()
    n = repo.rebuild_index()
    out = {"runs": n, "wall": time.perf_counter() - t0, "cpu": cpu() - c0, "runq": runq() - q0}
    s1 = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_self"] = s1.ru_utime + s1.ru_stime - s0.ru_utime - s0.ru_stime  # workers apart
    tables = {
        t: repo.query(f"SELECT * FROM {t}")
        for t in ("runs", "params", "metrics", "metric_summary", "tree_files", "env_packages")
    }
    out.update(duckdb_baseline(root, lambda: tables))
    return out


def duckdb_baseline(root: str, make_tables) -> dict:
    """Seconds to make the Arrow tables (``make_tables()``) and insert each into a fresh
    DuckDB file, checkpointed: what the index's writes are set beside."""
    import duckdb

    path = Path(root) / "baseline.duckdb"
    path.unlink(missing_ok=True)
    c0, t0 = cpu(), time.perf_counter()
    con = duckdb.connect(str(path))
    for name, table in make_tables().items():
        con.register("t", table)
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM t")
        con.unregister("t")
    con.execute("CHECKPOINT")
    con.close()
    out = {"base_wall": time.perf_counter() - t0, "base_cpu": cpu() - c0}
    path.unlink()
    return out


def _commit(repo, params: dict, metrics: dict, series_id=None, i: int = 0):
    from mlvc.core.objects import Run
    from mlvc.store.typed import write_object

    sid = series_id
    run = Run(
        name=f"bench-{time.time_ns()}", started=T0 + i, ended=T0 + i + 1, params=params,
        metrics=metrics, series=sid,
    )  # fmt: skip
    oid = write_object(repo.store, run)
    repo.store.sync()
    repo.index.journal(oid)
    repo.refs.add_run(oid)
    return oid


def child_newkey(root: str, reps: str) -> dict:
    """Ingest (``Index.sync``) one run with the index's keys, then one with a new key."""
    from mlvc import Repo

    repo = Repo(root)
    repo.index.sync()
    params = {f"p{k}": 0.5 for k in range(20)}
    metrics = {f"m{k}": 0.5 for k in range(5)}
    out = {"same": [], "new": [], "same_cpu": [], "new_cpu": []}
    for _ in range(int(reps)):
        _commit(repo, params, metrics)
        c0, t0 = cpu(), time.perf_counter()
        repo.index.sync()
        out["same"].append(time.perf_counter() - t0)
        out["same_cpu"].append(cpu() - c0)
        _commit(repo, {**params, f"new_{time.time_ns()}": 1.0}, metrics)
        c0, t0 = cpu(), time.perf_counter()
        repo.index.sync()
        out["new"].append(time.perf_counter() - t0)
        out["new_cpu"].append(cpu() - c0)
    layout = repo.query("SELECT value FROM meta WHERE key = 'runs_wide'").column(0)[0].as_py()
    layout = json.loads(layout)  # a list of columns before runs_wide had side tables
    out["side_tables"] = len(layout["tables"]) if isinstance(layout, dict) else 0
    return out


def child_bigrun(root: str, points: str) -> dict:
    """Ingest one run with a ``points``-point series; then DuckDB inserting the same table."""
    import numpy as np
    import pyarrow as pa

    from mlvc import Repo
    from mlvc.core.series_blob import read_series
    from mlvc.runs.finish import series_blob

    n = int(points)
    keys = 5
    per = n // keys
    table = pa.table(
        {
            "key": pa.array(np.repeat([f"m{k}" for k in range(keys)], per)),
            "step": pa.array(np.tile(np.arange(per, dtype=np.int64), keys)),
            "timestamp": pa.array(
                np.tile(T0 + np.arange(per, dtype=np.int64) * 1000, keys), pa.timestamp("us", "UTC")
            ),
            "value": pa.array(np.random.default_rng(1).random(per * keys)),
        }
    )
    repo = Repo(root)
    repo.index.sync()
    sid = series_blob(repo.store, table, presorted=True)  # as a finished run writes it
    _commit(repo, {"lr": 0.1}, {}, series_id=sid)
    c0, t0, q0 = cpu(), time.perf_counter(), runq()
    repo.index.sync()
    out = {"wall": time.perf_counter() - t0, "cpu": cpu() - c0, "runq": runq() - q0}
    data = repo.store.read_bytes(sid)
    out.update(duckdb_baseline(root, lambda: {"metrics": read_series(data)}))
    return out


def drained(run, limit: float = 120) -> None:
    """Wait (untimed) until a run on a server has delivered what it holds, so the next
    loop starts with an empty buffer: the loop measures log_metric, not the server's pace
    (past the buffer's cap, logging waits for the server; the end time below shows that)."""
    held = getattr(run, "_held", None)
    deadline = time.monotonic() + limit
    while held is not None and held() and time.monotonic() < deadline:
        time.sleep(0.01)


def child_logmetric(root: str, n: str, reps: str) -> dict:
    """log_metric in one run vs appending the same (key, value, step) tuples to a list."""
    os.chdir(root)
    import mlvc

    n, out = int(n), {"bare": [], "mlvc": [], "bare_cpu": [], "mlvc_cpu": []}
    run = mlvc.start_run()
    with run:
        for rep in range(int(reps)):
            points = []
            c0, t0 = time.process_time(), time.perf_counter()
            for i in range(n):
                points.append(("loss", i * 0.001, i))
            out["bare"].append(time.perf_counter() - t0)
            out["bare_cpu"].append(time.process_time() - c0)
            del points
            c0, t0 = time.process_time(), time.perf_counter()
            for i in range(n):
                run.log_metric("loss", i * 0.001, step=rep * n + i)
            out["mlvc"].append(time.perf_counter() - t0)
            out["mlvc_cpu"].append(time.process_time() - c0)
            drained(run)
        t_end = time.perf_counter()
    out["end"] = time.perf_counter() - t_end  # the run recorded (on a server: all delivered)
    return out


NAMED = 1000  # named runs in the repository while section 5 reads (a realistic refs/names)


def child_recent(root: str, reps: str, kept: str) -> dict:
    """``Repo.query`` just after a named commit (each rep: a run named, its ingest, then 5
    reads), then the same reads once the names have settled. ``kept``: "1" reads through the
    kept connection of a long-lived process (a server's)."""
    from mlvc import Repo
    from mlvc.core.ids import ObjectId

    repo = Repo(root)
    ids = repo.query(f"SELECT id FROM runs ORDER BY id LIMIT {NAMED}").column("id").to_pylist()
    for i, rid in enumerate(ids):  # untimed: a repository whose runs have names
        repo.refs.write(f"refs/names/bench-named-{i}", ObjectId.parse(rid))
    time.sleep(2.2)  # journal.REFS_SETTLE_NS: they settle, as a repository's older names are
    repo.query("SELECT 1")  # and are noted by an ingest
    if kept == "1":
        repo.index.keep_readers()
    sql = "SELECT count(*) FROM runs"
    out = {"recent": [], "settled": []}
    for r in range(int(reps)):
        oid = _commit(repo, {"lr": 0.1}, {"acc": 0.5}, i=r)
        repo.refs.write(f"refs/names/bench-recent-{time.time_ns()}", oid)
        repo.query(sql)  # its ingest
        for _ in range(5):
            t0 = time.perf_counter()
            repo.query(sql)
            out["recent"].append(time.perf_counter() - t0)
    time.sleep(2.2)  # journal.REFS_SETTLE_NS: the names settle
    repo.query(sql)  # the one ingest that stores the settled fingerprint
    for _ in range(5 * int(reps)):
        t0 = time.perf_counter()
        repo.query(sql)
        out["settled"].append(time.perf_counter() - t0)
    repo.index.release_idle(0.0)
    return out


EVENTS = 50_000  # events in the journal while section 6 reads


def child_events(root: str, reps: str, kept: str) -> dict:
    """Settled ``Repo.query`` reads (each after the index caught up and its folders
    settled): ``reps`` x 5 with an empty event journal, then as many with EVENTS events."""
    from mlvc import Repo
    from mlvc.core.events import Event, iso_utc, new_id
    from mlvc.events import write_event

    repo = Repo(root)
    layout = repo.ctx.layout
    if kept == "1":
        repo.index.keep_readers()
    n = 5 * int(reps)
    out = {"none": _settled_reads(repo, n)}
    start = time.time_ns() // 1000 - 10**9  # older than any event made now
    made = []
    for i in range(EVENTS):  # untimed: a journal as many runs leave it
        event = Event(new_id(start + i), "alert.fired", iso_utc(start + i), {"name": f"e{i}"})
        write_event(layout, event, sync=False)
        made.append(event.id)
    out["events"] = _settled_reads(repo, n)
    repo.index.release_idle(0.0)
    for eid in made:  # the fixture is reused: as it was
        (layout.events / f"{eid}.json").unlink()
    repo.query("SELECT 1")
    return out


def _settled_reads(repo, n: int) -> list[float]:
    time.sleep(2.2)  # the folders settle (journal.REFS_SETTLE_NS, index.events.SETTLE_NS)
    sql = "SELECT count(*) FROM runs"
    repo.query(sql)  # an ingest that notes them
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        repo.query(sql)
        out.append(time.perf_counter() - t0)
    return out


CHILDREN = {
    "events": child_events,
    "recent": child_recent,
    "rebuild": child_rebuild,
    "newkey": child_newkey,
    "bigrun": child_bigrun,
    "logmetric": child_logmetric,
}


# -- the report ------------------------------------------------------------------------------


def newkey_section(args, root: Path) -> list[str]:
    """Section 2: ingests of one run, alternately by this checkout and by ``--compare``'s
    (each child: ``reps`` runs with a new key, each after one with the index's keys)."""
    reps = max(args.reps, 5)
    mine, other = [], []
    for _ in range(2 if args.compare else 1):  # alternately, so both meet the same load
        mine.append(child("newkey", root, reps))
        if args.compare:
            other.append(child("newkey", root, reps, python=args.compare))

    def pooled(res: list[dict], key: str) -> list[float]:
        return [x for r in res for x in r[key]]

    r = {k: pooled(mine, k) for k in ("new", "same", "new_cpu", "same_cpu")}
    lines = [
        f"### 2. Ingest of one run into the {args.runs:,}-run index "
        f"(median of {len(r['new'])}, min-max)\n",
        "| run | ingest (`Index.sync`) wall s | CPU s | ratio wall |",
        "| --- | --- | --- | --- |",
        f"| with a new param key | {spread(r['new'])} | {spread(r['new_cpu'])} | "
        f"{spread([a / b for a, b in zip(r['new'], r['same'], strict=True)])} |",
        f"| baseline: the index's keys only | {spread(r['same'])} | {spread(r['same_cpu'])} | 1 |",
    ]
    if other:
        o = {k: pooled(other, k) for k in ("new", "same", "new_cpu", "same_cpu")}
        lines += [
            f"| `--compare`: with a new param key | {spread(o['new'])} | "
            f"{spread(o['new_cpu'])} | |",
            f"| `--compare`: the index's keys only | {spread(o['same'])} | "
            f"{spread(o['same_cpu'])} | |",
            "",
            "This checkout / `--compare`, sample by sample in alternating children: new key "
            f"wall {spread([a / b for a, b in zip(r['new'], o['new'], strict=True)])}, CPU "
            f"{spread([a / b for a, b in zip(r['new_cpu'], o['new_cpu'], strict=True)])}; "
            f"index's keys wall {spread([a / b for a, b in zip(r['same'], o['same'], strict=True)])}"
            f", CPU {spread([a / b for a, b in zip(r['same_cpu'], o['same_cpu'], strict=True)])}.",
        ]
    return [*lines, "", f"runs_wide side tables afterwards: {mine[-1]['side_tables']}.", ""]


def reader_rows(args, root: Path, section: int, what: str, keys: tuple[str, str]) -> list[str]:
    """A row per reader (a process, a server's kept reader) and checkout (this one, and
    ``--compare``'s, one after the other): child ``what``'s two samples ``keys`` (the
    measured reads, then the baseline reads) in ms, and the ratio of their medians."""
    rows = []
    for kept, label in (("0", "a process"), ("1", "a server's kept reader")):
        log(f"[{section}] {what} ({label})")
        sides = [("this", PYTHON)] + ([("`--compare`", args.compare)] if args.compare else [])
        for name, python in sides:
            r = child(what, root, args.reps, kept, python=python)
            got, base = r[keys[0]], r[keys[1]]
            rows.append(
                f"| {label} | {name} | {spread([x * 1e3 for x in got])} | "
                f"{spread([x * 1e3 for x in base])} | "
                f"{statistics.median(got) / statistics.median(base):.2f}x |"
            )
    return rows


def recent_section(args, root: Path) -> list[str]:
    """Section 5: reads just after a named commit vs once settled."""
    return [
        f"### 5. Reads just after a named commit, {args.runs:,}-run index, {NAMED:,} named runs "
        f"(`Repo.query`, 5 reads after each of {args.reps} named commits; median, min-max)\n",
        "| reader | checkout | just after a named commit, ms | settled (baseline), ms | ratio |",
        "| --- | --- | --- | --- | --- |",
        *reader_rows(args, root, 5, "recent", ("recent", "settled")),
        "",
    ]


def events_section(args, root: Path) -> list[str]:
    """Section 6: settled reads with EVENTS events vs none."""
    return [
        f"### 6. Settled reads with {EVENTS:,} events in the journal, {args.runs:,}-run index "
        f"(`Repo.query`, {5 * args.reps} reads; median, min-max)\n",
        f"| reader | checkout | {EVENTS:,} events, ms | no event (baseline), ms | ratio |",
        "| --- | --- | --- | --- | --- |",
        *reader_rows(args, root, 6, "events", ("events", "none")),
        "",
    ]


def init_project(root: Path) -> None:
    root.mkdir(parents=True)
    mlvc = str(Path(PYTHON).parent / "mlvc")
    subprocess.run([mlvc, "init"], cwd=root, check=True, capture_output=True)


def make_runs(root: Path, n: int, fmt: str = "ipc") -> None:
    init_project(root)
    procs = [
        subprocess.Popen(
            [PYTHON, TRACKING, "--child", "make-runs", str(root), str(n), str(p), "2", fmt]
        )
        for p in range(2)
    ]
    for p in procs:
        if p.wait():
            raise RuntimeError("make-runs failed")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--reuse", default=None, help="a project holding --runs synthetic runs")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--only", default="1,2,3,4,5,6")
    ap.add_argument(
        "--series", default="ipc,parquet",
        help="series blob formats to rebuild: ipc (as new runs store it), parquet (runs "
        "before); ipc-commits: ipc, each run in a pack of its own as commits leave them",
    )  # fmt: skip
    ap.add_argument("--dir", default=None)
    ap.add_argument(
        "--compare", default=None, metavar="PYTHON",
        help="also run sections 1-2 with this interpreter (e.g. main's venv), alternating",
    )  # fmt: skip
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child[0]](*args.child[1:])))
        return 0
    only = {int(x) for x in args.only.split(",")}
    os.makedirs(args.dir or tempfile.gettempdir(), exist_ok=True)  # --dir made if new
    work = Path(tempfile.mkdtemp(prefix="bench-index-", dir=args.dir))
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    lines = []
    try:
        formats = args.series.split(",")
        roots = {f: Path(args.reuse) if args.reuse else work / f"runs-{f}" for f in formats}
        root = roots[formats[0]]
        for fmt in formats if not args.reuse and only & {1, 2, 5, 6} else ():
            log(f"making {args.runs:,} runs, series as {fmt}")
            make_runs(roots[fmt], args.runs, fmt)
            if 1 not in only:
                break
        if 1 in only:
            lines += [
                f"### 1. Rebuild of {args.runs:,} runs (median of {args.reps}, min-max)\n",
                "| series blobs | | wall s | CPU s | ratio wall | ratio CPU |",
                "| --- | --- | --- | --- | --- | --- |",
            ]
            waits, compared = [], []
            for fmt in formats:
                log(f"[1] rebuild ({fmt})")
                res, other = [], []
                for _ in range(args.reps):  # alternately, so both meet the same load
                    res.append(child("rebuild", roots[fmt]))
                    if args.compare:
                        other.append(child("rebuild", roots[fmt], python=args.compare))
                walls, cpus = [r["wall"] for r in res], [r["cpu"] for r in res]
                lines += [
                    f"| {FORMATS.get(fmt, fmt)} | `Repo.rebuild_index()` | {spread(walls)} | "
                    f"{spread(cpus)} | {spread([r['wall'] / r['base_wall'] for r in res])} | "
                    f"{spread([r['cpu'] / r['base_cpu'] for r in res])} |",
                    f"| | baseline: DuckDB inserting the same rows from Arrow | "
                    f"{spread([r['base_wall'] for r in res])} | "
                    f"{spread([r['base_cpu'] for r in res])} | 1 | 1 |",
                ]
                if other:
                    lines.append(
                        f"| | `--compare` ({args.compare}) | {spread([r['wall'] for r in other])}"
                        f" | {spread([r['cpu'] for r in other])} | "
                        f"{spread([r['wall'] / r['base_wall'] for r in other])} | "
                        f"{spread([r['cpu'] / r['base_cpu'] for r in other])} |"
                    )
                    pairs = list(zip(res, other, strict=True))
                    compared.append(
                        f"{fmt}: wall {spread([a['wall'] / b['wall'] for a, b in pairs])}"
                        f", CPU {spread([a['cpu'] / b['cpu'] for a, b in pairs])}"
                        f" (rebuilding process {spread([r['cpu_self'] for r in res])} s vs "
                        f"{spread([r.get('cpu_self', 0) for r in other])} s)"
                    )
                waits.append(f"{fmt} {spread([r['runq'] for r in res])} s")
            lines += [
                "",
                "The rebuilding process waited for a CPU (runnable, not running): "
                + "; ".join(waits)
                + ".",
                "",
            ]
            if compared:
                lines += ["This run / `--compare`, pair by pair: " + "; ".join(compared) + ".", ""]
        if 2 in only:
            log("[2] a new key")
            lines += newkey_section(args, root)
        if 3 in only:
            log("[3] one run with many points")
            small = work / "big"
            init_project(small)
            res = [child("bigrun", small, args.points) for _ in range(args.reps)]
            lines += [
                f"### 3. Ingest of one run with {args.points:,} points "
                f"(median of {args.reps}, min-max)\n",
                "| | wall s | CPU s | ratio wall |",
                "| --- | --- | --- | --- |",
                f"| `Index.sync` | {spread([r['wall'] for r in res])} | "
                f"{spread([r['cpu'] for r in res])} | "
                f"{spread([r['wall'] / r['base_wall'] for r in res])} |",
                f"| baseline: the blob read + DuckDB insert of the same table | "
                f"{spread([r['base_wall'] for r in res])} | "
                f"{spread([r['base_cpu'] for r in res])} | 1 |",
                "",
                f"Of the ingest's wall time, {spread([r['runq'] for r in res])} s was spent "
                "runnable but waiting for a CPU (schedstat): load, not I/O.",
                "",
            ]
        if 4 in only:
            log("[4] log_metric")
            lm = work / "lm"
            init_project(lm)
            n = 1_000_000
            r = child("logmetric", lm, n, max(args.reps, 5))
            with served(lm) as env:  # a run on a real `mlvc server` (MLVC_TRACKING_URI)
                remote = child("logmetric", lm, n, max(args.reps, 5), env=env)
            lines += [
                f"### 4. `log_metric`, {n:,} points (median of {len(r['mlvc'])}, min-max)\n",
                "| | Mpoints/s wall | ratio wall | ratio CPU |",
                "| --- | --- | --- | --- |",
                logmetric_row("`run.log_metric('loss', v, step=i)`", n, r),
                logmetric_row("the same, the run on `mlvc server` (MLVC_TRACKING_URI)", n, remote),
                f"| baseline: `points.append(('loss', v, i))` | "
                f"{spread([n / x / 1e6 for x in r['bare']])} | 1 | 1 |",
                "",
                "Each row's ratios are to the baseline loop timed in the same process. A run "
                "on a server sends its points from a thread of the logging process, whose "
                "CPU the loop shares; before each loop, what the last one logged was "
                "delivered (untimed). Ending the run after the last loop (its "
                f"{max(args.reps, 5) * n:,} points recorded; on the server: all delivered "
                f"first): local {r['end']:.2f} s, on the server {remote['end']:.2f} s.",
                "",
            ]
        if 5 in only:
            lines += recent_section(args, root)
        if 6 in only:
            lines += events_section(args, root)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    head = [
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- load average before: {' '.join(load_before)}; after: {' '.join(load_after)} "
        "(the machine is shared with other helpers)",
        "",
    ]
    report = "\n".join(head + lines)
    print(report)
    if args.out:
        Path(args.out).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
