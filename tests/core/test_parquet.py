"""mlvc.core.parquet: Parquet bytes from others (a pushed run's series blob) are read back
as they were written, but never inflated past a bound: neither by zstd pages whose headers
claim gigabytes, nor by RLE and dictionary encodings repeating a value millions of times.
The walk of the pages happens before pyarrow inflates any of them."""

from __future__ import annotations

import io
import resource

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlvc.core.parquet import ParquetRefused, check_pages, decoded_limit, read_parquet
from mlvc.core.series_blob import read_series


@pytest.fixture(params=["c", "pure"])
def walk(request, monkeypatch):
    """Each test that takes it runs with the C page walk and with the Python one."""
    monkeypatch.setattr("mlvc.core.speedups.PURE", request.param == "pure")
    return request.param


def parquet(table: pa.Table, **options) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, **options)
    return buf.getvalue()


def bounded(data: bytes, columns=None) -> pa.Table:
    return read_parquet(data, columns, limit=decoded_limit(len(data)))


def series(n: int, keys: int = 5) -> pa.Table:
    return pa.table({
        "key": pa.array([f"metric/{i % keys:05d}" for i in range(n)]),
        "step": pa.array(range(n), pa.int64()),
        "timestamp": pa.array(range(n), pa.int64()).cast(pa.timestamp("us", "UTC")),
        "value": pa.array(np.random.default_rng(n).random(n)),
    })  # fmt: skip


OPTIONS = [
    {},
    {"compression": "zstd"},
    {"compression": "gzip", "use_dictionary": False},
    {"data_page_version": "2.0", "compression": "snappy"},
    {"data_page_size": 512, "row_group_size": 300, "write_page_index": True},
    {"compression": "brotli", "write_statistics": False},
]


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_series_read_back_as_written(options, walk):
    table = series(1000)
    data = parquet(table, **options)
    assert bounded(data).equals(table)
    assert bounded(data, ["key", "value"]).equals(table.select(["key", "value"]))
    assert read_series(data).equals(table)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    keys=st.lists(st.text(max_size=30) | st.none(), min_size=1, max_size=60),
    options=st.sampled_from(OPTIONS),
    nested=st.booleans(),
)
def test_any_table_reads_back_as_pyarrow_reads_it(keys, options, nested):
    columns = {"key": pa.array(keys, pa.string()), "n": pa.array(range(len(keys)), pa.int32())}
    if nested:
        columns["tags"] = pa.array([[k, k] if k is not None else None for k in keys])
    data = parquet(pa.table(columns), **options)
    assert bounded(data).equals(pq.read_table(io.BytesIO(data)))


def test_a_zstd_bomb_is_refused_before_it_inflates(walk):
    n = 8 << 20  # 256 MiB of zeros across four columns, in a few hundred KB
    zeros = pa.table({c: np.zeros(n, dtype=np.int64) for c in ("step", "a", "b", "c")})
    bomb = parquet(zeros, compression="zstd", use_dictionary=False, compression_level=19)
    assert len(bomb) < 1 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ParquetRefused, match="could decode to over"):
        bounded(bomb)
    with pytest.raises(ValueError):  # a series blob, as the index reads it
        read_series(bomb)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 32 << 10  # KiB


def test_one_long_string_repeated_by_its_dictionary_is_refused(walk):
    """A 1 MB dictionary entry indexed 200,000 times: 900 bytes of Parquet, 200 GB as the
    string column a caller would cast it to (its Arrow schema says dictionary)."""
    key = pa.DictionaryArray.from_arrays(pa.array([0] * 200_000, pa.int32()), ["x" * 1_000_000])
    bomb = parquet(pa.table({"key": key}), compression="zstd")
    assert len(bomb) < 10_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ParquetRefused, match="would decode to 200001600000 bytes"):
        bounded(bomb)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 32 << 10


def test_a_series_of_many_keys_is_counted_exactly_not_refused(walk):
    """1,500 metrics x 100 steps: each key could be as long as the whole dictionary (4 GB
    at that bound), so the strings are counted as read: 2.4 MB."""
    table = series(150_000, keys=1500)
    data = parquet(table)
    fixed, spread = check_pages(data, pq.ParquetFile(io.BytesIO(data)), None, 1 << 62)
    assert fixed < decoded_limit(len(data)) < fixed + spread  # the exact count decides
    assert bounded(data).equals(table)


def test_a_dictionary_column_comes_back_plain():
    table = series(100)
    data = parquet(table.set_column(0, "key", table.column("key").dictionary_encode()))
    assert bounded(data).equals(table)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flips=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(1, 255)), max_size=4),
       cut=st.integers(0, 64))  # fmt: skip
