"""Records received from elsewhere: a whole pack file is verified, then stored.

A pack sent by a client (or fetched from a remote) is mlvc's pack format (``MLVCPACK`` + per
object ``id | u64 length | record``). Nothing in it is trusted before its hash is checked:
every record must hold the object its id names — a raw or compressed record by the BLAKE3 of
its content, a chunked one by the BLAKE3 of its chunks put together (each chunk from the same
pack or already stored). One bad record refuses the whole pack, and nothing of it is stored;
a pack that verifies has the records the store lacks appended by the store's pack writer and
made durable (``sync``) before this returns, so a ref may name them next.

The file is read through an mmap, so a pack of any size costs no more memory than the
biggest record's decompression (a compressed record holds at most ``ZSTD_MAX`` bytes).
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import blake3

from ..core.ids import ObjectId
from ..errors import CorruptObject, MissingObject, PackError
from ..store import compress as zstd
from ..store.locks import writing
from ..store.odb import CHUNKED, RAW, ZSTD, ZSTD_MAX, _parse_chunk_list
from ..store.pack.store import HEAD, PACK_MAGIC

HASH_BLOCK = 4 << 20
MAX_CHUNK_LIST = 64 << 20  # as the pack scanner: a bigger chunk list is not believed


@dataclass(frozen=True)
class Received:
    """What one pack brought: its records, those newly stored, and their bytes."""

    records: int
    stored: int
    stored_bytes: int
    ids: tuple[bytes, ...]


def _refuse(name: str, oid: bytes | None, why: str) -> PackError:
    who = f"record {oid.hex()}" if oid is not None else "it"
    return PackError(f"pack {name}: {who} {why}; the pack was refused and nothing was stored")


def _records(mm, name: str) -> list[tuple[bytes, int, int]]:
    """(id, record offset, record length) of every record, the framing checked."""
    size = len(mm)
    if size < len(PACK_MAGIC) or mm[: len(PACK_MAGIC)] != PACK_MAGIC:
        raise _refuse(name, None, "does not start with the pack header (MLVCPACK, version 1)")
    out = []
    off = len(PACK_MAGIC)
    while off < size:
        if off + HEAD.size > size:
            raise _refuse(name, None, f"ends inside a record header at offset {off}")
        oid, n = HEAD.unpack_from(mm, off)
        start = off + HEAD.size
        if n == 0 or start + n > size:
            raise _refuse(name, oid, f"at offset {start} runs past the end of the pack")
        out.append((oid, start, n))
        off = start + n
    return out


def _content_ok(view, oid: bytes) -> str:
    """Why a raw or compressed record does not hold ``oid`` ("" if it does)."""
    tag = bytes(view[:1])
    if tag == RAW:
        h = blake3.blake3()
        for i in range(1, len(view), HASH_BLOCK):
            h.update(view[i : i + HASH_BLOCK])
        return "" if h.digest() == oid else "does not hash to its id"
    if tag == ZSTD:
        if len(view) > ZSTD_MAX + 1024:
            return "is a compressed record bigger than any mlvc writes"
        try:
            data = zstd.decompress(view[1:], ZSTD_MAX)
        except ValueError as e:
            return f"cannot be decompressed ({e})"
        return "" if blake3.blake3(data).digest() == oid else "does not hash to its id"
    return f"has an unknown record tag {tag!r}"


def _chunks_ok(mm, name: str, oid: bytes, off: int, n: int, here: dict, store) -> str:
    """Why a chunked record does not hold ``oid``: each chunk (verified, from this pack or
    the store) is hashed in order and the whole compared with the id."""
    if n > MAX_CHUNK_LIST:
        return "has an implausibly big chunk list"
    try:
        chunks = _parse_chunk_list(bytes(mm[off + 1 : off + n]), ObjectId(oid), name)
    except CorruptObject:
        return "has an unreadable chunk list"
    h = blake3.blake3()
    for cid, size in chunks:
        loc = here.get(bytes(cid))
        if loc is not None:
            view = memoryview(mm)[loc[0] : loc[0] + loc[1]]
            if bytes(view[:1]) == CHUNKED:
                return f"lists chunk {cid.hex}, which is itself a chunk list"
            data = view[1:] if bytes(view[:1]) == RAW else zstd.decompress(view[1:], ZSTD_MAX)
        elif store is not None and store.has(cid):
            try:
                data = store.read_bytes(cid)
            except (CorruptObject, MissingObject) as e:
                return f"lists chunk {cid.hex}, which cannot be read here ({e})"
        else:
            return f"lists chunk {cid.hex}, which is neither in the pack nor stored here"
        if len(data) != size:
            return f"says chunk {cid.hex} has {size} bytes, but it has {len(data)}"
        h.update(data)
    return "" if h.digest() == oid else "does not hash to its id (its chunks put together)"


def verify_pack(path: str | os.PathLike, name: str, store=None) -> list[tuple[bytes, int, int]]:
    """Every record of the pack at ``path``, each verified against its id; PackError naming
    the first bad record otherwise. ``store`` supplies chunks the pack does not carry."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise _refuse(name, None, "is empty")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        records = _records(mm, name)
        here = {oid: (off, n) for oid, off, n in records}
        chunked = []
        for oid, off, n in records:
            if mm[off : off + 1] == CHUNKED:
                chunked.append((oid, off, n))
                continue
            why = _content_ok(memoryview(mm)[off : off + n], oid)
            if why:
                raise _refuse(name, oid, why)
        for oid, off, n in chunked:
            why = _chunks_ok(mm, name, oid, off, n, here, store)
            if why:
                raise _refuse(name, oid, why)
        return records
    finally:
        mm.close()


def receive_pack(
    store, mlvc_dir: str | os.PathLike, path: str | os.PathLike, name: str
) -> Received:
    """Verify the pack at ``path`` whole, then store the records ``store`` (a PackedStore)
    lacks, durably. PackError (naming the first bad record) and nothing stored otherwise."""
    records = verify_pack(path, name, store)
    stored = stored_bytes = 0
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        with writing(Path(mlvc_dir), store):  # gc cannot sweep them before a ref names them
            writer = store.writer
            store.reload(force=True)
            for oid, off, n in records:
                # the write path's ``has``: no forced re-listing per object, and a dedup hit
                # freshens its pack for gc's grace period
                if store._exists(ObjectId(oid)):
                    continue
                # one memoryview per record: the writer copies small ones into its buffer
                # and hands big ones to the kernel, so no record is copied twice
                view = memoryview(mm)[off : off + n]
                writer.append(oid, bytes(view[:1]), view[1:])
                view.release()
                stored += 1
                stored_bytes += n
            store.sync()
    finally:
        mm.close()
    return Received(len(records), stored, stored_bytes, tuple(oid for oid, _o, _n in records))


def index_ids(path: str | os.PathLike, name: str) -> list[bytes]:
    """The ids an index file (``.idx``, the pack index format) names, its checksum checked;
    PackError if it is not a whole, intact index."""
    from ..store.pack.index import PackIndex

    try:
        idx = PackIndex(Path(path))
    except PackError:
        raise PackError(f"index {name} is not an mlvc pack index (torn or damaged)") from None
    if not idx.checksum_ok():
        raise PackError(f"index {name} is damaged: its checksum does not match")
    return [oid for oid, _pack, _off, _n in idx.entries()]
