"""Parquet files written by hand (the Thrift compact protocol, field by field), to craft
what pyarrow's writer never produces: page headers whose counts lie, pages of a type that
carries another's header, row groups whose row counts lie. A struct is a list of
(field id, type, value)."""

from __future__ import annotations

import itertools
import struct

import numpy as np
import pyarrow as pa

TYPES = {"true": 1, "false": 2, "i32": 5, "i64": 6, "bin": 8, "list": 9, "struct": 12}
CODECS = {None: 0, "zstd": 6}


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def _zigzag(v: int) -> bytes:
    return varint((v << 1) ^ (v >> 63))


def _value(kind: str, v) -> bytes:
    if kind in ("true", "false"):  # a bool field: its value is its type
        return b""
    if kind in ("i32", "i64"):
        return _zigzag(v)
    if kind == "bin":
        v = v.encode() if isinstance(v, str) else v
        return varint(len(v)) + v
    if kind == "struct":
        return thrift(v)
    etype, items = v  # a list
    head = bytes([len(items) << 4 | TYPES[etype]]) if len(items) < 15 else (
        bytes([0xF0 | TYPES[etype]]) + varint(len(items)))  # fmt: skip
    return head + b"".join(_value(etype, x) for x in items)


def thrift(fields) -> bytes:
    """A struct, each field with a long header (its type, then its id)."""
    out = b"".join(bytes([TYPES[k]]) + _zigzag(fid) + _value(k, v) for fid, k, v in fields)
    return out + b"\x00"


def _compress(raw: bytes, codec: str | None) -> bytes:
    return raw if codec is None else pa.compress(raw, codec=codec, asbytes=True)


def v1_page(raw: bytes, values: int, codec="zstd", encoding=0, kind=0, extra=()) -> bytes:
    """A page of type ``kind`` (DATA_PAGE) with a v1 data page header."""
    body = _compress(raw, codec)
    header = [(1, "i32", kind), (2, "i32", len(raw)), (3, "i32", len(body)),
              (5, "struct", [(1, "i32", values), (2, "i32", encoding), (3, "i32", 3),
                             (4, "i32", 3)]), *extra]  # fmt: skip
    return thrift(header) + body


def v2_page(raw: bytes, values: int, rows: int, rep=b"", defs=b"", codec="zstd") -> bytes:
    """A DATA_PAGE_V2 whose header says ``rows`` rows; levels stored uncompressed first."""
    body = _compress(raw, codec)
    sub = [(1, "i32", values), (2, "i32", 0), (3, "i32", rows), (4, "i32", 0),
           (5, "i32", len(defs)), (6, "i32", len(rep))]  # fmt: skip
    header = [(1, "i32", 3), (2, "i32", len(rep) + len(defs) + len(raw)),
              (3, "i32", len(rep) + len(defs) + len(body)), (8, "struct", sub)]  # fmt: skip
    return thrift(header) + rep + defs + body


def dictionary_page(raw: bytes, entries: int, codec="zstd", extra=()) -> bytes:
    body = _compress(raw, codec)
    header = [(1, "i32", 2), (2, "i32", len(raw)), (3, "i32", len(body)),
              (7, "struct", [(1, "i32", entries), (2, "i32", 0)]), *extra]  # fmt: skip
    return thrift(header) + body


def int64s(n: int, v: int = 0) -> bytes:
    return np.full(n, v, dtype=np.int64).tobytes()


def leaf(name: str, physical: int, repetition: int = 0, *extra) -> list:
    """A schema element: ``repetition`` 0 required, 1 optional, 2 repeated."""
    return [(1, "i32", physical), (3, "i32", repetition), (4, "bin", name), *extra]


def group(name: str, children: int, repetition: int = 1) -> list:
    """A schema element holding ``children`` (a struct)."""
    return [(3, "i32", repetition), (4, "bin", name), (5, "i32", children)]


