"""The stat cache: (path, size, mtime_ns, inode, ctime_ns) -> id, so unchanged files are not
re-read, and the worker pool that hashes the files that did change.

The cache lives in ``.mlvc/statcache``: msgpack ``[VERSION, {folder: [[signature, tree id,
size], ...]}, {folder: packed {name: entry}}]`` followed by the BLAKE3 of those bytes,
replaced by temp file + rename. Each folder's file entries stay packed until a file of that
folder is looked up, so a commit that reuses a folder's tree never unpacks them and one that
touches ten files unpacks ten folders' worth. A file whose checksum does not match, and any
entry that is not well formed, is ignored (the file is re-hashed); deleting the cache loses
nothing. gc deletes it whenever it removes objects.

Folders (``tree_get``/``tree_put``): the tree id ``build_tree`` stored for a folder, keyed by
a signature of everything the tree was made from (each entry's name, kind, size, mtime, inode,
ctime, mode and device, a link's target, each subfolder's signature). A folder whose
signature matches reuses its tree without reading a file or a file's entry; one file
changed, added, removed, renamed or re-permissioned changes its folder's signature and every
parent's. Only folders whose every file is older than the operation's clock are recorded.

An entry also says whether the file's bytes were *stored*: ``status`` and checkout learn a
file's hash without storing it, and such an entry must never let a commit record an id
whose object is not in the store. A commit trusts only stored entries, and only after
``store.has`` confirms the object is there; anything else is read and stored again.

Racy files (git's "racy clean" problem): a file written in the same timestamp tick as the
moment mlvc looked at it could change again without its mtime changing. So each operation
first reads the filesystem's own clock (the mtime of a file it creates) and only caches
entries whose mtime and ctime are strictly older; younger files are hashed every time until
they age. The filesystem's clock, not the system's, so network filesystems are handled too.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import blake3
import msgpack

from ..core import progress
from ..core.ids import DIGEST_SIZE, ObjectId
from ..errors import FileChanged
from ..store.odb import CHUNK_THRESHOLD, ObjectStore

VERSION = 3  # 1: no checksum, no "stored" flag; 2: no folders. Older ones are ignored.
TREE_SLOTS = 4  # signatures kept per folder (the code, data and artifacts trees share "")
POOL_MIN = 64  # fewer misses than this are hashed in the calling thread


class StatCache:
    """Path -> (size, mtime_ns, inode, ctime_ns, id) for files under one project root, and
    folder -> (signature, tree id, size) for the trees commits stored."""

    def __init__(self, path: Path, root: Path, tmp: Path):
        self.path = Path(path)
        self.root = Path(root)
        self._prefix = os.path.join(os.fspath(root), "")
        self.tmp = Path(tmp)
        # folder -> {name: entry}, or the folder's entries still packed (bytes)
        self._files: dict[str, dict | bytes] | None = None
        self._trees: dict[str, list] | None = None
        self.problem = ""  # why the file on disk was (partly) ignored, for fsck
        self._dirty = False
        self._lock = threading.RLock()  # put and tree_put read the file under it
        self.clock = 0  # filesystem time at the start of the current operation

    def _read(self) -> None:
        if self._files is not None:
            return
        # under the lock: build_tree runs for the data on a helper thread while the code's
        # runs here, and two threads reading at once would each install their own dicts,
        # so the folders one of them recorded in the meantime were lost
        with self._lock:
            if self._files is not None:
                return
            try:
                with open(self.path, "rb") as f:
                    raw = f.read()
            except OSError:
                raw = b""
            self._trees, self._files, self.problem = _split(raw)

    def _group(self, folder: str) -> dict[str, list]:
        """One folder's file entries, unpacked on first use (each checked when used)."""
        self._read()
        files = self._files
        group = files.get(folder)  # type: ignore[union-attr]
        if type(group) is dict:
            return group
        with self._lock:  # one thread unpacks a folder; another's entries are not replaced
            group = files.get(folder)  # type: ignore[union-attr]
            if type(group) is bytes:
                group, problem = _unpack(group)
                self.problem = self.problem or problem
                files[folder] = group  # type: ignore[index]
            elif group is None:
                group = files[folder] = {}  # type: ignore[index]
        return group  # type: ignore[return-value]

    def _folders(self) -> dict[str, list]:
        self._read()
        return self._trees  # type: ignore[return-value]

    def tree_get(self, folder: str, sig: bytes) -> tuple[ObjectId, int] | None:
        """(tree id, size) recorded for a folder with this signature, or None."""
        for slot in self._folders().get(folder, ()):
            if slot[0] == sig:
                return ObjectId(slot[1]), slot[2]
        return None

    def tree_put(self, folder: str, sig: bytes, oid: ObjectId, size: int) -> None:
        """Remember a folder's stored tree (the caller checks every file is older than the
        clock); the most recent ``TREE_SLOTS`` signatures of a folder are kept."""
        with self._lock:
            slots = self._folders().setdefault(folder, [])
            entry = [sig, bytes(oid), size]
            if slots and slots[0] == entry:
                return
            slots[:] = [entry, *(s for s in slots if s[0] != sig)][:TREE_SLOTS]
            self._dirty = True

    def begin(self) -> None:
        """Read the filesystem's clock; files modified at or after it are not cached."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        marker = self.tmp / f"clock-{os.getpid()}-{os.urandom(4).hex()}"
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"x")
            self.clock = os.fstat(fd).st_mtime_ns
        finally:
            os.close(fd)
            marker.unlink(missing_ok=True)

    def _key(self, path: str | os.PathLike) -> str | None:
        p = os.fspath(path)
        prefix = self._prefix
        return p[len(prefix) :] if p.startswith(prefix) else None

    def get(self, path: Path, st: os.stat_result, stored: bool = False) -> ObjectId | None:
        """The id recorded for this exact file state, or None.

        With ``stored``, only an entry made when the bytes were put in the store answers.
        """
        key = self._key(path)
        if key is None:
            return None
        folder, _, name = key.rpartition("/")
        e = self._group(folder).get(name)
        if (
            e is not None
            and _valid(key, e)
            and e[0] == st.st_size
            and e[1] == st.st_mtime_ns
            and e[2] == st.st_ino
            and e[3] == st.st_ctime_ns
            and (e[5] or not stored)
        ):
            return ObjectId(e[4])
        return None

    def put(self, path: Path, st: os.stat_result, oid: ObjectId, stored: bool = False) -> None:
        """Remember a file's id if its stat is older than this operation's clock.

        ``stored``: the bytes are in the store (a commit), not only hashed (status).
        """
        key = self._key(path)
        if key is None or not self.clock:
            return
        if st.st_mtime_ns >= self.clock or st.st_ctime_ns >= self.clock:
            return  # racy: it could still change within the same tick
        entry = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, bytes(oid), stored]
        folder, _, name = key.rpartition("/")
        with self._lock:
            group = self._group(folder)
            old = group.get(name)
            if old is not None and old[:5] == entry[:5] and old[5]:
                return  # hashing again does not make stored bytes unstored
            if old != entry:
                group[name] = entry
                self._dirty = True

    def save(self) -> None:
        """Write the cache if anything changed (temp file + rename; no fsync: a cache)."""
        if not self._dirty or self._files is None:
            return
        with self._lock:
            data = _encode(self._files, self._trees or {})
            self.tmp.mkdir(parents=True, exist_ok=True)
            tmp = self.tmp / f"statcache-{os.getpid()}-{os.urandom(4).hex()}"
            with open(tmp, "wb") as f:
                f.write(data)
                f.write(blake3.blake3(data).digest())
            os.replace(tmp, self.path)
            self._dirty = False

    def clear(self) -> None:
        """Forget everything (gc does this after removing objects)."""
        with self._lock:
            self._files, self._trees, self._dirty = {}, {}, False
            self.path.unlink(missing_ok=True)

    def __len__(self) -> int:
        self._read()
        return sum(len(self._group(f)) for f in list(self._files or ()))


def _valid(key, e) -> bool:
    # spelled out, not all(...) over a generator: it runs once per file on every load
    if type(key) is not str or type(e) is not list or len(e) != 6:
        return False
    size, mtime, ino, ctime, oid, stored = e
    return (
        type(size) is int
        and type(mtime) is int
        and type(ino) is int
        and type(ctime) is int
        and size >= 0
        and mtime >= 0
        and ino >= 0
        and ctime >= 0
        and type(oid) is bytes
        and len(oid) == DIGEST_SIZE
        and type(stored) is bool
    )


def encode(entries: dict, trees: dict) -> bytes:
    """A stat cache file's bytes before its checksum, from ``{path: entry}`` (tests)."""
    files: dict = {}
    for key, e in entries.items():
        folder, _, name = key.rpartition("/") if type(key) is str else ("", "", key)
        files.setdefault(folder, {})[name] = e
    return _encode(files, trees)


