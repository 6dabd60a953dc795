"""Pack index files: where each object of one or more packs lives (format in pack.py).

``PackIndex`` maps one ``.idx`` file read-only and finds an id by its fanout slot and a
binary search; ``write_index`` writes one from id-sorted entries by temp file + rename.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import blake3

from ...errors import PackError

IDX_MAGIC = b"MLVCIDX1"
LOC = struct.Struct("<IQQ")  # per id in an index: pack number, record offset, record length
FANOUT = struct.Struct("<256I")
# listings of a folder's index files while one listed vanishes before it is opened (a merge
# renames the merged index in before it removes the sources, so a new listing has it)
RELIST_TRIES = 8


def listdir(folder: Path) -> list[str]:
    """The names in ``folder`` (none if it does not exist)."""
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []


def open_listed(
    folder: Path, known: dict[str, PackIndex] | None = None
) -> tuple[list[str], dict[str, PackIndex | Exception]]:
    """Every name in ``folder``, and each index file among them opened (those in ``known``
    reused: index files never change once renamed in) or the error opening it. One that
    vanished between the listing and its open was merged away: the folder is listed again
    (without that, a reader found none of a merge's sources nor the merged index, and took
    the newest objects for missing: an ingest then dropped a committed run)."""
    known = known or {}
    for _ in range(RELIST_TRIES):
        names, opened = listdir(folder), {}
        for n in sorted(x for x in names if x.endswith(".idx")):
            try:
                opened[n] = known.get(n) or PackIndex(folder / n)
            except FileNotFoundError:
                break
            except (PackError, OSError) as e:
                opened[n] = e
        else:
            break
    return names, opened


class PackIndex:
    """One ``.idx`` file, mapped read-only."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.folder = os.fspath(self.path.parent)
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < len(IDX_MAGIC) + 4:
                raise PackError(f"index {self.path} is truncated")
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        mm = self._mm
        if mm[:8] != IDX_MAGIC:
            raise PackError(f"index {self.path} does not start with {IDX_MAGIC!r}")
        try:
            pos = 8
            (npacks,) = struct.unpack_from("<I", mm, pos)
            pos += 4
            self.packs: list[str] = []
            self.sizes: list[int] = []
            for _ in range(npacks):
                (n,) = struct.unpack_from("<H", mm, pos)
                self.packs.append(mm[pos + 2 : pos + 2 + n].decode("ascii"))
                (sz,) = struct.unpack_from("<Q", mm, pos + 2 + n)
                self.sizes.append(sz)
                pos += 2 + n + 8
            (self.count,) = struct.unpack_from("<Q", mm, pos)
            pos += 8
            self.fanout = FANOUT.unpack_from(mm, pos)
            self.ids_off = pos + FANOUT.size
            self.locs_off = self.ids_off + 32 * self.count
            self.end = self.locs_off + LOC.size * self.count
        except (struct.error, UnicodeDecodeError) as e:
            raise PackError(f"index {self.path} is damaged ({e})") from None
        if self.end + 32 != size or self.fanout[255] != self.count:
            raise PackError(f"index {self.path} is truncated or damaged")
        self.usable = _Usable(self)
        self.number: dict[str, int] = {}  # a pack's number by name (the first, if twice)
        for i, name in enumerate(self.packs):
            self.number.setdefault(name, i)

    def _pack_ok(self, i: int) -> bool:
        try:
            # a str path: pathlib's join cost more than the stat, once a pack (10k packs)
            return os.stat(f"{self.folder}/{self.packs[i]}").st_size >= self.sizes[i]
        except OSError:
            return False

    def find(self, oid: bytes) -> tuple[int, int, int] | None:
        """(pack number, offset, length) of an id, or None."""
        position = self._search(oid)
        return None if position < 0 else self.location(position)

    def _search(self, oid: bytes) -> int:
        """The position of an id among the sorted ids, or -1: its fanout slot, then a binary
        search (a damaged fanout is clamped to the ids, as in mlvc/_packfind.c)."""
        b, fanout, count = oid[0], self.fanout, self.count
        hi = fanout[b]
        lo = fanout[b - 1] if b else 0
        if hi > count:
            hi = count
        if lo > hi:
            lo = hi
        mm, base = self._mm, self.ids_off
        while lo < hi:
            mid = (lo + hi) >> 1
            key = mm[base + 32 * mid : base + 32 * mid + 32]
            if key < oid:
                lo = mid + 1
            elif key > oid:
                hi = mid
            else:
                return mid
        return -1

    def find_many(self, oids: list | tuple, fast=None) -> list[tuple[int, int]]:
        """``(k, position)`` for each ``oids[k]`` this index holds, in order: its position
        among the sorted ids (``location(position)``); an id not 32 bytes long is never
        found. ``fast``: the ``mlvc._packfind`` module (``speedups.extension``), one call in
        C for all of them (~0.1 us an id against ~3 us in this loop)."""
        if fast is not None:
            return fast.find(self._mm, self.ids_off, self.count, oids)
        if not isinstance(oids, (list, tuple)):
            raise TypeError("ids must be a list or a tuple of bytes")
        out = []
        for k, oid in enumerate(oids):
            if not isinstance(oid, bytes):
                raise TypeError(f"ids[{k}] is {type(oid).__name__}, not bytes")
            if len(oid) == 32:
                position = self._search(oid)
                if position >= 0:
                    out.append((k, position))
        return out

    def location(self, position: int) -> tuple[int, int, int] | None:
        """(pack number, offset, length) of the id at ``position``, or None when its pack
        is missing or shorter than indexed (as ``find``)."""
        loc = LOC.unpack_from(self._mm, self.locs_off + LOC.size * position)
        return loc if self.usable[loc[0]] else None

    def entries(self) -> Iterator[tuple[bytes, str, int, int]]:
        """Every (id, pack name, offset, length), sorted by id."""
        mm = self._mm
        for i in range(self.count):
            p, off, n = LOC.unpack_from(mm, self.locs_off + LOC.size * i)
            yield mm[self.ids_off + 32 * i : self.ids_off + 32 * i + 32], self.packs[p], off, n

    def checksum_ok(self) -> bool:
        return blake3.blake3(self._mm[: self.end]).digest() == self._mm[self.end : self.end + 32]

    def verify(self) -> list[str]:
        """Problems with the index itself and the packs it names (fsck)."""
        out = []
        if not self.checksum_ok():
            out.append(f"pack index {self.path} is damaged: its checksum does not match")
        for i, name in enumerate(self.packs):
            if not self.usable[i]:
                out.append(
                    f"pack {self.path.parent / name} named by {self.path.name} is missing or "
                    f"shorter than the {self.sizes[i]} bytes indexed"
                )
        return out


