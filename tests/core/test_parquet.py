"""mlvc.core.parquet: Parquet bytes from others (a pushed run's series blob) are read back
as they were written, but never inflated past a bound: neither by zstd pages whose headers
claim gigabytes, nor by RLE and dictionary encodings repeating a value millions of times.
The walk of the pages happens before pyarrow inflates any of them."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from memory_peak import peak_growth

from mlvc.core.parquet import (
    ParquetRefused,
    check_pages,
    decoded_limit,
    read_head,
    read_parquet,
)
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
    with peak_growth() as grown:
        with pytest.raises(ParquetRefused, match="could decode to over"):
            bounded(bomb)
        with pytest.raises(ValueError):  # a series blob, as the index reads it
            read_series(bomb)
    assert grown[0] < 32 << 20


def test_one_long_string_repeated_by_its_dictionary_is_refused(walk):
    """A 1 MB dictionary entry indexed 200,000 times: 900 bytes of Parquet, 200 GB as the
    string column a caller would cast it to (its Arrow schema says dictionary)."""
    key = pa.DictionaryArray.from_arrays(pa.array([0] * 200_000, pa.int32()), ["x" * 1_000_000])
    bomb = parquet(pa.table({"key": key}), compression="zstd")
    assert len(bomb) < 10_000
    refused = pytest.raises(ParquetRefused, match="would decode to 200001600000 bytes")
    with peak_growth() as grown, refused:
        bounded(bomb)
    assert grown[0] < 32 << 20


def test_a_series_of_many_keys_is_counted_exactly_not_refused(walk):
    """1,500 metrics x 100 steps: each key could be as long as the whole dictionary (4 GB
    at that bound), so the strings are counted as read: 2.4 MB."""
    table = series(150_000, keys=1500)
    data = parquet(table)
    fixed, spread, _ = check_pages(data, pq.ParquetFile(io.BytesIO(data)), None, 1 << 62)
    spread = sum(spread.values())
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


DAMAGED = [parquet(series(300), **o) for o in OPTIONS[:4]]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, len(DAMAGED) - 1), head=st.booleans(),
       flips=st.lists(st.tuples(st.integers(0, 1 << 16), st.sampled_from([1, 2, 4, 8, 16, 32,
                                                                          64, 128, 255])),
                      min_size=1, max_size=3))  # fmt: skip
def test_a_damaged_footer_is_read_or_refused_and_what_is_read_is_valid(
    which, head, flips, tmp_path_factory
):
    """Bits flipped in the footer (the Thrift metadata every accessor of pyarrow reads, where
    the fuzzer found two aborts and a NotImplementedError): a read with a bound, of the whole
    file or of its head, gives a table that is valid whole, or fails as ValueError or
    OSError. An abort here ends the test worker, which fails the run."""
    data = bytearray(DAMAGED[which])
    footer = int.from_bytes(data[-8:-4], "little") + 8
    for at, bits in flips:
        data[len(data) - 1 - at % footer] ^= bits
    data = bytes(data)
    try:
        if head:
            path = tmp_path_factory.mktemp("damaged") / "f.parquet"
            path.write_bytes(data)
            table = read_head(str(path), 1000, decoded_limit(len(data)))[0]
        else:
            table = bounded(data)
    except (ValueError, OSError):
        return
    if table is not None:
        table.validate(full=True)


def with_codec(codec: int) -> bytes:
    """A zstd Parquet file of one int64 column "x" whose chunk's footer names compression
    codec ``codec`` (parquet.thrift's number): the ColumnMetaData's field 4 (i32 6: 0x15 0x0C)
    follows its path_in_schema (a list of one 1-byte binary: 0x19 0x18 0x01 "x")."""
    data = parquet(pa.table({"x": pa.array(range(50), pa.int64())}), compression="zstd",
                   use_dictionary=False, write_statistics=False)  # fmt: skip
    field = b"\x19\x18\x01x\x15\x0c"
    assert data.count(field) == 1
    return data.replace(field, field[:-1] + bytes([codec << 1]))  # zigzag of a small i32


def read_in_a_subprocess(path, rows: int = 10) -> list[str]:
    """What ``read_parquet`` (with its bound) and ``read_head`` (of ``rows`` rows) of the
    file at ``path`` say,
    each a line: "refused: <why>", "<exception type>: <why>" or "read", read in a process
    of its own: an abort there fails the test, not the test run."""
    script = (
        "import sys\n"
        "from mlvc.core.parquet import ParquetRefused, decoded_limit, read_head, read_parquet\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "for read in (lambda: read_parquet(data, limit=decoded_limit(len(data))),\n"
        "             lambda: read_head(sys.argv[1], int(sys.argv[2]),\n"
        "                               decoded_limit(len(data)))):\n"
        "    try:\n"
        "        read()\n"
        "        print('read')\n"
        "    except ParquetRefused as e:\n"
        "        print('refused:', e)\n"
        "    except (ValueError, OSError) as e:\n"
        "        print(f'{type(e).__name__}: {e}')\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path), str(rows)], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.mark.parametrize("codec", [8, 38, 63])
def test_a_chunk_of_an_unknown_codec_is_refused_not_an_abort(codec, tmp_path):
    """pyarrow's ``compression`` of such a chunk throws a C++ exception nothing catches: the
    process aborted ("Fatal Python error: Aborted", found by the damage test below). It is
    refused from the footer, before pyarrow is asked."""
    path = tmp_path / "bad.parquet"
    path.write_bytes(with_codec(codec))
    said = f"refused: row group 0, column 0 names an unknown compression codec ({codec})"
    assert read_in_a_subprocess(path) == [said, said]


def test_size_statistics_off_the_schema_fail_not_abort(tmp_path):
    """A column made required in the schema whose chunk's size statistics keep the
    histogram of an optional one: pyarrow's ``row_group(g).column(i)`` throws a C++
    exception nothing catches (the process aborted). The chunks are read from the footer
    here; pyarrow's own read then fails as an OSError."""
    data = parquet(pa.table({"x": pa.array([1, None, 3] * 20, pa.int64())}), compression="zstd")
    optional = b"\x25\x02\x18\x01x"  # SchemaElement: repetition_type OPTIONAL, name "x"
    assert data.count(optional) == 1
    path = tmp_path / "bad.parquet"
    path.write_bytes(data.replace(optional, b"\x25\x00\x18\x01x"))  # REQUIRED
    said = read_in_a_subprocess(path)
    assert len(said) == 2 and all("histogram size mismatch" in line for line in said), said


def test_what_pyarrow_does_not_implement_is_refused(tmp_path):
    """A file whose Arrow schema (its ARROW:schema key, base64) pyarrow opens with
    ArrowNotImplementedError (an integer of another width, found by flipping a letter of
    it until pyarrow says so) is refused as ParquetRefused, a ValueError as every other
    damage, not a NotImplementedError its callers do not expect."""
    data = parquet(pa.table({"x": pa.array(range(50), pa.int64())}), compression="gzip")
    meta = pq.ParquetFile(io.BytesIO(data)).metadata.metadata[b"ARROW:schema"]
    at = data.index(meta)
    for i, flip in ((i, f) for i in range(at, at + len(meta)) for f in (8, 32, 64)):
        bad = bytearray(data)
        bad[i] ^= flip
        try:
            pq.ParquetFile(io.BytesIO(bytes(bad)))
        except NotImplementedError:
            break
        except Exception:
            continue
    else:
        pytest.skip("no flip of the Arrow schema makes this pyarrow say NotImplemented")
    path = tmp_path / "bad.parquet"
    path.write_bytes(bytes(bad))
    said = read_in_a_subprocess(path)
    assert len(said) == 2 and all(line.startswith("refused: it is not read here") for line in said)


def test_strings_that_are_not_utf8_are_refused(tmp_path):
    """pyarrow's Parquet reader copies a page's string bytes as they are: a damaged page
    read back as a table of invalid UTF-8, which DuckDB (the index) or ``to_pylist`` then
    failed on (found by the damage fuzzer). The table is checked whole, and refused."""
    words = pa.table({"s": [f"hello{i:03d}" for i in range(50)]})
    data = parquet(words, compression="none", use_dictionary=False, write_statistics=False)
    assert data.count(b"hello007") == 1
    path = tmp_path / "bad.parquet"
    path.write_bytes(data.replace(b"hello007", b"\xff\xfello007"))
    said = read_in_a_subprocess(path, rows=50)
    assert len(said) == 2 and all(
        line.startswith("refused: its values are damaged") for line in said
    ), said


def test_dictionary_indices_past_the_dictionary_are_refused(tmp_path):
    """One bit flipped in the key column's indices (its chunk's second-to-last byte, found
    by the damage fuzzer): pyarrow reads the page's indices as they are, past the
    dictionary, and counting the strings (``take``) raised ArrowIndexError, an IndexError
    (neither ValueError nor OSError) out of a preview's read. Refused now."""
    data = bytearray(parquet(series(300)))  # snappy, the keys dictionary-encoded
    key = pq.ParquetFile(io.BytesIO(bytes(data))).metadata.row_group(0).column(0)
    data[key.dictionary_page_offset + key.total_compressed_size - 2] ^= 2
    data = bytes(data)
    try:  # pyarrow's own read of the keys as indices, the oracle of the damage
        keys = pq.ParquetFile(io.BytesIO(data), read_dictionary=["key"]).read().column("key")
        [chunk.dictionary.take(chunk.indices) for chunk in keys.chunks]
        pytest.skip("this pyarrow's writer laid the page out otherwise: the flip is harmless")
    except IndexError:
        pass
    path = tmp_path / "bad.parquet"
    path.write_bytes(data)
    said = read_in_a_subprocess(path, rows=1000)
    assert said[1].startswith("refused: its dictionary indices are damaged"), said
    assert said[0] != "read", said


@pytest.mark.parametrize(
    "options",
    [
        *OPTIONS,
        {"compression": "lz4", "row_group_size": 40},
        {"compression": "none", "row_group_size": 7},
    ],
    ids=str,
)
def test_the_footers_chunks_are_pyarrows(options):
    """What the footer walk reads of each chunk is what pyarrow reads, for every writer
    option (many row groups, dictionaries, v2 pages, each codec...)."""
    from mlvc.core import parquet as module

    names = {0: "UNCOMPRESSED", 1: "SNAPPY", 2: "GZIP", 4: "BROTLI", 6: "ZSTD", 7: "LZ4"}
    data = parquet(series(300), **options)
    meta = pq.ParquetFile(io.BytesIO(data)).metadata
    chunks = module._chunks(data, meta.num_row_groups, meta.num_columns)
    assert meta.num_row_groups == 1 or len(chunks) == meta.num_row_groups > 1
    for g, group in enumerate(chunks):
        for i, chunk in enumerate(group):
            theirs = meta.row_group(g).column(i)
            assert names[chunk.codec] == theirs.compression
            assert chunk._replace(codec=None) == (
                None,
                theirs.num_values,
                theirs.total_compressed_size,
                theirs.data_page_offset,
                theirs.dictionary_page_offset,
            )


# -- the C page walk (mlvc/_pqpages.c) gives what the Python walk gives ------------------------

_pqpages = pytest.importorskip("mlvc._pqpages")


def both(data: bytes, start: int, end: int, max_header: int, soft: bool = False, rows=-1,
         flat=False):  # fmt: skip
    """(C's outcome, Python's): the sums and end position, or "refused"."""
    from mlvc.core import parquet as module

    outcomes = []
    for walk in (_pqpages.walk, module._walk_py):
        try:
            outcomes.append(walk(data, start, end, max_header, soft, rows, flat))
        except ValueError:
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
    soft=st.booleans(),
    rows=st.sampled_from([-1, 0, 1, 50, 299, 1 << 40]),
    flat=st.booleans(),
)
def test_the_c_walk_equals_the_python_walk_on_damaged_files(
    which, flips, max_header, soft, rows, flat
):
    original = FILES[which]
    data = bytearray(original)
    for at, bits in flips:
        data[at % len(data)] ^= bits
    data = bytes(data)
    for start, end in chunks(original):
        c, py = both(data, start, end, max_header, soft, rows, flat)
        assert c == py, (start, end)


