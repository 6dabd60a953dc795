"""Reading packs without their index: scan, verify, and rebuild indexes (fsck and gc).

A pack carries each record's id (``id | u64 length | record``), so an index is derivable:
a pack whose index file is damaged, unreadable or missing, or that is shorter than its index
says, is scanned from the start, every record is verified against its id, and a new index
is written over the records that verify. Nothing here deletes a pack: a pack holds data
until gc finds every record in it unreachable. A scan stops at the first record that runs
past the end of the file (a writer killed mid-append, or a damaged length): the records
before it are kept, the bytes after it are reported.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path

import blake3

from ...core.ids import ObjectId
from ...errors import PackError, StoreNeedsRepair
from .. import compress as zstd
from ..odb import CHUNKED, RAW, ZSTD, ZSTD_MAX, _parse_chunk_list
from .index import PackIndex, open_listed, write_index
from .store import HEAD, PACK_MAGIC

READ = 4 << 20  # raw records are hashed in reads of this size: memory stays bounded
MAX_CHUNK_LIST = 64 << 20  # a chunk list bigger than this (a 1.6 TB file) is not believed


@dataclass
class Scan:
    """What a pack holds: records that verify, and where parsing stopped."""

    path: Path
    size: int = 0
    entries: list[tuple[bytes, int, int]] = field(default_factory=list)  # id, offset, length
    end: int = 0  # bytes covered by whole records (verified or not)
    problems: list[str] = field(default_factory=list)

    @property
    def holds_data(self) -> bool:
        return self.size > len(PACK_MAGIC)


def _verify(f, oid: bytes, off: int, n: int) -> str:
    """Why the record at ``off`` does not hold the object ``oid`` ("" if it does)."""
    tag = os.pread(f, 1, off)
    if tag == RAW:
        h, at, left = blake3.blake3(), off + 1, n - 1
        while left:
            block = os.pread(f, min(READ, left), at)
            if not block:
                return "it is cut short"
            h.update(block)
            at, left = at + len(block), left - len(block)
        return "" if h.digest() == oid else "its content does not match its id"
    if tag == ZSTD:
        if n > ZSTD_MAX + 1024:
            return "a compressed record this big is never written"
        try:
            data = zstd.decompress(os.pread(f, n - 1, off + 1), ZSTD_MAX)
        except ValueError as e:
            return str(e)
        return "" if blake3.blake3(data).digest() == oid else "its content does not match its id"
    if tag == CHUNKED:
        if n > MAX_CHUNK_LIST:
            return "its chunk list is implausibly big"
        try:  # its id is the hash of the whole file: fsck checks it through its chunks
            _parse_chunk_list(os.pread(f, n - 1, off + 1), ObjectId(oid), "scan")
        except Exception as e:
            return str(e)
        return ""
    return f"unknown record tag {tag!r}"


def scan_pack(path: Path) -> Scan:
    """Every record of a pack, in order, verified against its id."""
    path = Path(path)
    scan = Scan(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        scan.size = size = os.fstat(fd).st_size
        magic = os.pread(fd, len(PACK_MAGIC), 0)
        if magic != PACK_MAGIC:
            if size > len(PACK_MAGIC) or not PACK_MAGIC.startswith(magic):
                scan.problems.append(f"pack {path} does not start with the pack header")
            return scan
        off = len(PACK_MAGIC)
        while off < size:
            head = os.pread(fd, HEAD.size, off)
            if len(head) < HEAD.size:
                break
            oid, n = HEAD.unpack(head)
            start = off + HEAD.size
            if n == 0 or start + n > size:
                break
            why = _verify(fd, oid, start, n)
            if why:
                scan.problems.append(f"pack {path} record at {start} ({oid.hex()}): {why}")
            else:
                scan.entries.append((oid, start, n))
            off = start + n
        scan.end = off
        if off < size:
            scan.problems.append(
                f"pack {path}: {size - off} bytes after offset {off} are not a whole record "
                "(a writer killed mid-append, or a damaged length); they are left in place"
            )
    finally:
        os.close(fd)
    return scan


def release_reserved(path: Path) -> int:
    """Give back the blocks a writer reserved past a pack's end (store.py ``reserve``:
    fallocate keeping the size, as much as the big file it was writing) and did not live to
    give back: a truncate to the file's own size, which never cuts a byte of it. Returns
    the bytes given back (0 if none, or if the file system does not say)."""
    try:
        st = os.stat(path)
        beyond = st.st_blocks * 512 - (-(-st.st_size // st.st_blksize) * st.st_blksize)
        if beyond <= 0:
            return 0
        mode = st.st_mode & 0o777
        os.chmod(path, mode | 0o200)  # packs are read-only: writable for the truncate
        try:
            os.truncate(path, st.st_size)
        finally:
            os.chmod(path, mode)
        return max(0, (st.st_blocks - os.stat(path).st_blocks) * 512)
    except OSError:
        return 0


def index_scan(folder: Path, scan: Scan) -> Path | None:
    """Write a new durable index over a scanned pack's verified records (None if none)."""
    if not scan.entries:
        return None
    name = scan.path.name
    entries = sorted((oid, name, off, n) for oid, off, n in scan.entries)
    idx = f"pack-{os.urandom(16).hex()}.idx"
    return write_index(folder, idx, [(name, scan.end)], entries, durable=True)


