"""Small packs merged in the background, like git's ``gc --auto``.

Every commit leaves a pack of its own, so a repository of many small commits holds thousands
of small files: a read of an object in one costs a ``stat`` and an ``open`` more than in a
big pack, every look after a commit lists them all, and gc and fsck open them one by one.
A commit whose store holds 50 small packs or more (under ``AUTO_SMALL`` bytes by the sizes
their indexes record: counting them asks the file system nothing) starts a merger with the
commit's other background work (``maybe_start``; ``MLVC_GC_AUTO`` sets the number, 0 turns
it off: Settings.gc_auto; git's ``gc.autoPackLimit`` is 50 too). ``mlvc gc`` still merges, by its own measure, what is older than
its grace period.

A merge decides nothing about reachability: every record of the packs it takes moves,
checked against its id on the way (a chunk list for its form: its content lies in chunks
elsewhere). A pack with a record that does not check stays where it is, for ``mlvc fsck``
to name; nothing damaged is copied. Such packs are named in ``merge-left`` (beside the
packs), and a commit does not count them towards starting the next merger (``mergeable``),
which would only leave them again. The order is gc's:

1. the records are appended to new packs of the merger's own, which are fsynced and
   indexed (durably): killed here, the store holds copies, never less;
2. holding ``consolidate.lock`` (PackedStore.rewriting_indexes), one index over what the
   old indexes named but the merged packs is written, the old indexes are removed (and
   that made durable), then the merged packs.

Who runs beside it: commits (the merger holds ``gc.lock`` shared as a writer does, so gc,
which holds it exclusive, never does); readers (a read whose pack was removed looks again:
PackedStore); a writer's consolidation (it skips while the indexes are rewritten); fsck,
which holds ``merge.lock`` while it looks at packs (``no_merge``), so it never sees a merge
halfway; another merger (``merge.lock``, held for the merger's life). The new packs take
the newest mtime of the packs merged: gc's grace period (it keeps packs modified since its
cutoff) ends for no object earlier than it would have.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ...core.faults import crash_point

AUTO_SMALL = 4 << 20  # a pack smaller than this is small
MERGE_MAX = 256 << 20  # bytes one merge copies at most (the smallest packs first)
LOCK = "merge.lock"
LEFT = "merge-left"  # the small packs the last merge left alone, a name a line


@dataclass
class MergeReport:
    """What a merge did."""

    merged: int = 0  # packs merged away
    objects: int = 0  # records copied
    bytes: int = 0  # bytes of the packs merged away
    made: list[str] = field(default_factory=list)  # the new packs
    left: list[str] = field(default_factory=list)  # packs left alone, and why
    kept: list[str] = field(default_factory=list)  # the names of those (still there)


def small_packs(store) -> int:
    """How many packs the store's loaded indexes name that are under ``AUTO_SMALL``."""
    return sum(1 for size in store.pack_sizes().values() if size < AUTO_SMALL)


def mergeable(store) -> int:
    """How many small packs a merge would take, but those the last one left alone (a record
    that did not check: until ``mlvc fsck`` repairs them, a merger started for them would
    leave them again, at every commit)."""
    small = {name for name, size in store.pack_sizes().items() if size < AUTO_SMALL}
    try:
        kept = set((store.pack_dir / LEFT).read_text().split())
    except (OSError, UnicodeDecodeError):
        kept = set()
    return len(small - kept)


def maybe_start(store, root: Path, at_least: int) -> bool:
    """Start a merger (detached, or with the other starts of a ``gathered()`` block) when
    ``store`` holds ``at_least`` small packs a merge would take (``mergeable``) and no merger
    or fsck holds ``merge.lock``. ``at_least`` 0 never starts one. True if one was
    started."""
    if at_least <= 0 or not hasattr(store, "pack_sizes") or small_packs(store) < at_least:
        return False  # (counted first: the commit's path asks the file system nothing)
    if mergeable(store) < at_least:
        return False
    fd = take_lock(store.pack_dir, wait=False)
    if fd is None:
        return False
    try:
        from ...core.spawn import spawn_detached

        return spawn_detached(__name__, [str(root), str(fd)], pass_fds=(fd,))
    finally:
        os.close(fd)  # the merger's copy keeps it held until it exits


