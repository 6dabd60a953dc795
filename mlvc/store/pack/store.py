"""Pack files: objects appended to one file per writer, found through sorted index files.

Layout under ``objects/pack/``::

    pack-<token>.pack   b"MLVCPACK" + u32 version, then per object:
                        id (32 bytes) | u64 record length | record (tag + payload)
    pack-<token>.idx    the packs it covers and where each of their objects lives

An index file (``.idx``, packindex.py) is: b"MLVCIDX1"; u32 pack count, then per pack a u16 name length,
the name and the u64 pack size it covers; u64 object count; a 256-entry u32 fanout (number of
ids whose first byte is <= i, as in git); the sorted ids (32 bytes each); per id a location
``<u32 pack number, u64 record offset, u64 record length>``; and a BLAKE3 of all of it. A
lookup is a fanout step plus a binary search in an mmap: 9-15 us with a million objects on a
loaded 2-vCPU machine, 0.3 ms to open, memory independent of the object count. After a commit, when more than ``MAX_INDEXES`` index files
exist they are merged into one (like git's multi-pack index).

Crash safety: a writer appends to a pack of its own (a random token names it, so concurrent
writers never share one). ``flush`` writes the index by temp file + rename; ``sync`` first
fsyncs the pack, then writes and fsyncs the index, renames it, then syncs the filesystem, all
before any ref moves. Readers only trust packs named by an index, and only up to the size the
index records, so a pack torn by a crash is never read as it is. A pack is never deleted for
lacking an index: each record carries its id, so fsck and gc rebuild the index from the pack
(packscan.py), keeping every record that verifies.
"""

from __future__ import annotations

import atexit
import fcntl
import heapq
import os
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ...core.durable import fsync_dir
from ...core.ids import ObjectId
from ...errors import PackError
from ..compress import compress
from ..odb import (
    CHUNKED,
    RAW,
    ZSTD,
    ZSTD_MAX,
    LocalStore,
    _parse_chunk_list,
    note_stats,
    sync_filesystem,
)
from .index import RELIST_TRIES, PackIndex, open_listed, write_all, write_index
from .index import listdir as _listdir
from .open_packs import OpenPacks

PACK_MAGIC = b"MLVCPACK" + struct.pack("<I", 1)
HEAD = struct.Struct("<32sQ")  # before each record in a pack: id, record length
PACK_MAX = 1 << 30  # a writer starts a new pack past this size (keeps repacks cheap)
# ... unless a big file being put would end within PACK_MAX >> SLACK_SHIFT past it (16 MiB at
# 1 GiB): a 1 GiB file plus its chunks' headers (~0.7 MiB) is just over PACK_MAX, and its
# last chunks went to a second pack, one more file to create, reserve, fsync and index (its
# fsync forces a journal commit of its own: the packs' fsync 18-28 ms with two, 3-21 ms
# with one, 4 pairs). A pack stays below PACK_MAX + PACK_MAX >> SLACK_SHIFT + one group.
SLACK_SHIFT = 6
SMALL = 64 << 10  # records below this are gathered in a buffer before writing
BUFFER = 1 << 20
# a sync with at most this much in its packs (a commit of unchanged or few files) syncs the
# filesystem twice instead of fsyncing each pack and the index: fewer waits for the disk,
# while a big file's pack keeps its fsync (a syncfs would also wait for other writers)
SYNC_TOGETHER = 4 << 20
WRITEBACK = 32 << 20  # start disk writes of a pack every this many bytes
# A big file's chunks go to blocks reserved ahead (fallocate, the size kept): the file's size
# at its first group (one call: 1-4 ms for 1 GiB, where 16 calls of 64 MiB waited 0.1-0.3 s
# on the journal in all), then RESERVE at a time past that. ext4 then skips its per-page
# delayed allocation: the writes' kernel CPU fell from 0.25-0.28 to 0.16-0.20 s per GiB
# (+0.01 s in kernel threads). What is left reserved past the end when the pack is finished
# is given back (a truncate to the file's own size), so a pack takes no more space.
RESERVE = 64 << 20
FALLOC_FL_KEEP_SIZE = 1
MAP_WINDOW = 16 << 20  # a checkout maps packs this much at a time (chunk_views)
MAX_INDEXES = 16
LOOK_EVERY = 0.2  # seconds between unforced looks for other processes' new indexes
# Tests set this: an object written by a process not holding gc.lock is an error (gc.py)
_CHECK_GC_LOCK = os.environ.get("MLVC_DEBUG_GC_LOCK") == "1"