def test_damaged_files_read_or_fail_as_value_or_os_errors(flips, cut):
    data = bytearray(parquet(series(200), compression="zstd"))
    for at, bits in flips:
        data[at % len(data)] ^= bits
    data = bytes(data[: len(data) - cut])
    try:
        bounded(data)
    except (ValueError, OSError):  # ParquetRefused, pyarrow's ArrowInvalid / ArrowIOError
        pass


# -- the C page walk (mlvc/_pqpages.c) gives what the Python walk gives ------------------------

_pqpages = pytest.importorskip("mlvc._pqpages")


def both(data: bytes, start: int, end: int, max_header: int, monkeypatch):
    """(C's outcome, Python's): the sums, or "refused"."""
    from mlvc.core import parquet as module

    monkeypatch.setattr(module, "MAX_HEADER", max_header)
    outcomes = []
    for walk in (lambda: _pqpages.walk(data, start, end, max_header),
                 lambda: module._walk_py(data, start, end)):  # fmt: skip
        try:
            outcomes.append(walk())
        except ValueError:  # ParquetRefused is one
            outcomes.append("refused")
    return outcomes


FILES = [parquet(series(300), **o) for o in OPTIONS]


def chunks(data: bytes) -> list[tuple[int, int]]:
    meta = pq.ParquetFile(io.BytesIO(data)).metadata
    out = []
    for g in range(meta.num_row_groups):
        for i in range(meta.num_columns):
            c = meta.row_group(g).column(i)
            start = c.dictionary_page_offset if c.has_dictionary_page else c.data_page_offset
            out.append((start, start + c.total_compressed_size))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    which=st.integers(0, len(FILES) - 1),
    flips=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(1, 255)), max_size=3),
    max_header=st.sampled_from([7, 20, 64, 1 << 24]),
)
def test_the_c_walk_equals_the_python_walk_on_damaged_files(which, flips, max_header, monkeypatch):
    original = FILES[which]
    data = bytearray(original)
    for at, bits in flips:
        data[at % len(data)] ^= bits
    data = bytes(data)
    for start, end in chunks(original):
        c, py = both(data, start, end, max_header, monkeypatch)
        assert c == py, (start, end)


@settings(max_examples=500, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(data=st.binary(max_size=200), max_header=st.integers(1, 300))
def test_the_c_walk_equals_the_python_walk_on_any_bytes(data, max_header, monkeypatch):
    c, py = both(data, 0, len(data), max_header, monkeypatch)
    assert c == py


def test_thrift_edge_cases_walk_alike(monkeypatch):
    def header(*fields: bytes) -> bytes:
        return b"".join(fields) + b"\x00"

    i32 = lambda fid_delta, v: bytes([fid_delta << 4 | 5]) + _zigzag_varint(v)  # noqa: E731
    cases = {
        "sizes": header(i32(1, 0), i32(1, 10), i32(1, 0)),
        "negative size": header(i32(1, 0), i32(1, -1), i32(1, 0)),
        "bool as size": header(i32(1, 0), b"\x11", i32(1, 0)),
        "size then skipped binary keeps it": header(
            i32(1, 0), i32(1, 5), b"\x08\x04\x01x", i32(1, 0)
        ),
        "long field id": header(i32(1, 0), b"\x05\x04" + _zigzag_varint(7), i32(1, 0)),
        "11-byte varint": header(b"\x15" + b"\xff" * 10 + b"\x01"),
        "deep lists": header(i32(1, 0), i32(1, 1), i32(1, 0), b"\x19" + b"\x19" * 40),
        "big list": header(i32(1, 0), i32(1, 1), i32(1, 0), b"\x19\xf5\xff\xff\x03"),
        "data page values": header(i32(1, 0), i32(1, 8), i32(1, 0), b"\x2c" + i32(1, 3) + b"\x00"),
        "dictionary page": header(i32(1, 2), i32(1, 9), i32(1, 0), b"\x4c" + i32(1, 3) + b"\x00"),
        "overflow": header(i32(1, 0), b"\x16" + _zigzag_varint(1 << 62), i32(1, 0)) * 3,
    }
    for name, data in cases.items():
        for max_header in (len(data), 1 << 24):
            c, py = both(data, 0, len(data), max_header, monkeypatch)
            assert c == py, name
    assert both(cases["data page values"], 0, len(cases["data page values"]), 99, monkeypatch)[
        0
    ] == (8, 3, 0)


def _zigzag_varint(v: int) -> bytes:
    n = (v << 1) ^ (v >> 63)
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        if n < 0x80:
            out.append(n)
            return bytes(out)
        out.append(n & 0x7F | 0x80)
        n >>= 7
