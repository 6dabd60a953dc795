"""Garbage collection: remove objects no ref, reflog entry, journal entry or live run reaches.

Safety against concurrent writers is structural: every path that writes objects holds
``.mlvc/gc.lock`` shared (``writing``) from its first object write until something gc reads
as a root names them (a ref, a journal entry, a live run's ``meta.json``, a pin), and
publishes its pack index before letting go; gc holds the lock exclusive. So whatever the
grace period, gc never sees an object that is written but not yet named. The grace period
(anything younger is kept; a dedup hit freshens a pack) is a second, independent margin.
With ``MLVC_DEBUG_GC_LOCK=1`` an object written outside the lock is an error (tests).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core.ids import ObjectId
from ..core.layout import Layout
from ..errors import StoreNeedsRepair
from ..events import emit
from ..runs.record import publishing_ids
from ..runs.staging import roots as staged_roots
from ..store.locks import gc_lock
from ..store.odb import LocalStore
from ..store.pack import index_torn_packs
from ..store.pack.store import HEAD
from ..store.reach import reachable
from . import GRACE_S
from .fsck import clean_tmp

REPACK_GARBAGE = 0.5  # a pack more than half garbage (by bytes) is rewritten
SMALL_PACK = 32 << 20  # old packs smaller than this are merged into one
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class GcReport:
    """What gc found and did (or would do, with ``dry_run``)."""

    reachable: int = 0
    removed: int = 0  # objects removed
    freed: int = 0  # bytes
    packs_removed: int = 0
    packs_repacked: int = 0
    kept_young: int = 0  # unreachable but younger than the grace period
    cache_files: int = 0  # link-cache files removed
    cache_envs: int = 0  # rebuilt environments removed (their env is in no reachable run)
    dry_run: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Every field by name (what ``mlvc gc --json`` prints)."""
        return asdict(self)


def roots(mlvc_dir: Path) -> set[ObjectId]:
    """Every id named by a ref, a reflog entry, a journal entry or a staged run."""
    d = Path(mlvc_dir)
    out: set[ObjectId] = set()
    for base in (d / "refs", d / "HEAD"):
        for f in [base] if base.is_file() else _files(base):
            out.update(_hex_ids(_read(f).split()[:1]))
    for f in _files(d / "logs"):
        for line in _read(f).splitlines():
            out.update(_hex_ids(line.split("\t")[:2]))
    out.update(_hex_ids(os.listdir(d / "journal") if (d / "journal").is_dir() else []))
    out.update(staged_roots(Layout(d)))  # staged runs, claimed runs and pins
    out.update(publishing_ids(Layout(d).publishing))  # runs a killed commit was publishing
    return out


def gc(ctx, dry_run: bool = False, grace: float = GRACE_S) -> GcReport:
    """Remove unreachable objects older than ``grace`` seconds; see the module docstring."""
    report = GcReport(dry_run=dry_run)
    store = ctx.store
    with gc_lock(ctx.dir, shared=False):
        store.sync()
        if hasattr(store, "indexes"):
            report.notes += index_torn_packs(store, report.dry_run)  # before marking
        damaged: set = set()
        live = reachable(store, roots(ctx.dir), damaged)
        if damaged:
            raise StoreNeedsRepair(
                f"object {min(damaged).hex()} is damaged, so gc cannot tell what it "
                "references; gc deletes nothing until `mlvc fsck` reports no damage"
            )
        report.reachable = len(live)
        cutoff = time.time() - grace
        _sweep_loose(store, live, cutoff, report)
        if hasattr(store, "indexes"):
            _sweep_packs(store, live, cutoff, report)
        _sweep_cache(ctx.dir, live, report)
        _sweep_envs(Layout(ctx.dir).cache_envs, live, report)
        if not dry_run:
            clean_tmp(ctx.dir / "tmp")
            if report.removed or report.packs_removed:
                ctx.stat_cache.clear()  # it may name removed objects
    if not dry_run:
        emit(ctx, "gc.completed", report.to_dict())
    return report


def _sweep_loose(store, live: set[bytes], cutoff: float, report: GcReport) -> None:
    for oid in LocalStore.ids(store):
        if oid in live:
            continue
        path = store._path(oid)
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        if st.st_mtime >= cutoff:
            report.kept_young += 1
            continue
        report.removed += 1
        report.freed += st.st_size
        if not report.dry_run:
            path.unlink(missing_ok=True)


