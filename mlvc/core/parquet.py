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

from .speedups import extension

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
    arrow = reader.schema_arrow
    plain = arrow
    if any(pa.types.is_dictionary(f.type) for f in arrow):
        plain = pa.schema([f.with_type(_plain_type(f.type)) for f in arrow])
    if fixed + spread <= limit:  # even at its longest value, every string fits
        table = reader.read(columns=wanted, use_threads=False)
        return table if plain is arrow else _as(table, plain)
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
    of the pages in ``data[start:start + length]`` (bytes, a memoryview or a mapped file:
    never copied). In C (mlvc/_pqpages.c) when built, else ``_walk_py``."""
    end = start + length
    if start < 0 or length < 0 or end > len(data):
        raise ParquetRefused("a column chunk lies outside the file")
    c = extension("mlvc._pqpages")
    if c is None:
        return _walk_py(data, start, end)
    try:
        return c.walk(data, start, end, MAX_HEADER)
    except ValueError as e:
        raise ParquetRefused(f"a page header does not parse ({e})") from None


def _walk_py(data, start: int, end: int) -> tuple[int, int, int]:
    """``_walk`` in Python, with the same results (read a byte at a time)."""
    pos = start
    inflated = values = dictionary = 0
    while pos < end:
        try:  # a header ends within its chunk and MAX_HEADER (pyarrow's own bound)
            header, pos = _struct(data, pos, 0, min(end, pos + MAX_HEADER))
        except (IndexError, ValueError) as e:
            raise ParquetRefused(f"a page header does not parse ({e})") from None
        kind, size, stored = header.get(1), header.get(2), header.get(3)
        if not all(type(x) is int and x >= 0 for x in (kind, size, stored)):
            raise ParquetRefused("a page header lacks its sizes")
        inflated += size
        for field in (5, 8):  # data_page_header, data_page_header_v2: num_values first
            sub = header.get(field)
            if type(sub) is dict and type(sub.get(1)) is int:
                values += max(0, sub[1])
        if type(header.get(7)) is dict:  # dictionary_page_header
            dictionary = max(dictionary, size)
        if inflated >> 63 or values >> 63:
            raise ParquetRefused("its pages' sizes overflow")
        pos += stored
    return inflated, values, dictionary


# -- Thrift compact protocol: just enough to read a PageHeader --------------------------------

MAX_HEADER = 16 << 20  # bytes of a page header (Arrow's default limit)
_MAX_DEPTH = 16
_MAX_ITEMS = 1000  # of a list, set or map (a page header has none: a later version's field)
_FIXED = {1: 1, 2: 1, 3: 1, 7: 8}  # bytes of a bool (in a list), byte, double


def _varint(b, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = b[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            if result >> 64:
                raise ValueError("varint too long")
            return result, pos
        shift += 7
        if shift > 63 or result >> 64:
            raise ValueError("varint too long")


def _struct(b, pos: int, depth: int, stop: int) -> tuple[dict, int]:
    """The struct at ``pos`` of ``b`` as {field id: value} (integers, and structs as dicts;
    other values skipped) and the position after it; ValueError if it runs past ``stop``."""
    if depth > _MAX_DEPTH:
        raise ValueError("structs nested too deep")
    fields, last = {}, 0
    while True:
        if pos >= stop:
            raise ValueError("it runs past its chunk or MAX_HEADER")
        head = b[pos]
        pos += 1
        if head == 0:
            return fields, pos
        kind = head & 0x0F
        if head >> 4:
            last += head >> 4
        else:
            n, pos = _varint(b, pos)
            last = (n >> 1) ^ -(n & 1)
        if 4 <= kind <= 6:  # i16, i32, i64 (zigzag varints): most fields
            n = b[pos]
            pos += 1
            if n >= 0x80:
                n, pos = _varint(b, pos - 1)
            fields[last] = (n >> 1) ^ -(n & 1)
        elif kind == 12:
            fields[last], pos = _struct(b, pos, depth + 1, stop)
        elif kind == 1 or kind == 2:  # a bool field's value is its type
            fields[last] = kind == 1
        else:
            pos = _skip(b, pos, kind, depth, stop)


def _skip(b, pos: int, kind: int, depth: int, stop: int) -> int:
    """The position after a value of compact type ``kind`` at ``pos`` (not kept)."""
    if kind in _FIXED:
        return pos + _FIXED[kind]
    if 4 <= kind <= 6:
        return _varint(b, pos)[1]
    if kind == 8:  # binary: a varint length, then the bytes
        n, pos = _varint(b, pos)
        if pos + n > stop:
            raise ValueError("a binary runs past its chunk or MAX_HEADER")
        return pos + n
    if kind == 12:
        return _struct(b, pos, depth + 1, stop)[1]
    if kind in (9, 10, 11):  # list, set: (size << 4 | type); map: varint size, types
        if depth > _MAX_DEPTH:
            raise ValueError("containers nested too deep")
        if kind == 11:
            count, pos = _varint(b, pos)
            types = (b[pos] >> 4, b[pos] & 0x0F) if count else ()
            pos += 1 if count else 0
        else:
            head = b[pos]
            pos += 1
            count, types = head >> 4, (head & 0x0F,)
            if count == 15:
                count, pos = _varint(b, pos)
        if count > _MAX_ITEMS:
            raise ValueError(f"a container of {count} items in a page header")
        for _ in range(count):
            for t in types:
                pos = _skip(b, pos, t, depth + 1, stop)
        return pos
    raise ValueError(f"unknown compact type {kind}")