@dataclass
class PackState:
    """The pack folder as fsck and gc see it."""

    trusted: list[PackIndex] = field(default_factory=list)
    damaged: dict[str, str] = field(default_factory=dict)  # index file -> why
    unreadable: dict[str, str] = field(default_factory=dict)  # index file -> OS error
    short: dict[str, str] = field(default_factory=dict)  # pack -> index naming it
    uncovered: list[str] = field(default_factory=list)  # packs no trusted index covers


def survey(folder: Path) -> PackState:
    """Which index files can be trusted (they open and their checksum matches), and which
    packs no trusted index makes readable."""
    state = PackState()
    names, opened = open_listed(folder)
    for n, idx in opened.items():
        if isinstance(idx, PackError):
            state.damaged[n] = str(idx)
        elif isinstance(idx, OSError):
            state.unreadable[n] = idx.strerror or str(idx)
        elif not idx.checksum_ok():
            state.damaged[n] = f"index {folder / n} is damaged: its checksum does not match"
        else:
            state.trusted.append(idx)
    covered = set()
    for idx in state.trusted:
        for i, p in enumerate(idx.packs):
            if idx.usable[i]:
                covered.add(p)
            else:
                state.short.setdefault(p, idx.path.name)
    state.uncovered = sorted(n for n in names if n.endswith(".pack") and n not in covered)
    return state


def young(path: Path, cutoff: float) -> bool:
    try:
        return path.stat().st_mtime >= cutoff
    except FileNotFoundError:
        return True


