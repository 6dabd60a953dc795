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

import fcntl
import json
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .errors import MissingObject, MlvcError
from .fsck import clean_tmp
from .ids import ObjectId
from .objects import DIR, DecodeError, unpack
from .odb import CHUNK_THRESHOLD, CHUNKED, LocalStore
from .pack import HEAD

LOCK_WAIT = 600.0  # seconds gc waits for commits in progress to finish


class GcBusy(MlvcError):
    exit_code = 8


class StoreNeedsRepair(MlvcError):
    """gc found pack indexes it cannot trust: it deletes nothing until fsck has run."""

    exit_code = 5


# (pid, lock path) -> [depth of shared holds in this process, the descriptor holding flock]
_held: dict[tuple[int, str], list] = {}
_held_lock = threading.Lock()


def lock_held(mlvc_dir: Path) -> bool:
    """Whether this process holds ``gc.lock`` shared (for the debug check of writes)."""
    return lock_depth(mlvc_dir) > 0


def lock_depth(mlvc_dir: Path) -> int:
    entry = _held.get((os.getpid(), str(Path(mlvc_dir) / "gc.lock")))
    return entry[0] if entry else 0


@contextmanager
def gc_lock(mlvc_dir: Path, shared: bool = True, wait: float = LOCK_WAIT) -> Iterator[None]:
    """Hold ``gc.lock``: shared for writers (commits), exclusive for gc. Shared holds are
    counted per process, so they nest and threads share one: the flock is released only
    when the last holder in the process leaves."""
    path = str(Path(mlvc_dir) / "gc.lock")
    if shared:
        key = (os.getpid(), path)
        with _held_lock:  # a thread waiting here waits for the same flock anyway
            entry = _held.get(key)
            if entry is None:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH)  # gc is rare and bounded: writers wait
                except BaseException:
                    os.close(fd)
                    raise
                entry = _held[key] = [0, fd]
            entry[0] += 1
        try:
            yield
        finally:
            with _held_lock:
                entry[0] -= 1
                if entry[0] == 0:
                    del _held[key]
                    os.close(entry[1])
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise GcBusy(
                        "commits kept the repository busy; run `mlvc gc` again later"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


@contextmanager
def writing(mlvc_dir: Path, store) -> Iterator[None]:
    """Write objects that something will name before this block ends, safe from gc: the
    shared lock is held throughout, and the pack index is published before it is let go
    (else another process's gc could not see them and would find their pack unindexed)."""
    with gc_lock(mlvc_dir):
        try:
            yield
        finally:
            flush = getattr(store, "flush", None)
            if flush is not None and lock_depth(mlvc_dir) == 1:
                flush()


@contextmanager
def pin(mlvc_dir: Path, ids) -> Iterator[None]:
    """Name objects as gc roots for as long as the block runs (``live/.pin-*``), for a
    writer that will name them later, outside the lock (``mlvc run -j``'s shared inputs).
    Write it inside ``writing``; a pin whose process is gone is removed by gc."""
    folder = Path(mlvc_dir) / "live" / f".pin-{os.getpid()}-{secrets.token_hex(4)}"
    folder.mkdir(parents=True)
    meta = {
        "pid": os.getpid(),
        "proc_start": _proc_start(os.getpid()),
        "ids": [i.hex for i in ids if i is not None],
    }
    tmp = folder / ".meta.json.tmp"
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, folder / "meta.json")
    try:
        yield
    finally:
        shutil.rmtree(folder, ignore_errors=True)


GRACE_S = 3600.0  # objects and packs younger than this are never removed
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
    dry_run: bool = False
    notes: list[str] = field(default_factory=list)


def roots(mlvc_dir: Path) -> set[ObjectId]:
    """Every id named by a ref, a reflog entry, a journal entry or a live run's meta.json."""
    d = Path(mlvc_dir)
    out: set[ObjectId] = set()
    for base in (d / "refs", d / "HEAD"):
        for f in [base] if base.is_file() else _files(base):
            out.update(_hex_ids(_read(f).split()[:1]))
    for f in _files(d / "logs"):
        for line in _read(f).splitlines():
            out.update(_hex_ids(line.split("\t")[:2]))
    out.update(_hex_ids(os.listdir(d / "journal") if (d / "journal").is_dir() else []))
    publishing = d / "publishing"  # runs a killed commit was publishing
    out.update(_hex_ids(os.listdir(publishing) if publishing.is_dir() else []))
    for meta in _live_metas(d / "live"):
        try:
            doc = json.loads(_read(meta))
        except ValueError:
            continue  # damaged (fsck says so); writes are atomic, so never half-written
        if meta.parent.name.startswith(".pin-") and not _pin_alive(doc):
            shutil.rmtree(meta.parent, ignore_errors=True)
            continue
        out.update(_hex_ids(_strings(doc)))
        # a staged run stored but not yet published (its recorder died in between)
        out.update(_hex_ids(re.findall(r"[0-9a-f]{64}", _read(meta.parent / "recorded"))))
    return out