@settings(max_examples=500, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(data=st.binary(max_size=200), max_header=st.integers(1, 300), soft=st.booleans(),
       rows=st.integers(-1, 40), flat=st.booleans())  # fmt: skip
def test_the_c_walk_equals_the_python_walk_on_any_bytes(data, max_header, soft, rows, flat):
    c, py = both(data, 0, len(data), max_header, soft, rows, flat)
    assert c == py


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


def _field(delta: int, kind: int, payload: bytes, fid: int | None = None) -> bytes:
    """One compact-protocol field: a short header (id delta) or, with ``fid``, a long one."""
    if fid is not None:
        return bytes([kind]) + _zigzag_varint(fid) + payload
    return bytes([delta << 4 | kind]) + payload


def _i32(delta: int, v: int, fid: int | None = None) -> bytes:
    return _field(delta, 5, _zigzag_varint(v), fid)


def _header(*fields: bytes) -> bytes:
    return b"".join(fields) + b"\x00"


def _page(size: int, values: int | None = None, encoding: int = 0, kind: int = 5) -> bytes:
    """A page header of ``size`` bytes uncompressed, none stored; with ``values``, a data
    page header (field 5) of that many values in ``encoding``, or (``kind`` 7) a
    dictionary page header."""
    sub = b""
    if values is not None:
        sub = _field(kind - 3, 12, _i32(1, values) + _i32(1, encoding) + b"\x00")
    return _header(_i32(1, 0), _i32(1, size), _i32(1, 0), sub)


EDGES = {
    "sizes": _page(10),
    "negative size": _header(_i32(1, 0), _i32(1, -1), _i32(1, 0)),
    "bool as size": _header(_i32(1, 0), b"\x11", _i32(1, 0)),
    "size then skipped binary keeps it": _header(
        _i32(1, 0), _i32(1, 5), _field(0, 8, b"\x01x", fid=2), _i32(1, 0)
    ),
    "an i64 decoy keeps the i32 size": _header(
        _i32(1, 0), _i32(1, 7 << 20), _field(0, 6, _zigzag_varint(1), fid=2), _i32(1, 0)
    ),
    "an i32 is its low 32 bits": _header(  # 2**33 + 20 as a varint: Thrift keeps 20
        _i32(1, 0), _field(1, 5, bytes([0x94, 0x80, 0x80, 0x80, 0x20])), _i32(1, 0)
    ),
    "a struct decoy keeps the dictionary page": _header(
        _i32(1, 2), _i32(1, 9), _i32(1, 0), _field(4, 12, _i32(1, 3) + b"\x00"), _i32(0, 1, fid=7)
    ),
    "long field id": _header(_i32(1, 0), _i32(0, 7, fid=2), _i32(1, 0)),
    "11-byte varint": _header(b"\x15" + b"\xff" * 10 + b"\x01"),
    "deep lists": _header(_i32(1, 0), _i32(1, 1), _i32(1, 0), b"\x19" + b"\x19" * 40),
    "big list": _header(_i32(1, 0), _i32(1, 1), _i32(1, 0), b"\x19\xf5\xff\xff\x03"),
    "data page values": _page(8, 3),
    "dictionary page": _page(9, 3, kind=7),
    "delta strings": _page(1000, 50, encoding=7),
    "delta overflow": _page(2**31 - 1, 2**31 - 1, encoding=7) * 3,
    "huge field ids": _header(_i32(1, 0), _i32(0, 5, fid=2**63 - 1), *[_i32(15, 1)] * 3),
    # v2 data pages of 9 values each, whose num_rows (field 3: 1000, 5, -1, and an i64
    # decoy) a reader ignores; an INDEX_PAGE (1) and a DICTIONARY_PAGE (2) carrying a v1
    # data page header of 1000 values, which a reader skips or does not read as one
    "v2 pages of values": b"".join(
        _header(
            _i32(1, 3),
            _i32(1, 10 + k),
            _i32(1, 0),
            _field(5, 12, _i32(1, 9) + _i32(2, rows, fid=3 if rows < 0 else None) + b"\x00"),
        )  # fmt: skip
        for k, rows in enumerate([1000, 5, -1, 6])
    )
    + _header(
        _i32(1, 3),
        _i32(1, 99),
        _i32(1, 0),
        _field(5, 12, _i32(1, 9) + _field(2, 6, _zigzag_varint(50)) + b"\x00"),
    ),
    "decoy data pages": b"".join(
        _header(_i32(1, kind), _i32(1, 5), _i32(1, 0), _field(2, 12, _i32(1, 1000) + b"\x00"))
        for kind in (1, 2)
    )
    + _page(7, 1) * 3,
}


@pytest.mark.parametrize("soft", [False, True])
def test_thrift_edge_cases_walk_alike(soft):
    for name, data in EDGES.items():
        for max_header in (len(data), 1 << 24):
            c, py = both(data, 0, len(data), max_header, soft)
            assert c == py, name

    def walked(name: str):
        data = EDGES[name]
        return both(data, 0, len(data), 99)[0]

    assert walked("data page values") == (8, 3, 0, 0, len(EDGES["data page values"]), 0)
    # a dictionary page of 3 values: its size twice, and 24 bytes an entry (F5 below)
    assert walked("dictionary page") == (9 + 9 + 72, 0, 9, 0, len(EDGES["dictionary page"]), 0)
    # 50 values of up to 1000 bytes, and the lengths its own delta header may announce
    delta = 50 * 1000 + 8 * 6554 * 1000
    assert walked("delta strings") == (1000, 50, 0, delta, len(EDGES["delta strings"]), 0)
    assert walked("an i64 decoy keeps the i32 size")[0] == 7 << 20
    assert walked("a struct decoy keeps the dictionary page")[2] == 9
    assert walked("an i32 is its low 32 bits")[0] == 10
    assert walked("delta overflow") == "refused"
    pages = EDGES["v2 pages of values"]
    for rows, end, counted in ((-1, 5, 0), (0, 2, 9), (9, 2, 9), (10, 3, 18), (18, 3, 18),
                               (19, 4, 27), (28, 5, 36), (1 << 40, 5, 45)):  # fmt: skip
        # the walk ends one data page after the values counted reach ``rows``
        c, py = both(pages, 0, len(pages), 99, False, rows, True)
        assert c == py and c[0] == sum([10, 11, 12, 13, 99][:end]) and c[5] == counted, rows
    assert both(pages, 0, len(pages), 99, False, 10)[0][0] == 145  # no rows told: to the end
    decoys = EDGES["decoy data pages"]
    c, py = both(decoys, 0, len(decoys), 99, False, 1, True)  # 1 + the page after
    assert c == py and c[5] == 1 and c[0] == 5 + 5 + 7 + 7
    for flat in (False, True):  # a v1 page counts its values when flat
        values = EDGES["data page values"] * 3
        c, py = both(values, 0, len(values), 99, False, 2, flat)
        assert c == py and c[0] == (16 if flat else 24)


@pytest.mark.parametrize("rows", [-1, 0, 3, 8, 100])
def test_the_c_walk_asks_starts_what_the_python_walk_asks(rows):
    """A column of lists: each data page's rows come from ``starts``, called alike (the
    same arguments, in the same order, while rows are counted) by both walks."""
    pages = b"".join(_page(8, 3) for _ in range(4)) + EDGES["v2 pages of values"]
    outcomes = []
    for walk in (_pqpages.walk, __import__("mlvc.core.parquet").core.parquet._walk_py):
        calls = []

        def starts(*args, calls=calls):
            calls.append(args)
            return len(calls) % 3 - 1  # -1, 0 and 1 rows in turn

        outcomes.append((walk(pages, 0, len(pages), 99, False, rows, False, starts), calls))
    assert outcomes[0] == outcomes[1]
    (sums, calls) = outcomes[0]
    assert (len(calls) > 0) == (rows >= 0) and all(len(c) == 7 for c in calls)
    assert calls[:1] == ([] if rows < 0 else [(calls[0][0], 0, 8, False, 3, -1, 8)])

    def refuse(*_args):
        raise ParquetRefused("no")

    for walk in (_pqpages.walk, __import__("mlvc.core.parquet").core.parquet._walk_py):
        if rows >= 0:
            with pytest.raises(ParquetRefused, match="no"):
                walk(pages, 0, len(pages), 99, False, rows, False, refuse)


# -- bombs a review found (each read back far past the limit before its fix) ------------------


def refused_without_inflating(data, read=None) -> str:
    with peak_growth() as grown, pytest.raises(ParquetRefused) as e:
        (read or bounded)(data)
    assert grown[0] < 48 << 20
    return str(e.value)


def test_delta_byte_array_strings_sharing_a_long_prefix_are_refused(walk):
    """Each value shares all of the previous one: stored once, 335 MB as strings."""
    base = "x" * (1 << 20)
    table = pa.table({"key": pa.array([base] * 320)})
    data = parquet(
        table, use_dictionary=False, column_encoding={"key": "DELTA_BYTE_ARRAY"},
        compression="zstd",
    )  # fmt: skip
    assert len(data) < 100_000
    assert "could decode to over" in refused_without_inflating(data)


def test_string_view_and_decimal_columns_are_counted_as_read(walk):
    view = pa.array(["y" * 1_000_000] * 300, pa.string_view())
    assert "would decode to" in refused_without_inflating(
        parquet(pa.table({"key": view}), compression="zstd")
    )
    cents = pa.array([0] * (6 << 20), pa.decimal128(2, 0))  # 1 byte stored, 16 read
    assert "could decode to over" in refused_without_inflating(
        parquet(pa.table({"value": cents}), compression="zstd", use_dictionary=False)
    )


def head(path, rows: int):
    """``read_head`` of ``rows`` rows at the default bound, and how far it raised the peak
    resident size (KiB)."""
    from mlvc.core.parquet import read_head

    with peak_growth() as grown:
        table, _schema, meta = read_head(str(path), rows, decoded_limit(path.stat().st_size))
    return table, meta, grown[0] >> 10


@pytest.mark.parametrize("version", ["1.0", "2.0"])
@pytest.mark.parametrize("page", [1 << 20, 1 << 30], ids=["pages", "one-page"])
def test_a_preview_reads_only_the_pages_its_rows_are_in(tmp_path, walk, page, version):
    """The first batch of 50 rows fills itself from row group 1: a 1-row group, then 8M
    zeros (64 MiB decoded, 8 KB stored). Of those it reads (and counts) the pages its rows
    are in, and one more: 1 MiB pages give the head (the whole group was once refused); all
    of them in one page is refused before that page inflates."""
    path = tmp_path / "t.parquet"
    schema = pa.schema([("x", pa.int64())])
    options = {"compression": "zstd", "use_dictionary": False, "data_page_version": version}
    pages = {"data_page_size": page, "max_rows_per_page": page}  # 20k rows at most else
    with pq.ParquetWriter(path, schema, **pages, **options) as w:
        w.write_table(pa.table({"x": [7]}, schema=schema))
        zeros = pa.table({"x": np.zeros(8 << 20, dtype=np.int64)}, schema=schema)
        w.write_table(zeros, row_group_size=16 << 20)  # one group
    del zeros
    table, meta, _ = head(path, 1)
    assert table.to_pylist() == [{"x": 7}] and meta.num_rows == 1 + (8 << 20)
    if page == 1 << 30:
        assert "could decode to over" in refused_without_inflating(path, lambda p: head(p, 50))
        return
    table, meta, grew = head(path, 50)
    assert table.column("x").to_pylist() == [7] + [0] * 49
    assert grew < 32 << 10  # KiB: the group decoded is 64 MiB


def tokens(rows: int, width: int, seed: int = 0) -> pa.Table:
    """A tokenized dataset as Hugging Face's ``datasets`` saves one: ids padded to
    ``width`` with zeros, an attention mask, a label."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((rows, width), np.int32)
    for i, k in enumerate(rng.integers(10, width // 4, rows)):
        ids[i, :k] = rng.integers(1000, 30000, k)
    flat = pa.array(ids.ravel())
    return pa.table({
        "input_ids": pa.FixedSizeListArray.from_arrays(flat, width).cast(pa.list_(pa.int32())),
        "attention_mask": pa.FixedSizeListArray.from_arrays(
            pa.array((ids.ravel() != 0).astype(np.int8)), width
        ).cast(pa.list_(pa.int8())),
        "label": pa.array(rng.integers(0, 2, rows)),
    })  # fmt: skip


@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_a_padded_tokenized_dataset_previews_its_head(tmp_path, walk, version):
    """10k rows of 2048 padded token ids in one row group: 72x the file's size decoded, so
    walking the whole group refused it. Lists' rows are where their repetition levels say
    one starts (v1 pages, read inflated) or as a v2 page header counts them."""
    table = tokens(10_000, 2048)
    path = tmp_path / "tokens.parquet"
    pq.write_table(table, path, compression="zstd", row_group_size=10_000,
                   data_page_version=version)  # fmt: skip
    with pytest.raises(ParquetRefused):  # the whole group: what a preview once walked
        check_pages(path.read_bytes(), pq.ParquetFile(path), None,
                    decoded_limit(path.stat().st_size))  # fmt: skip
    got, meta, grew = head(path, 20)
    assert got.equals(table.slice(0, 20)) and meta.num_rows == 10_000
    assert grew < 32 << 10


@pytest.mark.parametrize(
    "cap", [None, ("MAX_RUNS", 10), ("MAX_TOLD_PAGES", 1)], ids=["", "few-runs", "one-page"]
)
@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_a_row_of_lists_spanning_pages_is_counted_to_its_end(
    tmp_path, walk, version, cap, monkeypatch
):
    """The first row is one list of 8M zeros: v1 pages split it (no page holds a row
    start until the second row), so all of them are what a reader of one row inflates.
    Past MAX_RUNS runs of levels or MAX_TOLD_PAGES pages, pages are no longer told (a bound
    on a preview's CPU): counted all the same."""
    if cap:
        monkeypatch.setattr(f"mlvc.core.parquet.{cap[0]}", cap[1])
    path = tmp_path / "long.parquet"
    long = pa.array([np.zeros(8 << 20, np.int64), [1]], pa.list_(pa.int64()))
    pq.write_table(pa.table({"x": long}), path, compression="zstd", use_dictionary=False,
                   data_page_version=version)  # fmt: skip
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).total_uncompressed_size > 8 << 20
    assert "could decode to over" in refused_without_inflating(path, lambda p: head(p, 1))


LISTS = st.lists(  # lists of 8 or more: bit-packed groups of a byte >= 0x80
    st.none() | st.lists(st.none() | st.lists(st.integers(0, 3), max_size=5), max_size=40),
    min_size=1,
    max_size=150,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lists=LISTS, options=st.sampled_from(OPTIONS), deep=st.booleans())
@example(  # runs of 99 levels (a run's header byte >= 0x80) in pages of the default size
    lists=[[[1]] * 100] * 5,
    options={"compression": "zstd", "data_page_size": 1 << 20, "write_batch_size": 1024},
    deep=True,
)
def test_a_v1_pages_rows_are_told_by_its_repetition_levels(lists, options, deep):
    """Each row starts once: over a chunk's pages, the rows ``_RowStarts`` tells (read from
    each v1 page inflated, or a v2 page's head; levels 1 or 2 bits wide) add up to the
    group's rows."""
    from mlvc.core import parquet as module

    kind = pa.list_(pa.list_(pa.int8())) if deep else pa.list_(pa.int8())
    if not deep:
        lists = [None if x is None else [len(y or ()) for y in x] for x in lists]
    data = parquet(pa.table({"x": pa.array(lists, kind)}),
                   **{"data_page_size": 64, "write_batch_size": 7, **options})  # fmt: skip
    reader = pq.ParquetFile(io.BytesIO(data))
    repeated = reader.schema.column(0).max_repetition_level
    chunks = module._chunks(data, reader.metadata.num_row_groups, 1)
    for g in range(reader.metadata.num_row_groups):
        chunk = reader.metadata.row_group(g).column(0)
        told = module._RowStarts(data, chunks[g][0].codec, repeated, 1 << 40, [0, 0, 0], 1 << 40)
        seen: list[int] = []
        start = chunk.dictionary_page_offset if chunk.has_dictionary_page else None
        start = start or chunk.data_page_offset
        end = start + chunk.total_compressed_size

        def record(*page, told=told, seen=seen) -> int:
            seen.append(told(*page))
            return seen[-1]

        module._walk_py(data, start, end, 1 << 24, False, 1 << 62, False, record)
        assert sum(seen) == reader.metadata.row_group(g).num_rows


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lists=st.lists(
        st.none() | st.lists(st.none() | st.lists(st.integers(0, 3), max_size=5), max_size=6),
        min_size=1,
        max_size=300,
    ),
    rows=st.integers(1, 320),
    options=st.sampled_from(OPTIONS),
)
def test_any_preview_is_the_tables_head(tmp_path_factory, lists, rows, options):
    """Lists of lists (repetition levels of 2 bits, bit-packed and run-length) in small
    pages: the head read is the table's head."""
    table = pa.table({"x": pa.array(lists, pa.list_(pa.list_(pa.int8()))),
                      "n": pa.array(range(len(lists)))})  # fmt: skip
    path = tmp_path_factory.mktemp("head") / "t.parquet"
    pq.write_table(table, path, **{"data_page_size": 64, "write_batch_size": 7, **options})
    got, meta, _ = head(path, rows)
    assert got.equals(table.slice(0, rows)) and meta.num_rows == len(lists)


