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

import errno
import mmap
import os
import re
import secrets
import time
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
_CONTENT_NAME = re.compile(r"^pack-[0-9a-f]{32}\.pack$")


@dataclass(frozen=True)
class Received:
    """What one pack brought: its records, those newly stored, and their bytes."""

    records: int
    stored: int
    stored_bytes: int
    ids: tuple[bytes, ...]
    waiting: tuple[bytes, ...] = ()  # chunk lists kept until their chunks arrive


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


class _Waiting(Exception):
    """A chunk list names a chunk that has not arrived yet (a later pack may bring it)."""


def _chunks_ok(records: bytes | memoryview, oid: bytes, name: str, chunk) -> str:
    """Why a chunk list (the record's payload) does not hold ``oid``: each chunk, got
    verified from ``chunk(cid)`` (None: not here yet, raises _Waiting), is hashed in order
    and the whole compared with the id."""
    if len(records) > MAX_CHUNK_LIST:
        return "has an implausibly big chunk list"
    try:
        chunks = _parse_chunk_list(bytes(records), ObjectId(oid), name)
    except CorruptObject:
        return "has an unreadable chunk list"
    h = blake3.blake3()
    for cid, size in chunks:
        try:
            data = chunk(bytes(cid))
        except (CorruptObject, MissingObject, ValueError) as e:
            return f"lists chunk {cid.hex}, which cannot be read ({e})"
        if data is None:
            raise _Waiting(cid.hex)
        if len(data) != size:
            return f"says chunk {cid.hex} has {size} bytes, but it has {len(data)}"
        h.update(data)
    return "" if h.digest() == oid else "does not hash to its id (its chunks put together)"


def _from_pack(mm, here: dict, store):
    """``chunk(cid)`` for _chunks_ok: the content of a chunk of this pack (verified
    already) or of the store, or None."""

    def chunk(cid: bytes):
        loc = here.get(cid)
        if loc is not None:
            view = memoryview(mm)[loc[0] : loc[0] + loc[1]]
            if bytes(view[:1]) == CHUNKED:
                raise ValueError("it is itself a chunk list")
            return view[1:] if bytes(view[:1]) == RAW else zstd.decompress(view[1:], ZSTD_MAX)
        return _from_store(store)(cid)

    return chunk


def _from_store(store):
    def chunk(cid: bytes):
        if store is None or not store.has(ObjectId(cid)):
            return None
        return store.read_bytes(ObjectId(cid))

    return chunk


