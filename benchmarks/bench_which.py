#!/usr/bin/env python
"""``mlvc which`` over 100k runs (issue 17, item 5) against baselines measured in the same run.

The repository is generated at run time: N real runs (run objects, trees and blobs written by
the library, refs added without their per-ref fsyncs and one ``os.sync()`` at the end, then
``rebuild_index``, as bench_server.py does; not `mlvc run`, which would take hours at 100k). Each run has the one shared code tree, a data folder of 8
files (6 shared by every run, 2 its own) and an artifacts folder of 2 files of its own, so
the index holds ~N x 10 file rows of which ~N x 4 distinct ids. A "popular" file (in every
run's data) and "rare" files (in exactly one run) are looked up.

Measured (medians of R repetitions; p90 for the in-process lookups):
1. ``Repo.which(id)`` in one process (an open repository; each call opens the read-only
   index as `mlvc query` does): a rare file and the popular one (N rows returned).
2. The DuckDB floor: ``SELECT ... FROM provenance WHERE object_id = ...`` and the bare
   ``tree_files`` point lookup on one open connection; and the same lookup on a copy of
   ``tree_files`` without the ART index (what the lookup would cost as a scan).
3. ``mlvc which PATH`` as a process (hash + open + lookup + print), against ``mlvc query
   'SELECT 1'`` (start-up and opening the index), ``mlvc --version`` (start-up) and BLAKE3 of the same file in-process (the ``b3sum`` equivalent).
4. A hash-prefix lookup (``mlvc which 1a2b3c``), which scans the file ids by design.

Markdown on stdout, progress on stderr; ``--runs N`` (default 100000), ``--reps R``,
``--quick`` (10k runs, 3 reps).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def log(msg: str) -> None:
    print(f"[bench_which {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build(root: Path, n: int) -> dict:
    """N runs written with the library; returns the ids to look up and the timings."""
    from mlvc import Repo
    from mlvc.core.objects import FILE, Run, Tree, TreeEntry
    from mlvc.store.typed import write_object

    repo = Repo.init(root)
    store = repo.store
    # Each ref is written durably (two fsyncs); 200k fsyncs would be most of the build, and
    # the build is the fixture, not the measure: one os.sync() at the end instead.
    real_fsync, os.fsync = os.fsync, lambda fd: None

    def blob(data: bytes) -> TreeEntry:
        return store.add_bytes(data), len(data)

    def tree(files: dict[str, tuple]) -> object:
        return write_object(store, Tree.of(TreeEntry(k, FILE, i, s) for k, (i, s) in files.items()))

    t0 = time.perf_counter()
    code = tree({"train.py": blob(b"print('train')\n"), "util.py": blob(b"X = 1\n")})
    shared = {f"shared{k}.csv": blob(f"shared file {k}\n".encode() * 50) for k in range(6)}
    popular = shared["shared0.csv"][0]
    rare = []
    for i in range(n):
        own = {f"own{k}.csv": blob(f"run {i} own file {k}\n".encode()) for k in range(2)}
        data = tree({**shared, **own})
        weights = blob(f"weights of run {i} ".encode() * 8)
        arts = tree({"model.bin": weights, "metrics.json": blob(b'{"acc": %d}' % (i % 97))})
        run = Run(
            name=f"run{i}",
            started=1_700_000_000_000_000 + i * 1000,
            ended=1_700_000_000_000_000 + i * 1000 + 500,
            command=("python", "train.py"),
            code=code,
            data=data,
            artifacts=arts,
            params={"lr": 0.01 * (i % 7)},
            metrics={"acc": (i % 97) / 97},
        )
        repo.refs.add_run(write_object(store, run))
        if i % (n // 20 or 1) == 0:
            rare.append(weights[0])
        if (i + 1) % 10_000 == 0:
            log(f"  {i + 1} runs written")
    os.fsync = real_fsync
    store.sync()
    os.sync()
    written = time.perf_counter() - t0
    t0 = time.perf_counter()
    repo.rebuild_index()
    indexed = time.perf_counter() - t0
    return {"popular": popular, "rare": rare, "write_s": written, "index_s": indexed}


def timed(fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1e3:.1f}"


def p90(xs: list[float]) -> str:
    return f"{sorted(xs)[int(0.9 * (len(xs) - 1))] * 1e3:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--keep", help="build (or reuse) the repository in this folder")
    args = ap.parse_args()
    n, reps = (10_000, 3) if args.quick else (args.runs, args.reps)
    import duckdb

    from mlvc import Repo

    tmp = Path(args.keep or tempfile.mkdtemp(prefix="bench-which-", dir=os.environ.get("TMPDIR")))
    try:
        log(f"building {n} runs in {tmp}")
        info = build(tmp / "repo", n)
        log(f"written in {info['write_s']:.0f} s, indexed in {info['index_s']:.0f} s")
        repo = Repo(tmp / "repo")
        rare = [o.hex for o in info["rare"]]
        popular = info["popular"].hex
        rows = repo.query("SELECT count(*) AS n FROM tree_files").column("n")[0].as_py()
        distinct = repo.query("SELECT count(DISTINCT object_id) AS n FROM tree_files")
        distinct = distinct.column("n")[0].as_py()
        assert len(repo.which(rare[0]).produced) == 1
        assert len(repo.which(popular).consumed) == n

        lib_rare = [t for oid in rare for t in timed(lambda o=oid: repo.which(o), 1)]
        lib_popular = timed(lambda: repo.which(popular), reps)

        db = repo.layout.dir / "index.duckdb"
        con = duckdb.connect(str(db), read_only=True)
        cur = con.cursor()
        view_q = "SELECT * FROM provenance WHERE object_id = '{}'"
        bare_q = "SELECT * FROM tree_files WHERE object_id = '{}'"
        floor_view = [
            t for o in rare for t in timed(lambda o=o: cur.sql(view_q.format(o)).fetchall(), 1)
        ]
        floor_bare = [
            t for o in rare for t in timed(lambda o=o: cur.sql(bare_q.format(o)).fetchall(), 1)
        ]
        mem = duckdb.connect()
        mem.execute(f"ATTACH '{db}' AS ix (READ_ONLY)")
        mem.execute("CREATE TABLE scan AS SELECT * FROM ix.tree_files")  # no ART index
        scan_q = "SELECT * FROM scan WHERE object_id = '{}'"
        no_index = [
            t
            for o in rare[:reps]
            for t in timed(lambda o=o: mem.sql(scan_q.format(o)).fetchall(), 1)
        ]
        mem.close()
        con.close()

        # a file outside the repository with a rare run's weights, looked up as a process
        target = tmp / "found-somewhere.bin"
        i = 0
        target.write_bytes(f"weights of run {i} ".encode() * 8)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLVC_")}

        def cli(*args: str) -> None:
            done = subprocess.run(
                [str(BIN / "mlvc"), *args], cwd=tmp / "repo", env=env, capture_output=True
            )
            assert done.returncode == 0, done.stderr

        cli_which = timed(lambda: cli("which", str(target)), reps)
        cli_version = timed(lambda: cli("--version"), reps)
        cli_query = timed(lambda: cli("query", "SELECT 1"), reps)
        import blake3

        hashing = timed(lambda: blake3.blake3(target.read_bytes()).hexdigest(), reps)
        prefix = rare[1][:8]
        cli_prefix = timed(lambda: cli("which", prefix), reps)
        load = Path("/proc/loadavg").read_text().split()[:3]
        print(f"### `mlvc which` at {n:,} runs ({rows:,} file rows, {distinct:,} distinct ids)\n")
        print(
            f"Load average at the end: {' '.join(load)}; repository written in "
            f"{info['write_s']:.0f} s, index rebuilt in {info['index_s']:.0f} s.\n"
        )
        print("| measure | median ms | p90 ms |")
        print("| --- | ---: | ---: |")
        table = [
            ("`Repo.which(id)`, a file of one run (open index per call)", lib_rare),
            (f"`Repo.which(id)`, a file of all {n:,} runs", lib_popular),
            ("DuckDB floor: `provenance` point lookup, open connection", floor_view),
            ("DuckDB floor: `tree_files` point lookup (ART index)", floor_bare),
            ("same lookup on `tree_files` without the index (a scan)", no_index),
            ("`mlvc which PATH` process (hash + lookup + print)", cli_which),
            ("`mlvc query 'SELECT 1'` process (start-up + opening the index)", cli_query),
            ("`mlvc --version` process (start-up floor)", cli_version),
            ("BLAKE3 of the same file in-process (`b3sum` equivalent)", hashing),
            ("`mlvc which PREFIX` process (8 hex digits: a scan)", cli_prefix),
        ]
        for label, xs in table:
            print(f"| {label} | {ms(xs)} | {p90(xs)} |")
        ratio = statistics.median(cli_which) / statistics.median(cli_query)
        print(
            f"\n`mlvc which PATH` / `mlvc query 'SELECT 1'`: {ratio:.2f}x; "
            f"index lookup / scan: {statistics.median(floor_bare) / statistics.median(no_index):.3f}x"
        )
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    random.seed(0)
    main()
