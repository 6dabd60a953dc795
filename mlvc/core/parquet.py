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
   fit the limit before any page is inflated. Each chunk's codec, offsets and sizes are read
   from the footer here (``_chunks``), never through pyarrow's metadata: pyarrow 26 throws
   C++ exceptions no Python code can catch for a codec number it does not know or size
   statistics that contradict the schema, and the process aborts (a damaged preview ended
   a server). The table read is then validated whole (``_validated``).
2. Top-level string and binary columns are read dictionary-encoded (indices into the values
   the file holds), their decoded size counted exactly, and only then cast back. A nested
   one with a dictionary is refused if its values could, at the dictionary's size, exceed
   the limit.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Sequence
from typing import NamedTuple

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


# A reader decodes the footer (Thrift) into objects before anything else: a 3-byte column
# chunk becomes ~720 bytes of its heap, an ordinary one (~50-100 bytes) about as much. A
# footer is refused past limit / FOOTER_HEAP bytes: an ordinary file's footer up to 2/3 of
# its size is read (files of thousands of tiny row groups have 60%), and a footer of bare
# chunks stays within 2.5x the limit (was 3.7x)
FOOTER_HEAP = 96


def _check_footer(tail: bytes, limit: int) -> None:
    """ParquetRefused if the footer that ``tail`` (a file's last 8 bytes) says it has could
    decode past ``limit``."""
    if len(tail) == 8 and FOOTER_HEAP * int.from_bytes(tail[:4], "little") > limit:
        raise ParquetRefused(f"its footer could decode to over {limit} bytes")


def _refusing(read):
    """``read`` with a bound, whose MemoryError (pyarrow's ArrowMemoryError: a decoder that
    reserved what a header asked, say) and NotImplementedError (ArrowNotImplementedError: a
    schema of a 100-bit integer, say) are ParquetRefused, as every other refusal."""

    @functools.wraps(read)
    def bounded(*args, **kwargs):
        limit = kwargs.get("limit", args[2] if len(args) > 2 else None)
        try:
            return read(*args, **kwargs)
        except MemoryError as e:
            if limit is None:
                raise
            raise ParquetRefused(f"its reader ran out of memory ({e})") from None
        except NotImplementedError as e:
            if limit is None:
                raise
            raise ParquetRefused(f"it is not read here ({e})") from None

    return bounded