# -- what a second review crafted against the preview's page walk (each read back 8-32x the
# limit, or took 18-36 s of CPU, before its fix) --------------------------------------------

BOMB = 64 << 20  # zeros: 512 MiB decoded as int64, ~16 KB stored


def crafted(tmp_path, data: bytes):
    path = tmp_path / "crafted.parquet"
    path.write_bytes(data)
    return path


def refused_head(path, rows: int = 50) -> str:
    return refused_without_inflating(path, lambda p: head(p, rows))


@pytest.mark.parametrize("how", ["v2", "v1 with a v2 header", "lists"])
def test_a_pages_claimed_rows_are_not_what_it_holds(tmp_path, walk, how):
    """A reader reads a page by its values: the rows a v2 header claims (1000, holding 1)
    end nothing, and the 512 MiB page after the next is counted."""
    from parquet_craft import int64s, leaf, parquet_file, v1_page, v2_page, varint

    if how == "lists":  # ``repeated int64 x``: levels say one row starts in each page

        def page(n, raw, rows):
            rep = varint(2) + b"\x00" + (varint((n - 1) << 1) + b"\x01" if n > 1 else b"")
            return v2_page(raw, n, rows, rep=rep, defs=varint(n << 1) + b"\x01")

        pages = page(1, int64s(1, 7), 1000) + page(1, int64s(1), 1) + page(BOMB, int64s(BOMB), 1)
        element = leaf("x", 2, 2)
    else:
        claim = [(8, "struct", [(1, "i32", 1), (3, "i32", 1000)])]
        first = (
            v2_page(int64s(1, 7), 1, 1000) if how == "v2" else v1_page(int64s(1, 7), 1, extra=claim)
        )
        pages = first + v2_page(int64s(1), 1, 1) + v2_page(int64s(BOMB), BOMB, BOMB)
        element = leaf("x", 2)
    path = crafted(tmp_path, parquet_file([[(pages, BOMB + 2)]], [BOMB + 2], [element]))
    assert "could decode to over" in refused_head(path)


