"""Arrow IPC bodies sent by others (a server's live batches, a model's scoring requests),
read whole without letting a small body become a huge table.

An IPC stream or file may carry its buffers compressed (LZ4 or zstd), and pyarrow inflates
them as it reads, to whatever size they claim: 8.5 KB of zstd became 256 MiB of zeros here,
so a body under the server's 64 MiB limit could ask for terabytes. A body is looked at first,
message by message (a stream's in order; a file's through the blocks its footer lists, which
is what its reader reads), and one with compressed buffers is refused before any is inflated.
Uncompressed, a table is about as large as the body that holds it. The table read is then
validated whole (``validated``): pyarrow's reader checks layouts, not values, and damaged
offsets or lengths crash a process that reads them later.

The check reads the IPC message's flatbuffer by hand (pyarrow does not expose the field):
``Message.header`` (a ``RecordBatch``, or a ``DictionaryBatch`` whose ``data`` is one) and
the ``RecordBatch.compression`` field's presence, per Arrow's format/Message.fbs and
format/File.fbs.
"""

from __future__ import annotations

import struct
from typing import Any

_HEADER_DICTIONARY, _HEADER_RECORD_BATCH = 2, 3  # MessageHeader union tags
_MAGIC = b"ARROW1"
_BLOCK = struct.Struct("<qi4xq")  # File.fbs Block: offset, metaDataLength, (pad), bodyLength


class IpcRefused(ValueError):
    """A body that is not an Arrow IPC stream or file this reader takes."""


def read_ipc(data: bytes) -> Any:
    """The table of an Arrow IPC file (it starts with ``ARROW1``) or stream; IpcRefused,
    naming why, if it is damaged or its buffers are compressed."""
    import pyarrow as pa

    buf = pa.py_buffer(data)
    try:
        if bytes(data[:6]) == _MAGIC:
            check_file(data)
            return validated(pa.ipc.open_file(buf).read_all())
        reader = pa.ipc.MessageReader.open_stream(buf)
        while True:
            try:
                message = reader.read_next_message()
            except StopIteration:
                break
            _refuse_compressed(message)
        return validated(pa.ipc.open_stream(buf).read_all())
    except (pa.ArrowException, OSError, ValueError, struct.error, IndexError) as e:
        if isinstance(e, IpcRefused):
            raise
        raise IpcRefused(f"it is not a readable Arrow IPC stream or file ({_first(e)})") from None


def validated(table):
    """``table`` (read from IPC bytes), once every array of it is checked whole (offsets,
    lengths, null counts, dictionary indices, UTF-8): IpcRefused if one is damaged.
    pyarrow's IPC reader checks a message's layout, not its values, and a table read from
    damaged bytes crashed the process later (a segfault in ``to_pylist``, an abort on a
    negative length: found by fuzzing a live batch's body)."""
    import pyarrow as pa

    try:
        table.validate(full=True)
    except pa.ArrowInvalid as e:
        raise IpcRefused(f"its arrays are damaged ({_first(e)})") from None
    return table


def check_file(data) -> None:
    """Refuse (IpcRefused) an Arrow IPC file any of whose batches is compressed, before a
    reader inflates it. Read from the bytes alone, with no pyarrow object (a run's series
    blob is checked on every index rebuild): each block the footer lists is an
    encapsulated message, a continuation marker and its metadata's length, then the
    Message flatbuffer."""
    try:
        for offset in _file_blocks(data):
            marker, size = struct.unpack_from("<Ii", data, offset)
            start = offset + 8 if marker == 0xFFFFFFFF else offset + 4  # pre-0.15 has none
            size = size if marker == 0xFFFFFFFF else marker
            if not 0 < size <= len(data) - start:
                raise IpcRefused("a block of its Arrow file footer is damaged")
            if _compressed(bytes(data[start : start + size])):
                _refuse_compressed(None)
    except (struct.error, IndexError) as e:
        raise IpcRefused(f"it is not a readable Arrow IPC file ({_first(e)})") from None


def _first(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:200]


def _refuse_compressed(message) -> None:
    """IpcRefused if ``message`` (a pyarrow Message; None: already found compressed) has
    compressed buffers."""
    if message is None or _compressed(message.metadata.to_pybytes()):
        raise IpcRefused(
            "its buffers are compressed (LZ4 or zstd), which could inflate without bound: "
            "send them uncompressed (IpcWriteOptions(compression=None), pyarrow's default)"
        )


def _compressed(fb: bytes) -> bool:
    """Whether the Message flatbuffer ``fb`` is a record or dictionary batch whose
    ``compression`` field is set."""
    message = _table(fb, struct.unpack_from("<I", fb, 0)[0])
    kind = _scalar(fb, message, 1, "<B")
    header = _child(fb, message, 2)
    if header is not None and kind == _HEADER_DICTIONARY:
        header = _child(fb, header, 1)  # DictionaryBatch.data
    elif kind != _HEADER_RECORD_BATCH:
        return False
    return header is not None and _child(fb, header, 3) is not None


def _file_blocks(data: bytes) -> list[int]:
    """The offsets of the messages an IPC file's footer lists (dictionaries, then record
    batches)."""
    if len(data) < 18 or bytes(data[-6:]) != _MAGIC:
        raise IpcRefused("it starts as an Arrow IPC file but does not end as one")
    (size,) = struct.unpack_from("<i", data, len(data) - 10)
    start = len(data) - 10 - size
    if size <= 0 or start < 8:
        raise IpcRefused("its Arrow file footer is damaged")
    fb = bytes(data[start : len(data) - 10])
    footer = _table(fb, struct.unpack_from("<I", fb, 0)[0])
    offsets = []
    for field in (2, 3):  # Footer.dictionaries, Footer.recordBatches
        at = _offset_field(fb, footer, field)
        if at is None:
            continue
        (n,) = struct.unpack_from("<I", fb, at)
        if n > len(fb) // _BLOCK.size:
            raise IpcRefused("its Arrow file footer is damaged")
        offsets += [_BLOCK.unpack_from(fb, at + 4 + i * _BLOCK.size)[0] for i in range(n)]
    if any(not 8 <= o < start for o in offsets):
        raise IpcRefused("its Arrow file footer points outside the file")
    return offsets


# -- flatbuffers, read by hand: a table is a vtable offset, the vtable lists field offsets ----


def _table(fb: bytes, pos: int) -> tuple[int, tuple[int, ...]]:
    (back,) = struct.unpack_from("<i", fb, pos)
    vtable = pos - back
    size, _ = struct.unpack_from("<HH", fb, vtable)
    if size < 4 or size % 2:
        raise IpcRefused("its Arrow message metadata is damaged")
    return pos, struct.unpack_from(f"<{(size - 4) // 2}H", fb, vtable + 4)


def _present(table: tuple[int, tuple[int, ...]], field: int) -> int | None:
    pos, fields = table
    return pos + fields[field] if field < len(fields) and fields[field] else None


def _scalar(fb: bytes, table, field: int, fmt: str) -> int:
    at = _present(table, field)
    return 0 if at is None else struct.unpack_from(fmt, fb, at)[0]


def _offset_field(fb: bytes, table, field: int) -> int | None:
    """Where an offset field (a table or a vector) points, or None if it is absent."""
    at = _present(table, field)
    return None if at is None else at + struct.unpack_from("<I", fb, at)[0]


def _child(fb: bytes, table, field: int):
    at = _offset_field(fb, table, field)
    return None if at is None else _table(fb, at)