def take_lock(pack_dir: Path, wait: bool) -> int | None:
    """``merge.lock`` taken exclusive (a descriptor to close to let go), or None when it is
    held and ``wait`` is False."""
    pack_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(pack_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def no_merge(pack_dir: Path) -> Iterator[None]:
    """No merge runs in this block (one running is waited for; merges are bounded by
    ``MERGE_MAX``)."""
    fd = take_lock(pack_dir, wait=True)
    try:
        yield
    finally:
        os.close(fd)


def merge_small(store, mlvc_dir: Path, at_least: int = 2) -> MergeReport:
    """Merge the store's small packs (the smallest first, ``MERGE_MAX`` bytes at most) into
    new ones when there are ``at_least`` of them; see the module docstring. The caller holds
    ``merge.lock``."""
    from ..locks import gc_lock

    report = MergeReport()
    with gc_lock(mlvc_dir):  # shared, as a writer: gc waits for the merge
        indexes = store.indexes()
        sizes: dict[str, int] = {}
        for idx in indexes:
            for i, (name, size) in enumerate(zip(idx.packs, idx.sizes, strict=True)):
                if size < AUTO_SMALL and name not in sizes and idx.usable[i]:
                    sizes[name] = size
        picked, total = [], 0
        for name in sorted(sizes, key=lambda n: (sizes[n], n)):
            if picked and total + sizes[name] > MERGE_MAX:
                break
            picked.append(name)
            total += sizes[name]
        if len(picked) < at_least:
            return report
        entries: dict[str, dict[bytes, tuple[int, int]]] = {name: {} for name in picked}
        for idx in indexes:
            if not entries.keys().isdisjoint(idx.packs):
                for oid, pack, off, n in idx.entries():
                    if pack in entries:
                        entries[pack].setdefault(bytes(oid), (off, n))
        drop, made = _copy(store, picked, entries, report)
        if drop:
            _swap(store, drop)
            report.made = made
        _remember_kept(store, report.kept)
    return report


def _remember_kept(store, kept: list[str]) -> None:
    """Write the packs this merge left alone to ``LEFT`` (``mergeable`` does not count them),
    or remove it when there are none. Only a hint: not synced."""
    from ...core.durable import replace_file

    path = store.pack_dir / LEFT
    try:
        if kept:
            store.tmp.mkdir(parents=True, exist_ok=True)
            replace_file(path, "".join(f"{n}\n" for n in kept).encode(), tmp_dir=store.tmp,
                         sync=False)  # fmt: skip
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass  # the next commit may start a merger that leaves them again: bounded work


def _copy(store, picked: list[str], entries: dict, report: MergeReport):
    """Append every record of each checked pack to new packs, made durable and indexed.
    Returns (the packs copied, the new packs)."""
    from .store import PackWriter

    writer = PackWriter(store.pack_dir)  # the merger's own packs, apart from any commit's
    copied: set[bytes] = set()
    drop, newest = [], 0.0
    for name in picked:
        got = _checked(store, name, entries[name])
        if isinstance(got, str):
            report.left.append(got)
            if (store.pack_dir / name).exists():
                report.kept.append(name)
            continue
        mtime, size, records = got
        for oid, rec in records:
            if oid not in copied:
                copied.add(oid)
                writer.append(oid, rec[:1], memoryview(rec)[1:])
        drop.append(name)
        newest = max(newest, mtime)
        report.merged += 1
        report.bytes += size
    report.objects = len(copied)
    made = [p.name for p in writer.packs]
    if not drop:
        return [], []
    crash_point("merge-copied")  # killed here: packs without an index (fsck indexes them)
    writer.finish(durable=True)  # fsynced packs, then a durable index naming them
    for name in made:
        try:
            os.utime(store.pack_dir / name, (newest, newest))
        except OSError:
            pass  # only gc's grace margin: the pack then counts as younger
    return drop, made


def _checked(store, name: str, entries: dict[bytes, tuple[int, int]]):
    """(mtime, size, [(id, record)]) of a pack whose every indexed record checks (the
    scanner's check, ``scan._verify``), or why it is left alone."""
    from .scan import _verify
    from .store import HEAD

    path = store.pack_dir / name
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return f"pack {path} is gone (merged by another process)"
    except OSError as e:
        return f"pack {path} cannot be read ({e.strerror}); left for `mlvc fsck`"
    try:
        st = os.fstat(fd)
        data = os.pread(fd, st.st_size, 0)
        out = []
        for oid, (off, n) in sorted(entries.items(), key=lambda e: e[1][0]):
            head_ok = HEAD.size <= off and off + n <= len(data)
            if not head_ok or data[off - HEAD.size : off] != HEAD.pack(oid, n):
                return f"pack {path}: entry at {off} is not object {oid.hex()} as indexed"
            why = _verify(fd, oid, off, n)
            if why:
                return f"pack {path}: object {oid.hex()} at {off}: {why}; left for `mlvc fsck`"
            out.append((oid, data[off : off + n]))
    finally:
        os.close(fd)
    return st.st_mtime, len(data), out


def _swap(store, drop: list[str]) -> None:
    """One index without the merged packs in place of the indexes naming them, then the
    merged packs removed."""
    from ...core.durable import fsync_dir

    gone = set(drop)
    with store.rewriting_indexes(wait=True):
        fresh = store.indexes()
        affected = [i for i in fresh if not gone.isdisjoint(i.packs)]
        rest = [i for i in affected if any(p not in gone for p in i.packs)]
        new = store.rewrite_index([(i, None) for i in rest], exclude=gone) if rest else None
        for idx in affected:
            if idx.path != new:
                idx.path.unlink(missing_ok=True)
        fsync_dir(store.pack_dir)  # no index names a merged pack before one is removed
        crash_point("merge-indexed")  # killed here: every record twice, both readable
        for name in drop:
            (store.pack_dir / name).unlink(missing_ok=True)
        store.reload(force=True)


def main(root: str, fd: int | str) -> int:
    """The detached merger: merge, then let ``merge.lock`` (``fd``) go. What went wrong,
    and packs left alone, are appended to ``.mlvc/logs/pack-merge.log``."""
    from ...core.crashlog import append_log
    from ...core.layout import Layout
    from .store import PackedStore

    layout = Layout.of(root)
    try:
        store = PackedStore(layout.objects, layout.tmp)
        report = merge_small(store, layout.dir)
        for why in report.left:
            append_log(layout.merge_log, why)
        return 0
    except Exception:
        append_log(layout.merge_log)
        return 1
    finally:
        os.close(int(fd))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