def write_index(
    folder: Path,
    name: str,
    packs: list[tuple[str, int]],
    entries: Iterable[tuple[bytes, str, int, int]],
    durable: bool,
    barrier: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``<folder>/<name>`` from id-sorted entries, by temp file (+ fsync) + rename;
    ``barrier(temp file)`` (which makes it durable with other files) runs between the write
    and the rename instead of the temp file's own fsync."""
    number = {p: i for i, (p, _) in enumerate(packs)}
    ids, locs = bytearray(), bytearray()
    fanout = [0] * 256
    last = None
    for oid, pack, off, n in entries:
        if oid == last:
            continue  # the same object in two packs: either copy will do
        last = oid
        ids += oid
        locs += LOC.pack(number[pack], off, n)
        fanout[oid[0]] += 1
    for i in range(1, 256):
        fanout[i] += fanout[i - 1]
    head = bytearray(IDX_MAGIC + struct.pack("<I", len(packs)))
    for p, size in packs:
        head += struct.pack("<H", len(p)) + p.encode("ascii") + struct.pack("<Q", size)
    head += struct.pack("<Q", len(ids) // 32) + FANOUT.pack(*fanout)
    h = blake3.blake3(head)
    h.update(ids)
    h.update(locs)
    tmp = folder / f".{name}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        write_all(fd, [head, ids, locs, h.digest()])
        if durable and barrier is None:
            os.fsync(fd)
    finally:
        os.close(fd)
    if barrier is not None:
        try:
            barrier(tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    os.replace(tmp, folder / name)
    return folder / name


IOV_MAX = 1024  # buffers one writev takes on Linux


def write_all(fd: int, parts: list) -> None:
    """os.writev until every part is written (at most IOV_MAX buffers a call)."""
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    i = 0
    while i < len(views):
        n = os.writev(fd, views[i : i + IOV_MAX])
        while i < len(views) and n >= len(views[i]):
            n -= len(views[i])
            i += 1
        if n:
            views[i] = views[i][n:]


class _Usable:
    """Whether each pack an index names (by number) is there and as long as indexed, asked of
    the file system when first needed, then remembered. Asked of every pack when an index
    opened, it cost a process one ``stat`` a pack before its first read: a pack a commit,
    ~65 ms at 2,400 runs, where a reader reads a few."""

    def __init__(self, index: PackIndex):
        self._index = index
        self._known: dict[int, bool] = {}

    def __len__(self) -> int:
        return len(self._index.packs)

    def __getitem__(self, i: int) -> bool:
        known = self._known.get(i)
        if known is None:
            known = self._known[i] = self._index._pack_ok(i)
        return known

    def __iter__(self):
        return (self[i] for i in range(len(self)))
