"""``push``: send a remote the objects it lacks as new packs, then its runs, then refs.

Write order (what makes a kill -9 harmless): every pack, each followed by its index; then
the runs file naming the runs the push added; then refs.json by compare-and-swap. Readers
trust a pack only through an index and a run only through a runs file, so an interrupted
push leaves nothing that names a missing object. Packs hold records copied raw from the
local store in sorted id order and are named by the hash of their bytes, so pushing the
same set again builds the same pack: one already on the remote with the right size is not
sent again, and a push resumes where it was killed.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import blake3

from ..core import progress
from ..core.faults import crash_point
from ..core.ids import ObjectId
from ..errors import MlvcError, RemoteRejected, StoreNeedsRepair, UsageError
from ..store.pack.index import write_index
from ..store.pack.store import HEAD, PACK_MAGIC
from ..store.reach import reachable
from ..store.typed import read_run
from . import format as fmt
from .consolidate import consolidate
from .refsync import local_refs, target
from .state import (
    RemoteState,
    Tracking,
    cache_file,
    load_base,
    load_tracking,
    save_base,
    save_tracking,
)

CAS_TRIES = 5


@dataclass
class PushReport:
    """What a push sent (``mlvc push --json``)."""

    remote: str
    url: str
    objects: int = 0
    packs: int = 0
    packs_resumed: int = 0  # already on the remote from an interrupted push
    runs: int = 0
    refs: dict[str, str] = field(default_factory=dict)  # refs set on the remote
    merged: int = 0  # index and runs files replaced by merged ones (a shorter listing)
    bytes_sent: int = 0
    bytes_received: int = 0
    requests: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def push(
    store,
    refs,
    cache: Path,
    tmp: Path,
    transport,
    name: str,
    runs: Iterable[ObjectId] | None = None,
    all_runs: bool = False,
    force: bool = False,
    before_send=None,
) -> PushReport:
    """Push ``runs`` (default: HEAD's run and every run or model a ref names; ``all_runs``:
    every recorded run) and the refs whose targets the remote then holds.

    ``before_send(runs)``, if given, sees the runs about to be sent before anything is
    written to the remote and may raise to stop the push (the seam for pre-push hooks)."""
    report = PushReport(name, transport.url)
    store.flush()
    state = RemoteState.load(transport, name, cache)
    mine = local_refs(refs)
    roots = _roots(refs, mine, runs, all_runs)
    local_runs = set(refs.run_ids())
    new_runs = _new_runs(store, roots & local_runs, state.runs)
    damaged: set = set()
    todo = reachable(store, new_runs | (roots - local_runs), damaged, stop=state.has)
    if damaged:
        raise StoreNeedsRepair(
            f"object {min(damaged).hex()} is damaged here, so push cannot tell what it "
            "references; run `mlvc fsck`"
        )
    new_runs |= {ObjectId(o) for o in todo if o in local_runs and o not in state.runs}
    if before_send is not None:
        before_send(sorted(new_runs))
    sent = _send_packs(store, transport, state, sorted(todo), tmp, report)
    if new_runs:
        data = fmt.encode_runs(new_runs)
        path = fmt.runs_path(fmt.content_name(data))
        if path not in state.files:
            transport.put(path, data)
        cache_file(state.cache / path, data)
        crash_point("push-runs-sent")
        report.runs = len(new_runs)
    if fmt.MARKER not in state.files:
        transport.put_if(fmt.MARKER, b'{"format": 1}\n', None)
    on_remote = lambda oid: oid in sent or state.has(oid)  # noqa: E731
    wanted = {k: v for k, v in mine.items() if runs is None or _pushable(v, on_remote)}
    report.refs = _update_refs(transport, name, cache, wanted, on_remote, force)
    report.merged = consolidate(transport, state, tmp)
    report.requests, report.bytes_sent = transport.requests, transport.bytes_out
    report.bytes_received = transport.bytes_in
    return report


def _roots(refs, mine: dict, runs, all_runs: bool) -> set[ObjectId]:
    if all_runs:
        out = set(refs.run_ids())
    elif runs is not None:
        out = {ObjectId(r) for r in runs}
    else:
        out = set()
        head = refs.read_or_none("HEAD")
        if head is not None:
            out.add(head)
    if runs is None:
        out |= {t for v in mine.values() if (t := target(v)) is not None}
    return out


def _new_runs(store, start: set[ObjectId], known: set[ObjectId]) -> set[ObjectId]:
    """Runs (and their ancestors) the remote's runs files do not list yet."""
    out: set[ObjectId] = set()
    stack = [r for r in start if r not in known]
    while stack:
        rid = stack.pop()
        if rid in out or rid in known:
            continue
        out.add(rid)
        try:
            stack.extend(read_run(store, rid).parents)
        except MlvcError:
            continue  # fsck reports it; its objects are pushed as far as they exist
    return out


def _pushable(value: str, on_remote) -> bool:
    t = target(value)
    return t is None or on_remote(t)