def _encode(files: dict, trees: dict) -> bytes:
    packed = {
        folder: group if type(group) is bytes else msgpack.packb(group, use_bin_type=True)
        for folder, group in files.items()
        if group
    }
    return msgpack.packb([VERSION, trees, packed], use_bin_type=True)


def _split(raw: bytes) -> tuple[dict[str, list], dict[str, dict | bytes], str]:
    """(valid folders, each folder's file entries still packed, why any was ignored)."""
    if not raw:
        return {}, {}, ""
    data, digest = raw[:-DIGEST_SIZE], raw[-DIGEST_SIZE:]
    if len(raw) <= DIGEST_SIZE or blake3.blake3(data).digest() != digest:
        return {}, {}, "its checksum does not match"
    try:
        doc = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException) as e:
        return {}, {}, f"it does not decode ({e})"
    if not (isinstance(doc, list) and doc and isinstance(doc[0], int)):
        return {}, {}, "it is not a stat cache"
    if doc[0] != VERSION:
        return {}, {}, f"it has format version {doc[0]!r}, not {VERSION}"
    if not (len(doc) == 3 and isinstance(doc[1], dict) and isinstance(doc[2], dict)):
        return {}, {}, "it is not a stat cache"
    trees = {k: slots for k, v in doc[1].items() if (slots := _valid_slots(k, v))}
    files = {k: v for k, v in doc[2].items() if type(k) is str and type(v) is bytes}
    bad = len(doc[1]) - len(trees) + len(doc[2]) - len(files)
    return trees, files, f"{bad} malformed folder entries" if bad else ""