def _sweep_packs(store, live: set[bytes], cutoff: float, report: GcReport) -> None:
    indexes = store.indexes()
    by_pack: dict[str, list[tuple[bytes, int, int]]] = {}
    for idx in indexes:
        for oid, pack, off, n in idx.entries():
            by_pack.setdefault(pack, []).append((oid, off, n))
    drop: set[str] = set()
    stats = {}
    for pack in by_pack:
        try:
            stats[pack] = (store.pack_dir / pack).stat()
        except FileNotFoundError:
            continue
    old = [p for p, st in stats.items() if st.st_mtime < cutoff]
    small = {p for p in old if stats[p].st_size < SMALL_PACK}
    if len(small) < 2:
        small = set()  # one small pack alone gains nothing from a rewrite
    for pack, st in sorted(stats.items()):
        path = store.pack_dir / pack
        entries = by_pack[pack]
        dead = [(o, off, n) for o, off, n in _unique(entries) if o not in live]
        if st.st_mtime >= cutoff:
            report.kept_young += len(dead)
            continue
        if not dead and pack not in small:
            continue
        dead_bytes = sum(n + HEAD.size for _o, _off, n in dead)
        if dead and len(dead) == len(_unique(entries)):
            drop.add(pack)
            report.packs_removed += 1
        elif dead_bytes > REPACK_GARBAGE * st.st_size or pack in small:
            drop.add(pack)
            report.packs_repacked += 1
            if not report.dry_run:
                _copy_live(store, path, _unique(entries), live)
        else:
            continue  # mostly live: its garbage waits until it is mostly garbage
        report.removed += len(dead)
        report.freed += dead_bytes
    torn = store.stale_temps(cutoff)  # index temp files of killed writers: no data
    if report.dry_run or not (drop or torn):
        return
    store.sync()  # repacked objects are durable and indexed before anything is removed
    with store.rewriting_indexes(wait=True):  # a writer's consolidation waits, or skips
        fresh = store.indexes()
        new_index = store.rewrite_index([(i, None) for i in fresh], exclude=drop)
        for idx in fresh:
            if idx.path != new_index:
                idx.path.unlink(missing_ok=True)
        for pack in drop:
            (store.pack_dir / pack).unlink(missing_ok=True)
        for p in torn:
            p.unlink(missing_ok=True)
        store.reload(force=True)


def _unique(entries):
    seen, out = set(), []
    for e in entries:
        if e[0] not in seen:
            seen.add(e[0])
            out.append(e)
    return out


def _copy_live(store, path: Path, entries, live: set[bytes]) -> None:
    with open(path, "rb") as f:
        for oid, off, n in entries:
            if oid in live:
                rec = os.pread(f.fileno(), n, off)
                store.writer.append(oid, rec[:1], memoryview(rec)[1:])


def _sweep_cache(mlvc_dir: Path, live: set[bytes], report: GcReport) -> None:
    for f in _files(Path(mlvc_dir) / "cache" / "files"):
        name = f.parent.name + f.name
        if _HEX64.match(name) and bytes.fromhex(name) not in live:
            report.cache_files += 1
            report.freed += f.stat().st_size
            if not report.dry_run:
                f.unlink(missing_ok=True)


def _sweep_envs(folder: Path, live: set[bytes], report: GcReport) -> None:
    """Remove rebuilt environments (mlvc.exec.envcache) whose env no reachable run names,
    and builds a killed process left (``.build-*``), each under its lock, skipped if busy."""
    import fcntl
    import shutil

    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return
    for name in names:
        leftover = name.startswith(".build-")  # a killed build, or an entry moved aside
        key = name.split("-")[1] if leftover else name.removesuffix(".log")
        if not _HEX64.match(key) or (not leftover and bytes.fromhex(key) in live):
            continue
        fd = os.open(folder / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # being built or used right now
            path = folder / name
            report.cache_envs += int(path.is_dir() and not leftover)
            if not report.dry_run:  # lock files stay: a waiter may hold one open
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        finally:
            os.close(fd)


def _strings(value) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _hex_ids(texts) -> Iterator[ObjectId]:
    for t in texts:
        t = t.strip()
        if _HEX64.match(t):
            yield ObjectId.parse(t)


def _files(folder: Path) -> Iterator[Path]:
    for dirpath, _dirs, names in os.walk(folder):
        for n in names:
            if not n.endswith((".lock", ".tmp")) and not n.startswith("."):
                yield Path(dirpath) / n


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
