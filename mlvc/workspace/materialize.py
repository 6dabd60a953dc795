"""Putting stored files into a working tree: copy (verified), reflink, hardlink or symlink.

Packed objects are records inside pack files, so they cannot be linked. For ``--link
hardlink|symlink`` a file is first materialized, verified, into the link cache
``.mlvc/cache/files/ab/cdef...`` as a read-only file holding exactly its content; the working
tree links to that. The store itself is never linked, so nothing done to a linked file can
corrupt it; a cache file is re-verified before every reuse, and gc removes cache files whose
objects are unreachable. Reflinks (copy-on-write clones) are used for plain copies when the
filesystem supports them and a cache file exists; support is probed once per device.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
from collections import deque
from pathlib import Path

import blake3

from ..core import progress
from ..core.ids import ObjectId
from ..errors import CorruptObject, UsageError
from ..store.odb import HASH_STEP, ObjectStore, hash_file, pipeline_switch

LINKS = ("copy", "hardlink", "symlink")
FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
_reflink_ok: dict[int, bool] = {}
HASH_LAG = 4  # steps of HASH_STEP the checkout's hash may run behind its copy


def check_link(link: str) -> str:
    if link not in LINKS:
        raise UsageError(f"unknown link kind {link!r}: choose copy, hardlink or symlink")
    return link


def cache_path(mlvc_dir: Path, oid: ObjectId) -> Path:
    return Path(mlvc_dir) / "cache" / "files" / oid.hex[:2] / oid.hex[2:]


class _Sink:
    """Bytes written to one new file: progress, early writeback, and, for kernel copies, a
    hash of what was written, read back every ``HASH_STEP`` bytes a few steps behind the
    copy by one helper thread, so the copy (this thread, in the kernel) and the hash (the
    other core) run side by side. The helper stays at most ``HASH_LAG`` steps behind: the
    bytes it reads back were just copied and are still in the CPU's shared cache (hashing
    64 MiB behind, from memory, cost this machine more CPU and time, benchmarks/RESULTS.md).
    When no core is idle (``odb.pipeline_switch``, asked at each step) each step is hashed
    by this thread right after its copy instead, once the helper's queue has run out."""

    def __init__(self, fd: int, path: Path, hash_behind: bool):
        self.fd, self.path = fd, path
        self.written = self.kicked = self.queued = self.hashed = 0
        self.hasher = blake3.blake3() if hash_behind else None
        self.jobs: list = []
        self.hashing: deque = deque()
        self._pool = self._hash_pool = None
        self._buf: memoryview | None = None
        self.short = False
        self.switch = pipeline_switch() if hash_behind else None

    def advance(self, n: int) -> None:
        from ..store.pack.store import WRITEBACK, _start_writeback

        self.written += n
        progress.advance(n)
        if _start_writeback is not None and self.written - self.kicked >= WRITEBACK:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(1, thread_name_prefix="mlvc-writeback")
            args = (self.fd, self.kicked, self.written - self.kicked, 2)
            self.jobs.append(self._pool.submit(_start_writeback, *args))
            self.kicked = self.written
        if self.hasher is not None and self.written - self.queued >= HASH_STEP:
            self._hash_up_to(self.written)

    def _hash_up_to(self, end: int) -> None:
        if not self.switch.spare():
            while self.hashing:  # in order: the helper's steps come first
                self.hashing.popleft().result()
            self._hash_range(self.queued, end)
            self.queued = end
            return
        if self._hash_pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._hash_pool = ThreadPoolExecutor(1, thread_name_prefix="mlvc-hash")
        self.hashing.append(self._hash_pool.submit(self._hash_range, self.queued, end))
        self.queued = end
        while len(self.hashing) > HASH_LAG:
            self.hashing.popleft().result()

    def _hash_range(self, start: int, end: int) -> None:
        """Hash bytes [start, end) of the file (the helper's jobs run in order)."""
        if self._buf is None:
            self._buf = memoryview(bytearray(HASH_STEP))
        at = start
        while at < end and not self.short:
            want = min(HASH_STEP, end - at)
            got = os.preadv(self.fd, [self._buf[:want]], at)
            if got <= 0:
                self.short = True  # cut short behind our back: the digest will not match
                return
            self.hasher.update(self._buf[:got])
            at += got
        self.hashed = at

    def finish(self) -> bytes | None:
        """Wait for the helpers; the digest of everything written if hashing behind."""
        if self.hasher is not None and self.queued < self.written:
            self._hash_up_to(self.written)
        while self.hashing:
            self.hashing.popleft().result()
        for j in self.jobs:
            j.result()
        if self.hasher is None:
            return None
        return self.hasher.digest() if not self.short else b"short:" + self.hasher.digest()

    def close(self) -> None:
        for pool in (self._pool, self._hash_pool):
            if pool is not None:
                pool.shutdown()


