"""The object database: content-addressed storage of bytes, verified on every read.

Every stored object starts with a one-byte record tag:
    ``R`` raw       the content follows as is (small files, tree/env/run objects, chunks)
    ``Z`` zstd      u64 raw size + one zstd frame (where it saves >10%: compress.py)
    ``C`` chunked   msgpack ``[[chunk_id, size], ...]``: the content is the chunks in order
An object's id is always the BLAKE3 of its *content*, whatever its record; a chunked file's
id is the hash of the whole file, and each chunk is an object of its own, shared by every
file that contains it.

Stores implement ``ObjectStore``; ``MemoryStore``, ``LocalStore`` and ``pack.PackedStore``
(what a repository uses) pass the same contract tests (tests/test_odb.py). Remote stores will
implement it over pyarrow.fs.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import blake3
import msgpack

from ..core import progress
from ..core.ids import DIGEST_SIZE, ObjectId
from ..errors import CorruptObject, FileChanged, MissingObject
from . import compress as zstd

RAW, CHUNKED, ZSTD = b"R", b"C", b"Z"
TAGS = (RAW, CHUNKED, ZSTD)
BLOCK = 1 << 20
HASH_STEP = 1 << 20  # checkout reads back and hashes what it wrote in steps of this size
HASH_BLOCK = 4 << 20  # files are hashed by reads into one buffer this size (no mmap)
HASH_TRIES = 3  # reads of a file that keeps changing before hash_file gives up
# Files larger than this are split by FastCDC. 64 KiB average chunks kept 100% of chunks
# shared after a 1 KiB insertion, where fixed 4 MiB blocks kept 39% (docs/object-format.md).
CHUNK_THRESHOLD = 4 << 20
# Writers compress only records up to this size (a small file, a chunk), so a compressed
# record claiming more is damaged or crafted: refused before anything is allocated.
ZSTD_MAX = CHUNK_THRESHOLD
CHUNK_AVG, CHUNK_MIN, CHUNK_MAX = 64 << 10, 16 << 10, 256 << 10
# Big files are read, chunked and hashed in windows of this size, and their chunks written
# in groups of about GROUP bytes: both small enough to stay in the CPU's caches. 1 MiB
# groups (one per L2 of the test machine's cores) cost 15% less CPU on the two-thread path
# than 256 KiB ones (1.04 vs 1.22 s per GiB stored, medians of 5: a quarter of the jobs
# handed over, each a future, a queue and two thread wake-ups); 512 KiB and 2 MiB did no
# better; the one-thread path is the same with either.
WINDOW = 4 << 20
GROUP = 1 << 20
# On the two-thread path the helper also hashes the chunks of one group in HASH_SHARE (the
# cutter the others): the cutting thread read, cut and hashed ~0.59 s per GiB against the
# helper's ~0.45 s, and on an idle machine the busier thread bounds the time.
HASH_SHARE = 3
MAX_CHUNKS = 1 << 24
# Big files: chunks are written (and a checkout's copy hashed) by a helper thread beside the
# one cutting or copying (see _store_chunks): ~8% more CPU for a third less time on the
# busier thread, which pays only when a core is idle. MLVC_BIG_PIPELINE=1 or 0 forces it;
# by default ("auto") it is used while another core is idle, measured as the work goes
# (core.cores.IdleWatch: the one-minute load average lags by a minute).
PIPELINE = os.environ.get("MLVC_BIG_PIPELINE", "auto")
# For benchmarks: with MLVC_BIG_STATS=FILE each big-file put (and each durable pack sync)
# appends one JSON line to FILE: windows cut on two threads and on one, seconds, bytes.
STATS = os.environ.get("MLVC_BIG_STATS", "")


def note_stats(**fields) -> None:
    """Append one line of figures to ``MLVC_BIG_STATS``'s file (nothing when it is unset)."""
    if STATS:
        import json

        with open(STATS, "a") as f:
            f.write(json.dumps({"pid": os.getpid(), **fields}) + "\n")


class _Forced:
    def __init__(self, answer: bool):
        self.answer = answer

    def spare(self) -> bool:
        return self.answer