def _valid_slots(key, v) -> list | None:
    if type(key) is not str or type(v) is not list or not v:
        return None
    for slot in v:
        if not (
            type(slot) is list
            and len(slot) == 3
            and type(slot[0]) is bytes
            and type(slot[1]) is bytes
            and len(slot[1]) == DIGEST_SIZE
            and type(slot[2]) is int
            and slot[2] >= 0
        ):
            return None
    return v


def _unpack(packed: bytes) -> tuple[dict, str]:
    """One folder's entries, unchecked (``get`` checks the one it uses)."""
    try:
        group = msgpack.unpackb(packed, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException) as e:
        return {}, f"a folder's files do not decode ({e})"
    if not isinstance(group, dict):
        return {}, "a folder's files are not a map"
    return group, ""


def parse(raw: bytes) -> tuple[dict[str, list], str]:
    """The valid file entries (by path) of a stat cache file, and why any of it was ignored
    ("" if none): everything checked, as fsck does."""
    _trees, files, why = _split(raw)
    entries: dict[str, list] = {}
    bad = 0
    for folder, packed in files.items():
        group, problem = _unpack(packed)  # type: ignore[arg-type]
        why = why or problem
        for name, e in group.items():
            key = f"{folder}/{name}" if folder and type(name) is str else name
            if type(name) is str and _valid(key, e):
                entries[key] = e
            else:
                bad += 1
    return entries, why or (f"{bad} malformed entries" if bad else "")