def copy_object(store: ObjectStore, oid: ObjectId, dest: Path) -> None:
    """Write an object's content to ``dest`` (a new file), verified before it is trusted.

    Chunked objects in packs are copied in the kernel (``PackedStore.copy_into``), and what
    was written is read back and hashed every ``HASH_STEP`` bytes as it goes; anything else
    streams through ``iter_content``, which verifies as it goes. Disk writes start every
    32 MiB (``sync_file_range``), so a later ``sync`` finds little left to write.
    """
    fast = getattr(store, "copy_into", None)
    with open(dest, "w+b", buffering=0) as f:
        sink = _Sink(f.fileno(), dest, hash_behind=fast is not None)
        try:
            if fast is not None and fast(oid, f.fileno(), sink.advance):
                got = sink.finish()
                if got != oid:
                    raise CorruptObject(
                        oid.hex,
                        str(dest),
                        f"copied content does not match its id; it hashes to {got.hex()}",
                        expected=oid.hex,
                        got=got.hex(),
                    )
                return
            sink.hasher = None
            for block in store.iter_content(oid):
                f.write(block)
                sink.advance(len(block))
            sink.finish()
        finally:
            sink.close()


def cached_file(store: ObjectStore, mlvc_dir: Path, oid: ObjectId) -> Path:
    """A read-only file holding exactly the object's content, verified (made if needed)."""
    path = cache_path(mlvc_dir, oid)
    if path.exists():
        if hash_file(path) == oid:
            return path
        path.unlink()  # changed through a link (root ignores read-only bits): remake it
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name[:16]}.{secrets.token_hex(4)}.tmp")
    try:
        copy_object(store, oid, tmp)
        os.chmod(tmp, 0o444)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def reflink(src: Path, dest: Path) -> bool:
    """Clone ``src`` to the new file ``dest`` copy-on-write, if the filesystem can."""
    dev = os.stat(src).st_dev
    if _reflink_ok.get(dev) is False:
        return False
    try:
        with open(src, "rb") as s, open(dest, "wb") as d:
            fcntl.ioctl(d.fileno(), FICLONE, s.fileno())
        _reflink_ok[dev] = True
        return True
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS):
            _reflink_ok[dev] = False
        os.unlink(dest)
        return False


def place(
    store: ObjectStore, mlvc_dir: Path | None, oid: ObjectId, tmp: Path, link: str, mode: int
) -> str:
    """Create ``tmp`` holding the object's content by ``link``; returns how it was done.

    Hardlinks fall back to a copy across filesystems (EXDEV) or at the link limit, as do
    executables (a shared read-only inode cannot carry their mode).
    """
    if mlvc_dir is not None and link != "copy" and not mode & 0o111:
        src = cached_file(store, mlvc_dir, oid)
        if link == "symlink":
            os.symlink(src.resolve(), tmp)
            return "symlink"
        try:
            os.link(src, tmp)
            return "hardlink"
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EMLINK, errno.EPERM):
                raise
    if mlvc_dir is not None:
        src = cache_path(mlvc_dir, oid)
        if src.exists() and not src.stat().st_mode & 0o222 and reflink(src, tmp):
            os.chmod(tmp, mode)
            return "reflink"
    copy_object(store, oid, tmp)
    os.chmod(tmp, mode)
    return "copy"


def is_cache_link(path: Path, oid: ObjectId) -> bool:
    """Whether ``path`` is a symlink into a link cache for this object (a symlink checkout)."""
    try:
        target = os.readlink(path)
    except OSError:
        return False
    return target.endswith(f"/cache/files/{oid.hex[:2]}/{oid.hex[2:]}") and os.path.isfile(target)