@_refusing
def read_parquet(data: bytes, columns: Sequence[str] | None = None, limit: int | None = None):
    """The Parquet file ``data`` (bytes) as a ``pyarrow.Table`` (``columns``: only those).
    ``limit``: the most bytes the table may take decoded; ParquetRefused, before any page is
    inflated, if it could take more (None: no bound, for a user's own table)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if limit is not None:
        _check_footer(bytes(data[-8:]), limit)
    reader = pq.ParquetFile(pa.BufferReader(data), pre_buffer=False)
    wanted = list(columns) if columns is not None else None
    if limit is None:
        return reader.read(columns=wanted, use_threads=False)
    names = set(wanted) if wanted is not None else None
    fixed, spread, delta = check_pages(data, reader, names, limit)
    spreading = {name for name, n in spread.items() if n}
    spread = sum(spread.values())
    # dictionary columns (as the file's Arrow schema may say) come back plain: a caller's
    # cast of a one-entry dictionary indexed a million times would be the bomb
    arrow = reader.schema_arrow
    plain = _plain_schema(arrow)
    if fixed + spread <= limit:  # even at its longest value, every string fits
        table = reader.read(columns=wanted, use_threads=False)
        return _validated(table if plain is arrow else _as(table, plain))
    text = _counted_text(plain, names, spreading, delta)
    reader = pq.ParquetFile(  # strings as indices into the file's values, counted first
        pa.BufferReader(data), pre_buffer=False, metadata=reader.metadata, read_dictionary=text
    )
    return _validated(_counted(reader.read(columns=wanted, use_threads=False), text, plain, limit))


HEAD_BUFFER = 1 << 20


@_refusing
def read_head(path: str, rows: int, limit: int):
    """The first ``rows`` rows of the Parquet file at ``path`` (a preview), read from as
    few row groups as hold them, and of those from the pages that hold them (and one
    more), each walked first (``check_pages``); its strings counted before they are copied
    out. Returns (the rows as a table, or None for none; the file's Arrow schema; its
    metadata). ParquetRefused past ``limit``."""
    import mmap

    import pyarrow as pa
    import pyarrow.parquet as pq

    # buffered: the reader inflates page by page as the rows need, from a 1 MiB window of
    # the chunk (unbuffered, it reads the whole chunk first)
    with open(path, "rb") as f:
        f.seek(max(f.seek(0, 2) - 8, 0))
        _check_footer(f.read(8), limit)
    reader = pq.ParquetFile(path, pre_buffer=False, buffer_size=HEAD_BUFFER)
    meta, groups, held = reader.metadata, [], 0
    if meta.num_columns == 0:  # rows of nothing: pyarrow would make every empty batch at once
        return None, reader.schema_arrow, meta
    while len(groups) < meta.num_row_groups and held < rows:
        held += max(meta.row_group(len(groups)).num_rows, 0)
        groups.append(len(groups))
    if not groups:
        return None, reader.schema_arrow, meta
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        _, spread, delta = check_pages(mapped, reader, None, limit, groups, rows)
    arrow = reader.schema_arrow
    plain = _plain_schema(arrow)
    text = _counted_text(plain, None, {name for name, n in spread.items() if n}, delta)
    reader = pq.ParquetFile(
        path, pre_buffer=False, buffer_size=HEAD_BUFFER, metadata=meta, read_dictionary=text
    )
    batches, held = [], 0
    for batch in reader.iter_batches(batch_size=max(rows, 1), row_groups=groups):
        batches.append(batch)  # a batch of dictionaries ends where a group does
        held += batch.num_rows
        if held >= rows:
            break
    if not batches:
        return None, arrow, meta
    table = pa.Table.from_batches(batches).slice(0, rows)
    return _validated(_counted(table, text, plain, limit)), arrow, meta


def _validated(table):
    """``table`` once every array of it is checked whole (UTF-8, offsets, indices): pyarrow's
    Parquet reader copies a damaged page's string bytes as they are (the damage fuzzer's
    invalid UTF-8), which a later reader (DuckDB, ``to_pylist``) fails on. ~1% of a read."""
    import pyarrow as pa

    try:
        table.validate(full=True)
    except pa.ArrowInvalid as e:
        raise ParquetRefused(f"its values are damaged ({str(e).splitlines()[0]})") from None
    return table


def _counted_text(
    plain, names: set[str] | None, spreading: set[str], delta: set[str] = frozenset()
) -> list[str]:
    """The top-level string columns to read as dictionaries (counted before they are copied
    out), but for those of ``delta`` (pages of delta strings: Arrow reads none as a
    dictionary, and ``check_pages`` counted what they build) that are not ``spreading``;
    ParquetRefused if one of ``spreading`` (columns that could inflate) is not one."""
    text = [
        f.name for f in plain
        if (names is None or f.name in names) and _is_text(f.type)
        and (f.name not in delta or f.name in spreading)
    ]  # fmt: skip
    uncounted = sorted(spreading - set(text))
    if uncounted:  # an extension type over strings, say: read as it is, it would inflate
        raise ParquetRefused(f"its column {uncounted[0]!r} cannot be counted before it is read")
    return text


def _counted(table, text: list[str], plain, limit: int):
    """``table`` (its ``text`` columns read as dictionaries) in ``plain``'s types, once its
    size decoded is known to fit ``limit``."""
    size = sum(
        _text_size(column) if name in text else column.nbytes
        for name, column in zip(table.column_names, table.columns, strict=True)
    )
    if size > limit:
        raise ParquetRefused(f"it would decode to {size} bytes, over the {limit} limit")
    return _as(table, plain)


def _plain_schema(arrow):
    """``arrow`` with its dictionary columns as their value types."""
    import pyarrow as pa

    if not any(pa.types.is_dictionary(f.type) for f in arrow):
        return arrow
    return pa.schema([f.with_type(_plain_type(f.type)) for f in arrow])


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
        pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
        or pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)
    )  # fmt: skip


def _text_size(column) -> int:
    """Bytes of a dictionary-encoded string column once cast to plain strings: its values'
    lengths, index by index, and 8 bytes of offsets per row. ParquetRefused for an index
    past its dictionary (the cast would read out of it)."""
    import pyarrow.compute as pc

    total = 8 * len(column)
    for chunk in column.chunks:
        if len(chunk):
            try:
                lengths = pc.binary_length(chunk.dictionary).take(chunk.indices)
            except IndexError as e:  # pyarrow read a damaged page's indices as they are
                raise ParquetRefused(f"its dictionary indices are damaged ({e})") from None
            total += pc.sum(lengths).as_py() or 0
    return total


def check_pages(
    data,
    reader,
    names: set[str] | None,
    limit: int,
    groups: Sequence[int] | None = None,
    rows: int | None = None,
) -> tuple[int, dict[str, int], set[str]]:
    """Walk the pages of each wanted column chunk (step 1 of the module's docstring) of the
    file ``reader`` reads from ``data`` (bytes, or a mapped file), in row groups ``groups``
    (None: all): (bytes the columns could take decoded, but for the top-level string values
    a dictionary page holds; bytes those could take more, each at the dictionary's whole
    size; the top-level columns with pages of delta strings). ParquetRefused if the first is
    over ``limit``. ``rows``: only the pages that a
    read of up to ``rows`` rows from each of those groups inflates (a preview's: its first
    batch may end at a group's end, and the next asks for ``rows`` more).

    The second is by top-level column name. A value is counted at its decoded width (a
    decimal as 16 or 32 bytes, whatever its stored width), plus 4 bytes per level of lists
    (offsets), 2 for each kind of level it has (definition, repetition: a reader keeps
    them as 16-bit numbers) and a byte of validity per 8 optional levels above it (a
    bitmap each); a page of delta-encoded strings at what its own delta headers make a
    reader keep (``_DeltaPages``: refused where that cannot be told); at least the chunk's
    ``num_values`` values. Chunks whose bytes overlap are refused (a file that walks one
    page many times)."""
    meta, schema = reader.metadata, reader.schema
    # PARQUET-816 (see _walk): Arrow pads for an old parquet-mr, and does for " parquet-mr"
    # too; padding any name that says parquet-mr only counts more
    padded = "parquet-mr" in (meta.created_by or "").lower()
    leaves = []
    for i in range(len(schema)):
        leaf = schema.column(i)
        path, kind = leaf.path, leaf.physical_type
        if names is not None and path.split(".")[0] not in names:
            continue
        width = leaf.length if kind == "FIXED_LEN_BYTE_ARRAY" else _WIDTH.get(kind, 8)
        width = max(width or 0, 1)
        logical = leaf.logical_type
        if logical is not None and logical.type == "DECIMAL":  # decimal128 or decimal256
            width = max(width, 16 if leaf.precision <= 38 else 32)
        # a list's offsets per level (each value may be a list of its own), its levels,
        # and validity bitmaps
        optional, repeated = leaf.max_definition_level, leaf.max_repetition_level
        width += 4 * repeated + 2 * ((optional > 0) + (repeated > 0)) + (optional + 7) // 8
        nested = repeated > 0 or "." in path
        leaves.append((i, path, width, kind == "BYTE_ARRAY", nested, optional, repeated))
    chunks = _chunks(data, meta.num_row_groups, meta.num_columns)
    fixed, spread, left = 0, {}, -1 if rows is None else rows
    # pages told, runs and bytes of levels decoded (_RowStarts), delta values (_DeltaPages)
    spent = [0, 0, 0, 0]
    delta_columns: set[str] = set()
    taken: list[tuple[int, int]] = []  # the byte ranges of the chunks walked, in order
    for g in range(meta.num_row_groups) if groups is None else groups:
        for i, path, width, strings, nested, optional, repeated in leaves:
            chunk = chunks[g][i]
            start, dictionary_at = chunk.data_page_offset, chunk.dictionary_page_offset
            if dictionary_at is not None and 0 < dictionary_at < start:
                start = dictionary_at
            _take(taken, start, start + max(chunk.total_compressed_size, 0), path)
            walked = (data, start, chunk.total_compressed_size, padded)
            reads = start + max(chunk.total_compressed_size, 0) + (PADDING if padded else 0)
            deltas = _DeltaPages(
                data, reads, chunk.codec, (optional, repeated), limit - fixed, spent
            )
            if left < 0 or not repeated:
                walk = _walk(*walked, left, True, None, deltas)
                inflated, values, dictionary, delta, whole, _ = walk
                upto = left  # a value is a row
            else:  # rows of lists: a page's rows are where its levels say one starts
                starts = _RowStarts(data, chunk.codec, repeated, limit - fixed, spent, left)
                # the page in which the row after the last one wanted starts ends them all
                walk = _walk(*walked, left + 1, False, starts, deltas)
                inflated, values, dictionary, delta, whole, _ = walk
                upto = -1 if starts.levels is None else starts.levels
            if whole:  # what the reader reads pages up to
                values = max(values, chunk.num_values)
            elif upto >= 0:  # it decodes the levels and values of the rows it reads
                values = min(values, upto + SLACK)
            fixed += inflated + width * values
            fixed += delta  # any column whose pages are delta strings
            if deltas.pages:
                delta_columns.add(path.split(".")[0])
            if strings and dictionary:  # each value may be as long as the whole dictionary
                if nested:
                    fixed += values * dictionary
                else:
                    top = path.split(".")[0]
                    spread[top] = spread.get(top, 0) + values * dictionary
            if fixed > limit:
                column = path if len(path) <= 60 else path[:57] + "..."
                raise ParquetRefused(f"it could decode to over {limit} bytes (column {column})")
    return fixed, spread, delta_columns


def _take(taken: list[tuple[int, int]], start: int, end: int, path: str) -> None:
    """Add the chunk ``[start, end)`` to ``taken`` (sorted ranges); ParquetRefused if it
    overlaps one there (a file's chunks never do: such a file walks one page many times)."""
    if end <= start:
        return
    at = bisect.bisect_left(taken, (start, end))
    if (at > 0 and taken[at - 1][1] > start) or (at < len(taken) and taken[at][0] < end):
        raise ParquetRefused(f"its column chunks overlap (column {path[:60]})")
    taken.insert(at, (start, end))


PADDING = 100  # bytes Arrow reads past an old parquet-mr chunk (PARQUET-816, IMPALA-694)


def _walk(
    data,
    start: int,
    length: int,
    padded: bool = False,
    rows: int = -1,
    flat: bool = False,
    starts=None,
    deltas=None,
) -> tuple[int, int, int, int, bool, int]:
    """(uncompressed bytes, values in data pages, the dictionary page's uncompressed size,
    bytes the DELTA_BYTE_ARRAY pages' values could take, whether the walk went to the end,
    the rows counted) of the pages in ``data[start:start + length]`` (bytes, a memoryview
    or a mapped file: never copied). In C (mlvc/_pqpages.c) when built, else ``_walk_py``.
    ``rows``, ``flat`` and ``starts``: only the pages a reader of the chunk's first
    ``rows`` rows reads (see ``_walk_py``); ``deltas``: what a page of delta strings keeps.

    ``padded`` (a file parquet-mr wrote): Arrow reads up to PADDING bytes past the chunk
    too (old parquet-mr left the dictionary page header out of the chunk's size), so the
    pages that begin there are counted as well (all of them, their rows not); bytes there
    that are no page header (the next chunk) end the walk, as they would end Arrow's read."""
    end = start + length
    if start < 0 or length < 0 or end > len(data):
        raise ParquetRefused("a column chunk lies outside the file")
    c = extension("mlvc._pqpages")
    walk = _walk_py if c is None else c.walk
    try:
        *sums, pos, counted = walk(data, start, end, MAX_HEADER, False, rows, flat, starts, deltas)
        whole = pos >= end
        tail = min(len(data), end + PADDING)
        if padded and whole and pos < tail:
            *more, _, _ = walk(data, pos, tail, MAX_HEADER, True, -1, False, None, deltas)
            sums = [sums[0] + more[0], sums[1] + more[1], max(sums[2], more[2]), sums[3] + more[3]]
    except ParquetRefused:
        raise
    except ValueError as e:
        raise ParquetRefused(f"a page header does not parse ({e})") from None
    return (*sums, whole, counted)


BOOL = 1 << 20  # where _struct keeps a bool field: past any 16-bit field id
_I32, _STRUCT = 5, 12  # compact types of the fields read (others of those ids are skipped)
DELTA_LENGTH_BYTE_ARRAY, DELTA_BYTE_ARRAY = 6, 7  # parquet.thrift Encoding
DELTA_STRINGS = (DELTA_LENGTH_BYTE_ARRAY, DELTA_BYTE_ARRAY)
# A walk without ``deltas`` counts such a page's lengths at this many bytes per uncompressed
# byte (blocks of 32768 in 5 bytes): no bound (one block of width 0 may hold 2**32 values in
# 2 bytes), which is why check_pages reads each page's own delta headers instead
DELTA_LENGTHS = 8 * 6554


def _walk_py(
    data,
    start: int,
    end: int,
    max_header: int,
    soft: bool,
    rows: int = -1,
    flat: bool = False,
    starts=None,
    deltas=None,
) -> tuple[int, ...]:
    """``_walk`` in Python, with the same results as the C walk (mlvc/_pqpages.c says them
    in full): (the sums, the position the walk ended at, the rows counted). ``soft``: a
    header that does not parse ends the walk, not raises. ``rows`` (>= 0): the walk ends
    one data page after the first at which the rows counted reach it; a data page (of type
    DATA_PAGE with its v1 header, or DATA_PAGE_V2 with its v2 header) has as rows its values
    when ``flat``, else what ``starts(at, stored, size, v2, values, levels, inflated)``
    says (``_RowStarts``). ``deltas``: None, or what a data page of delta strings keeps
    (``deltas(header_at, at, stored, size, inflated)``, for the header its type reads;
    ``_DeltaPages``), counted in place of the bound when not negative.

    A field is taken only when it has the type parquet.thrift gives it (i32 for the sizes
    and counts, a struct for the page kinds): Arrow's Thrift reader skips one of another
    type and keeps what it read before, so a walk that took the last one whatever its type
    would count what the reader does not."""
    pos = start
    inflated = values = dictionary = delta = counted = 0
    reached = False  # the rows were counted: the next data page is the last walked
    while pos < end:
        header_at = pos
        try:  # a header ends within its chunk and MAX_HEADER (Arrow's own bound)
            ints, structs, pos = _struct(data, pos, 0, min(end, pos + max_header))
        except (IndexError, ValueError) as e:
            if soft:
                break
            raise ValueError(str(e)) from None
        size, stored = ints.get(2), ints.get(3)
        if ints.get(1) is None or size is None or stored is None or min(ints[1], size, stored) < 0:
            if soft:
                break
            raise ValueError("a page header lacks its sizes")
        inflated += size
        own = {DATA_PAGE: 5, DATA_PAGE_V2: 8}.get(ints[1])  # the header its type reads
        for field, encoding_field in ((5, 2), (8, 4)):  # data page headers, v1 and v2
            sub = structs.get(field)
            coded = None if sub is None else sub[0].get(encoding_field)
            told = -1  # what deltas says the page keeps
            if coded in DELTA_STRINGS and field == own and deltas is not None:
                told = deltas(header_at, pos, stored, size, inflated)
                told = told if told >= 0 else -1
            if told >= 0:
                delta += told
            elif coded in DELTA_STRINGS:
                delta += DELTA_LENGTHS * size  # a rough count (see DELTA_LENGTHS)
            if sub is not None and sub[0].get(1) is not None and sub[0][1] > 0:
                values += sub[0][1]
                if told < 0 and coded == DELTA_BYTE_ARRAY:
                    delta += sub[0][1] * size
        if 7 in structs:  # a dictionary page header: a reader copies it, and indexes it
            dictionary = max(dictionary, size)
            inflated += size + DICT_ENTRY * max(structs[7][0].get(1, 0), 0)
        if inflated >> 63 or values >> 63 or delta >> 63:
            raise ValueError("its pages' sizes overflow")
        at, pos = pos, pos + stored
        v2 = ints[1] == DATA_PAGE_V2 and 8 in structs
        if rows < 0 or not (v2 or ints[1] == DATA_PAGE and 5 in structs):
            continue
        if reached:
            break
        page = structs[8 if v2 else 5][0]
        n = max(page.get(1, 0), 0)
        if not flat:
            levels = page.get(6 if v2 else 4, -1)
            n = 0 if starts is None else starts(at, stored, size, v2, n, levels, inflated)
        counted += max(n, 0)
        reached = counted >= rows
    return inflated, values, dictionary, delta, min(pos, (1 << 63) - 1), counted


DATA_PAGE, DATA_PAGE_V2 = 0, 3  # parquet.thrift PageType
DICT_ENTRY = 24  # bytes a reader keeps for each entry of a dictionary (pointer, length)
RLE = 3  # parquet.thrift Encoding: the RLE / bit-packed hybrid of levels
# What telling the rows of pages of lists may cost one read (then they are not told, and
# the walk counts on to the chunk's end): pages, and runs of levels decoded in Python
MAX_TOLD_PAGES = 10_000
MAX_RUNS = 1 << 16
MAX_BYTES = 8 << 20  # of bit-packed levels
# parquet.thrift's CompressionCodec: those read here, each as pa.Codec names it (3 is LZO,
# 5 the hadoop-framed LZ4: known, not read here; any other number is refused, see _chunks)
_CODECS = {0: None, 1: "snappy", 2: "gzip", 4: "brotli", 6: "zstd", 7: "lz4_raw"}
_KNOWN_CODECS = range(8)


class _RowStarts:
    """For a column of lists read in part, ``starts`` for the walk: the rows that start in a
    data page, the zeros among its repetition levels, read from the page inflated (v1) or
    from its head (v2: levels are stored uncompressed), or 0 where that cannot be told here
    (a codec or level encoding not read here, a page that does not inflate, past
    MAX_TOLD_PAGES pages, MAX_RUNS runs or MAX_BYTES bytes of levels in ``spent``, shared by
    a read's columns: a bound on the CPU a preview spends). ParquetRefused before a page is inflated
    past ``budget`` bytes (with those before it).

    ``levels``: once the row after the first ``rows`` has been seen to start, how many
    levels come before it (at most: to the end of the run of levels it starts in): what a
    reader of those rows decodes of the pages (it decodes a page's levels as it goes)."""

    def __init__(self, data, codec: int, repeated: int, budget: int, spent: list[int], rows):
        self.data, self.codec, self.budget, self.spent = data, codec, budget, spent
        self.width = max(repeated.bit_length(), 1)
        self.need = rows + 1  # row starts to see: the one after the last row wanted ends it
        self.seen = self.before = 0  # row starts told, levels in the pages before this one
        self.levels: int | None = None

    def __call__(self, at, stored, size, v2, values, levels, inflated) -> int:
        if inflated > self.budget:
            raise ParquetRefused(f"it could decode to over {self.budget} bytes (a page of lists)")
        before, self.before = self.before, self.before + max(values, 0)
        spent = self.spent
        spent[0] += 1
        if (
            values <= 0
            or spent[0] > MAX_TOLD_PAGES
            or spent[1] >= MAX_RUNS
            or spent[2] >= MAX_BYTES
        ):
            return 0
        if v2:  # the repetition levels come first, uncompressed, ``levels`` bytes of them
            if not 0 <= levels <= stored:
                return 0
            raw = memoryview(self.data[at : at + levels]).cast("B")
        elif self.codec not in _CODECS or levels != RLE:
            return 0
        else:
            raw = _inflate(self.data[at : at + stored], self.codec, size)
            if raw is None:
                return 0
            raw = raw[4 : 4 + int.from_bytes(raw[:4], "little")]
        zeros, upto = _zeros(raw, self.width, values, spent, self.need - self.seen)
        if upto is not None and self.levels is None:
            self.levels = before + upto
        self.seen += zeros
        return zeros


def _zeros(levels, width: int, count: int, spent: list[int], stop: int = 0) -> tuple:
    """(the zeros among the first ``count`` values of an RLE / bit-packed hybrid run of
    ``width``-bit values (parquet-format Encodings.md), and, when a ``stop``-th zero (>= 1)
    is among them, the values up to the end of the run it is in (within a run of zeros: up
    to it), else None). Runs after that one are not read (their zeros not counted). Each
    run adds 1 to ``spent[1]`` and its bit-packed bytes to ``spent[2]``; past MAX_RUNS or
    MAX_BYTES the count so far is returned (fewer rows: the walk counts on)."""
    pos = seen = zeros = 0
    upto = None
    step = (width + 7) // 8
    while seen < count and pos < len(levels) and spent[1] < MAX_RUNS and spent[2] < MAX_BYTES:
        spent[1] += 1
        try:
            header, pos = _varint(levels, pos)
        except (IndexError, ValueError):
            break
        if header & 1:  # bit-packed: groups of 8 values in ``width`` bytes each
            groups = min(header >> 1, len(levels))
            take = min(groups * 8, count - seen, (len(levels) - pos) * 8 // width,
                       (MAX_BYTES - spent[2]) * 8 // width)  # fmt: skip
            packed = levels[pos : pos + (take * width + 7) // 8]  # only what is counted
            pos += groups * width
            spent[2] += len(packed)
            bits = int.from_bytes(packed, "little") & ((1 << (take * width)) - 1)
            for shift in range(1, width):  # each value's bits or-ed into its lowest
                bits |= bits >> shift
            lowest = ((1 << (take * width)) - 1) // ((1 << width) - 1)  # 1 at each value
            here = take - (bits & lowest).bit_count()
            if upto is None and 0 < stop <= zeros + here:
                upto = seen + take
        else:  # a run: one value repeated
            take = min(header >> 1, count - seen)
            here = take if not any(levels[pos : pos + step]) else 0
            if upto is None and 0 < stop <= zeros + here:
                upto = seen + stop - zeros
            pos += step
        if take <= 0:
            break
        zeros += here
        seen += take
        if upto is not None:  # the rows wanted are all begun and ended: enough told
            break
    return zeros, upto


def _inflate(stored, codec: int, size: int) -> memoryview | None:
    """A page's ``stored`` bytes inflated by ``codec`` (a column chunk's, parquet.thrift's
    number) to ``size`` bytes, as bytes (a memoryview), or None for a codec not read here or
    bytes that do not inflate."""
    if codec not in _CODECS:
        return None
    try:
        if _CODECS[codec] is not None:
            import pyarrow as pa

            stored = pa.Codec(_CODECS[codec]).decompress(stored, decompressed_size=size)
        return memoryview(stored).cast("B")  # a pyarrow Buffer's items are signed bytes
    except (ValueError, OSError, TypeError):  # pyarrow's errors are both
        return None


MAX_DELTA_VALUES = 1 << 20  # values of prefix lengths one read decodes (_DeltaPages)
MAX_DELTA_HEADER = 64 << 10  # bytes of a delta page's header it reads (Arrow's are < 1 KB)
BIT_PACKED = 4  # parquet.thrift Encoding: the deprecated one of levels


class _DeltaPages:
    """For the walk's ``deltas``: what a reader (Arrow's) keeps to decode a data page of
    delta-encoded strings, read from the page's own delta headers; ParquetRefused where that
    cannot be told here (the most a page's header could announce is 2**31 lengths, from a
    few bytes: no bound from its size). The page is inflated (a v2 page's values only) and
    its levels skipped as Arrow skips them; a page whose bytes end past ``end`` (what the
    reader reads of the chunk) keeps nothing (the reader stops at it).

    A DELTA_LENGTH_BYTE_ARRAY page keeps 4 bytes for each length its header announces (the
    reader decodes them all when it opens the page), a byte per mini-block of a block (its
    bit widths), and 16 bytes per value (a pointer and a length, before the copy out). A
    DELTA_BYTE_ARRAY page keeps that for its prefix lengths and its suffixes' lengths, and,
    for the strings it builds (into its own buffer, then into the column), twice the sum of
    its prefix lengths and its bytes (a string is its prefix then its suffix): the prefix
    lengths are decoded here, up to MAX_DELTA_VALUES of them in a read (in ``spent[3]``).
    Pages told count in ``spent[0]`` (MAX_TOLD_PAGES, shared with ``_RowStarts``).
    ParquetRefused also before a page is inflated past ``budget`` bytes (with those before
    it), or when what it keeps would take the sum there."""

    def __init__(self, data, end: int, codec: int, levels: tuple, budget: int, spent: list):
        self.data, self.end, self.codec, self.budget, self.spent = data, end, codec, budget, spent
        self.defined, self.repeated = levels  # the column's highest levels
        self.kept = self.pages = 0  # what the pages told so far keep; those pages

    def __call__(self, header_at: int, at: int, stored: int, size: int, inflated: int) -> int:
        self.pages += 1
        if at + stored > self.end:
            return 0
        if inflated + self.kept > self.budget:
            raise ParquetRefused(f"it could decode to over {self.budget} bytes (delta strings)")
        self.spent[0] += 1
        if self.spent[0] > MAX_TOLD_PAGES:
            raise ParquetRefused(f"it has over {MAX_TOLD_PAGES} pages of delta strings to read")
        if at - header_at > MAX_DELTA_HEADER:  # read again here, in Python: ~0.3 s a MB
            raise ParquetRefused(f"a page header of delta strings is over {MAX_DELTA_HEADER} bytes")
        try:
            ints, structs, _ = _struct(self.data, header_at, 0, at)
            v2 = ints.get(1) == DATA_PAGE_V2
            page = structs[8 if v2 else 5][0]
            values = self._values(page, v2, self.data[at : at + stored], size)
            if values is None:
                raise ValueError("its levels or codec are not read here")
            total, blocks, end, _ = _delta(values, 0, False)
            # and a pointer and length per value of the page, before they are copied out
            kept = self._keep(inflated, 4 * total + blocks + 16 * max(page.get(1, 0), 0))
            if page.get(4 if v2 else 2) == DELTA_BYTE_ARRAY:
                if self.spent[3] + total > MAX_DELTA_VALUES:
                    raise ValueError(f"over {MAX_DELTA_VALUES} prefix lengths in a read")
                self.spent[3] += total
                _, _, end, positive = _delta(values, 0, True)
                suffixes, blocks, _, _ = _delta(values, end, False)
                kept += self._keep(inflated, 4 * suffixes + blocks + 2 * (positive + len(values)))
        except ParquetRefused:
            raise
        except (ValueError, IndexError, KeyError) as e:
            raise ParquetRefused(f"a page of delta strings cannot be bounded ({e})") from None
        return kept

    def _keep(self, inflated: int, n: int) -> int:
        self.kept += n
        if inflated + self.kept > self.budget:
            raise ParquetRefused(f"it could decode to over {self.budget} bytes (delta strings)")
        return n

    def _values(self, page: dict, v2: bool, stored, size: int):
        """The page's values section, inflated, as Arrow finds it; None where it would not."""
        if v2:  # levels first, uncompressed: repetition, then definition
            levels = page.get(6, 0) + page.get(5, 0)
            if min(page.get(6, 0), page.get(5, 0)) < 0 or levels > min(len(stored), size):
                return None
            if not page.get(BOOL + 7, True):  # is_compressed: false
                return memoryview(stored[levels:]).cast("B")
            return _inflate(stored[levels:], self.codec, size - levels)
        raw = _inflate(stored, self.codec, size)
        if raw is None or len(raw) != size:
            return None
        pos, count = 0, max(page.get(1, 0), 0)
        for top, encoding in ((self.repeated, page.get(4)), (self.defined, page.get(3))):
            if top <= 0:
                continue
            if encoding == RLE:  # a 4-byte length, then the runs
                if len(raw) - pos < 4:
                    return None
                n = int.from_bytes(raw[pos : pos + 4], "little", signed=True)
                if not 0 <= n <= len(raw) - pos - 4:
                    return None
                pos += 4 + n
            elif encoding == BIT_PACKED:
                n = (count * top.bit_length() + 7) // 8
                if n > len(raw) - pos:
                    return None
                pos += n
            else:
                return None
        return raw[pos:]


def _delta(data, pos: int, decode: bool) -> tuple[int, int, int, int]:
    """(values announced, mini-blocks per block, end, sum of the values above 0) of the
    DELTA_BINARY_PACKED stream of 32-bit values at ``data[pos:]``, read as Arrow reads it:
    in C (mlvc/_pqpages.c ``delta``, which says it in full) when built, else in Python.
    ValueError for a stream Arrow would not read."""
    c = extension("mlvc._pqpages")
    return _delta_py(data, pos, decode) if c is None else c.delta(data, pos, decode)


def _delta_py(data, pos: int, decode: bool) -> tuple[int, int, int, int]:
    """``_delta`` in Python, with the C one's results."""
    try:
        return _delta_read(data, pos, decode)
    except IndexError:
        raise ValueError("a delta header's bytes are missing") from None


def _vlq32(b, pos: int) -> tuple[int, int]:
    result = 0
    for i in range(5):
        byte = b[pos + i]
        result |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            if result >> 32:
                raise ValueError("a delta header's number is over 32 bits")
            return result, pos + i + 1
    raise ValueError("a delta header's number is over 5 bytes")


def _int32(n: int) -> int:
    n &= 0xFFFFFFFF
    return n - (1 << 32) if n >> 31 else n


def _zigzag32(n: int) -> int:
    return _int32((n >> 1) ^ -(n & 1))


def _delta_read(data, pos: int, decode: bool) -> tuple[int, int, int, int]:
    per_block, pos = _vlq32(data, pos)
    blocks, pos = _vlq32(data, pos)
    total, pos = _vlq32(data, pos)
    first, pos = _vlq32(data, pos)
    per_mini = per_block // blocks if blocks else 0
    if not per_block or per_block % 128 or not blocks or not per_mini or per_mini % 32:
        raise ValueError("a delta header Arrow refuses")
    if total >> 31:
        raise ValueError("a delta header announces 2**31 values or more")
    if not decode or not total:
        return total, blocks, pos, 0
    last = _zigzag32(first)
    positive, left = max(last, 0), total - 1
    while left > 0:
        raw, pos = _vlq32(data, pos)
        step = _zigzag32(raw)
        widths = bytes(data[pos : pos + blocks])
        if len(widths) < blocks:
            raise ValueError("a delta block's bit widths are missing")
        pos += blocks
        for width in widths:
            if left <= 0:
                break
            if width > 32:
                raise ValueError("a delta mini-block's bit width is over 32")
            size = per_mini * width // 8
            if size > len(data) - pos:
                raise ValueError("a delta mini-block's bytes are missing")
            take, mask = min(left, per_mini), (1 << width) - 1
            for group in range(0, take, 32):  # 32 values in 4 * width bytes
                at = pos + group * width // 8
                bits = int.from_bytes(data[at : at + 4 * width], "little")
                for j in range(min(32, take - group)):
                    last = _int32(last + step + (bits >> (j * width) & mask))
                    positive += max(last, 0)
            pos += size
            left -= take
    return total, blocks, pos, positive


SLACK = 8192  # values a reader may decode past the rows it was asked for (its level batches)


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


def _wrap16(v: int) -> int:
    return ((v + 0x8000) & 0xFFFF) - 0x8000


def _field(b, pos: int, last: int, stop: int) -> tuple[int, int, int]:
    """The field header at ``pos`` of a struct whose last field read was ``last``: (its id,
    its compact type, the position after it); type 0 ends the struct. ValueError past
    ``stop``."""
    if pos >= stop:
        raise ValueError("it runs past its chunk or MAX_HEADER")
    head = b[pos]
    pos += 1
    if head == 0:
        return last, 0, pos
    if not head & 0x0F:  # Thrift's reader would end the struct; refused here
        raise ValueError("a field of compact type 0")
    # a field id is 16 bits to Thrift's reader: a delta wraps, and a long id is read as a
    # 32-bit varint cut to 16 bits (65538 is field 2)
    if head >> 4:
        return _wrap16(last + (head >> 4)), head & 0x0F, pos
    n, pos = _varint(b, pos)
    n &= 0xFFFFFFFF
    return _wrap16((n >> 1) ^ -(n & 1)), head & 0x0F, pos


def _list_head(b, pos: int, items: int) -> tuple[int, int, int]:
    """A list's or set's header at ``pos``: (its size, its items' compact type, the position
    after it). ValueError past ``items`` items."""
    head = b[pos]
    pos += 1
    count = head >> 4
    if count == 15:
        count, pos = _varint(b, pos)
    if count > items:
        raise ValueError(f"a container of {count} items")
    return count, head & 0x0F, pos


def _struct(
    b, pos: int, depth: int, stop: int, into=None, items: int = _MAX_ITEMS
) -> tuple[dict, dict, int]:
    """The struct at ``pos`` of ``b``: its i32 fields ({id: value}, as Thrift reads an i32:
    the varint's low 32 bits) and bool fields (at ``BOOL + id``), its struct fields ({id:
    (ints, structs)}), and the position after it; other fields are skipped. ValueError if
    it runs past ``stop`` or a container holds over ``items`` items. ``into``: (ints,
    structs) of the same struct read before (a field given twice: Thrift's reader reads the
    second into the first, whose fields the second does not give stay as they were)."""
    if depth > _MAX_DEPTH:
        raise ValueError("structs nested too deep")
    ints, structs = ({}, {}) if into is None else into
    last = 0
    while True:
        last, kind, pos = _field(b, pos, last, stop)
        if kind == 0:
            return ints, structs, pos
        if kind == _I32:
            n = b[pos]
            pos += 1
            if n >= 0x80:
                n, pos = _varint(b, pos - 1)
            n &= 0xFFFFFFFF
            ints[last] = (n >> 1) ^ -(n & 1)
        elif kind == _STRUCT:
            sub = _struct(b, pos, depth + 1, stop, structs.get(last), items)
            structs[last] = sub[:2]
            pos = sub[2]
        elif kind == 1 or kind == 2:  # a bool field: its value is its type
            ints[BOOL + last] = kind == 1
        else:
            pos = _skip(b, pos, kind, depth, stop, items)


def _skip(b, pos: int, kind: int, depth: int, stop: int, items: int = _MAX_ITEMS) -> int:
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
        return _struct(b, pos, depth + 1, stop, None, items)[2]
    if kind in (9, 10, 11):  # list, set: (size << 4 | type); map: varint size, types
        if depth > _MAX_DEPTH:
            raise ValueError("containers nested too deep")
        if kind == 11:
            count, pos = _varint(b, pos)
            types = (b[pos] >> 4, b[pos] & 0x0F) if count else ()
            pos += 1 if count else 0
            if count > items:
                raise ValueError(f"a container of {count} items")
        else:
            count, item, pos = _list_head(b, pos, items)
            types = (item,)
        for _ in range(count):
            for t in types:
                pos = _skip(b, pos, t, depth + 1, stop, items)
        return pos
    raise ValueError(f"unknown compact type {kind}")


_LIST, _I64 = 9, 6


class _Chunk(NamedTuple):
    """A column chunk as its footer gives it (parquet.thrift's ColumnMetaData, fields 4, 5,
    7, 9, 11), named as pyarrow names them; ``dictionary_page_offset`` None when unset."""

    codec: int
    num_values: int
    total_compressed_size: int
    data_page_offset: int
    dictionary_page_offset: int | None


_CHUNK_FIELDS = {(4, _I32): "codec", (5, _I64): "num_values", (7, _I64): "total_compressed_size",
                 (9, _I64): "data_page_offset", (11, _I64): "dictionary_page_offset"}  # fmt: skip


def _chunks(data, groups: int, columns: int) -> list[list[_Chunk]]:
    """Each of ``columns`` column chunks of each of ``groups`` row groups of the Parquet file
    ``data``, read from its footer here, as pyarrow's reader reads it. Not from pyarrow's
    metadata: a chunk's ``compression`` of a number pyarrow does not know, and its
    ``row_group(g).column(i)`` of size statistics that do not match the schema (and any
    check its constructor adds), throw C++ exceptions no Python code can catch, and the
    process aborts (pyarrow 26). ParquetRefused if the footer does not parse here, or a
    chunk lacks a field or is encrypted, or names an unknown codec."""
    end = len(data) - 8
    size = int.from_bytes(data[end : end + 4], "little")
    try:
        if not 0 < size <= end:
            raise ValueError("its footer's length is not within it")
        found = _footer_chunks(bytes(data[end - size : end]))
    except (ValueError, IndexError) as e:  # IndexError: a varint at the footer's end
        raise ParquetRefused(f"its footer does not parse ({e})") from None
    if len(found) < groups:
        raise ParquetRefused(f"its footer names {len(found)} row groups, not {groups}")
    out = []
    for g, chunks in enumerate(found[:groups]):
        if len(chunks) < columns:
            raise ParquetRefused(f"row group {g} has {len(chunks)} column chunks, not {columns}")
        out.append([])
        for i, fields in enumerate(chunks[:columns]):
            where = f"row group {g}, column {i}"
            if fields is None:
                raise ParquetRefused(f"{where} is encrypted (not read here)")
            missing = [n for n in _Chunk._fields[:4] if n not in fields]  # all but the last
            if missing:
                raise ParquetRefused(f"{where} lacks its {missing[0]}")
            if fields["codec"] not in _KNOWN_CODECS:
                raise ParquetRefused(f"{where} names an unknown compression codec "
                                     f"({fields['codec']})")  # fmt: skip
            out[-1].append(_Chunk(**{"dictionary_page_offset": None, **fields}))
    return out


def _footer_chunks(b: bytes) -> list[list[dict | None]]:
    """parquet.thrift's FileMetaData ``b``: the fields ``_CHUNK_FIELDS`` names of each column
    chunk (of its ColumnMetaData: field 3 of a ColumnChunk, each of field 1 of a RowGroup,
    each of field 4 of the file), by name; None for a chunk with crypto metadata (field 8).
    Read as Thrift's reader reads it: a field of another type is skipped, a list's items are
    read as structs whatever type it says, a list given twice is the second, a struct given
    twice is read into the first (the fields the second lacks stay)."""
    groups: list[list[dict | None]] = []

    def row_groups(pos: int) -> int:
        groups.clear()
        return _items(b, pos, group)

    def group(pos: int) -> int:
        groups.append([])
        return _fields(b, pos, 1, {(1, _LIST): lambda at: _items(b, at, chunk)})

    def chunk(pos: int) -> int:
        fields: dict = {}
        readers = {key: _kept(b, fields, name) for key, name in _CHUNK_FIELDS.items()}

        def encrypted(at: int) -> int:
            fields["encrypted"] = True
            return _skip(b, at, _STRUCT, 3, len(b), len(b))

        read = {(3, _STRUCT): lambda at: _fields(b, at, 3, readers), (8, _STRUCT): encrypted}
        pos = _fields(b, pos, 2, read)
        groups[-1].append(None if fields.pop("encrypted", False) else fields)
        return pos

    _fields(b, 0, 0, {(4, _LIST): row_groups})
    return groups


def _kept(b, into: dict, name: str):
    """A reader of an i32 or i64 field (a zigzag varint, as Thrift reads it: an i32 from its
    low 32 bits) that keeps its value in ``into[name]``."""

    def read(pos: int) -> int:
        n, pos = _varint(b, pos)
        if name == "codec":
            n &= 0xFFFFFFFF
        into[name] = (n >> 1) ^ -(n & 1)
        return pos

    return read


def _fields(b, pos: int, depth: int, read: dict) -> int:
    """The position after the struct at ``pos`` of ``b``, whose fields ``read`` names by
    (id, compact type) are read by the function it gives (the position after them); the
    others are skipped (no container limit but the footer's bytes)."""
    last = 0
    while True:
        last, kind, pos = _field(b, pos, last, len(b))
        if kind == 0:
            return pos
        if (last, kind) in read:
            pos = read[last, kind](pos)
        elif kind not in (1, 2):  # a bool field's value is its type
            pos = _skip(b, pos, kind, depth, len(b), len(b))


def _items(b, pos: int, read) -> int:
    """The position after the list at ``pos``, each of whose items ``read`` reads."""
    count, _, pos = _list_head(b, pos, len(b) - pos)  # each item takes a byte at least
    for _ in range(count):
        pos = read(pos)
    return pos
