"""``fsck --remote``: verify a remote through its Transport, every problem listed.

What is checked (docs/remotes.md, "Checking a remote"):

- every index file: its checksum, that it parses, that each pack it names is listed and at
  least as long as the index says;
- every pack an index names, read front to back by bounded ranged reads (``WINDOW`` bytes
  at a time, never the whole pack in memory): its magic, each record's entry header against
  the index (id, length), each record re-hashed against its id (a large raw record in
  pieces); a pushed pack's name is the BLAKE3 of its bytes, so that is checked too (an mlvc
  server names its packs otherwise);
- every runs file (content matches its name, nothing but ids) and every run it lists, with
  its closure: the references each record holds are collected while the packs are read
  (``links``, the function fetch walks a remote with), then followed from each run and each
  ref target, so a run whose tree is missing is named;
- refs.json: well formed, and every target on the remote (an alias's version in refs.json).

A chunked file's chunk list is checked to parse and its chunks to be on the remote and
whole; the hash of the whole file is checked when a fetch assembles it.

Packs no index names are what an interrupted push leaves (the pack is sent before its
index). They are not damage: they are listed as orphans with their size and age, and
``prune`` deletes those older than ``grace`` seconds (default a day: the pack of a push in
flight is as young as that push, so pruning never hurts one). Nothing read is trusted: a
garbled file is a problem line, never a crash.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import blake3

from ..core.ids import ObjectId
from ..core.objects import DecodeError, unpack
from ..errors import MlvcError, PackError, RemoteError
from ..store import compress
from ..store.odb import CHUNKED, RAW, ZSTD, ZSTD_MAX, _parse_chunk_list
from ..store.pack.index import PackIndex
from ..store.pack.store import HEAD, PACK_MAGIC
from ..store.reach import ANY, BIG, BLOB, SMALL, TREE, links
from . import format as fmt

WINDOW = 8 << 20  # one ranged read of a pack at most
MAX_IDX_BYTES = 4 << 30  # an index file larger than this is refused unread
MAX_RECORD = fmt.PACK_CAP  # a record read whole (to follow its references) at most
GRACE_S = 86400.0  # orphan packs younger than this are never pruned
_KIND = {
    TREE: "tree",
    BIG: "file",
    SMALL: "file",
    BLOB: "chunk",
    ANY: "object",
    "env": "env",
    "series": "metric series",
}
# What a run must reach (its other ids, parents included, may be anywhere or nowhere)
_RUN_FIELDS = (
    ("code", TREE),
    ("data", TREE),
    ("artifacts", TREE),
    ("env", "env"),
    ("series", "series"),
)


@dataclass
class RemoteFsckReport:
    """What ``mlvc fsck --remote NAME --json`` prints."""

    remote: str
    url: str
    problems: list[str] = field(default_factory=list)
    orphans: list[dict] = field(default_factory=list)  # {pack, bytes, age_s, pruned[, kept]}
    indexes: int = 0
    packs: int = 0
    objects: int = 0  # records re-hashed
    runs: int = 0
    refs: int = 0
    bytes_checked: int = 0  # bytes of packs read and hashed
    bytes_received: int = 0
    requests: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def check_remote(transport, name: str, prune: bool = False, grace: float = GRACE_S,
                 tmp: Path | None = None) -> RemoteFsckReport:  # fmt: skip
    """Every problem of the remote behind ``transport`` (an empty ``problems``: whole)."""
    report = RemoteFsckReport(name, transport.url)
    with tempfile.TemporaryDirectory(prefix="fsck-remote-", dir=tmp) as folder:
        _Check(transport, name, report, Path(folder)).run(prune, grace)
    report.requests, report.bytes_received = transport.requests, transport.bytes_in
    return report


class _Check:
    def __init__(self, transport, name: str, report: RemoteFsckReport, folder: Path):
        from .http import ServerTransport

        self.t, self.name, self.report, self.folder = transport, name, report, folder
        self.problems = report.problems
        # a pushed pack is named by its content; an mlvc server names its own packs
        self.named = not isinstance(transport, ServerTransport)
        self.indexes: list[PackIndex] = []
        self.entries: dict[str, list[tuple[int, bytes, int]]] = {}  # pack -> (off, id, n)
        self.indexed_size: dict[str, int] = {}
        self.damaged_indexes = 0  # an index not read: what it covers is unknown, no prune
        self.unreadable_index = False
        self.bad: set[bytes] = set()  # damaged or lost: reported once, not followed
        self.links: dict[bytes, list[tuple[ObjectId, str]]] = {}

    def run(self, prune: bool, grace: float) -> None:
        try:
            files = self.t.listing("")
        except MlvcError as e:
            self.problems.append(f"remote {self.name}: cannot list it ({e})")
            return
        self.files = files
        self._marker()
        for path in sorted(p for p in files if fmt.is_idx(p)):
            self._index(path)
            self.damaged_indexes += self.unreadable_index
        for pack in sorted(self.entries):
            self._pack(pack)
        runs: dict[bytes, str] = {}
        for path in sorted(p for p in files if fmt.is_runs(p)):
            for rid in self._runs(path):
                runs.setdefault(rid, path)
        self.report.runs = len(runs)
        roots = [(ObjectId(r), f"run {ObjectId(r).hex} listed in {p}") for r, p in runs.items()]
        roots += self._refs()
        self._closure(roots)
        self._orphans(prune, grace)

    # -- the small files ------------------------------------------------------------------

    def _get(self, path: str, limit: int) -> bytes | None:
        size = self.files.get(path, 0)
        if size > limit:
            self.problems.append(f"remote {self.name}: {path} has {size} bytes; not read")
            return None
        try:
            return self.t.get(path)
        except MlvcError as e:
            self.problems.append(f"remote {self.name}: cannot read {path} ({e})")
            return None

    def _marker(self) -> None:
        if fmt.MARKER not in self.files:
            if any(fmt.is_pack(p) or fmt.is_idx(p) or p == fmt.REFS for p in self.files):
                self.problems.append(f"remote {self.name}: {fmt.MARKER} is missing")
            return
        data = self._get(fmt.MARKER, 1 << 16)
        try:
            doc = json.loads(data) if data is not None else {"format": fmt.FORMAT}
        except (ValueError, UnicodeDecodeError):
            doc = None
        if not isinstance(doc, dict) or doc.get("format") != fmt.FORMAT:
            self.problems.append(
                f'remote {self.name}: {fmt.MARKER} is not {{"format": {fmt.FORMAT}}}'
            )

    def _index(self, path: str) -> None:
        self.unreadable_index = True  # until this one is read whole (no prune otherwise)
        data = self._get(path, MAX_IDX_BYTES)
        if data is None:
            return
        if len(data) < 40 or blake3.blake3(data[:-32]).digest() != data[-32:]:
            self.problems.append(
                f"remote {self.name}: {path} is damaged (its checksum does not match)"
            )
            return
        local = self.folder / path.replace("/", "_")
        local.write_bytes(data)
        try:
            idx = PackIndex(local)
        except PackError as e:
            self.problems.append(f"remote {self.name}: {path} is damaged ({e})")
            return
        self.unreadable_index = False
        self.report.indexes += 1
        idx.usable = [True] * len(idx.packs)
        self.indexes.append(idx)
        by_pack: dict[str, list] = {p: [] for p in idx.packs}
        for oid, p, off, n in idx.entries():
            by_pack[p].append((off, oid, n))
        for number, (pack, size) in enumerate(zip(idx.packs, idx.sizes, strict=True)):
            where = fmt.PACKS + pack
            entries = by_pack[pack]
            if not fmt.is_pack_name(pack):
                self.problems.append(f"remote {self.name}: {path} names a pack {pack[:80]!r} "
                                     "that is not packs/pack-<h>.pack")  # fmt: skip
                idx.usable[number] = False
                continue
            have = self.files.get(where)
            if have is None:
                self.problems.append(f"remote {self.name}: pack {where} named by {path} is "
                                     f"missing ({len(entries)} objects lost)")  # fmt: skip
                self.bad.update(oid for _o, oid, _n in entries)
                continue
            if have < size:
                lost = sum(1 for off, _i, n in entries if off + n > have)
                self.problems.append(
                    f"remote {self.name}: pack {where} is truncated: {have} bytes, {path} "
                    f"indexes {size} ({lost} objects lost)"
                )
            self.entries.setdefault(where, []).extend(entries)
            self.indexed_size[where] = max(size, self.indexed_size.get(where, 0))

    def _runs(self, path: str) -> list[bytes]:
        data = self._get(path, fmt.MAX_RUNS_BYTES)
        if data is None:
            return []
        try:
            ids = fmt.decode_runs(self.name, path, data)
        except RemoteError as e:
            self.problems.append(str(e))
            return []
        if fmt.content_name(data) != path[len(fmt.PACKS) + len("runs-") : -len(".runs")]:
            self.problems.append(f"remote {self.name}: {path} does not match its name (damaged)")
        return ids

    def _refs(self) -> list[tuple[ObjectId, str]]:
        try:
            data, _token = self.t.read_versioned(fmt.REFS)
            refs = fmt.decode_refs(self.name, data)
        except MlvcError as e:
            self.problems.append(str(e))
            return []
        self.report.refs = len(refs)
        roots = []
        for key, value in sorted(refs.items()):
            if value.startswith(fmt.SYMBOLIC):
                if value[len(fmt.SYMBOLIC) :] not in refs:
                    self.problems.append(f"remote {self.name}: refs.json alias {key} points at "
                                         f"{value[len(fmt.SYMBOLIC):]}, which refs.json lacks")  # fmt: skip
                continue
            roots.append((ObjectId.parse(value), f"ref {key} in refs.json ({value})"))
        return roots

    # -- packs ----------------------------------------------------------------------------

    def _pack(self, pack: str) -> None:
        """Read one pack front to back by bounded ranged reads; check every indexed record."""
        entries = sorted(self.entries[pack])
        have = self.files.get(pack, 0)
        end = min(have, self.indexed_size[pack])
        self.report.packs += 1
        stream = _Stream(self.t, pack, end)
        damaged = False
        try:
            magic = stream.take(min(len(PACK_MAGIC), end))
            if magic != PACK_MAGIC:
                self.problems.append(f"remote {self.name}: pack {pack} does not start with "
                                     "mlvc's pack magic")  # fmt: skip
                damaged = True
            for i, (off, oid, n) in enumerate(entries):
                if off + n > end:
                    damaged = True
                    if have < self.indexed_size[pack]:  # said above: truncated
                        self.bad.update(o for _f, o, _n in entries[i:])
                        break
                    self._damaged(oid, pack, off, "its index places it past the pack's end")
                    continue
                if i and entries[i - 1][1] == oid and entries[i - 1][0] == off:
                    continue  # the same entry in two indexes
                if off - HEAD.size < stream.pos:
                    self._damaged(oid, pack, off, "its entry overlaps the previous record")
                    damaged = True
                    continue
                stream.skip(off - HEAD.size - stream.pos)
                if stream.take(HEAD.size) != HEAD.pack(oid, n):
                    self._damaged(oid, pack, off, "its pack entry is not what the index says")
                    stream.skip(n)
                    damaged = True
                    continue
                damaged |= not self._record(stream, ObjectId(oid), n, pack, off)
            stream.skip(end - stream.pos)
        except MlvcError as e:
            self.problems.append(f"remote {self.name}: cannot read pack {pack} ({e})")
            self.bad.update(o for _f, o, _n in entries)
            damaged = True
        self.report.bytes_checked += stream.pos
        if self.named and not damaged and have == end:
            want = pack[len(fmt.PACKS) + len("pack-") : -len(".pack")]
            if stream.hash.hexdigest()[:32] != want:
                self.problems.append(f"remote {self.name}: pack {pack} does not match its name "
                                     "(damaged outside its indexed records)")  # fmt: skip

    def _record(self, stream: _Stream, oid: ObjectId, n: int, pack: str, off: int) -> bool:
        """Read and check one record; False (and a problem line) when it is damaged."""
        self.report.objects += 1
        if n < 1:
            self._damaged(oid, pack, off, "empty record")
            return False
        tag = stream.take(1)
        if tag == RAW and n - 1 > WINDOW:  # large: hashed in pieces; whole only if structured
            first = stream.take(1) if n > 1 else b""
            if first == b"\x93" and n <= MAX_RECORD:
                content = first + stream.take(n - 2)
            else:
                h = blake3.blake3(first)
                stream.skip(n - 2, h)
                if h.digest() != oid:
                    self._damaged(oid, pack, off, "content does not match its id")
                    return False
                return True
        elif n > MAX_RECORD:
            stream.skip(n - 1)
            self._damaged(oid, pack, off, f"a {tag!r} record of {n} bytes, larger than mlvc writes")
            return False
        else:
            payload = stream.take(n - 1)
            if tag == CHUNKED:
                try:
                    chunks = _parse_chunk_list(payload, oid, pack)
                except MlvcError:
                    self._damaged(oid, pack, off, "unreadable chunk list")
                    return False
                self.links[bytes(oid)] = [(c, BLOB) for c, _n in chunks]
                return True
            if tag == RAW:
                content = payload
            elif tag == ZSTD:
                try:
                    content = compress.decompress(payload, ZSTD_MAX)
                except ValueError as e:
                    self._damaged(oid, pack, off, f"does not decompress: {e}")
                    return False
            else:
                self._damaged(oid, pack, off, f"unknown record tag {tag!r}")
                return False
        if blake3.blake3(content).digest() != oid:
            self._damaged(oid, pack, off, "content does not match its id")
            return False
        if content[:1] == b"\x93":  # a structured object: remember what it references
            try:
                found = links(oid, tag, ANY, lambda: content, pack)
            except MlvcError:
                found = []
            required = _run_fields(content)
            found = [(c, required.get(bytes(c), k)) for c, k in found]
            if found:
                self.links[bytes(oid)] = found
        return True

    def _damaged(self, oid: bytes, pack: str, off: int, why: str) -> None:
        self.bad.add(bytes(oid))
        self.problems.append(
            f"remote {self.name}: object {bytes(oid).hex()} in {pack}@{off} is damaged ({why})"
        )

    # -- runs and refs, followed ------------------------------------------------------------

    def _present(self, oid: bytes) -> bool:
        return any(idx.find(oid) is not None for idx in self.indexes)

    def _closure(self, roots: list[tuple[ObjectId, str]]) -> None:
        seen: set[bytes] = set()
        stack: list[tuple[ObjectId, str, bytes | None, str]] = [
            (oid, ANY, None, origin) for oid, origin in roots
        ]
        while stack:
            oid, kind, parent, origin = stack.pop()
            if parent is None:  # a root: each is said missing in its own words
                if oid in self.bad:
                    continue
                if not self._present(oid):
                    self.problems.append(f"remote {self.name}: {origin} is not on the remote")
                    continue
            if oid in seen:
                continue
            seen.add(oid)
            if oid in self.bad:
                continue
            if parent is not None and not self._present(oid):
                if kind != ANY:  # ANY: a 64-hex string in a body, not necessarily an object
                    self.problems.append(
                        f"remote {self.name}: {_KIND[kind]} {oid.hex} that "
                        f"{ObjectId(parent).hex} references is missing ({origin})"
                    )
                continue
            for child, sub in self.links.get(bytes(oid), ()):
                stack.append((child, sub, bytes(oid), origin))

    # -- orphans ----------------------------------------------------------------------------

    def _orphans(self, prune: bool, grace: float) -> None:
        named = set(self.entries) | {fmt.PACKS + p for idx in self.indexes for p in idx.packs}
        for path in sorted(p for p in self.files if fmt.is_pack(p)):
            h = path[len(fmt.PACKS) + len("pack-") : -len(".pack")]
            if path in named or fmt.idx_path(h) in self.files:
                continue  # indexed (a damaged index of its own is reported above)
            modified = getattr(self.t, "modified", None)
            mtime = modified(path) if modified is not None else None
            age = None if mtime is None else max(0.0, time.time() - mtime)
            orphan = {"pack": path, "bytes": self.files[path], "age_s": age, "pruned": False}
            if prune and self.damaged_indexes:
                orphan["kept"] = "an index file is damaged: what it covers is unknown"
            elif prune and age is not None and age >= grace:
                try:  # an index sent since the listing: a push resumed it, keep the pack
                    if fmt.idx_path(h) not in self.t.listing(fmt.PACKS):
                        self.t.delete(path)
                        orphan["pruned"] = True
                except MlvcError as e:
                    self.problems.append(f"remote {self.name}: cannot delete {path} ({e})")
            self.report.orphans.append(orphan)


def _run_fields(content) -> dict[bytes, str]:
    """{id: kind} of the fields a run record must reach (its trees, env, metric series);
    empty for any other object."""
    try:
        kind, _version, body = unpack(bytes(content))
    except (DecodeError, ValueError, TypeError):
        return {}
    if kind != "run" or not isinstance(body, dict):
        return {}
    out = {}
    for name, what in _RUN_FIELDS:
        value = body.get(name)
        if isinstance(value, bytes) and len(value) == 32:
            out[value] = what
    return out


class _Stream:
    """A pack read front to back in windows of at most ``WINDOW`` bytes, every byte hashed."""

    def __init__(self, transport, path: str, end: int):
        self.t, self.path, self.end = transport, path, end
        self.pos = 0  # bytes consumed
        self.buf = b""
        self.at = 0  # consumed bytes of buf
        self.hash = blake3.blake3()

    def _next(self) -> memoryview:
        if self.at >= len(self.buf):
            n = min(WINDOW, self.end - self.pos)
            if n <= 0:
                raise RemoteError(f"{self.path} ends at {self.end} bytes, before its records")
            self.buf, self.at = self.t.get_range(self.path, self.pos, n), 0
        return memoryview(self.buf)[self.at :]

    def _consume(self, n: int, keep: list | None, also=None) -> None:
        while n > 0:
            piece = self._next()[:n]
            self.hash.update(piece)
            if also is not None:
                also.update(piece)
            if keep is not None:
                keep.append(bytes(piece))
            self.at += len(piece)
            self.pos += len(piece)
            n -= len(piece)

    def take(self, n: int) -> bytes:
        out: list[bytes] = []
        self._consume(n, out)
        return b"".join(out)

    def skip(self, n: int, also=None) -> None:
        """Consume (and hash) ``n`` bytes without keeping them."""
        self._consume(n, None, also)