@pytest.mark.parametrize("kind", [1, 2], ids=["index page", "dictionary page"])
def test_a_page_of_another_type_carrying_a_data_header_counts_no_rows(tmp_path, walk, kind):
    """An INDEX_PAGE (skipped by a reader) or the DICTIONARY_PAGE carrying a v1 data page
    header of 1000 values: pages are told by their type."""
    from parquet_craft import dictionary_page, int64s, leaf, parquet_file, thrift, v1_page

    decoy = [(5, "struct", [(1, "i32", 1000), (2, "i32", 0), (3, "i32", 3), (4, "i32", 3)])]
    if kind == 1:
        first = thrift([(1, "i32", 1), (2, "i32", 0), (3, "i32", 0), *decoy])
        second = v1_page(int64s(1, 8), 1)
    else:
        first = dictionary_page(int64s(1, 42), 1, extra=decoy)
        second = v1_page(b"\x01\x02\x00", 1, encoding=8)  # one index: 0
    pages = first + second + v1_page(int64s(BOMB), BOMB)
    path = crafted(tmp_path, parquet_file([[(pages, BOMB + 1)]], [BOMB + 1], [leaf("x", 2)]))
    assert "could decode to over" in refused_head(path)


def test_a_row_group_holding_fewer_rows_than_the_footer_says(tmp_path, walk):
    """Group 0 claims 49 rows and holds 1: the batch fills from group 1, whose pages are
    counted for as many rows as the preview shows (1, 1, then the 512 MiB page)."""
    from parquet_craft import int64s, leaf, parquet_file, v1_page

    late = v1_page(int64s(1, 8), 1) + v1_page(int64s(1, 9), 1) + v1_page(int64s(BOMB), BOMB)
    data = parquet_file([[(v1_page(int64s(1, 7), 1), 49)], [(late, BOMB + 2)]], [49, BOMB + 2],
                        [leaf("x", 2)])  # fmt: skip
    assert "could decode to over" in refused_head(crafted(tmp_path, data))


