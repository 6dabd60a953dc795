"""A run's metric series blob: written as an Arrow IPC file, read in either stored form.

Runs recorded since the index rebuild went bulk (issue 16) store their series as an
uncompressed Arrow IPC *file* (it starts with ``ARROW1``): reading one back is a few
microseconds of header parsing and zero-copy buffers, where opening a small Parquet file
(footer, schema, column chunks) cost pyarrow 0.15-0.3 ms, most of a rebuild's per-run time.
The object store already zstd-compresses the blob on disk where that pays, so the bytes
stored are no larger than the Parquet's. Runs recorded before keep their Parquet blob (ids
of existing objects never change) and are read as before; ``read_series`` tells the two
apart by their magic bytes. docs/object-format.md documents both.

Columns: ``key`` (string), ``step`` (int64), ``timestamp`` (timestamp µs, UTC), ``value``
(float64), sorted by key, then step.
"""

from __future__ import annotations

from collections.abc import Sequence

from .ipc import check_file, validated

IPC_MAGIC = b"ARROW1"
PARQUET_MAGIC = b"PAR1"


def encode_series(table) -> bytes:
    """The bytes of the series blob of ``table`` (already in the order to store)."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def read_series(data: bytes, columns: Sequence[str] | None = None):
    """A series blob (Arrow IPC or Parquet) as a ``pyarrow.Table`` (``columns``: only
    those). Raises ValueError for bytes that are neither, for a Parquet one that would
    decode past ``core.parquet.decoded_limit`` of its size (pyarrow's errors for damaged
    ones are ValueErrors as well)."""
    import pyarrow as pa

    head = bytes(data[:6])
    if head == IPC_MAGIC:
        check_file(data)  # a pushed blob's compressed batches could inflate without bound
        table = validated(pa.ipc.open_file(pa.py_buffer(data)).read_all())
        if columns is None:
            return table
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise ValueError(f"the series has no column {missing[0]!r}")
        return table.select(list(columns))
    if head[:4] == PARQUET_MAGIC:
        from .parquet import decoded_limit, read_parquet

        # pushed by anyone a server lets in, and read by its index unasked: bounded
        return read_parquet(data, columns, limit=decoded_limit(len(data)))
    raise ValueError("not a metric series blob (neither Arrow IPC nor Parquet)")