def _live_metas(folder: Path) -> list[Path]:
    """meta.json of every staged run, claimed run (``.reaping-*``) and pin (``.pin-*``)."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [folder / n / "meta.json" for n in names if (folder / n / "meta.json").is_file()]


def _proc_start(pid: int) -> str:
    """The kernel's start time of a process (guards against pid reuse), or ''."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _pin_alive(doc) -> bool:
    if not isinstance(doc, dict) or not isinstance(doc.get("pid"), int):
        return False
    try:
        os.kill(doc["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not doc.get("proc_start") or _proc_start(doc["pid"]) == doc["proc_start"]


def reachable(store, start: set[ObjectId], damaged: set | None = None) -> set[bytes]:
    """Every object reachable from ``start``: structured objects are scanned for ids (any
    kind, so kinds added later are followed too), trees by entry kind, chunk lists by chunk.

    Objects read to find others are verified; ``damaged`` receives those that exist but do
    not verify (what they reference cannot be known)."""
    damaged = set() if damaged is None else damaged
    seen: set[bytes] = set()
    stack: list[tuple[ObjectId, str]] = [(o, "?") for o in start]
    while stack:
        oid, what = stack.pop()
        if oid in seen:
            continue
        seen.add(oid)
        if what == "blob":
            continue
        try:
            rec = store._record(oid)
        except MissingObject:
            continue  # a root may be any 64-hex string; fsck reports missing objects
        except MlvcError:
            damaged.add(oid)
            continue
        if rec[:1] == CHUNKED:
            try:
                seen.update(store.children(oid))
            except MlvcError:
                damaged.add(oid)
            continue
        if what == "small":
            continue
        try:
            content = store._verified(oid, rec)
        except MlvcError:
            damaged.add(oid)
            continue
        if content[:1] != b"\x93":  # msgpack [kind, version, body]: structured objects only
            continue
        try:
            kind, _version, body = unpack(bytes(content))
        except (DecodeError, ValueError, TypeError):
            continue
        if kind == "tree":
            for _name, k, cid, size in body:
                sub = "?" if k == DIR else ("big" if size >= CHUNK_THRESHOLD else "small")
                stack.append((ObjectId(cid), sub))
        else:
            stack.extend((c, "?") for c in _ids_in(body))
    return seen


def gc(repo, dry_run: bool = False, grace: float = GRACE_S) -> GcReport:
    """Remove unreachable objects older than ``grace`` seconds; see the module docstring."""
    report = GcReport(dry_run=dry_run)
    store = repo.store
    with gc_lock(repo.dir, shared=False):
        store.sync()
        if hasattr(store, "indexes"):
            _index_torn_packs(store, report)  # before marking: their objects count
        damaged: set = set()
        live = reachable(store, roots(repo.dir), damaged)
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
        _sweep_cache(repo.dir, live, report)
        if not dry_run:
            clean_tmp(repo.dir / "tmp")
            if report.removed or report.packs_removed:
                repo.stat_cache.clear()  # it may name removed objects
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


def _index_torn_packs(store, report: GcReport) -> None:
    """Refuse to sweep a store whose indexes cannot be trusted; index packs that have none.

    gc holds the lock exclusive, so a pack without an index is not being written: its writer
    died. Its records are indexed like any others (and swept by reachability like any
    others), never deleted wholesale for lacking an index.
    """
    from .packscan import index_scan, scan_pack, survey

    state = survey(store.pack_dir)
    bad = [f"{n} ({why})" for n, why in {**state.damaged, **state.unreadable}.items()]
    bad += [f"{p} (shorter than {n} says)" for p, n in state.short.items()]
    if bad:
        raise StoreNeedsRepair(
            f"gc cannot trust the pack index of {bad[0]}"
            + (f" and {len(bad) - 1} more" if len(bad) > 1 else "")
            + "; run `mlvc fsck` to rebuild indexes from the packs, then gc again"
        )
    for name in state.uncovered:
        scan = scan_pack(store.pack_dir / name)
        if report.dry_run:
            report.notes.append(f"would index {len(scan.entries)} objects of pack {name}")
            continue
        made = index_scan(store.pack_dir, scan)
        if made is not None:
            report.notes.append(f"indexed {len(scan.entries)} objects of pack {name} (no index)")
    if state.uncovered and not report.dry_run:
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


def _ids_in(value) -> Iterator[ObjectId]:
    if isinstance(value, bytes) and len(value) == 32:
        yield ObjectId(value)
    elif isinstance(value, str):
        if len(value) == 64 and _HEX64.match(value):
            yield ObjectId.parse(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _ids_in(k)
            yield from _ids_in(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _ids_in(v)


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