def repair(store, cutoff: float | None) -> tuple[list[str], list[str]]:
    """Make every pack readable through a trusted index again. Returns (problems, notes):
    damage found (and what was done about it), and crash leftovers tidied.

    Packs no trusted index covers are scanned and indexed; with ``cutoff``, those modified
    after it are skipped (a writer may still be appending). A pack without any index and
    with a cut last record is what a writer killed mid-commit leaves: indexing it is a note,
    not a problem. Indexes that name packs which are gone or shorter are rewritten without
    them; damaged index files are removed once every pack is covered (an index holds
    nothing its packs do not). No pack is deleted.
    """
    folder = store.pack_dir
    state = survey(folder)
    problems, notes = [], []
    for name, why in state.unreadable.items():
        problems.append(f"pack index {folder / name} cannot be read ({why}); fix its permissions")
    suspect = bool(state.damaged or state.short or state.unreadable)
    skipped = False
    for name in state.uncovered:
        path = folder / name
        if cutoff is not None and young(path, cutoff) and not suspect:
            skipped = True
            continue
        try:
            scan = scan_pack(path)
        except OSError as e:
            problems.append(f"pack {path} cannot be read ({e.strerror})")
            skipped = True
            continue
        made = index_scan(folder, scan)
        released = release_reserved(path)
        done = f"indexed its {len(scan.entries)} objects in {made.name}" if made else ""
        if released:
            done += f"; gave back {released >> 20} MiB reserved past its end"
        bad = [p for p in scan.problems if "not a whole record" not in p]
        if name in state.short:
            problems.append(
                f"pack {path} is shorter than {state.short[name]} says: "
                + (done or "no record in it verifies")
            )
        elif suspect or bad:
            problems.append(
                f"pack {path} has no usable index: "
                + (done or "no record in it verifies; left in place")
            )
        elif made is not None:
            notes.append(f"pack {path} had no index (a writer was killed?): {done}")
        problems.extend(bad)
        notes.extend(p for p in scan.problems if p not in bad)
    for idx in state.trusted:
        gone = [p for i, p in enumerate(idx.packs) if not idx.usable[i]]
        if gone:
            rebuilt = store.rewrite_index([(idx, None)])
            idx.path.unlink(missing_ok=True)
            problems.append(
                f"pack index {idx.path.name} named missing or cut packs ({', '.join(gone)}): "
                f"rewritten as {rebuilt.name} without them"
            )
    for name, why in state.damaged.items():
        if state.unreadable or skipped:
            problems.append(f"{why}; left in place until every pack is indexed")
        else:
            (folder / name).unlink(missing_ok=True)
            problems.append(f"{why}: removed (its packs are indexed anew)")
    if problems or notes:
        store.reload(force=True)
    return problems, notes


def try_exclusive(mlvc_dir: Path):
    """The gc lock taken exclusive without waiting, or None: when held, no process is
    writing objects, so a pack without an index is not one being written."""
    try:
        fd = os.open(Path(mlvc_dir) / "gc.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def index_torn_packs(store, dry_run: bool = False) -> list[str]:
    """For gc: refuse a store whose indexes cannot be trusted; index packs that have none.

    gc holds the lock exclusive, so a pack without an index is not being written: its writer
    died. Its records are indexed like any others (and swept by reachability like any
    others), never deleted wholesale for lacking an index; one that holds no record (a
    header at most) is removed. Returns notes of what was done.
    """
    state = survey(store.pack_dir)
    bad = [f"{n} ({why})" for n, why in {**state.damaged, **state.unreadable}.items()]
    bad += [f"{p} (shorter than {n} says)" for p, n in state.short.items()]
    if bad:
        raise StoreNeedsRepair(
            f"gc cannot trust the pack index of {bad[0]}"
            + (f" and {len(bad) - 1} more" if len(bad) > 1 else "")
            + "; run `mlvc fsck` to rebuild indexes from the packs, then gc again"
        )
    notes = []
    for name in state.uncovered:
        scan = scan_pack(store.pack_dir / name)
        if not scan.holds_data and not scan.problems:  # a writer killed before its first
            if not dry_run:  # record (a commit, a merger) left a header at most
                (store.pack_dir / name).unlink(missing_ok=True)
            notes.append(f"{'would remove' if dry_run else 'removed'} empty pack {name}")
            continue
        if dry_run:
            notes.append(f"would index {len(scan.entries)} objects of pack {name}")
            continue
        made = index_scan(store.pack_dir, scan)
        if made is not None:
            notes.append(f"indexed {len(scan.entries)} objects of pack {name} (no index)")
    if state.uncovered and not dry_run:
        store.reload(force=True)
    return notes


def repair_for_fsck(store, mlvc_dir: Path, grace: float) -> tuple[list[str], list[str]]:
    """For fsck: index packs that have no usable index. Packs younger than ``grace``
    seconds are left alone while another process holds the gc lock (a commit may be
    writing them). Returns (problems repaired, notes)."""
    import os
    import time

    fd = try_exclusive(mlvc_dir)
    try:
        return repair(store, None if fd is not None else time.time() - grace)
    finally:
        if fd is not None:
            os.close(fd)
