"""The web preview of a Parquet artifact (``mlvc.core.parquet.read_head``: its page walk
first, then pyarrow) against pyarrow reading the same 50 rows with no bound, in the same
run, medians of 7, on ordinary tables the preview refused before 2026-12-02 (lists, zeros,
and strings delta-encoded as Spark's v2 writer stores them) and one it always read. Files are generated in /tmp and removed.

Usage: .venv/bin/python benchmarks/bench_preview.py
"""

import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "core"))
from test_parquet import tokens  # noqa: E402

from mlvc.core.parquet import decoded_limit, read_head  # noqa: E402

rng = np.random.default_rng(0)
tables = {
    "tokenized 10k x 2048 (lists, v1)": (tokens(10_000, 2048), {"compression": "zstd"}),
    "blank images 60k x 784 (lists)": (
        pa.table(
            {
                "pixels": pa.array([np.zeros(784, np.uint8)] * 60_000, pa.list_(pa.uint8())),
                "label": np.zeros(60_000, np.int64),
            }
        ),
        {},
    ),
    "zeros 8M x 4 int64": (
        pa.table({c: np.zeros(8 << 20, np.int64) for c in "abcd"}),
        {"compression": "zstd", "row_group_size": 8 << 20},
    ),
    "events 1M (categoricals)": (
        pa.table(
            {
                "user": rng.integers(0, 1000, 1_000_000),
                "event": pa.array(
                    np.array(["click", "view", "buy"])[rng.integers(0, 3, 1_000_000)]
                ),
                "amount": rng.random(1_000_000),
            }
        ),
        {},
    ),
    "events 1M, strings delta-encoded (v2, snappy)": (
        pa.table(
            {
                "user": pa.array([f"u{i:07d}" for i in range(1_000_000)]),
                "event": pa.array(
                    np.array(["click", "view", "buy"])[rng.integers(0, 3, 1_000_000)]
                ),
                "amount": rng.random(1_000_000),
            }
        ),
        {
            "use_dictionary": False,
            "column_encoding": {"user": "DELTA_BYTE_ARRAY", "event": "DELTA_LENGTH_BYTE_ARRAY"},
            "data_page_version": "2.0",
            "compression": "snappy",
        },
    ),
}
print("| table | file | preview (walk + read) | pyarrow alone | ratio |")
print("|---|---|---|---|---|")
for name, (t, opts) in tables.items():
    path = f"/tmp/pv-{abs(hash(name))}.parquet"
    pq.write_table(t, path, **opts)
    size = os.path.getsize(path)
    ours, base = [], []
    for _ in range(7):
        s = time.perf_counter()
        read_head(path, 50, decoded_limit(size))
        ours.append(time.perf_counter() - s)
        s = time.perf_counter()
        f = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
        next(f.iter_batches(batch_size=50, use_threads=False))
        base.append(time.perf_counter() - s)
    m, b = statistics.median(ours), statistics.median(base)
    print(f"| {name} | {size / 1e6:.2f} MB | {m * 1e3:.1f} ms | {b * 1e3:.1f} ms | {m / b:.2f}x |")
    os.unlink(path)