def pipeline_switch():
    """An object whose ``spare()`` says whether big-file work should use two threads now
    (``PIPELINE``); ask it again as the work goes, the answer follows the machine's load."""
    if PIPELINE in ("0", "1", True, False):
        return _Forced(PIPELINE in ("1", True))
    from ..core.cores import IdleWatch

    return IdleWatch()


def pipelined() -> bool:
    """Whether big-file work would be split over two threads now (``pipeline_switch``)."""
    return pipeline_switch().spare()


def _fastcdc():
    """The compiled FastCDC chunker; its pure-Python fallback is too slow to be usable."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            from pyfastcdc.cy import FastCDC
        except (ImportError, Warning) as e:  # pragma: no cover - depends on the wheel
            raise RuntimeError(
                "pyfastcdc's compiled extension is missing; reinstall pyfastcdc from a wheel"
            ) from e
    return FastCDC(CHUNK_AVG, min_size=CHUNK_MIN, max_size=CHUNK_MAX)


def _stamp(st: os.stat_result) -> tuple:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def hash_file(path: str | os.PathLike) -> ObjectId:
    """BLAKE3 of a file's content (equals ``b3sum``), read in 4 MiB blocks.

    Reads, not mmap: a file truncated while it is mapped kills the process with SIGBUS. A
    file whose size, mtime, ctime or inode changes during the read is read again, and after
    ``HASH_TRIES`` attempts ``FileChanged`` is raised: a hash is only ever of one state.
    """
    buf = bytearray(HASH_BLOCK)
    view = memoryview(buf)
    for _ in range(HASH_TRIES):
        h = blake3.blake3()
        total = 0
        with open(path, "rb", buffering=0) as f:
            before = os.fstat(f.fileno())
            while n := f.readinto(buf):
                h.update(view[:n])
                total += n
            after = os.fstat(f.fileno())
        if _stamp(before) == _stamp(after) and total == before.st_size:
            return ObjectId(h.digest())
    raise FileChanged(path)


def iter_chunks(path: str | os.PathLike) -> Iterator[memoryview]:
    """FastCDC chunks of a file, read as a stream (512 KiB buffer, no whole-file map).

    Each yielded view is valid until the next one is requested.
    """
    with open(path, "rb", buffering=0) as f:
        for chunk in _fastcdc().cut_stream(f):
            yield chunk.data


def _parse_chunk_list(payload: bytes, oid: ObjectId, where: str) -> list[tuple[ObjectId, int]]:
    try:
        items = msgpack.unpackb(payload, raw=False, use_list=False, max_array_len=MAX_CHUNKS)
        return [(ObjectId(c), int(n)) for c, n in items]
    except Exception as e:
        raise CorruptObject(oid.hex, where, f"unreadable chunk list ({e})") from None


@runtime_checkable
class ObjectStore(Protocol):
    """What the rest of mlvc needs from a place that keeps objects."""

    def has(self, oid: ObjectId) -> bool: ...

    def add_bytes(self, data: bytes) -> ObjectId: ...

    def add_file(self, path: str | os.PathLike) -> ObjectId: ...

    def read_bytes(self, oid: ObjectId) -> bytes: ...

    def iter_content(self, oid: ObjectId) -> Iterator[bytes]: ...

    def size(self, oid: ObjectId) -> int: ...

    def ids(self) -> Iterator[ObjectId]: ...

    def check(self, oid: ObjectId) -> list[str]: ...

    def children(self, oid: ObjectId) -> list[ObjectId]: ...

    def sync(
        self, publish: Callable[[], None] | None = None, files: Sequence[Path] = ()
    ) -> None: ...


class _RecordStore:
    """Shared logic: records are (tag, payload); subclasses say where records live."""

    # subclasses provide: _get_record(oid) -> bytes | None, _put_record(oid, tag, payload),
    # _has_record(oid) -> bool, ids(), _where(oid) -> str

    # Objects a remote promised (a lazy clone): an object with ``promised(oid)`` and
    # ``fetch(oid) -> bool``, installed by the repository opener (mlvc.api); this layer
    # never imports remotes. Promised objects count as present and arrive on first read.
    lazy = None

    def has(self, oid: ObjectId) -> bool:
        return self.present(oid) or (self.lazy is not None and self.lazy.promised(oid))

    def present(self, oid: ObjectId) -> bool:
        """Whether this store itself holds the object (not only a remote's promise)."""
        return self._has_record(oid)

    def _exists(self, oid: ObjectId) -> bool:
        """``has`` on the write path: a store may also mark the object as freshly wanted."""
        return self._has_record(oid)

    def _store(self, oid: ObjectId, data: bytes | memoryview, comp=zstd.compress) -> None:
        if self._exists(oid):
            return
        packed = comp(data) if len(data) <= ZSTD_MAX else None
        if packed is None:
            self._put_record(oid, RAW, data)
        else:
            self._put_record(oid, ZSTD, packed)

    def _expect(self, n: int) -> None:
        """A big file of about ``n`` bytes is about to be stored (a store may reserve room)."""

    def _store_batch(self, items: list, comp=zstd.compress) -> None:
        """Store ``(id, content)`` pairs in order (a group of a big file's chunks)."""
        for oid, data in items:
            self._store(oid, data, comp)

    def add_bytes(self, data: bytes | memoryview) -> ObjectId:
        oid = ObjectId.of(data)
        self._store(oid, data)
        return oid

    def add_file(self, path: str | os.PathLike) -> ObjectId:
        """Store a file: whole if small, else as FastCDC chunks plus a chunk list.

        The id is always of one state of the file, and of all of it: a file whose size,
        mtime, ctime or inode changes while it is read is read again, and after
        ``HASH_TRIES`` attempts ``FileChanged`` is raised.
        """
        for _ in range(HASH_TRIES):
            oid = self._add_file_once(path)
            if oid is not None:
                return oid
        raise FileChanged(path)

    def _add_file_once(self, path) -> ObjectId | None:
        with open(path, "rb") as f:
            before = os.fstat(f.fileno())
            head = f.read(CHUNK_THRESHOLD)  # one read: most files are small
            after = os.fstat(f.fileno())
        small = len(head) < CHUNK_THRESHOLD
        if _stamp(before) != _stamp(after) or (small and len(head) != before.st_size):
            return None
        if small:
            return self.add_bytes(head)
        del head
        with open(path, "rb", buffering=0) as f:
            start = os.fstat(f.fileno())
            self._expect(start.st_size)
            whole, total, chunks = self._store_chunks(f)
            end = os.fstat(f.fileno())
        if not (_stamp(before) == _stamp(start) == _stamp(end) and total == before.st_size):
            return None  # the chunks already stored are garbage for gc
        oid = ObjectId(whole)
        if not self._exists(oid):
            self._put_record(oid, CHUNKED, msgpack.packb(chunks, use_bin_type=True))
        return oid

    def _store_chunks(self, f) -> tuple[bytes, int, list]:
        """Store the FastCDC chunks of an open file; (BLAKE3 of it all, size, chunk list).

        The file is read in ``WINDOW`` blocks into two reused buffers and chunked in place
        (no copy per chunk). This thread reads, cuts and hashes each chunk; every group of
        about ``GROUP`` bytes of chunks is then handed to one helper thread, which stores it
        (one vectored write) and, at the window's end, hashes the window for the whole
        file's id (BLAKE3 and the kernel's writes release the GIL). The helper runs its
        jobs in order, so the pack holds the chunks in file order, and it reads a group a
        few hundred KiB behind the cutter, from the shared cache rather than from memory.
        The two cores share the work about evenly (read, cut and most chunk hashes here;
        writes, the whole-file hash and the chunk hashes of one group in ``HASH_SHARE``
        there, filled into the chunk list by the helper), so on an idle machine a big commit
        runs near the disk's speed. When no core is idle (``pipeline_switch``, asked again at each window)
        the groups are written by this thread right after hashing instead, which costs ~8%
        less CPU but takes longer; before it switches to that, the helper's queued groups
        are waited for, so the pack still holds the chunks in file order.
        The last chunk of a window is cut again with the next one: a FastCDC cut depends
        only on the bytes from the chunk's start, so the chunks are exactly those of a
        single pass over the file.
        """
        from concurrent.futures import ThreadPoolExecutor

        whole = blake3.blake3()
        bufs = [bytearray(WINDOW + CHUNK_MAX) for _ in range(2)]
        jobs: list[list] = [[], []]  # the helper's jobs still reading each buffer
        chunks: list = []
        total = carry = 0
        tail = b""  # the bytes after the last cut, carried into the next window
        comp = zstd.Adaptive().compress
        cdc = _fastcdc()
        switch = pipeline_switch()
        pipeline = False
        paths = [0, 0]  # windows cut with the chunks written here, and on the helper
        handed = 0  # groups handed to the helper so far (one in HASH_SHARE it hashes too)
        started = time.perf_counter()

        def settle(i: int) -> None:
            for job in jobs[i]:
                job.result()
            jobs[i] = []

        with ThreadPoolExecutor(1, thread_name_prefix="mlvc-store") as pool:

            def cutter_hashes() -> bool:
                """Whether the cutter hashes the next group (the helper one in HASH_SHARE)."""
                return not pipeline or handed % HASH_SHARE != HASH_SHARE - 1

            def put(i: int, group: list, mine: bool) -> bool:
                """Store a group of chunks: on the helper (``pipeline``) or here. A group
                the cutter left unhashed (``mine`` False) is hashed by the helper first.
                Whether the cutter hashes the next group itself is returned."""
                nonlocal handed
                if not pipeline:
                    self._store_batch(group, comp)
                    return True
                if mine:
                    jobs[i].append(pool.submit(self._store_batch, group, comp))
                else:
                    first = len(chunks) - len(group)
                    args = (chunks, first, group, comp)
                    jobs[i].append(pool.submit(self._hash_and_store, *args))
                handed += 1
                return cutter_hashes()

            try:
                for turn in itertools.count():
                    i = turn % 2
                    settle(i)
                    pipeline, was = switch.spare(), pipeline
                    paths[pipeline] += 1
                    if was and not pipeline:
                        settle(1 - i)
                    buf, view = bufs[i], memoryview(bufs[i])
                    buf[:carry] = tail
                    filled, eof = carry, False
                    while filled < WINDOW + carry and not eof:
                        n = f.readinto(view[filled : WINDOW + carry])
                        eof = not n
                        filled += n or 0
                    if not filled:
                        break
                    done = grouped = 0
                    group: list = []
                    mine = cutter_hashes()
                    for c in cdc.cut_buf(view[:filled]):
                        end = c.offset + c.length
                        if not eof and end == filled and c.offset:
                            break  # cut by the window's end: cut again with the next window
                        data = view[c.offset : end]
                        if mine:
                            cid = blake3.blake3(data).digest()
                            group.append((ObjectId(cid), data))
                            chunks.append((cid, c.length))
                        else:  # the helper hashes this group and fills its entries in
                            group.append((None, data))
                            chunks.append(None)
                        if end - grouped >= GROUP:
                            mine = put(i, group, mine)
                            progress.advance(end - grouped)
                            group, grouped = [], end
                        done = end
                    if group:
                        put(i, group, mine)
                        progress.advance(done - grouped)
                    jobs[i].append(pool.submit(whole.update, view[:done]))
                    total += done
                    carry = filled - done
                    tail = bytes(view[done:filled]) if carry else b""
                    if eof and not carry:
                        break
            finally:
                for i in (0, 1):  # every job ends before its buffer goes; the first error wins
                    for job in jobs[i]:
                        job.exception()
                settle(0)
                settle(1)
        took = time.perf_counter() - started
        note_stats(step="put", size=total, one=paths[0], two=paths[1], secs=round(took, 4))
        return whole.digest(), total, chunks

    def _hash_and_store(self, chunks: list, first: int, group: list, comp) -> None:
        """Hash a group of chunks the cutter left unhashed, fill in their entries of
        ``chunks`` from ``first`` on, and store the group (on the helper thread)."""
        items = []
        for k, (_none, data) in enumerate(group):
            cid = blake3.blake3(data).digest()
            chunks[first + k] = (cid, len(data))
            items.append((ObjectId(cid), data))
        self._store_batch(items, comp)

    def _record(self, oid: ObjectId, fetch: bool = True) -> bytes:
        """The raw record; a promised object is fetched first unless ``fetch`` is False."""
        rec = self._get_record(oid)
        lazy = self.lazy if fetch and rec is None else None
        if lazy is not None and lazy.promised(oid) and lazy.fetch(oid):
            rec = self._get_record(oid)
        if rec is None:
            raise MissingObject(oid.hex)
        if rec[:1] not in TAGS:
            raise CorruptObject(oid.hex, self._where(oid), f"unknown record tag {rec[:1]!r}")
        return rec

    def _content(self, oid: ObjectId, rec: bytes, copy: bool = True) -> bytes | memoryview:
        """The content of a raw or compressed record (not verified here); ``copy=False``:
        a compressed one's as the codec's buffer (bytes-like), not copied into bytes."""
        if rec[:1] == RAW:
            return memoryview(rec)[1:]
        try:
            return zstd.decompress(memoryview(rec)[1:], ZSTD_MAX, asbytes=copy)
        except ValueError as e:
            raise CorruptObject(oid.hex, self._where(oid), str(e)) from None

    def _verified(self, oid: ObjectId, rec: bytes, copy: bool = True) -> bytes | memoryview:
        """The content of a raw or compressed record, checked against its id."""
        content = self._content(oid, rec, copy)
        got = blake3.blake3(content).digest()
        if got != oid:
            raise CorruptObject(
                oid.hex,
                self._where(oid),
                "content does not match its id",
                expected=oid.hex,
                got=got.hex(),
            )
        return content

    def iter_content(self, oid: ObjectId) -> Iterator[bytes]:
        """The content in blocks; no block is released before it is verified.

        A raw or compressed record (a few MiB at most) is checked whole before its first
        block; a chunked file chunk by chunk, each against its own id, and the last chunk is
        held back until the whole file's hash matches too (a damaged chunk list).
        """
        rec = self._record(oid)
        if rec[:1] != CHUNKED:
            view = self._verified(oid, rec)
            for i in range(0, len(view), BLOCK):
                yield bytes(view[i : i + BLOCK])
            return
        where = self._where(oid)
        h = blake3.blake3()
        pending = None
        for cid, n in _parse_chunk_list(rec[1:], oid, where):
            crec = self._record(cid)
            if crec[:1] == CHUNKED:
                raise CorruptObject(cid.hex, self._where(cid), "a chunk cannot be a chunk list")
            data = bytes(self._verified(cid, crec))
            if len(data) != n:
                raise CorruptObject(
                    oid.hex, where, f"chunk {cid.hex} has {len(data)} bytes, not {n}"
                )
            h.update(data)
            if pending is not None:
                yield pending
            pending = data
        got = h.digest()
        if got != oid:
            raise CorruptObject(
                oid.hex, where, "content does not match its id", expected=oid.hex, got=got.hex()
            )
        if pending is not None:
            yield pending

    def read_bytes(self, oid: ObjectId) -> bytes:
        return b"".join(self.iter_content(oid))

    def read_view(self, oid: ObjectId):
        """The content, verified like ``read_bytes``, as any bytes-like object: a raw or
        compressed record's content is not copied again (a view into the record, or the
        codec's own buffer), which is a third of reading a 16 KiB series blob. Chunked
        objects are joined as ``read_bytes`` joins them."""
        rec = self._record(oid)
        if rec[:1] == CHUNKED:
            return self.read_bytes(oid)
        return self._verified(oid, rec, copy=False)

    def size(self, oid: ObjectId) -> int:
        rec = self._record(oid)
        if rec[:1] == RAW:
            return len(rec) - 1
        if rec[:1] == ZSTD:
            return zstd.raw_size(memoryview(rec)[1:]) if len(rec) > zstd.SIZE.size else 0
        return sum(n for _c, n in _parse_chunk_list(rec[1:], oid, self._where(oid)))

    def children(self, oid: ObjectId) -> list[ObjectId]:
        """Chunk ids a record refers to (empty for raw records)."""
        rec = self._record(oid)
        if rec[:1] == CHUNKED:
            return [c for c, _n in _parse_chunk_list(rec[1:], oid, self._where(oid))]
        return []

    def check(self, oid: ObjectId) -> list[str]:
        """Every problem with one stored record, without raising (fsck's primitive)."""
        try:
            rec = self._record(oid)
        except (CorruptObject, MissingObject) as e:
            return [str(e)]
        if rec[:1] != CHUNKED:
            try:
                self._verified(oid, rec)
            except CorruptObject as e:
                return [str(e)]
            return []
        try:
            chunks = _parse_chunk_list(rec[1:], oid, self._where(oid))
        except CorruptObject as e:
            return [str(e)]
        missing = [c.hex for c, _ in chunks if not self._has_record(c)]
        if missing:
            return [f"chunked object {oid.hex} misses chunk {m}" for m in missing]
        try:
            for _ in self.iter_content(oid):
                pass
        except (CorruptObject, MissingObject) as e:
            return [str(e)]
        return []

    def sync(self, publish: Callable[[], None] | None = None, files: Sequence[Path] = ()) -> None:
        """Make writes durable (a memory store has nothing to do), then run ``publish``."""
        if publish is not None:
            publish()

    def flush(self) -> None:
        """Make writes visible to other processes (loose and memory stores already are)."""

    def stored_size(self, oid: ObjectId) -> int:
        """Bytes the object's record takes in the store."""
        rec = self._get_record(oid)
        return 0 if rec is None else len(rec)


class MemoryStore(_RecordStore):
    """A store in a dict: for tests and for staging."""

    def __init__(self):
        self._records: dict[ObjectId, bytes] = {}
        self._lock = threading.Lock()

    def _get_record(self, oid):
        return self._records.get(oid)

    def _has_record(self, oid):
        return oid in self._records

    def _put_record(self, oid, tag, payload):
        with self._lock:
            self._records[oid] = tag + bytes(payload)

    def _where(self, oid):
        return f"memory:{oid.hex}"

    def ids(self) -> Iterator[ObjectId]:
        return iter(list(self._records))


class LocalStore(_RecordStore):
    """Loose records under ``root/ab/cdef...``, written by temp file + rename, read-only."""

    def __init__(self, root: str | os.PathLike, tmp: str | os.PathLike | None = None):
        self.root = Path(root)
        self.tmp = Path(tmp) if tmp else self.root.parent / "tmp"

    def __reduce__(self):
        """Pickle as "the store at this place" (open packs and maps are per process)."""
        return (type(self), (self.root, self.tmp))

    def _path(self, oid: ObjectId) -> Path:
        h = oid.hex
        return self.root / h[:2] / h[2:]

    def _where(self, oid):
        return str(self._path(oid))

    def _has_record(self, oid):
        return self._path(oid).exists()

    def _get_record(self, oid):
        try:
            with open(self._path(oid), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def _put_record(self, oid, tag, payload):
        dest = self._path(oid)
        tmp = self.tmp / f"obj-{os.getpid()}-{os.urandom(8).hex()}"
        self.tmp.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(tag)
            f.write(payload)
        os.chmod(tmp, 0o444)
        try:
            os.replace(tmp, dest)
        except FileNotFoundError:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, dest)

    def ids(self) -> Iterator[ObjectId]:
        if not self.root.is_dir():
            return
        for sub in sorted(os.scandir(self.root), key=lambda d: d.name):
            if len(sub.name) != 2 or not sub.is_dir():
                continue
            for ent in sorted(os.scandir(sub.path), key=lambda d: d.name):
                try:
                    yield ObjectId(bytes.fromhex(sub.name + ent.name))
                except ValueError:
                    continue

    def stored_size(self, oid: ObjectId) -> int:
        try:
            return os.path.getsize(self._path(oid))
        except OSError:
            return 0

    def sync(self, publish: Callable[[], None] | None = None, files: Sequence[Path] = ()) -> None:
        """Make every write so far durable: one syncfs for the store's filesystem (``files``,
        the caller's, with it); then ``publish`` and another syncfs for what it did
        (PackedStore.sync)."""
        sync_filesystem(self.root)
        if publish is not None:
            publish()
            sync_filesystem(self.root)


def sync_filesystem(path: str | os.PathLike) -> None:
    """``syncfs`` on the filesystem holding path (Linux), else a global ``sync``."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY)
        try:
            if libc.syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        pass
    os.sync()


assert DIGEST_SIZE == 32