@pytest.mark.parametrize("binary", [False, True], ids=["fixed-1-byte", "empty-strings"])
def test_a_dictionary_of_many_tiny_entries_counts_what_a_reader_keeps_of_each(
    tmp_path, walk, binary
):
    """60M one-byte (or 15M empty-string) dictionary entries in 2 KB: a reader keeps a
    pointer and a length per entry (8.9x the limit); a preview and a series read refuse."""
    from parquet_craft import dictionary_page, leaf, parquet_file, v1_page, varint

    n = 15_000_000 if binary else 60_000_000
    raw = bytes(4 * n) if binary else bytes(n)
    indices = v1_page(b"\x01" + varint(50 << 1) + b"\x00", 50, encoding=8)
    element = leaf("x", 6) if binary else leaf(
        "x", 7, 0, (6, "i32", 5), (7, "i32", 0), (8, "i32", 2))  # fmt: skip
    if not binary:
        element.insert(1, (2, "i32", 1))  # type_length 1: decimal(2, 0)
    data = parquet_file([[(dictionary_page(raw, n) + indices, 50)]], [50], [element])
    assert "could decode to over" in refused_head(crafted(tmp_path, data))
    assert "could decode to over" in refused_without_inflating(data)


def test_telling_the_rows_of_pages_of_lists_costs_a_bounded_cpu(tmp_path, monkeypatch):
    """Two columns of 4M repetition levels, each its own run (2 bytes a level, a few KB
    zstd): no row starts, so every level was decoded in Python, ~18 s. Runs decoded in a
    read stop at MAX_RUNS; pages told at MAX_TOLD_PAGES."""
    import struct

    from parquet_craft import leaf, parquet_file, v1_page, varint

    from mlvc.core import parquet as module

    n = 1 << 22
    rep, defs = b"\x02\x01" * n, varint(n << 1) + b"\x01"
    raw = struct.pack("<I", len(rep)) + rep + struct.pack("<I", len(defs)) + defs
    leaves = [leaf(f"c{i}", 0, 2) for i in range(2)]  # ``repeated boolean``
    path = crafted(tmp_path, parquet_file([[(v1_page(raw, n), n)] * 2], [1000], leaves))
    runs = [0]
    varint_ = module._varint

    def counted(b, pos):
        runs[0] += 1
        return varint_(b, pos)

    monkeypatch.setattr(module, "_varint", counted)
    with pytest.raises((ParquetRefused, OSError)):
        head(path, 50)
    assert module.MAX_RUNS <= runs[0] <= module.MAX_RUNS + 100  # of 8M
    told = []
    monkeypatch.setattr(module, "MAX_TOLD_PAGES", 5)
    zeros = module._zeros
    monkeypatch.setattr(module, "_zeros", lambda *a: told.append(1) or zeros(*a))
    tiny = pa.table({"x": pa.array([[1]] * 300, pa.list_(pa.int8()))})
    path = tmp_path / "tiny.parquet"
    pq.write_table(tiny, path, data_page_size=1, write_batch_size=1, compression="zstd")
    got, _, _ = head(path, 300)
    assert got.equals(tiny) and len(told) == 5


def test_a_preview_of_dictionary_strings_across_groups_shows_every_row_asked(tmp_path, walk):
    """A batch of dictionary-read strings ends where its row group does: the preview reads
    on to the rows asked (it showed 10 of 25)."""
    table = pa.table({"s": [f"row {i}" for i in range(100)], "n": list(range(100))})
    path = tmp_path / "groups.parquet"
    pq.write_table(table, path, row_group_size=10)
    got, meta, _ = head(path, 25)
    assert got.equals(table.slice(0, 25)) and meta.num_row_groups == 10


