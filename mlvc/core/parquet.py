"""Parquet bytes read back as an Arrow table, in the calling thread only.

``pq.read_table(io.BytesIO(data))`` (and ``pa.BufferReader``) goes through Arrow's dataset
scanner, which pre-buffers column chunks on Arrow's I/O thread pool. Those futures can still
hold the Python buffer when the read has returned; when the interpreter is finalizing, the
worker that drops it asks for the GIL, is exited by Python, and the process aborts with
"terminate called without an active exception" (three of four short scripts did here). A
``ParquetFile`` read with ``pre_buffer=False, use_threads=False`` starts no such task.
"""

from __future__ import annotations

from collections.abc import Sequence


def read_parquet(data: bytes, columns: Sequence[str] | None = None):
    """The Parquet file ``data`` (bytes) as a ``pyarrow.Table`` (``columns``: only those)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    reader = pq.ParquetFile(pa.BufferReader(data), pre_buffer=False)
    return reader.read(columns=list(columns) if columns is not None else None, use_threads=False)
