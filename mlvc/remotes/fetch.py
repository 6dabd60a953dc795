"""``fetch``: bring the objects of a remote's runs that this store lacks, verified.

The closure of the wanted runs is walked over the remote level by level: each level's
missing objects are located in the remote's index files, read by ranged GETs coalesced per
pack (neighbours are merged only while the bytes read beside what is wanted stay under 3%,
and never across a 64 KiB gap), and every record is checked against its id before it is
written into the local store; what it references makes the next level. A chunk list is
written only after its chunks, once the whole file's hash matches. Nothing received is
trusted before its hash is checked; a damaged record stops the fetch with one line naming
the remote pack, and no run or ref is added for it.

Runs are not made visible here: the caller (mlvc.api) journals them, adds their run refs
and indexes them, in that order, after ``fetch`` synced the store.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import blake3

from ..core import progress
from ..core.ahead import ordered
from ..core.faults import crash_point
from ..core.ids import ObjectId, is_hex_prefix
from ..errors import CorruptObject, MissingOnRemote, MlvcError, RemoteError, UsageError
from ..store.odb import CHUNKED, TAGS, _parse_chunk_list
from ..store.pack.store import HEAD
from ..store.reach import ANY, BLOB, links
from . import format as fmt
from .refsync import target
from .state import RemoteState, Tracking, cache_file, save_tracking

MAX_GAP = 64 << 10  # never read across a gap wider than this
MAX_RANGE = 16 << 20  # one ranged read at most (memory stays bounded)
WASTE = 0.03  # bytes read beside wanted records, at most this share of the wanted bytes


@dataclass
class FetchReport:
    """What a fetch brought (``mlvc fetch --json``)."""

    remote: str
    url: str
    runs: list[str] = field(default_factory=list)  # new runs, hex
    objects: int = 0
    promised: int = 0  # files left on the remote by a lazy fetch (fetched when read)
    object_bytes: int = 0  # bytes of the records fetched (what was lacking)
    pack_bytes: int = 0  # bytes read from packs to get them (ranged reads)
    bytes_received: int = 0
    bytes_sent: int = 0
    requests: int = 0
    refs: dict[str, str] = field(default_factory=dict)  # the remote's refs

    def to_dict(self) -> dict:
        return asdict(self)


def fetch(store, refs, cache: Path, transport, name: str, specs: list[str] | None = None,
          lazy_from: int | None = None) -> tuple[FetchReport, list[ObjectId]]:  # fmt: skip
    """Fetch every run of the remote this repository lacks (or the runs ``specs`` name)
    and the objects of the refs' targets. Returns the report and the new run ids, whose
    objects are stored and synced. ``lazy_from``: files of this size or more stay on the
    remote, promised (read later through ``lazy.Promisor``)."""
    report = FetchReport(name, transport.url)
    state = RemoteState.load(transport, name, cache)
    data, token = transport.read_versioned(fmt.REFS)
    remote_refs = fmt.decode_refs(name, data)
    report.refs = remote_refs
    known = set(refs.run_ids())
    if specs:
        roots = {_resolve(name, s, state, remote_refs) for s in specs}
    else:
        roots = {r for r in state.runs if r not in known}
        roots |= {t for v in remote_refs.values() if (t := target(v)) is not None}
    # A fetch killed half way may have left upper levels (a run, a tree) without what they
    # reference, and fsck or gc can later index what it wrote: until a fetch completes,
    # an object being here does not vouch for its references (the walk reads them).
    unfinished = cache / "fetching"
    recovering = unfinished.exists()
    cache_file(unfinished, b"")
    walk = _Walk(store, state, transport, name, report, lazy_from, trust_local=not recovering)
    state, fetched = walk_listed(walk, roots, cache)
    store.sync()
    unfinished.unlink(missing_ok=True)
    new = sorted(
        r for r in state.runs & (roots | fetched) if r not in known and store._has_record(r)
    )
    save_tracking(cache, Tracking(remote_refs, token, True))
    report.runs = [r.hex for r in new]
    report.requests, report.bytes_received = transport.requests, transport.bytes_in
    report.bytes_sent = transport.bytes_out
    return report, new


def walk_listed(walk: _Walk, roots, cache: Path) -> tuple[RemoteState, set[ObjectId]]:
    """``walk.run(roots)``; if a pack its listing named is gone (merged into another since
    the listing: the remote's gc, or a server's merger of small packs), the remote is
    listed again and walked again, not trusting what the first walk stored to vouch for its
    references (it stopped half way). Returns the listing walked and what was fetched."""
    try:
        return walk.state, walk.run(roots)
    except MissingOnRemote:
        state = RemoteState.load(walk.transport, walk.name, cache)
        again = _Walk(walk.store, state, walk.transport, walk.name, walk.report,
                      walk.lazy_from, trust_local=False)  # fmt: skip
        return state, again.run(roots)


def _resolve(name: str, spec: str, state: RemoteState, remote_refs: dict) -> ObjectId:
    """A run of the remote from a full id, a unique id prefix, a name or a tag."""
    for key in (spec, f"names/{spec}", f"tags/{spec}"):
        value = remote_refs.get(key)
        if value is not None and target(value) is not None:
            return target(value)
    low = spec.lower()
    if is_hex_prefix(low):
        found = [r for r in state.runs if r.hex.startswith(low)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise UsageError(f"run {spec!r} is ambiguous on {name}: {len(found)} runs match")
    raise UsageError(f"remote {name} has no run, name or tag {spec!r}")


class _Walk:
    def __init__(self, store, state: RemoteState, transport, name: str, report: FetchReport,
                 lazy_from: int | None = None, trust_local: bool = True):  # fmt: skip
        self.store, self.state, self.transport = store, state, transport
        self.name, self.report = name, report
        self.chunked: list[tuple[ObjectId, bytes, str]] = []
        self.lazy_from = lazy_from
        self.trust_local = trust_local
        self.sizes: dict[bytes, int] = {}

    def run(self, roots: set[ObjectId]) -> set[ObjectId]:
        """Fetch the closure of ``roots``; returns the ids fetched."""
        seen: set[bytes] = set()
        fetched: set[ObjectId] = set()
        level = [(r, "root") for r in roots]
        with progress.bar(f"fetch {self.name}"):
            while level:
                want: dict[str, list] = defaultdict(list)
                level_here: list = []
                for oid, what in level:
                    if oid in seen:
                        continue
                    seen.add(oid)
                    if self.store._has_record(oid):
                        if not self.trust_local:  # follow its references from the copy here
                            level_here.append((oid, what))
                        continue  # here already, and so is what it references
                    if self.lazy_from is not None and self.sizes.get(oid, -1) >= self.lazy_from:
                        self.report.promised += 1  # large: stays on the remote until read
                        continue
                    loc = self.state.find(oid)
                    if loc is None:
                        if what == ANY:
                            continue  # a 64-hex string in a body, not necessarily an object
                        raise RemoteError(
                            f"remote {self.name} lacks object {oid.hex} ({what}) that its "
                            f"runs reference; the remote is damaged (`mlvc fsck --remote "
                            f"{self.name}`)"
                        )
                    want[loc[0]].append((loc[1], loc[2], oid, what))
                level = [n for oid, what in level_here for n in self._links_here(oid, what)]
                for pack, items in sorted(want.items()):
                    level.extend(self._read_pack(pack, items))
                    fetched.update(i[2] for i in items)
                    if self.report.object_bytes > 64 << 10:  # some of it reached the disk
                        crash_point("fetch-wrote-64k")
            for oid, rec, where in reversed(self.chunked):
                self._finish_chunked(oid, rec, where)
        return fetched

    def _read_pack(self, pack: str, items: list) -> list[tuple[ObjectId, str]]:
        items.sort()
        wanted = sum(n + HEAD.size for _off, n, _o, _w in items)
        budget = WASTE * wanted
        groups: list[list] = [[items[0]]]
        for item in items[1:]:
            last = groups[-1][-1]
            gap = item[0] - HEAD.size - (last[0] + last[1])
            span = item[0] + item[1] - (groups[-1][0][0] - HEAD.size)
            if 0 <= gap <= MAX_GAP and gap <= budget and span <= MAX_RANGE:
                budget -= gap
                groups[-1].append(item)
            else:
                groups.append([item])
        out = []
        for group, start, blob in self._ranges(pack, groups):
            self.report.pack_bytes += len(blob)
            for off, n, oid, what in group:
                head = blob[off - HEAD.size - start : off - start]
                rec = blob[off - start : off - start + n]
                where = f"{pack}@{off}"
                if head != HEAD.pack(oid, n):
                    raise self._damaged(oid, where, "its pack entry is not what the index says")
                out.extend(self._accept(ObjectId(oid), rec, what, where))
                progress.advance(n + HEAD.size, 1)
        return out

    def _ranges(self, pack: str, groups: list[list]):
        """(group, offset, bytes) of each group's ranged read, in order, with up to the
        transport's ``parallel_reads`` requests in flight (a clone is mostly waiting on
        them); at most that many ranges (each ≤ MAX_RANGE) are held at once."""

        def read(group):
            start = group[0][0] - HEAD.size
            end = group[-1][0] + group[-1][1]
            return group, start, self.transport.get_range(pack, start, end - start)

        width = max(1, self.transport.parallel_reads) if len(groups) > 1 else 1
        yield from ordered(read, groups, width, "mlvc-fetch")

    def _links_here(self, oid: ObjectId, what: str) -> list:
        """What a local object references (verified; a damaged one is fsck's to report)."""
        if what in ("chunk", BLOB):
            return []
        try:
            rec = self.store._record(oid, fetch=False)
            return links(oid, rec, ANY if what == "root" else what,
                         lambda: self.store._verified(oid, rec), "", self.sizes)  # fmt: skip
        except MlvcError:
            return []

    def _damaged(self, oid: bytes, where: str, why: str) -> RemoteError:
        return RemoteError(
            f"remote {self.name}: object {bytes(oid).hex()} in {where} is damaged ({why}); "
            "nothing it belongs to was added here"
        )

    def _accept(self, oid: ObjectId, rec: bytes, what: str, where: str) -> list:
        if rec[:1] not in TAGS:
            raise self._damaged(oid, where, f"unknown record tag {rec[:1]!r}")
        if rec[:1] == CHUNKED:
            try:
                chunks = _parse_chunk_list(rec[1:], oid, where)
            except CorruptObject:
                raise self._damaged(oid, where, "unreadable chunk list") from None
            self.chunked.append((oid, rec, where))
            return [(c, "chunk") for c, _n in chunks]
        try:
            content = self.store._content(oid, rec)
        except CorruptObject:
            raise self._damaged(oid, where, "does not decompress") from None
        if blake3.blake3(content).digest() != oid:
            raise self._damaged(oid, where, "content does not match its id")
        try:
            found = links(oid, rec, "?" if what == "root" else what, lambda: content, where,
                          self.sizes)  # fmt: skip
        except MlvcError:
            found = []
        self._write(oid, rec)
        return found

    def _finish_chunked(self, oid: ObjectId, rec: bytes, where: str) -> None:
        """Write a chunk list once its chunks are here and the whole file hashes to its id."""
        h = blake3.blake3()
        for cid, n in _parse_chunk_list(rec[1:], oid, where):
            data = self.store._verified(cid, self.store._record(cid))
            if len(data) != n:
                raise self._damaged(oid, where, f"chunk {cid.hex} has {len(data)} bytes, not {n}")
            h.update(data)
        if h.digest() != oid:
            raise self._damaged(oid, where, "its chunks do not hash to its id")
        self._write(oid, rec)

    def _write(self, oid: ObjectId, rec: bytes) -> None:
        self.store._put_record(oid, rec[:1], memoryview(rec)[1:])
        self.report.objects += 1
        self.report.object_bytes += len(rec) + HEAD.size