def test_a_page_of_many_rows_of_lists_counts_the_levels_of_the_rows_shown(tmp_path, walk):
    """60k blank 28x28 images as lists: one page of 47M levels, 16 KB stored. A reader of
    50 rows decodes their levels only (0.6 MiB measured), so that is what counts (the whole
    page's values once refused it); 50 rows of a million zeros each are refused."""
    images = pa.table({"pixels": pa.array([np.zeros(784, np.uint8)] * 60_000, pa.list_(pa.uint8())),
                       "label": np.zeros(60_000, np.int64)})  # fmt: skip
    path = tmp_path / "images.parquet"
    pq.write_table(images, path)
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).num_values == 47_040_000
    got, _, grew = head(path, 50)
    assert got.equals(images.slice(0, 50)) and grew < 32 << 10
    big = pa.table({"x": pa.array([np.zeros(1 << 20, np.uint8)] * 60, pa.list_(pa.uint8()))})
    path = tmp_path / "big-rows.parquet"
    pq.write_table(big, path, compression="zstd")
    assert "could decode to over" in refused_head(path)
    got, _, _ = head(path, 2)  # 2 rows of a million bytes: within the bound
    assert got.equals(big.slice(0, 2))


def test_zeros_says_where_the_row_after_the_last_wanted_starts():
    """``_zeros``'s ``stop``: within a run of zeros, the values up to that zero; in a
    bit-packed run, up to the run's end (a bound the reader stays within)."""
    from mlvc.core.parquet import _zeros

    run_of_ones, run_of_zeros = bytes([8 << 1, 1]), bytes([10 << 1, 0])
    packed = bytes([1 << 1 | 1, 0b10110110])  # one group: 0 1 1 0 1 1 0 1 (LSB first)
    levels = run_of_ones + run_of_zeros + packed
    assert _zeros(levels, 1, 26, [0, 0, 0]) == (13, None)
    assert _zeros(levels, 1, 26, [0, 0, 0], stop=3) == (10, 8 + 3)  # the runs after: unread
    assert _zeros(levels, 1, 26, [0, 0, 0], stop=11) == (13, 26)  # in the bit-packed group
    assert _zeros(levels, 1, 26, [0, 0, 0], stop=14) == (13, None)
    wide = bytes([1 << 1 | 1]) + (0b_01_00_10_00_00_01_11_01).to_bytes(2, "little")  # 2 bits
    assert _zeros(wide, 2, 8, [0, 0, 0], stop=3) == (3, 8)


# -- a third review's (read back 7-20x the limit, or 10-34 s of CPU, before its fix) ---------


@pytest.mark.parametrize("prefix", ["", " ", "\t", "\n"], ids=["", "space", "tab", "newline"])
def test_a_page_in_the_bytes_read_past_an_old_parquet_mr_chunk_is_counted(walk, prefix):
    """Arrow reads 100 bytes past a chunk of an old parquet-mr (PARQUET-816), whatever
    whitespace comes before the name: a 35-byte page of 100M nulls there (205 bytes read
    back as 1.36 GB, 20x the limit, with a leading space)."""
    import struct

    from parquet_craft import leaf, parquet_file, thrift, varint

    def page(values: int, raw: bytes) -> bytes:
        sub = [(1, "i32", values), (2, "i32", 0), (3, "i32", 3), (4, "i32", 3)]
        return thrift([(1, "i32", 0), (2, "i32", len(raw)), (3, "i32", len(raw)),
                       (5, "struct", sub)]) + raw  # fmt: skip

    n = 100_000_000
    one, nulls = varint(2) + b"\x01", varint(n << 1) + b"\x00"
    first = page(1, struct.pack("<I", len(one)) + one + struct.pack("<q", 7))
    bomb = page(n, struct.pack("<I", len(nulls)) + nulls)
    data = parquet_file([[(first, 2)]], [n], [leaf("x", 2, 1)], codec=None, after=bomb,
                        created_by=prefix + "parquet-mr version 1.2.8")  # fmt: skip
    assert "could decode to over" in refused_without_inflating(data)


def test_levels_and_bitmaps_of_deep_structs_are_counted(walk):
    """98 optional structs around an all-null boolean: a reader keeps a 16-bit level per
    value and a validity bitmap per struct (1.8 KB read back as 7x the limit)."""
    import struct

    from parquet_craft import group, leaf, parquet_file, thrift, varint

    depth, n = 98, 30_000_000
    levels = varint(n << 1) + bytes([depth])
    raw = struct.pack("<I", len(levels)) + levels
    sub = [(1, "i32", n), (2, "i32", 0), (3, "i32", 3), (4, "i32", 3)]
    page = thrift([(1, "i32", 0), (2, "i32", len(raw)), (3, "i32", len(raw)), (5, "struct", sub)])
    schema = [group(f"s{d}", 1) for d in range(depth)] + [leaf("b", 0, 1)]
    data = parquet_file([[(page + raw, n)]], [n], [leaf("b", 0, 1)], codec=None, schema=schema,
                        paths=[[f"s{d}" for d in range(depth)] + ["b"]])  # fmt: skip
    assert "could decode to over" in refused_without_inflating(data)


def test_column_chunks_that_share_bytes_are_refused(tmp_path, walk):
    """2,000 row groups pointing at one chunk of 50,000 empty pages: each walked again
    (10 s of CPU for 1.35 MB). A file's chunks never overlap."""
    from parquet_craft import leaf, parquet_file, thrift

    sub = [(1, "i32", 0), (2, "i32", 0), (3, "i32", 3), (4, "i32", 3)]
    empty = thrift([(1, "i32", 0), (2, "i32", 0), (3, "i32", 0), (5, "struct", sub)])
    groups = [[(empty * 5000, 0)]] + [[(b"", 0)]] * 1999
    shared = parquet_file(groups, [0] * 2000, [leaf("x", 2)], shared=True)
    with pytest.raises(ParquetRefused, match="column chunks overlap"):
        read_parquet(shared, limit=decoded_limit(len(shared)))
    assert "column chunks overlap" in refused_head(crafted(tmp_path, shared))
    apart = parquet_file([[(empty * 5000, 0)]] * 2, [0, 0], [leaf("x", 2)])
    assert bounded(apart).num_rows == 0  # the same pages in chunks of their own: read


def test_a_long_bit_packed_run_is_read_as_far_as_its_values_are_counted():
    """A page of 1 value whose levels are one 1 MB bit-packed run: only the byte of that
    value is decoded (the run was converted whole, 3.4 ms a MB, at every page told)."""
    from mlvc.core.parquet import _zeros

    run = bytes([0xFF, 0xFF, 0x03]) + bytes(1 << 20)  # header: 2**17 - 1 groups of 8
    spent = [0, 0, 0]
    assert _zeros(run, 1, 1, spent) == (1, None) and spent[2] == 1


# -- a fourth review's (2 GB from 194 bytes; 3.7x the limit from the footer alone) -----------