def parquet_file(groups, rows_by_group, leaves, codec="zstd", schema=None, paths=None,
                 created_by="parquet-cpp-arrow version 26.0.1", after=b"",
                 shared=False) -> bytes:  # fmt: skip
    """``groups``: per row group, per leaf of ``leaves``, (its pages' bytes, values the
    chunk's metadata claims); ``rows_by_group``: what the footer says each group holds.
    ``schema``: the elements under the root when not just ``leaves`` (``paths``: each
    leaf's path then); ``after``: bytes right after the last chunk, in no chunk;
    ``shared``: every group's chunks say they are the first group's (their bytes)."""
    out = bytearray(b"PAR1")
    written, firsts = [], []  # firsts: the first group's chunks (start, bytes)
    for chunks, rows in zip(groups, rows_by_group, strict=True):
        columns = []
        for k, ((pages, values), element) in enumerate(zip(chunks, leaves, strict=True)):
            start = len(out)
            out += pages
            if not written:
                firsts.append((start, pages))
            elif shared:  # the first group's chunk k: its start and length
                start, pages = firsts[k]
            fields = {fid: v for fid, _kind, v in element}  # 1: physical type, 4: name
            path = paths[k] if paths else [fields[4]]
            meta = [(1, "i32", fields[1]), (2, "list", ("i32", [0, 3, 8])),
                    (3, "list", ("bin", path)), (4, "i32", CODECS[codec]),
                    (5, "i64", values), (6, "i64", len(pages)), (7, "i64", len(pages)),
                    (9, "i64", start)]  # fmt: skip
            columns.append([(2, "i64", start), (3, "struct", meta)])
        written.append([(1, "list", ("struct", columns)), (2, "i64", 0), (3, "i64", rows)])
    elements = schema or leaves
    top = sum(1 for _ in _top_level(elements))
    schema = [[(4, "bin", "schema"), (5, "i32", top)], *elements]
    footer = thrift([(1, "i32", 1), (2, "list", ("struct", schema)),
                     (3, "i64", sum(rows_by_group)), (4, "list", ("struct", written)),
                     (6, "bin", created_by)])  # fmt: skip
    return bytes(out) + after + footer + struct.pack("<I", len(footer)) + b"PAR1"


def _top_level(elements):
    """The elements directly under the root (each group's children follow it)."""
    i = 0
    while i < len(elements):
        yield elements[i]
        pending = {fid: v for fid, _k, v in elements[i]}.get(5, 0)
        i += 1
        while pending:
            pending += {fid: v for fid, _k, v in elements[i]}.get(5, 0) - 1
            i += 1


def _zigzag32(v: int) -> bytes:
    return varint(((v << 1) ^ (v >> 31)) & 0xFFFFFFFF)


def _int32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


def delta_packed(values: list[int], per_block: int = 128, minis: int = 4) -> bytes:
    """32-bit ``values`` as a DELTA_BINARY_PACKED stream (parquet-format Encodings.md):
    each block's deltas less its smallest, bit-packed per mini-block at the fewest bits; a
    last block's unneeded mini-blocks have width 0 and no bytes."""
    out = varint(per_block) + varint(minis) + varint(len(values))
    out += _zigzag32(values[0] if values else 0)
    deltas = [_int32(b - a) for a, b in itertools.pairwise(values)]
    per_mini = per_block // minis
    for i in range(0, len(deltas), per_block):
        block = deltas[i : i + per_block]
        least = min(block)
        rel = [(d - least) & 0xFFFFFFFF for d in block]
        widths, packed = [], b""
        for k in range(minis):
            chunk = rel[k * per_mini : (k + 1) * per_mini]
            width = max(chunk).bit_length() if chunk else 0
            widths.append(width)
            if chunk:
                bits = sum(v << (j * width) for j, v in enumerate(chunk))
                packed += bits.to_bytes(per_mini * width // 8, "little")
        out += _zigzag32(least) + bytes(widths) + packed
    return out