def check_file(path: Path, repair: bool = True) -> list[str]:
    """fsck's check of a stat cache file: a damaged one is named and removed (a cache)."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    except OSError as e:
        return [f"stat cache {path} cannot be read ({e.strerror}); delete it"]
    _entries, why = parse(raw)
    if not why:
        return []
    if repair:
        Path(path).unlink(missing_ok=True)
        return [f"stat cache {path} is damaged ({why}): removed, files will be re-hashed"]
    return [f"stat cache {path} is damaged ({why}); delete it"]


class FileHasher:
    """``build_tree``'s hasher: stat-cache hits cost a lookup; misses are stored in parallel.

    With ``threads`` > 1, misses go to a thread pool (objects land in this process's
    pack, which processes could not share); see ``default_threads`` for why 1 is default.
    """

    def __init__(self, store: ObjectStore, cache: StatCache | None, threads: int | None = None):
        self.store = store
        self.cache = cache
        # one by default: measured on 2 vCPUs (20k files of 4 KiB), one thread took 0.9-1.5 s,
        # two threads 3.5-4.4 s (BLAKE3 keeps the GIL for small inputs); MLVC_THREADS sets it
        self.threads = threads or 1
        if cache is not None:
            cache.begin()

    def _add(self, path: Path, st: os.stat_result) -> ObjectId:
        oid = self.store.add_file(path)
        after = os.stat(path)  # follows a `--link symlink` file, as its st did
        if (after.st_size, after.st_mtime_ns, after.st_ctime_ns, after.st_ino) != (
            st.st_size,
            st.st_mtime_ns,
            st.st_ctime_ns,
            st.st_ino,
        ):
            raise FileChanged(path)  # the tree entry's size must be that of the stored bytes
        if self.cache is not None:
            self.cache.put(path, st, oid, stored=True)
        if st.st_size < CHUNK_THRESHOLD:  # chunked files report their own progress
            progress.advance(st.st_size)
        progress.advance(files=1)
        return oid

    def _hit(self, path: Path, st: os.stat_result) -> ObjectId | None:
        """A cached id, only if its bytes were stored and the store still has them."""
        if self.cache is None:
            return None
        oid = self.cache.get(path, st, stored=True)
        return oid if oid is not None and self.store.has(oid) else None

    def __call__(self, path: Path, st: os.stat_result) -> ObjectId:
        hit = self._hit(path, st)
        return hit if hit is not None else self._add(path, st)

    def map(self, jobs: list[tuple[Path, os.stat_result]]) -> list[ObjectId]:
        """Ids of many files, in order; only files the cache does not know are read."""
        out: list[ObjectId | None] = [None] * len(jobs)
        misses = []
        for i, (path, st) in enumerate(jobs):
            hit = self._hit(path, st)
            if hit is None:
                misses.append(i)
            else:
                out[i] = hit
        total = sum(jobs[i][1].st_size for i in misses)
        with progress.bar("hashing", total_bytes=total, total_files=len(misses)):
            if self.threads > 1 and len(misses) >= POOL_MIN:
                from concurrent.futures import ThreadPoolExecutor  # not for 1 thread: ~3 ms

                with ThreadPoolExecutor(self.threads, thread_name_prefix="mlvc-hash") as pool:
                    add = progress.carry(self._add)  # the pool counts in this bar
                    done = pool.map(lambda i: add(*jobs[i]), misses)
                    for i, oid in zip(misses, done, strict=True):
                        out[i] = oid
            else:
                for i in misses:
                    out[i] = self._add(*jobs[i])
        return out  # type: ignore[return-value]