def _libc(name: str, *argtypes):
    """A libc function by name with its argument types, or None where libc lacks it."""
    try:
        import ctypes

        fn = getattr(ctypes.CDLL(None, use_errno=True), name)
        fn.argtypes = [getattr(ctypes, t) for t in argtypes]
        return fn
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return None


# sync_file_range(fd, off, n, SYNC_FILE_RANGE_WRITE): start writing a range to disk now
_start_writeback = _libc("sync_file_range", "c_int", "c_int64", "c_int64", "c_uint")
# Linux fallocate(fd, mode, off, n): no emulation by writing zeros where the filesystem
# cannot, as glibc's posix_fallocate does
_fallocate = _libc("fallocate", "c_int", "c_int", "c_int64", "c_int64")


def sync_files(paths: Sequence[Path], gone_ok: Sequence[Path] = ()) -> None:
    """fsync each file of ``paths`` and ``gone_ok`` (skipped if it no longer exists: another
    process's pack index merged away), all handed to the disk first: their blocks are then
    allocated in one journal transaction, which the first fsync commits (the others find it
    done). Folders are left to the caller (fsync_dir)."""
    fds = []
    try:
        for path in [*paths, *gone_ok]:
            try:
                fds.append(os.open(path, os.O_RDONLY))
            except FileNotFoundError:
                if path not in gone_ok:
                    raise
                continue
            if _start_writeback is not None:
                _start_writeback(fds[-1], 0, 0, 2)  # SYNC_FILE_RANGE_WRITE
        for fd in fds:
            os.fsync(fd)
    finally:
        for fd in fds:
            os.close(fd)


def _preallocate(fd: int, size: int) -> None:
    """Reserve a new file's blocks at once (fewer, larger extents), keeping its size, so
    a copy cut short never looks longer than what was written. Only a hint: a failure
    (EOPNOTSUPP, ENOSPC) is left for the writes to report."""
    if _fallocate is not None and size > 0:
        _fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, size)