@pytest.mark.parametrize("encoding", [6, 7], ids=["DELTA_LENGTH_BYTE_ARRAY", "DELTA_BYTE_ARRAY"])
def test_delta_string_lengths_are_counted_as_their_own_header_announces(tmp_path, walk, encoding):
    """A page of 10 values whose delta header announces 500M lengths, in blocks of bit
    width 0 (5 bytes a block of 32768): a reader decodes every one, 4 bytes each, whatever
    the page header says (194 bytes read back as 2.0 GB)."""
    from parquet_craft import leaf, parquet_file, v1_page, varint

    total, block = 500_000_000, 32768
    header = varint(block) + varint(4) + varint(total) + varint(2)
    body = header + (varint(0) + bytes(4)) * -(-(total - 1) // block)
    data = parquet_file([[(v1_page(body, 10, encoding=encoding), 10)]], [10], [leaf("x", 6)])
    assert len(data) < 1000
    assert "could decode to over" in refused_without_inflating(data)
    assert "could decode to over" in refused_head(crafted(tmp_path, data))


def test_a_footer_that_decodes_past_the_limit_is_refused_before_it_is_read(tmp_path):
    """300,000 column chunks of 3 bytes each (only an offset): a reader builds ~720 bytes
    of objects for each, before any page is looked at (900 KB: 3.3x the limit in RSS)."""
    import struct

    from parquet_craft import thrift, varint

    n = 300_000
    chunks = b"\x19" + bytes([0xFC]) + varint(n) + b"\x26\x00\x00" * n
    group = chunks + b"\x16\x00\x16\x02\x00"
    schema = [
        [(4, "bin", "schema"), (5, "i32", 1)],
        [(1, "i32", 2), (3, "i32", 0), (4, "bin", "x")],
    ]
    footer = thrift([(1, "i32", 1), (2, "list", ("struct", schema)), (3, "i64", 1)])[:-1]
    footer += b"\x19\x1c" + group + b"\x00"
    data = b"PAR1" + footer + struct.pack("<I", len(footer)) + b"PAR1"
    assert "footer could decode" in refused_without_inflating(data)
    assert "footer could decode" in refused_head(crafted(tmp_path, data))
    assert bounded(parquet(series(1000))).num_rows == 1000  # an ordinary footer: read


def test_a_run_of_levels_is_read_no_further_than_the_bytes_a_read_has_left(monkeypatch):
    """After 2**18 - 1 tiny runs, one bit-packed run of 60 MB was converted whole (2.3 s of
    CPU and 4x the limit in RSS for a 2 KB file): a run now reads what MAX_BYTES leaves."""
    from mlvc.core import parquet as module

    monkeypatch.setattr(module, "MAX_BYTES", 1000)
    run = bytes([0xFF, 0xFF, 0x03]) + b"\xff" * (1 << 20)  # 2**17 - 1 groups of 8 ones
    spent = [0, 0, 990]
    assert module._zeros(run, 1, 1 << 20, spent) == (0, None) and spent[2] == 1000


# -- a fifth review's (a 101-byte file aborted the preview's process; field ids past 16
# bits hid a page's real size: 4-12x the limit) ---------------------------------------------


def test_a_file_of_no_columns_and_many_rows_previews_as_nothing(tmp_path):
    """pyarrow made every empty batch of 2**62 rows at once: std::bad_alloc, SIGABRT."""
    import subprocess
    import sys

    from parquet_craft import parquet_file

    path = crafted(tmp_path, parquet_file([[]], [1 << 62], []))
    code = ("import sys; from mlvc.core.parquet import read_head, decoded_limit\n"
            "t, s, m = read_head(sys.argv[1], 50, decoded_limit(1 << 20))\n"
            "print(t, len(s), m.num_rows)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0 and out.stdout.split() == ["None", "0", str(1 << 62)], out.stderr


@pytest.mark.parametrize("what", ["size", "values"])
def test_a_field_id_past_16_bits_is_the_field_the_reader_takes(tmp_path, walk, what):
    """Thrift's reader keeps 16 bits of a field id: 65538 is the page's uncompressed size
    (65537 its values), after the 80 the walk read (8 KB → a 256 MiB page inflated)."""
    from parquet_craft import leaf, parquet_file, thrift

    big = 1 << 28
    body = pa.compress(bytes(big), codec="zstd", asbytes=True)
    extra_size = [(65538, "i32", big)] if what == "size" else []
    extra_values = [(65537, "i32", big // 8)] if what == "values" else []
    sub = [(1, "i32", 10), (2, "i32", 0), (3, "i32", 3), (4, "i32", 3), *extra_values]
    size = 80 if what == "size" else big
    header = [(1, "i32", 0), (2, "i32", size), (3, "i32", len(body)), *extra_size,
              (5, "struct", sub)]  # fmt: skip
    data = parquet_file([[(thrift(header) + body, 10)]], [10], [leaf("x", 2)])
    assert "could decode to over" in refused_without_inflating(data)
    c, py = both(data, 4, 4 + len(thrift(header)) + len(body), 1 << 24)
    assert c == py and c[0] == big and c[1] == (big // 8 if what == "values" else 10)


def test_a_decoder_out_of_memory_is_a_refusal(tmp_path):
    """40 columns of a DELTA_BINARY_PACKED page each, whose header asks for 134M
    mini-blocks: pyarrow reserves a byte each per column (5.4 GB), and under an address-space
    limit its MemoryError was no refusal."""
    import subprocess
    import sys

    from parquet_craft import leaf, parquet_file, v1_page, varint

    body = varint(4294967168) + varint(134217724) + varint(1) + varint(14)
    page = v1_page(body, 1, codec=None, encoding=5)
    data = parquet_file([[(page, 1)] * 40], [1], [leaf(f"c{k}", 1) for k in range(40)],
                        codec=None)  # fmt: skip
    path = crafted(tmp_path, data)
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))\n"
            "from mlvc.core.parquet import ParquetRefused, read_parquet, decoded_limit\n"
            "data = open(sys.argv[1], 'rb').read()\n"
            "try:\n    read_parquet(data, limit=decoded_limit(len(data)))\n"
            "except ParquetRefused as e:\n    print('refused:', e)\n"
            "except (ValueError, OSError) as e:\n    print('failed:', e)\n")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0 and out.stdout.startswith(("refused:", "failed:")), out.stderr


# -- pages of delta-encoded strings: read by what their own delta headers announce ----------


@pytest.mark.parametrize("encoding", ["DELTA_LENGTH_BYTE_ARRAY", "DELTA_BYTE_ARRAY"])
@pytest.mark.parametrize("version", ["1.0", "2.0"])
@pytest.mark.parametrize("codec", ["zstd", "lz4"])  # lz4: pyarrow names LZ4_RAW "LZ4"
def test_delta_encoded_strings_are_read_and_previewed(tmp_path, walk, encoding, version, codec):
    """Spark's v2 writer stores strings so: they were refused unless tiny (each page counted
    at the most lengths any header could announce), in a preview and in a series read."""
    keys = [f"user/{i:08d}/event-{i % 97}" for i in range(20_000)]
    tables = {
        "k": pa.table({"k": keys}),
        "k-nulls": pa.table({"k": [None if i % 5 == 0 else k for i, k in enumerate(keys)]}),
        "k.list.element": pa.table({"k": [[k, k[::-1]] for k in keys[:5000]]}),
    }
    for leaf_path, table in tables.items():
        data = parquet(table, use_dictionary=False, column_encoding={leaf_path.replace(
            "-nulls", ""): encoding}, data_page_version=version, compression=codec)  # fmt: skip
        meta = pq.ParquetFile(io.BytesIO(data)).metadata
        assert encoding in meta.row_group(0).column(0).encodings  # written as asked
        assert bounded(data).equals(table)
        shown, _meta, _rss = head(crafted(tmp_path, data), 25)
        assert shown.slice(0, 25).equals(table.slice(0, 25))


_delta_c = getattr(_pqpages, "delta", None)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(-(2**31), 2**31 - 1) | st.integers(0, 40), max_size=700),
    st.sampled_from([(128, 4), (128, 1), (256, 2), (512, 16)]),
)
def test_a_delta_stream_reads_back_its_values_in_c_and_python(values, shape):
    """(values, mini-blocks a block, the stream's end, the sum of those above 0): what a
    DELTA_BYTE_ARRAY page's prefix lengths make a reader build is counted from them."""
    from parquet_craft import delta_packed

    from mlvc.core.parquet import _delta_py

    stream = delta_packed(values, *shape) + b"tail"
    want = (len(values), shape[1], len(stream) - 4, sum(v for v in values if v > 0))
    assert _delta_py(stream, 0, True) == want == _delta_c(stream, 0, True)
    header = _delta_py(stream, 0, False)
    assert header[:2] == want[:2] and header == _delta_c(stream, 0, False)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.booleans())
