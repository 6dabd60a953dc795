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
import itertools
import os
import secrets
from collections import deque
from collections.abc import Iterator
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


def _hash_group(hasher, group: list) -> None:
    for part in group:
        hasher.update(part)


class _Sink:
    """Bytes written to one new file: progress, and disk writes started every ``WRITEBACK``
    bytes (``sync_file_range``, on a helper thread), so a later ``sync`` finds little left."""

    def __init__(self, fd: int):
        self.fd = fd
        self.written = self.kicked = 0
        self.jobs: list = []
        self._pool = self._hash_pool = None

    def advance(self, n: int) -> None:
        from ..store.pack.store import WRITEBACK, _start_writeback

        self.written += n
        progress.advance(n)
        if _start_writeback is not None and self.written - self.kicked >= WRITEBACK:
            args = (self.fd, self.kicked, self.written - self.kicked, 2)
            self.jobs.append(
                self._helper("_pool", "mlvc-writeback").submit(_start_writeback, *args)
            )
            self.kicked = self.written

    def _helper(self, name: str, prefix: str):
        if getattr(self, name) is None:
            from concurrent.futures import ThreadPoolExecutor

            setattr(self, name, ThreadPoolExecutor(1, thread_name_prefix=prefix))
        return getattr(self, name)

    def copy(self, parts: Iterator) -> bytes:
        """Write ``parts`` (a chunked object's chunks, in order) in groups of about
        ``HASH_STEP`` bytes, one ``writev`` each, and return the BLAKE3 of them all.

        Each group is hashed from the same memory the write reads (for a pack, its mapped
        pages): on a helper thread at most ``HASH_LAG`` groups behind while another core is
        idle (``odb.pipeline_switch``, asked at each group), so the copy and the hash run
        side by side; otherwise here, right before the group's write, so the write finds
        the bytes in the CPU's cache. Reading the written file back to hash it cost this
        machine a third more CPU (benchmarks/RESULTS.md).
        """
        from ..store.pack.store import write_all

        hasher = blake3.blake3()
        switch = pipeline_switch()
        hashing: deque = deque()
        try:
            group: list = []
            size = 0
            for part in itertools.chain(parts, [None]):
                if part is not None:
                    group.append(part)
                    size += len(part)
                    if size < HASH_STEP:
                        continue
                if not group:
                    break
                if switch.spare():
                    pool = self._helper("_hash_pool", "mlvc-hash")
                    hashing.append(pool.submit(_hash_group, hasher, group))
                    while len(hashing) > HASH_LAG:
                        hashing.popleft().result()
                else:
                    while hashing:  # in order: the helper's groups come first
                        hashing.popleft().result()
                    _hash_group(hasher, group)
                write_all(self.fd, group)
                self.advance(size)
                group, size = [], 0
        finally:
            for job in hashing:
                job.exception()  # every hash ends before its views go; the first error wins
        while hashing:
            hashing.popleft().result()
        return hasher.digest()

    def finish(self) -> None:
        """Wait for the writeback helper."""
        for j in self.jobs:
            j.result()

    def close(self) -> None:
        for pool in (self._pool, self._hash_pool):
            if pool is not None:
                pool.shutdown()


def copy_object(store: ObjectStore, oid: ObjectId, dest: Path) -> None:
    """Write an object's content to ``dest`` (a new file), verified before it is trusted.

    A chunked object in packs is written from maps of its packs (``PackedStore.chunk_views``)
    into a preallocated file, its chunks hashed as they go (``_Sink.copy``), and the file
    refused if that hash is not its id; anything else streams through ``iter_content``,
    which verifies as it goes.
    """
    from ..store.pack.store import _preallocate

    views = getattr(store, "chunk_views", None)
    planned = views(oid) if views is not None else None
    with open(dest, "w+b", buffering=0) as f:
        sink = _Sink(f.fileno())
        try:
            if planned is not None:
                size, parts = planned
                _preallocate(f.fileno(), size)  # keeps the size: a cut-short copy looks short
                got = sink.copy(parts)
                sink.finish()
                if got != oid:
                    raise CorruptObject(
                        oid.hex,
                        str(dest),
                        f"copied content does not match its id; it hashes to {got.hex()}",
                        expected=oid.hex,
                        got=got.hex(),
                    )
                return
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
