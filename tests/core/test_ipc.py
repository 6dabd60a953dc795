"""mlvc.core.ipc: Arrow IPC bodies from others are read whole, but never inflated from
compressed buffers (a few KB of zstd could ask for gigabytes), and bad bytes are one
IpcRefused, whatever they are."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from memory_peak import peak_growth

from mlvc.core.ipc import IpcRefused, read_ipc

TABLE = pa.table(
    {
        "key": pa.array(["loss", "acc", "loss"]).dictionary_encode(),
        "value": [1.0, float("nan"), 3.0],
        "step": pa.array([0, 1, 2], pa.int64()),
    }
)


def encode(table: pa.Table, file: bool = False, compression=None, rows: int = 2) -> bytes:
    """``table`` as an IPC stream or file in batches of ``rows`` (several batches and
    dictionaries by default)."""
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    new = pa.ipc.new_file if file else pa.ipc.new_stream
    with new(sink, table.schema, options=options) as writer:
        for batch in table.to_batches(max_chunksize=rows):
            writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize("file", [False, True])
def test_uncompressed_streams_and_files_read_back(file):
    got = read_ipc(encode(TABLE, file))
    assert got.to_pylist()[0] == TABLE.to_pylist()[0] and got.num_rows == 3
    assert got.column("key").to_pylist() == ["loss", "acc", "loss"]


@pytest.mark.parametrize("file", [False, True])
@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_compressed_buffers_are_refused(file, codec):
    with pytest.raises(IpcRefused, match="compressed"):
        read_ipc(encode(TABLE, file, codec))


def test_a_compression_bomb_is_refused_before_it_inflates():
    zeros = pa.table({"x": np.zeros(16 << 20, dtype=np.int64)})
    bomb = encode(zeros, compression="zstd", rows=zeros.num_rows)
    assert len(bomb) < 1 << 20  # 128 MiB of zeros in a few KB
    with peak_growth() as grown, pytest.raises(IpcRefused, match="compressed"):
        read_ipc(bomb)
    assert grown[0] < 64 << 20


@pytest.mark.parametrize(
    "data",
    [b"", b"not arrow", b"ARROW1", b"ARROW1\0\0" + b"\xff" * 40 + b"ARROW1", b"\xff" * 64],
)
def test_bad_bytes_are_one_refusal(data):
    with pytest.raises(IpcRefused) as e:
        read_ipc(data)
    assert "\n" not in str(e.value)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.booleans(),
    st.booleans(),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(0, 10_000),
)
def test_damaged_bodies_read_or_are_refused_never_anything_else(file, packed, flips, cut):
    data = bytearray(encode(TABLE, file, "zstd" if packed else None))
    for at, byte in flips:
        data[at % len(data)] = byte
    if cut:
        del data[-(cut % len(data)) :]
    try:
        table = read_ipc(bytes(data))
    except IpcRefused:
        return
    assert table.num_rows <= 3 * 1000  # what it read came from the body, not from a codec


def test_a_series_blob_with_compressed_batches_is_refused():
    """A series blob pushed by someone else is read by the index: the same refusal (mlvc
    writes its own uncompressed), as the ValueError read_series raises for bad bytes."""
    from mlvc.core.series_blob import encode_series, read_series

    series = pa.table({"key": ["loss"] * 3, "step": [0, 1, 2], "value": [1.0, 2.0, 3.0]})
    assert read_series(encode_series(series)).equals(series)
    with pytest.raises(ValueError, match="compressed"):
        read_series(encode(series, file=True, compression="zstd"))


def i32(*values: int) -> bytes:
    return np.array(values, dtype=np.int32).tobytes()


def damaged_bodies(file: bool) -> dict[str, bytes]:
    """Bodies whose layout is sound but whose values are not: a buffer of a valid body
    changed in place (each pattern is found once), as damage in transit or a hostile
    client would."""
    words = encode(pa.table({"s": ["hello", "world", "again"]}), file, rows=3)
    keys = encode(pa.table({"k": pa.array(["a", "b", "a"]).dictionary_encode()}), file, rows=3)
    damage = {
        "offsets going back": (words, i32(0, 5, 10, 15), i32(0, 12, 10, 15)),
        "an offset past the data": (words, i32(0, 5, 10, 15), i32(0, 5, 99, 15)),
        "bytes that are not UTF-8": (words, b"helloworld", b"\xff\xfelloworld"),
        "an index past its dictionary": (keys, i32(0, 1, 0), i32(0, 7, 0)),
    }
    out = {}
    for name, (body, was, now) in damage.items():
        assert body.count(was) == 1, name
        out[name] = body.replace(was, now)
    return out


@pytest.mark.parametrize("file", [False, True])
@pytest.mark.parametrize("damage", list(damaged_bodies(False)))
def test_a_body_of_damaged_arrays_is_refused(file, damage):
    """pyarrow's IPC reader checks a message's layout, not its values: such a table came
    back, and using it crashed the process (the fuzzer found a segfault in ``to_pylist``
    and an abort on a negative length, for a live batch's or a scoring request's body)."""
    with pytest.raises(IpcRefused, match="its arrays are damaged"):
        read_ipc(damaged_bodies(file)[damage])


def test_a_series_blob_of_damaged_arrays_is_refused():
    """The index reads series blobs pushed by anyone a server lets in: the same check."""
    from mlvc.core.series_blob import read_series

    with pytest.raises(ValueError, match="its arrays are damaged"):
        read_series(damaged_bodies(True)["offsets going back"])