# -- packs --------------------------------------------------------------------------------


def _send_packs(store, transport, state: RemoteState, ids: list[bytes], tmp: Path,
                report: PushReport) -> set[bytes]:  # fmt: skip
    """Stream the sorted ids' records into packs of at most PACK_CAP bytes, each uploaded
    (unless already there) and then its index. Returns the ids sent."""
    if not ids:
        return set()
    tmp.mkdir(parents=True, exist_ok=True)
    total = sum(store.stored_size(ObjectId(o)) for o in ids)
    with progress.bar(f"push {state.name}", total_bytes=total, total_files=len(ids)):
        pack = _Pack(tmp)
        try:
            for oid in ids:
                rec = store._record(ObjectId(oid))
                if pack.entries and pack.size + HEAD.size + len(rec) > fmt.PACK_CAP:
                    pack.send(transport, state, report)
                    pack = _Pack(tmp)
                pack.add(oid, rec)
            pack.send(transport, state, report)
        finally:
            pack.discard()
    report.objects = len(ids)
    return set(ids)


class _Pack:
    """One pack being built in a temp file, hashed as it is written."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.path = tmp / f"push-{secrets.token_hex(8)}.pack"
        self.file = open(self.path, "wb")  # noqa: SIM115 - closed by send or discard
        self.hash = blake3.blake3()
        self.entries: list[tuple[bytes, int, int]] = []
        self.size = 0
        self._write(PACK_MAGIC)

    def _write(self, data: bytes) -> None:
        self.file.write(data)
        self.hash.update(data)
        self.size += len(data)

    def add(self, oid: bytes, rec: bytes) -> None:
        self._write(HEAD.pack(oid, len(rec)))
        self.entries.append((oid, self.size, len(rec)))
        self._write(rec)
        progress.advance(len(rec) + HEAD.size, 1)

    def send(self, transport, state: RemoteState, report: PushReport) -> None:
        self.file.close()
        name = self.hash.hexdigest()[:32]
        remote_pack = fmt.pack_path(name)
        if state.files.get(remote_pack) == self.size:
            report.packs_resumed += 1  # sent whole by a push that was interrupted later
        else:
            transport.put(remote_pack, self.path)
            crash_point("push-pack-sent")
        pack_file = remote_pack[len(fmt.PACKS) :]
        idx = write_index(
            self.tmp,
            f"push-{name}.idx",
            [(pack_file, self.size)],
            ((oid, pack_file, off, n) for oid, off, n in self.entries),
            durable=False,
        )
        try:
            if fmt.idx_path(name) not in state.files:
                transport.put(fmt.idx_path(name), idx)
            crash_point("push-idx-sent")
            os.replace(idx, state.cache / fmt.idx_path(name))  # so the next push lists only
        finally:
            idx.unlink(missing_ok=True)
        report.packs += 1
        self.discard()

    def discard(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)


# -- refs ---------------------------------------------------------------------------------


def _update_refs(transport, name: str, cache: Path, mine: dict, on_remote,
                 force: bool) -> dict[str, str]:  # fmt: skip
    """Set on the remote every ref changed here since local and remote last agreed, by
    compare-and-swap on refs.json; a ref the remote moved meanwhile is a conflict."""
    base = load_base(cache)
    seen = load_tracking(cache)
    changes = {k: v for k, v in mine.items() if v != base.get(k)}
    if not changes:
        return {}
    current = seen if seen.known else _read(transport, name)
    for _ in range(CAS_TRIES):
        merged = dict(current.refs)
        conflicts = []
        for key, value in sorted(changes.items()):
            theirs = current.refs.get(key)
            if theirs == value:
                continue
            if theirs is not None and theirs != seen.refs.get(key) and not force:
                was = seen.refs.get(key)
                conflicts.append(
                    f"ref {key} moved on {name} since your last fetch "
                    f"({(was or 'absent')[:10]} -> {theirs[:10]}); run `mlvc fetch {name}` "
                    f"first (or `mlvc pull {name}`), or push with --force"
                )
                continue
            merged[key] = value
        if conflicts:
            raise RemoteRejected("; ".join(conflicts))
        if merged == current.refs:
            break
        if transport.put_if(fmt.REFS, fmt.encode_refs(merged), current.token):
            current = Tracking(merged, transport.last_token, True)
            break
        current = _read(transport, name)
    else:
        raise RemoteRejected(
            f"refs.json on {name} kept changing under {CAS_TRIES} tries; push again"
        )
    save_tracking(cache, current)
    base.update({k: v for k, v in mine.items() if current.refs.get(k) == v})
    save_base(cache, base)
    return {k: v for k, v in changes.items() if current.refs.get(k) == v}


def _read(transport, name: str) -> Tracking:
    data, token = transport.read_versioned(fmt.REFS)
    return Tracking(fmt.decode_refs(name, data), token, True)


def check_runs_given(runs, all_runs: bool) -> None:
    if runs and all_runs:
        raise UsageError("give runs or --all, not both")