def verify_pack(
    path: str | os.PathLike, name: str, store=None, wait: bool = False
) -> tuple[list[tuple[bytes, int, int]], list[tuple[bytes, int, int]]]:
    """(records that verify, chunk lists waiting for chunks) of the pack at ``path``;
    PackError naming the first bad record otherwise. ``store`` supplies chunks the pack does
    not carry; a chunk list naming a chunk neither has waits (``wait``: a later pack of the
    same push may carry it, as a push cuts packs in id order) or is refused."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise _refuse(name, None, "is empty")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        records = _records(mm, name)
        here = {oid: (off, n) for oid, off, n in records}
        ok, chunked, waiting = [], [], []
        for oid, off, n in records:
            if mm[off : off + 1] == CHUNKED:
                chunked.append((oid, off, n))
                continue
            why = _content_ok(memoryview(mm)[off : off + n], oid)
            if why:
                raise _refuse(name, oid, why)
            ok.append((oid, off, n))
        chunk = _from_pack(mm, here, store)
        for oid, off, n in chunked:
            try:
                why = _chunks_ok(mm[off + 1 : off + n], oid, name, chunk)
            except _Waiting as e:
                if not wait:
                    raise _refuse(name, oid, f"lists chunk {e}, which is neither in the pack "
                                  "nor stored here") from None  # fmt: skip
                waiting.append((oid, off, n))
                continue
            if why:
                raise _refuse(name, oid, why)
            ok.append((oid, off, n))
        return ok, waiting
    finally:
        _close(mm)


def receive_pack(
    store,
    mlvc_dir: str | os.PathLike,
    path: str | os.PathLike,
    name: str,
    waiting: str | os.PathLike | None = None,
    adopt: bool = False,
) -> Received:
    """Verify the pack at ``path`` whole, then store the records ``store`` (a PackedStore)
    lacks, durably. PackError (naming the first bad record) and nothing stored otherwise.

    With ``waiting`` (a folder), a chunk list whose chunks have not all arrived is kept
    there, unstored, and stored by ``settle`` once a later pack brings them. With
    ``adopt``, a pack named by its content (``pack-<BLAKE3 of its bytes, 32 hex>.pack``)
    whose every record verified becomes one of the store's packs as it is, under its name,
    with an index of its own: the file is moved, not copied, and a remote client that
    lists the store sees the very pack and index it sent (so it downloads nothing again)."""
    records, later = verify_pack(path, name, store, wait=waiting is not None)
    if adopt and not later and _content_named(path, name):
        try:
            return _adopt(store, Path(mlvc_dir), Path(path), name, records)
        except OSError as e:
            if e.errno != errno.EXDEV:  # another filesystem: copied by the writer below
                raise
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
        for oid, off, n in later:
            _keep(Path(waiting), oid, mm[off : off + n])
    finally:
        _close(mm)
    ids = tuple(oid for oid, _o, _n in records + later)
    return Received(len(ids), stored, stored_bytes, ids, tuple(o for o, _o, _n in later))


def _content_named(path, name: str) -> bool:
    if not _CONTENT_NAME.match(name):
        return False
    h = blake3.blake3()
    h.update_mmap(path)
    return name == f"pack-{h.hexdigest()[:32]}.pack"


def _adopt(store, mlvc_dir: Path, path: Path, name: str, records) -> Received:
    """Make the verified pack at ``path`` one of the store's packs, then write its index:
    the write order of a pack writer (pack durable, then its index, then a filesystem
    sync), so a crash in between leaves a pack fsck indexes, never an index without data."""
    from ..store.odb import sync_filesystem
    from ..store.pack.index import write_index
    from ..store.pack.store import MAX_INDEXES

    folder = store.pack_dir
    folder.mkdir(parents=True, exist_ok=True)
    size = path.stat().st_size
    entries = sorted((oid, name, off, n) for oid, off, n in records)
    with writing(mlvc_dir, store):
        store.reload(force=True)
        new = [(oid, n) for oid, _p, _o, n in entries if not store._exists(ObjectId(oid))]
        target = folder / name
        if not (target.is_file() and target.stat().st_size == size):  # else sent before
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(path, 0o444)
            os.replace(path, target)
        idx = folder / (name[: -len(".pack")] + ".idx")
        if not idx.is_file():
            write_index(folder, idx.name, [(name, size)], entries, durable=True)
        sync_filesystem(folder)
        store.reload(force=True)
        if len(store.indexes()) > MAX_INDEXES:
            store.consolidate()
    ids = tuple(oid for oid, _p, _o, _n in entries)
    return Received(len(ids), len(new), sum(n for _o, n in new), ids)


def _close(mm) -> None:
    try:
        mm.close()
    except BufferError:  # a view is still held by a traceback: closed when it is collected
        pass


def _keep(folder: Path, oid: bytes, record: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{oid.hex()}.{secrets.token_hex(4)}.tmp"
    tmp.write_bytes(record)
    os.replace(tmp, folder / oid.hex())


def is_waiting(folder: str | os.PathLike, oid: bytes) -> bool:
    return (Path(folder) / bytes(oid).hex()).is_file()


def settle(store, mlvc_dir: str | os.PathLike, folder: str | os.PathLike,
           max_age: float = 7 * 86400) -> tuple[int, list[str]]:  # fmt: skip
    """Store the waiting chunk lists whose chunks are all stored now, each verified whole.
    Returns (how many were stored, one line per chunk list that did not verify: dropped).
    Those waiting longer than ``max_age`` seconds are dropped (their push was abandoned)."""
    folder = Path(folder)
    try:
        names = sorted(n for n in os.listdir(folder) if len(n) == 64)
    except FileNotFoundError:
        return 0, []
    stored, problems, done = 0, [], []
    chunk = _from_store(store)
    with writing(Path(mlvc_dir), store):
        for n in names:
            path = folder / n
            try:
                record = path.read_bytes()
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                continue  # settled by a concurrent request
            oid = bytes.fromhex(n)
            if store.has(ObjectId(oid)):
                done.append(path)
                continue
            try:
                why = _chunks_ok(memoryview(record)[1:], oid, f"waiting/{n}", chunk)
            except _Waiting:
                if age > max_age:
                    done.append(path)
                continue
            if why:
                problems.append(f"chunk list {n} {why}: it was dropped")
            else:
                store.writer.append(oid, record[:1], memoryview(record)[1:])
                stored += 1
            done.append(path)
        if stored:
            store.sync()
    for path in done:
        path.unlink(missing_ok=True)
    return stored, problems


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
