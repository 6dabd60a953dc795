"""Export benchmark (issue 12 item 5): ``mlvc export parquet|iceberg`` and ``query --remote``.

Run as ``.venv/bin/python benchmarks/bench_export.py [--runs N] [--keep DIR]``. Builds a repo
of N synthetic runs (20 params, 5 metrics x 100 steps each: bench_tracking's generator), then
times, each beside a baseline of the same rows:

1. a full Parquet export to a folder and to S3 (a moto server on 127.0.0.1), beside DuckDB's
   own ``COPY (SELECT * FROM metrics) TO 'x.parquet'`` of the same index;
2. a no-op export (nothing new) and an incremental one (+100 runs);
3. one query over the export (``mlvc query --remote``) beside the same query on the index;
4. a full Iceberg export to a folder (sqlite catalog).

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

QUERY = "SELECT key, count(*), avg(value) FROM metrics GROUP BY key ORDER BY key"


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def make_repo(root: Path, n: int) -> None:
    from bench_tracking import child_make_runs

    from mlvc import Repo

    Repo.init(root)
    child_make_runs(str(root), str(n), "0", "1")
    Repo(root).rebuild_index()


def add_runs(root: Path, k: int) -> None:
    from mlvc import Repo

    repo = Repo(root)
    for i in range(k):
        repo.commit(
            f"extra {i}",
            params={"p0": i / k},
            metrics={"m0": i / k},
            capture_code=False,
            capture_env=False,
        )


def moto() -> tuple[subprocess.Popen, str]:
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    os.environ.update(env)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(
        endpoint_override=f"127.0.0.1:{port}", scheme="http", allow_bucket_creation=True
    )
    fs.create_dir("bench")
    url = f"s3://bench/history?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    return proc, url


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--keep", default=None, help="reuse/keep the repo in this folder")
    args = ap.parse_args()
    os.environ.setdefault("MLVC_INDEX_SYNC", "inline")
    os.environ.setdefault("MLVC_AUTHOR", "bench <bench@example.com>")
    work = Path(tempfile.mkdtemp(prefix="mlvc-bench-export-"))
    root = Path(args.keep) if args.keep else work / "repo"
    if not (root / ".mlvc").exists():
        t, _ = timed(lambda: make_repo(root, args.runs))
        print(f"built {args.runs} runs in {t:.1f} s", file=sys.stderr)
    from mlvc import Repo

    repo = Repo(root)
    n_runs = repo.query("SELECT count(*) FROM runs").column(0)[0].as_py()
    points = repo.query("SELECT count(*) FROM metrics").column(0)[0].as_py()
    rows = []

    def row(what, seconds, base=None, note=""):
        ratio = f"{seconds / base:.2f}x" if base else ""
        rows.append((what, f"{seconds:.2f}", f"{base:.2f}" if base else "", ratio, note))

    # baseline: DuckDB writing the biggest table of the same index to one Parquet file
    import duckdb

    def copy_metrics():
        con = duckdb.connect(str(repo.dir / "index.duckdb"), read_only=True)
        con.execute(f"COPY (SELECT * FROM metrics) TO '{work}/m.parquet' (FORMAT parquet)")
        con.close()

    base, _ = timed(copy_metrics)
    folder = work / "export"
    t, rep = timed(lambda: repo.export_parquet(str(folder)))
    row(
        f"export parquet, folder ({n_runs} runs, {points:,} points)",
        t,
        base,
        f"{rep.files_written} files, {rep.bytes_written / 2**20:.1f} MiB; baseline: DuckDB COPY of metrics",
    )
    t, rep = timed(lambda: repo.export_parquet(str(folder)))
    row("export parquet again, nothing new", t, None, f"{rep.files_written} files written")
    add_runs(root, 100)
    repo = Repo(root)
    t, rep = timed(lambda: repo.export_parquet(str(folder)))
    row("export parquet, +100 runs", t, None, f"{rep.runs_added} runs, {rep.files_written} files")

    proc, url = moto()
    try:
        t, rep = timed(lambda: repo.export_parquet(url))
        row("export parquet, moto S3", t, base, f"{rep.files_written} files")
        from mlvc.api.export import query_remote

        local, a = timed(lambda: repo.query(QUERY))
        t, b = timed(lambda: query_remote(str(folder), QUERY))
        row("query --remote folder (in-process)", t, local, "baseline: same query on the index")
        t, c = timed(lambda: query_remote(url, QUERY))
        row("query --remote moto S3 (in-process)", t, local, "baseline: same query on the index")
        assert a.num_rows == b.num_rows == c.num_rows
    finally:
        proc.terminate()
    t, rep = timed(lambda: repo.export_iceberg(str(work / "iceberg")))
    row("export iceberg, folder + sqlite catalog", t, base, f"{rep.files_written} commits")

    print("| what | seconds | baseline s | ratio | note |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