@example(bytes([0x80, 0x01, 0x04, 0x05, 0x02, 0x00, 0x21, 0x01, 0xFF]), True)  # width 33
@example(bytes([0x80, 0x01, 0x04, 0x80, 0x80, 0x80, 0x80, 0x10, 0x02]), False)  # 2**32
def test_c_and_python_read_any_delta_bytes_alike(data, decode):
    from mlvc.core.parquet import _delta_py

    outcomes = []
    for read in (_delta_c, _delta_py):
        try:
            outcomes.append(read(data, 0, decode))
        except ValueError:
            outcomes.append("refused")
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("encoding", [6, 7], ids=["DELTA_LENGTH_BYTE_ARRAY", "DELTA_BYTE_ARRAY"])
def test_delta_lengths_announced_in_one_block_are_counted(tmp_path, walk, encoding):
    """500M lengths of width 0 in a single block of 500M values: a 178-byte file that
    pyarrow read back as 2.0 GB past the bound (its count was the page's size times the
    lengths a block of 32768 could hold)."""
    from parquet_craft import leaf, parquet_file, v1_page, varint

    total = 500_000_000
    body = varint(total) + varint(1) + varint(total) + varint(2) + varint(0) + b"\x00"
    data = parquet_file([[(v1_page(body, 10, encoding=encoding), 10)]], [10], [leaf("x", 6)])
    assert len(data) < 200
    assert "could decode to over" in refused_without_inflating(data)
    assert "could decode to over" in refused_head(crafted(tmp_path, data))


def test_a_delta_headers_mini_blocks_are_counted(walk):
    """A header of 2**26 mini-blocks a block: the reader reserves a byte each for their bit
    widths (64 MiB a page, from 16 bytes)."""
    from parquet_craft import leaf, parquet_file, v1_page, varint

    body = varint(1 << 31) + varint(1 << 26) + varint(1) + varint(2)
    data = parquet_file([[(v1_page(body, 1, encoding=6) * 2, 2)]], [2], [leaf("x", 6)])
    assert "could decode to over" in refused_without_inflating(data)


def test_prefix_lengths_past_what_a_read_decodes_are_refused(walk, monkeypatch):
    from mlvc.core import parquet as module

    table = pa.table({"k": [f"key-{i:06d}" for i in range(5000)]})
    data = parquet(table, use_dictionary=False, column_encoding={"k": "DELTA_BYTE_ARRAY"})
    assert bounded(data).equals(table)
    monkeypatch.setattr(module, "MAX_DELTA_VALUES", 4000)
    assert "cannot be bounded" in refused_without_inflating(data)


def test_parquet_mr_delta_chunks_are_read_past_their_padding(walk):
    """parquet-mr files are read 100 bytes past each chunk: the next chunk's first page
    begins there, its body past what is read (it keeps nothing; it was counted at the most
    its header could announce, refusing any file of two such columns)."""
    from parquet_craft import delta_packed, leaf, parquet_file, v1_page

    strings = [f"value-{i}".encode() for i in range(20_000)]
    raw = delta_packed([len(s) for s in strings]) + b"".join(strings)
    page = (v1_page(raw, len(strings), encoding=6), len(strings))
    data = parquet_file([[page, page]], [len(strings)], [leaf("x", 6), leaf("y", 6)],
                        created_by="parquet-mr version 1.13.1")  # fmt: skip
    assert bounded(data).column("y").to_pylist() == strings


# -- a fifth review's (review7: 57 KB read back as 1 GiB; 2x the count in values) -------------


def test_a_struct_field_given_twice_is_read_into_the_first():
    """Thrift's reader reads a struct field given twice into the first: the fields the
    second leaves out stay (the walks kept the second alone: 0 values here, not 7)."""
    from parquet_craft import thrift

    header = thrift([(1, "i32", 0), (2, "i32", 10), (3, "i32", 10),
                     (5, "struct", [(1, "i32", 7), (2, "i32", 0)]),
                     (5, "struct", [(2, "i32", 6)])])  # fmt: skip
    data = header + bytes(10)
    c, py = both(data, 0, len(data), 1 << 24)
    assert c == py and c[1] == 7 and c[3] > 0  # its values, and counted as delta strings


def test_a_v2_page_said_uncompressed_then_not_is_read_as_stored(walk):
    """The first v2 header of the page says is_compressed false, a second leaves it out:
    Arrow reads the values as stored (here 2**26 lengths announced: 256 MiB), and the
    page's walk inflated them instead (a snappy/delta polyglot got 1 GiB past the bound)."""
    from parquet_craft import leaf, parquet_file, thrift, varint

    total = 1 << 26
    raw = varint(total) + varint(1) + varint(total) + varint(2) + varint(0) + b"\x00"
    first = [(1, "i32", 1), (2, "i32", 0), (3, "i32", 1), (4, "i32", 6), (5, "i32", 0),
             (6, "i32", 0), (7, "false", None)]  # fmt: skip
    header = thrift([(1, "i32", 3), (2, "i32", len(raw)), (3, "i32", len(raw)),
                     (8, "struct", first), (8, "struct", first[:6])])  # fmt: skip
    data = parquet_file([[(header + raw, 1)]], [1], [leaf("x", 6)])
    assert "could decode to over" in refused_without_inflating(data)


def test_delta_string_values_are_counted_as_the_reader_keeps_them(walk):
    """5.5M empty strings in one page of 10 bytes (one block of width 0): a reader keeps a
    pointer and a length for each value of a delta page before it copies them out (132
    MB, 2x what was counted)."""
    from parquet_craft import leaf, parquet_file, v1_page, varint

    n = 5_500_000
    raw = varint(5_500_032) + varint(1) + varint(n) + varint(0) + varint(0) + b"\x00"
    data = parquet_file([[(v1_page(raw, n, encoding=6), n)]], [n], [leaf("x", 6)])
    assert len(data) < 1000
    assert "could decode to over" in refused_without_inflating(data)


def test_a_long_delta_page_header_is_refused_before_it_is_read_again(walk):
    """A delta page's header is read again in Python (0.3 s a MB): past 64 KiB (an honest
    one is under 1 KB) it is refused."""
    from parquet_craft import delta_packed, leaf, parquet_file, v1_page

    raw = delta_packed([1] * 10) + b"x" * 10
    page = v1_page(raw, 10, encoding=6, extra=[(20, "bin", b"p" * 100_000)])
    data = parquet_file([[(page, 10)]], [10], [leaf("x", 6)])
    assert "page header of delta strings is over" in refused_without_inflating(data)
    fine = parquet_file([[(v1_page(raw, 10, encoding=6), 10)]], [10], [leaf("x", 6)])
    assert bounded(fine).num_rows == 10