class _OpenPack:
    def __init__(self, folder: Path):
        self.name = f"pack-{os.urandom(16).hex()}.pack"
        folder.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(folder / self.name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o444)
        self.size = 0
        self.buf = bytearray(PACK_MAGIC)
        self.written_back = 0  # bytes handed to the disk ahead of the final fsync
        self.pending_io: list = []
        self.reserved = 0  # blocks up to here are reserved (RESERVE), maybe past the end

    def reserve(self, end: int) -> None:
        """Reserve blocks (``RESERVE`` at least) so that writes up to ``end`` find them,
        from the first whole block past what was written (written pages are left alone)."""
        if _fallocate is not None and end > self.reserved:
            start = max(self.reserved, -(-self.size // 4096) * 4096)
            n = max(RESERVE, end - start)
            if _fallocate(self.fd, FALLOC_FL_KEEP_SIZE, start, n) == 0:
                self.reserved = start + n
            else:  # a hint: unsupported or no space, the writes will say
                self.reserved = 1 << 62

    def release(self) -> None:
        """Give back the blocks reserved past the pack's end (before its fsync): a truncate
        to the file's own size (not to ``size``: it never cuts what was written)."""
        if self.reserved:
            os.ftruncate(self.fd, os.fstat(self.fd).st_size)
        self.reserved = 0

    def drain(self) -> None:
        """Write the buffered small records; ``size`` then covers them (what the pack's
        index records as its size)."""
        self.size += len(self.buf)
        if self.buf:
            write_all(self.fd, [self.buf])
            self.buf = bytearray()

    def kick(self, pool) -> None:
        """Have a helper thread start writing finished bytes to disk now, so that disk
        writes overlap hashing and the final fsync has little left."""
        if _start_writeback is not None and self.size - self.written_back >= WRITEBACK:
            off, n = self.written_back, self.size - self.written_back
            self.pending_io.append(pool.submit(_start_writeback, self.fd, off, n, 2))
            self.written_back = self.size

    def settle(self) -> None:
        """Wait for the helper's writes (before fsync or close)."""
        for f in self.pending_io:
            f.result()
        self.pending_io = []


class PackWriter:
    """This process's open packs for one store; every PackedStore on that folder shares it."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.pid = os.getpid()
        self.lock = threading.RLock()
        self.packs: list[_OpenPack] = []
        self.pending: dict[bytes, tuple[int, int, int]] = {}
        self._pool = None
        self.ahead = 0  # bytes a big file's put expects to append (expect())
        self.unsynced = False  # an index was published by a flush, its packs not fsynced

    def expect(self, n: int) -> None:
        """A big file of ``n`` bytes is about to be appended: its first group reserves the
        blocks for all of it (within PACK_MAX) in one call, and the first group in each
        next pack (past PACK_MAX) for what is left of it."""
        with self.lock:
            self.ahead = n

    def _open_pack(self) -> _OpenPack:
        """The pack to append to (a new one past PACK_MAX); called holding the lock."""
        if not self.packs or self._full(self.packs[-1]):
            if self.packs:
                self.packs[-1].drain()
                self.packs[-1].release()
            self.packs.append(_OpenPack(self.folder))
        return self.packs[-1]

    def _full(self, p: _OpenPack) -> bool:
        """Whether ``p`` is past PACK_MAX and what is expected (a big put in progress) does
        not fit in the slack past it: without a big put, a pack rolls over past the slack."""
        size = p.size + len(p.buf)
        if size <= PACK_MAX:
            return False
        return size + self.ahead + (self.ahead >> 6) > PACK_MAX + (PACK_MAX >> SLACK_SHIFT)

    def append(self, oid: bytes, tag: bytes, payload) -> None:
        n = 1 + len(payload)
        with self.lock:
            if oid in self.pending:
                return
            p = self._open_pack()
            at = p.size + len(p.buf) + HEAD.size
            if n < SMALL:
                p.buf += HEAD.pack(oid, n)
                p.buf += tag
                p.buf += payload
                if len(p.buf) >= BUFFER:
                    p.drain()
            else:
                p.size += len(p.buf)
                write_all(p.fd, [p.buf, HEAD.pack(oid, n), tag, payload])
                p.buf = bytearray()
                p.size += HEAD.size + n
                p.kick(self._io())
            self.pending[oid] = (len(self.packs) - 1, at, n)

    def append_many(self, records: list) -> None:
        """Append ``(id, tag, payload)`` records in order with vectored writes (a group of
        a big file's chunks); ids already pending, or repeated, are skipped."""
        if not records:
            return
        with self.lock:
            p, pack = self._open_pack(), len(self.packs) - 1
            p.size += len(p.buf)
            parts, at = [p.buf], p.size
            parts_at = at
            for oid, tag, payload in records:
                if oid in self.pending:
                    continue
                n = 1 + len(payload)
                self.pending[oid] = (pack, at + HEAD.size, n)
                parts += (HEAD.pack(oid, n) + tag, payload)
                at += HEAD.size + n
            # headroom: the records' headers (41 bytes a chunk of 16 KiB or more: < 0.3%), and
            # at PACK_MAX (and its slack) the group that crosses it (up to GROUP plus a chunk)
            cap = PACK_MAX + (PACK_MAX >> SLACK_SHIFT) + (2 << 20)
            p.reserve(min(at + self.ahead + (self.ahead >> 6), max(at, cap)))
            self.ahead = max(0, self.ahead - (at - parts_at))  # the rest: the next pack's
            write_all(p.fd, parts)
            p.buf = bytearray()
            p.size = at
            p.kick(self._io())

    def _io(self):
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(1, thread_name_prefix="mlvc-writeback")
        return self._pool

    def read(self, oid: bytes) -> bytes | None:
        with self.lock:
            loc = self.pending.get(oid)
            if loc is None:
                return None
            p = self.packs[loc[0]]
            if loc[1] >= p.size:
                p.drain()
            return os.pread(p.fd, loc[2], loc[1])

    def pending_bytes(self) -> int:
        """Bytes appended to the packs since the last ``finish``."""
        with self.lock:
            return sum(p.size + len(p.buf) for p in self.packs)

    def finish(
        self, durable: bool, barrier: Callable[[list[Path]], None] | None = None
    ) -> Path | None:
        """Publish what was appended: (fsync packs,) write the index, close the packs.
        With ``barrier`` (durable only), neither the packs nor the index's temp file are
        fsynced one by one: ``barrier(their paths)`` makes them durable together before the
        index is renamed in. ``unsynced`` notes an index published without its packs'
        fsync (a flush: a later sync must then sync the filesystem)."""
        with self.lock:
            if not self.packs:
                return None
            started = time.perf_counter()
            for p in self.packs:
                p.drain()
                p.release()
                p.settle()
                if durable and barrier is None:
                    os.fsync(p.fd)
            if durable and barrier is None:
                took = time.perf_counter() - started
                note_stats(step="fsync packs", packs=len(self.packs), secs=round(took, 4))
            entries = sorted(
                (oid, self.packs[i].name, off, n) for oid, (i, off, n) in self.pending.items()
            )
            packs = [(p.name, p.size) for p in self.packs]
            name = self.packs[0].name[: -len(".pack")] + ".idx"
            with_packs = None
            if barrier is not None:
                paths = [self.folder / p.name for p in self.packs]
                with_packs = lambda tmp: barrier([*paths, tmp])  # noqa: E731
            path = write_index(self.folder, name, packs, entries, durable, with_packs)
            if not durable:
                self.unsynced = True
            for p in self.packs:
                os.close(p.fd)
            self.packs, self.pending, self.ahead = [], {}, 0
            return path


_writers: dict[str, PackWriter] = {}
_writers_lock = threading.Lock()


def writer_for(folder: Path) -> PackWriter:
    """The writer of this process for ``folder`` (a forked child gets a fresh one)."""
    key = str(folder)
    with _writers_lock:
        w = _writers.get(key)
        if w is None or w.pid != os.getpid():
            w = _writers[key] = PackWriter(folder)
        return w


@atexit.register
def _flush_all() -> None:
    """Publish packs a process forgot to sync (visible to others; durable only after sync)."""
    for w in list(_writers.values()):
        if w.pid == os.getpid():
            try:
                w.finish(durable=False)
            except OSError:
                pass


class PackedStore(LocalStore):
    """Objects in packs (new writes) and loose files (older repositories), read alike."""

    def __init__(self, root: str | os.PathLike, tmp: str | os.PathLike | None = None):
        super().__init__(root, tmp)
        self.pack_dir = self.root / "pack"
        self._indexes: dict[str, PackIndex] = {}
        self._order: list[PackIndex] = []
        self._stamp: tuple | None = None
        self._packs = OpenPacks(self.pack_dir)  # read descriptors, a bounded number open
        self._fresh: set[str] = set()
        # the packs (and their indexes) that answered a dedup hit since the last sync: a
        # commit's objects may be there, and another process may have published them by a
        # flush (visible, not yet durable); a sync without syncfs fsyncs them too
        self._deduped: set[Path] = set()
        self._loose = True
        self._lock = threading.Lock()
        self._writer: PackWriter | None = None
        self._looked = 0.0  # when the pack folder was last checked for new indexes
        weakref.finalize(self, self._packs.close)  # (the bound method holds no store)

    # -- finding objects ------------------------------------------------------------------

    @property
    def writer(self) -> PackWriter:
        w = self._writer
        if w is None or w.pid != os.getpid():
            w = self._writer = writer_for(self.pack_dir)
        return w

    def reload(self, force: bool = False) -> None:
        """Pick up index files written (or removed) by other processes since the last look.

        Unforced, it looks at most every LOOK_EVERY seconds: a write-path miss only costs a
        duplicate copy, and reads that miss force a look before saying an object is missing.
        """
        now = time.monotonic()
        if not force and now - self._looked < LOOK_EVERY:
            return
        self._looked = now
        stamp = self._folder_stamp()
        if stamp == self._stamp and not force:
            return
        with self._lock:
            # (the stamp, taken before the listing, may predate a merge listed past: the next
            # look then lists once more, no harm)
            _names, opened = open_listed(self.pack_dir, self._indexes)
            indexes = {n: i for n, i in opened.items() if isinstance(i, PackIndex)}
            # biggest first; an index whose usable packs are all covered already adds nothing.
            # Asked pack by pack, a pack an index in the order names first (PackIndex.usable
            # asks the file system only then): an index of packs no other names is in after
            # one ``stat``, not one a pack.
            order: list[PackIndex] = []
            named: dict[str, list[tuple[PackIndex, int]]] = {}  # by the indexes in order

            def covered(pack: str) -> bool:
                return any(j.usable[k] for j, k in named.get(pack, ()))

            for idx in sorted(indexes.values(), key=lambda i: -i.count):
                if any(not covered(p) and idx.usable[i] for i, p in enumerate(idx.packs)):
                    order.append(idx)
                    for i, p in enumerate(idx.packs):
                        named.setdefault(p, []).append((idx, i))
            self._indexes, self._order, self._stamp = indexes, order, stamp
            if self._packs.open_count():  # packs merged away: their space is not held
                self._packs.forget({p for i in indexes.values() for p in i.packs})
            self._loose = any(len(n) == 2 for n in _listdir(self.root))

    def _folder_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.pack_dir)
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_ino

    def _locate(self, oid: bytes) -> tuple[PackIndex, tuple[int, int, int]] | None:
        for idx in self._order:
            loc = idx.find(oid)
            if loc is not None:
                return idx, loc
        return None

    def _has_record(self, oid) -> bool:
        if oid in self.writer.pending:
            return True
        self.reload()
        if self._locate(oid) is not None:
            return True
        return self._loose and super()._has_record(oid)

    def present(self, oid: ObjectId) -> bool:
        if self._has_record(oid):
            return True
        for _ in range(RELIST_TRIES):
            self.reload(force=True)
            if self._has_record(oid):
                return True
            if self._settled():
                return False
        return False

    def _settled(self) -> bool:
        """Whether the pack folder is as the last forced look found it. A merger in another
        process may have moved what that look listed (it opened an index whose packs were
        gone once it asked, and did not list the merged index, written a moment before):
        an object it did not find may be in the folder now, and is looked for again."""
        return self._folder_stamp() == self._stamp

    def _exists(self, oid) -> bool:
        """On a dedup hit, freshen the pack (or loose file) so gc's grace period covers it."""
        if oid in self.writer.pending:
            return True
        self.reload()
        found = self._locate(oid)
        if found is not None:
            self._deduped_in(found[0], found[1][0])
            return True
        return self._loose_exists(oid)

    def _deduped_in(self, idx: PackIndex, pack: int) -> None:
        """A dedup hit in ``idx``'s pack number ``pack``: freshen the pack (gc's grace
        period) and remember it and its index for the next sync."""
        name = idx.packs[pack]
        self._deduped.add(self.pack_dir / name)
        self._deduped.add(idx.path)
        if name not in self._fresh:
            self._fresh.add(name)
            _touch(self.pack_dir / name)

    def _loose_exists(self, oid) -> bool:
        if self._loose and super()._has_record(oid):
            _touch(self._path(oid))
            return True
        return False

    def _exists_many(self, oids: list) -> list[bool]:
        """``_exists`` of each id (not pending in this process's packs), with the same
        freshening, looked up one index at a time for all of them at once: one call into C
        per index (``PackIndex.find_many``) instead of a Python search per id and index."""
        from ...core import speedups

        fast = speedups.extension("mlvc._packfind")
        self.reload()
        found = [False] * len(oids)
        left = list(range(len(oids)))  # positions in oids not found yet
        asked = oids  # the ids at those positions (new data: all of them, every index)
        for idx in self._order:
            if not left:
                break
            hits = idx.find_many(asked, fast)
            if not hits:
                continue
            gone = set()
            for j, position in hits:
                loc = idx.location(position)
                if loc is not None:  # else its pack is unusable: look in the next index
                    self._deduped_in(idx, loc[0])
                    found[left[j]] = True
                    gone.add(j)
            left = [k for j, k in enumerate(left) if j not in gone]
            asked = [oids[k] for k in left]
        for k in left:
            found[k] = self._loose_exists(oids[k])
        return found

    def _get_record(self, oid):
        for attempt in range(1 + RELIST_TRIES):  # a look in this view, then forced looks
            rec = self.writer.read(oid)
            if rec is not None:
                return rec
            self.reload(force=attempt > 0)
            found = self._locate(oid)
            if found is not None:
                idx, (p, off, n) = found
                try:
                    return self._packs.pread(idx.packs[p], n, off)
                except FileNotFoundError:
                    continue  # merged or collected since we looked: find it again
            if self._loose:
                rec = super()._get_record(oid)
                if rec is not None:
                    return rec
            if attempt > 0 and self._settled():
                return None  # a look at the folder as it still is did not find it
        return None

    def _where(self, oid):
        if oid in self.writer.pending:
            return f"{self.pack_dir}/(pack being written)"
        found = self._locate(oid)
        if found is not None:
            idx, (p, off, _n) = found
            return f"{self.pack_dir / idx.packs[p]}@{off}"
        return str(self._path(oid))

    def chunk_views(self, oid: ObjectId) -> tuple[int, Iterator] | None:
        """A chunked object's content as ``(size, parts)``: ``parts`` yields its chunks in
        order, raw ones as read-only views into maps of their packs (no copy and no system
        call per chunk: a checkout writes many with one ``writev``), compressed ones
        decompressed. Nothing is verified here: the caller hashes the parts in order before
        trusting what it made of them, so a chunk damaged in its pack is caught.

        None when the object is not chunked or not all in packs, or when a pack is shorter
        than its index says: a map read past a file's end would kill the process (SIGBUS);
        mlvc only ever appends to a pack of its own and never shortens one.
        """
        rec = self._get_record(oid)
        if rec is None or rec[:1] != CHUNKED:
            return None
        plan, sizes, total = [], {}, 0
        pending = self.writer.pending
        for cid, size in _parse_chunk_list(rec[1:], oid, self._where(oid)):
            found = None if cid in pending else self._locate(cid)
            if found is None:
                return None
            idx, (p, off, n) = found
            pack = idx.packs[p]
            if pack not in sizes:
                try:
                    sizes[pack] = self._packs.size(pack)
                except FileNotFoundError:  # merged away by gc since the lookup: plain reads
                    return None
            if n < 1 or off + n > sizes[pack]:
                return None
            plan.append((cid, pack, off, n))
            total += size
        return total, self._views(plan, sizes)

    def _views(self, plan: list, sizes: dict) -> Iterator:
        """The chunks of ``plan`` through maps of ``MAP_WINDOW`` bytes of their packs: a map
        is unmapped once no view of it is left, so memory stays bounded (a mapped page that
        was read counts in the process's RSS)."""
        import mmap

        pack_now, start, end, window = None, 0, 0, memoryview(b"")
        for cid, pack, off, n in plan:
            if pack != pack_now or off < start or off + n > end:
                start = off - off % mmap.ALLOCATIONGRANULARITY
                end = min(max(start + MAP_WINDOW, off + n), sizes[pack])
                try:
                    m = self._packs.map(pack, end - start, start)
                except FileNotFoundError:  # gc merged the pack away since the plan: the
                    pack_now = None  # chunk is read where it is now (verified by the caller)
                    yield self._content(cid, self._record(cid))
                    continue
                pack_now, window = pack, memoryview(m)
                del m  # the views hold the map; the last one released unmaps it
            rec = window[off - start : off - start + n]
            if rec[0] == RAW[0]:
                yield rec[1:]
            else:
                yield self._content(cid, bytes(rec))

    def location(self, oid: ObjectId) -> tuple[Path, int, int] | None:
        """(file, offset, length) of an object's record on disk, after a flush; or None."""
        self.flush()
        self.reload(force=True)
        found = self._locate(oid)
        if found is not None:
            idx, (p, off, n) = found
            return self.pack_dir / idx.packs[p], off, n
        path = self._path(oid)
        return (path, 0, path.stat().st_size) if path.exists() else None

    def ids(self) -> Iterator[ObjectId]:
        self.reload(force=True)
        seen: set[bytes] = set(self.writer.pending)
        yield from (ObjectId(o) for o in list(seen))
        for idx in self._order:
            for oid, pack, _off, _n in idx.entries():
                if oid not in seen and idx.usable[idx.number[pack]]:
                    seen.add(oid)
                    yield ObjectId(oid)
        for oid in super().ids():
            if oid not in seen:
                yield oid

    def stored_size(self, oid: ObjectId) -> int:
        """Bytes the object takes on disk (its record, plus the entry header in a pack)."""
        loc = self.writer.pending.get(oid)
        if loc is not None:
            return loc[2] + HEAD.size
        self.reload()
        found = self._locate(oid)
        if found is not None:
            return found[1][2] + HEAD.size
        try:
            return os.path.getsize(self._path(oid))
        except OSError:
            return 0

    # -- writing --------------------------------------------------------------------------

    def _put_record(self, oid, tag, payload):
        if _CHECK_GC_LOCK:
            from ..locks import lock_held

            if not lock_held(self.root.parent):
                raise AssertionError(f"object {oid.hex} written outside gc.lock")
        self.writer.append(bytes(oid), tag, payload)

    def _expect(self, n: int) -> None:
        self.writer.expect(n)

    def _store_batch(self, items: list, comp=None) -> None:
        """Store a group of a big file's chunks: each checked for a copy already stored, the
        new ones compressed where it pays and appended in one vectored write."""
        if _CHECK_GC_LOCK:
            from ..locks import lock_held

            if not lock_held(self.root.parent):
                raise AssertionError(f"object {items[0][0].hex} written outside gc.lock")
        comp = comp or compress
        pending = self.writer.pending
        fresh = [(oid, data) for oid, data in items if oid not in pending]
        there = self._exists_many([oid for oid, _data in fresh])
        records = []
        for (oid, data), stored in zip(fresh, there, strict=True):
            if stored:
                continue
            packed = comp(data) if len(data) <= ZSTD_MAX else None
            records.append(
                (bytes(oid), RAW, data) if packed is None else (bytes(oid), ZSTD, packed)
            )
        self.writer.append_many(records)

    def flush(self) -> None:
        """Make objects written so far visible to other processes (not yet durable)."""
        if self.writer.finish(durable=False):
            self.reload(force=True)

    def sync(self, publish: Callable[[], None] | None = None, files: Sequence[Path] = ()) -> None:
        """Make every write durable: fsync packs, write their indexes, then one syncfs.

        ``publish`` (a commit renaming its intent into place) runs once the objects are
        visible and their bytes and those of ``files`` (the caller's temp files that it
        renames) are durable; what it did is durable on return. When the packs hold little
        (SYNC_TOGETHER) and everything this process stored is in them, no syncfs is made
        (it would also wait for every other process's writes): the packs, the index's temp
        file and ``files`` are handed to the disk together and fsynced (one journal commit
        for all), then the index and what ``publish`` named are renamed in and their
        folders fsynced."""
        w = self.writer
        together = publish is not None and not w.unsynced and w.pending_bytes() <= SYNC_TOGETHER
        started = time.perf_counter()
        if together:
            # what this commit's objects may be in besides its own packs: another process's
            # pack published by a flush is visible but not durable (fsyncing a clean file
            # costs next to nothing; a touched one joins the same journal commit)
            foreign = sorted(self._deduped)
            written = w.finish(
                durable=True, barrier=lambda paths: sync_files([*paths, *files], foreign)
            )
            if written is None:
                sync_files(files, foreign)
            publish()
            self._deduped.clear()
            for folder in dict.fromkeys([*([self.pack_dir] if written or foreign else []),
                                         *(Path(f).parent for f in files)]):  # fmt: skip
                fsync_dir(folder)
        else:
            written = w.finish(durable=True)
            if publish is not None:
                sync_files(files)
                publish()
            sync_filesystem(self.root)
            w.unsynced = False
            self._deduped.clear()
        step = "fsync files" if together else "syncfs"
        note_stats(step=step, secs=round(time.perf_counter() - started, 4))
        if written:
            self.reload(force=True)
            if len(self._indexes) > MAX_INDEXES:
                self.consolidate()

    def consolidate(self) -> Path | None:
        """Merge index files into one (skipped if another process is at it).

        Like an LSM tree, big indexes that dwarf the rest are left alone, so a merge costs
        about what was added since the last one, not the whole store (~1 us per entry).
        """
        with self.rewriting_indexes(wait=False) as mine:
            if not mine:
                return None
            self.reload(force=True)
            old = sorted(self._indexes.values(), key=lambda i: -i.count)
            while len(old) > 2 and old[0].count > 2 * sum(i.count for i in old[1:]):
                old.pop(0)
            path = self.rewrite_index([(i, None) for i in old])
            for idx in old:
                if idx.path != path:
                    idx.path.unlink(missing_ok=True)
            self.reload(force=True)
            return path

    @contextmanager
    def rewriting_indexes(self, wait: bool) -> Iterator[bool]:
        """Hold ``consolidate.lock``, which whoever replaces index files holds (a writer's
        consolidation, gc, a pack merge), so that no two rewrites interleave: one could
        write an index naming a pack the other has just removed. Yields False when it is
        busy and ``wait`` is False."""
        self.pack_dir.mkdir(parents=True, exist_ok=True)
        with open(self.pack_dir / "consolidate.lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True

    def pack_sizes(self) -> dict[str, int]:
        """Each pack the loaded indexes name, with the size its index records (no file
        system call: whether it is still there is not asked)."""
        out: dict[str, int] = {}
        for idx in self._order:
            for name, size in zip(idx.packs, idx.sizes, strict=True):
                out.setdefault(name, size)
        return out

    def rewrite_index(
        self, sources: list[tuple[PackIndex, set | None]], exclude: set[str] = frozenset()
    ) -> Path:
        """One durable index over the usable packs of ``sources`` but ``exclude``; each source
        may keep only the ids in its set. Old index files are left for the caller to remove."""
        packs: dict[str, int] = {}
        streams = []
        for idx, keep in sources:
            ok = {p for i, p in enumerate(idx.packs) if idx.usable[i] and p not in exclude}
            for i, p in enumerate(idx.packs):
                if p in ok:
                    packs.setdefault(p, idx.sizes[i])
            streams.append(_kept(idx, ok, keep))
        name = f"pack-{os.urandom(16).hex()}.idx"
        merged = heapq.merge(*streams, key=lambda e: e[0])
        path = write_index(self.pack_dir, name, list(packs.items()), merged, durable=True)
        sync_filesystem(self.pack_dir)
        return path

    def indexes(self) -> list[PackIndex]:
        """Every trusted index file, freshly loaded."""
        self.reload(force=True)
        return list(self._indexes.values())

    def stale_temps(self, older_than: float) -> list[Path]:
        """Index temp files (``.*.tmp``) left by killed writers, older than a time."""
        out = []
        for n in _listdir(self.pack_dir):
            path = self.pack_dir / n
            try:
                if n.endswith(".tmp") and path.stat().st_mtime < older_than:
                    out.append(path)
            except FileNotFoundError:
                continue
        return out

    def size(self, oid: ObjectId) -> int:
        """The content size, from the record's head alone (no read of the content)."""
        found = None if oid in self.writer.pending else self._locate(oid)
        if found is None:
            return super().size(oid)
        idx, (p, off, n) = found
        try:
            head = self._packs.pread(idx.packs[p], 9, off)
        except FileNotFoundError:  # merged away by gc since the lookup: the whole record,
            return super().size(oid)  # found where it is now
        if head[:1] == RAW:
            return n - 1
        if head[:1] == ZSTD and len(head) == 9:
            return int.from_bytes(head[1:9], "little")
        return super().size(oid)

    def check_packs(self) -> list[str]:
        """Damaged indexes and packs: checksums, sizes and entry headers (fsck)."""
        out = []
        for n in sorted(_listdir(self.pack_dir)):
            if n.endswith(".idx"):
                try:
                    PackIndex(self.pack_dir / n)
                except PackError as e:
                    out.append(str(e))
                except OSError as e:
                    out.append(f"pack index {self.pack_dir / n} cannot be read ({e.strerror})")
        for idx in self.indexes():
            out.extend(idx.verify())
            for oid, pack, off, n in idx.entries():
                if not idx.usable[idx.number[pack]]:
                    continue
                try:
                    head = self._packs.pread(pack, HEAD.size, off - HEAD.size)
                except FileNotFoundError:  # gc merged it away since the listing
                    continue
                if head != HEAD.pack(oid, n):
                    out.append(
                        f"pack {self.pack_dir / pack} entry at {off} is not object "
                        f"{bytes(oid).hex()} as its index says"
                    )
        return out


def _kept(idx: PackIndex, packs: set[str], keep: set | None):
    return (e for e in idx.entries() if e[1] in packs and (keep is None or e[0] in keep))


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass
