"""Parquet bytes read back as an Arrow table, in the calling thread only, and never
inflated past a bound.

``pq.read_table(io.BytesIO(data))`` (and ``pa.BufferReader``) goes through Arrow's dataset
scanner, which pre-buffers column chunks on Arrow's I/O thread pool. Those futures can still
hold the Python buffer when the read has returned; when the interpreter is finalizing, the
worker that drops it asks for the GIL, is exited by Python, and the process aborts with
"terminate called without an active exception" (three of four short scripts did here). A
``ParquetFile`` read with ``pre_buffer=False, use_threads=False`` starts no such task.

A Parquet file is as much a decompression bomb as a compressed Arrow batch (core/ipc.py):
its pages are zstd (or gzip, brotli...) and pyarrow allocates each page's uncompressed size
as its header claims; RLE and dictionary encodings then multiply values further (320 KB of
Parquet here read back as 512 MB; a one-entry dictionary of a long string repeated by RLE
indices would be terabytes as a string column). A series blob pushed to a team server is
read by its index with no one asking, so ``read_parquet(..., limit=)`` looks first:

1. Each column chunk's pages, walked from the offsets the footer gives (what pyarrow reads):
   each page header (Thrift compact protocol, parquet.thrift's ``PageHeader``) says its
   uncompressed size and its number of values. Their sum, at the values' decoded widths, must
   fit the limit before any page is inflated.
2. Top-level string and binary columns are read dictionary-encoded (indices into the values
   the file holds), their decoded size counted exactly, and only then cast back. A nested
   one with a dictionary is refused if its values could, at the dictionary's size, exceed
   the limit.
"""

from __future__ import annotations

from collections.abc import Sequence

# What a table may take decoded, by default, for ``len(data)`` bytes of Parquet: real series
# (float values barely compress) read back at a few times their size.
DECODED_RATIO = 64
DECODED_FLOOR = 64 << 20
_WIDTH = {"BOOLEAN": 1, "INT32": 4, "INT64": 8, "INT96": 12, "FLOAT": 4, "DOUBLE": 8}


class ParquetRefused(ValueError):
    """Parquet bytes that would decode past the reader's limit, or whose pages do not parse."""


def decoded_limit(size: int) -> int:
    """The default bound on a table decoded from ``size`` bytes of Parquet."""
    return max(DECODED_FLOOR, DECODED_RATIO * size)


def read_parquet(data: bytes, columns: Sequence[str] | None = None, limit: int | None = None):
    """The Parquet file ``data`` (bytes) as a ``pyarrow.Table`` (``columns``: only those).
    ``limit``: the most bytes the table may take decoded; ParquetRefused, before any page is
    inflated, if it could take more (None: no bound, for a user's own table)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    reader = pq.ParquetFile(pa.BufferReader(data), pre_buffer=False)
    wanted = list(columns) if columns is not None else None
    if limit is None:
        return reader.read(columns=wanted, use_threads=False)
    names = set(wanted) if wanted is not None else None
    fixed, spread = check_pages(data, reader, names, limit)
    # dictionary columns (as the file's Arrow schema may say) come back plain: a caller's
    # cast of a one-entry dictionary indexed a million times would be the bomb
    plain = pa.schema([f.with_type(_plain_type(f.type)) for f in reader.schema_arrow])
    if fixed + spread <= limit:  # even at its longest value, every string fits
        return _as(reader.read(columns=wanted, use_threads=False), plain)
    text = [f.name for f in plain if (names is None or f.name in names) and _is_text(f.type)]
    reader = pq.ParquetFile(  # strings as indices into the file's values, counted first
        pa.BufferReader(data), pre_buffer=False, metadata=reader.metadata, read_dictionary=text
    )
    table = reader.read(columns=wanted, use_threads=False)
    size = sum(
        _text_size(column) if name in text else column.nbytes
        for name, column in zip(table.column_names, table.columns, strict=True)
    )
    if size > limit:
        raise ParquetRefused(f"it would decode to {size} bytes, over the {limit} limit")
    return _as(table, plain)


def _plain_type(t):
    import pyarrow as pa

    return t.value_type if pa.types.is_dictionary(t) else t


def _as(table, plain):
    """``table`` in the types of ``plain`` (the file's, dictionaries decoded), if not already."""
    import pyarrow as pa

    schema = pa.schema([plain.field(name) for name in table.column_names])
    return table if table.schema.equals(schema) else table.cast(schema)


def _is_text(t) -> bool:
    import pyarrow as pa

    return (
        pa.types.is_string(t) or pa.types.is_large_string(t)
        or pa.types.is_binary(t) or pa.types.is_large_binary(t)
    )  # fmt: skip


def _text_size(column) -> int:
    """Bytes of a dictionary-encoded string column once cast to plain strings: its values'
    lengths, index by index, and 8 bytes of offsets per row."""
    import pyarrow.compute as pc

    total = 8 * len(column)
    for chunk in column.chunks:
        if len(chunk):
            lengths = pc.binary_length(chunk.dictionary).take(chunk.indices)
            total += pc.sum(lengths).as_py() or 0
    return total


def check_pages(
    data, reader, names: set[str] | None, limit: int, groups: Sequence[int] | None = None
) -> tuple[int, int]:
    """Walk the pages of each wanted column chunk (step 1 of the module's docstring) of the
    file ``reader`` reads from ``data`` (bytes, or a mapped file), in row groups ``groups``
    (None: all): (bytes the columns could take decoded, but for the top-level string values
    a dictionary page holds; bytes those could take more, each at the dictionary's whole
    size). ParquetRefused if the first is over ``limit``."""
    meta, schema = reader.metadata, reader.schema
    leaves = []
    for i in range(len(schema)):
        leaf = schema.column(i)
        path, kind = leaf.path, leaf.physical_type
        if names is not None and path.split(".")[0] not in names:
            continue
        width = leaf.length if kind == "FIXED_LEN_BYTE_ARRAY" else _WIDTH.get(kind, 8)
        nested = leaf.max_repetition_level > 0 or "." in path
        leaves.append((i, path, max(width or 0, 1), kind == "BYTE_ARRAY", nested))
    fixed = spread = 0
    for g in range(meta.num_row_groups) if groups is None else groups:
        group = meta.row_group(g)
        for i, path, width, strings, nested in leaves:
            chunk = group.column(i)
            start, dictionary_at = chunk.data_page_offset, chunk.dictionary_page_offset
            if chunk.has_dictionary_page and dictionary_at and 0 < dictionary_at < start:
                start = dictionary_at
            inflated, values, dictionary = _walk(data, start, chunk.total_compressed_size)
            fixed += inflated + width * values
            if strings and dictionary:  # each value may be as long as the whole dictionary
                if nested:
                    fixed += values * dictionary
                else:
                    spread += values * dictionary
            if fixed > limit:
                raise ParquetRefused(f"it could decode to over {limit} bytes (column {path})")
    return fixed, spread


def _walk(data, start: int, length: int) -> tuple[int, int, int]:
    """(uncompressed bytes, values in data pages, the dictionary page's uncompressed size)
    of the pages in ``data[start:start + length]``."""
    if start < 0 or length < 0 or start + length > len(data):
        raise ParquetRefused("a column chunk lies outside the file")
    if isinstance(data, bytes):
        return _pages(data, start, start + length)
    with memoryview(data) as view:  # released before a mapped file is closed
        return _pages(view, start, start + length)


def _pages(view, pos: int, end: int) -> tuple[int, int, int]:
    inflated = values = dictionary = 0
    while pos < end:
        try:
            header, pos = _struct(view, pos, 0)
        except (IndexError, ValueError) as e:
            raise ParquetRefused(f"a page header does not parse ({e})") from None
        kind, size, stored = header.get(1), header.get(2), header.get(3)
        if not all(isinstance(x, int) and x >= 0 for x in (kind, size, stored)):
            raise ParquetRefused("a page header lacks its sizes")
        inflated += size
        for field in (5, 8):  # data_page_header, data_page_header_v2: num_values first
            sub = header.get(field)
            if isinstance(sub, dict) and isinstance(sub.get(1), int):
                values += max(0, sub[1])
        if isinstance(header.get(7), dict):  # dictionary_page_header
            dictionary = max(dictionary, size)
        pos += stored
    return inflated, values, dictionary


# -- Thrift compact protocol: just enough to read a PageHeader --------------------------------

_MAX_DEPTH = 16


def _varint(view, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = view[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _zigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _value(view, pos: int, kind: int, depth: int):
    """One value of compact type ``kind`` at ``pos``: (value, next position). Kept: integers
    and structs (as {field id: value}); anything else is skipped (None)."""
    if kind in (1, 2):  # a bool inside a list: one byte
        return None, pos + 1
    if kind == 3:
        return None, pos + 1
    if kind in (4, 5, 6):
        n, pos = _varint(view, pos)
        return _zigzag(n), pos
    if kind == 7:
        return None, pos + 8
    if kind == 8:
        n, pos = _varint(view, pos)
        return None, pos + n
    if kind in (9, 10):
        head = view[pos]
        pos += 1
        count, element = head >> 4, head & 0x0F
        if count == 15:
            count, pos = _varint(view, pos)
        for _ in range(count):
            _, pos = _value(view, pos, element, depth + 1)
        return None, pos
    if kind == 11:
        count, pos = _varint(view, pos)
        if count:
            types = view[pos]
            pos += 1
            for _ in range(count):
                _, pos = _value(view, pos, types >> 4, depth + 1)
                _, pos = _value(view, pos, types & 0x0F, depth + 1)
        return None, pos
    if kind == 12:
        return _struct(view, pos, depth + 1)
    raise ValueError(f"unknown compact type {kind}")


def _struct(view, pos: int, depth: int) -> tuple[dict, int]:
    if depth > _MAX_DEPTH:
        raise ValueError("structs nested too deep")
    fields, last = {}, 0
    while True:
        head = view[pos]
        pos += 1
        if head == 0:
            return fields, pos
        delta, kind = head >> 4, head & 0x0F
        if delta:
            last += delta
        else:
            n, pos = _varint(view, pos)
            last = _zigzag(n)
        if kind in (1, 2):  # a bool field's value is its type
            fields[last] = kind == 1
            continue
        fields[last], pos = _value(view, pos, kind, depth)
