"""Space accounting: logical size, stored size and dedup ratio, per run and for the store.

``logical``  the bytes a run's files add up to (every path counted, as a checkout writes them)
``stored``   the bytes on disk of the distinct objects the run reaches (shared ones included)
``new``      the part of ``stored`` no earlier run (by start time) already had: what it cost
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core.ids import ObjectId
from ..core.objects import DIR
from ..errors import MlvcError
from ..store.odb import CHUNK_THRESHOLD
from ..store.typed import read_run, read_tree


def _objects(store, run_id: ObjectId, memo: dict) -> tuple[set[bytes], int, int]:
    """(distinct object ids, logical bytes, file count) of one run."""
    run = read_run(store, run_id)
    ids: set[bytes] = {run_id}
    logical = files = 0
    for extra in (run.env, run.series):
        if extra is not None:
            ids.add(extra)
    for tree in run.sections.values():
        if tree is None:
            continue
        t_ids, t_logical, t_files = _tree(store, tree, memo)
        ids |= t_ids
        logical += t_logical
        files += t_files
    return ids, logical, files


def _tree(store, tree_id: ObjectId, memo: dict) -> tuple[set[bytes], int, int]:
    """(ids reached, logical bytes, files) of a tree; bottom-up without recursion."""
    stack: list = [(tree_id, None)]  # (tree id, its entries once read)
    while stack:
        tid, entries = stack.pop()
        if tid in memo:
            continue
        if entries is None:
            entries = read_tree(store, tid).entries
            subs = [e.id for e in entries if e.kind == DIR and e.id not in memo]
            if subs:
                stack.append((tid, entries))
                stack.extend((s, None) for s in subs)
                continue
        ids: set[bytes] = {tid}
        logical = files = 0
        for e in entries:
            if e.kind == DIR:
                sub = memo[e.id]
                ids |= sub[0]
                logical += sub[1]
                files += sub[2]
                continue
            files += 1
            logical += e.size
            ids.add(e.id)
            if e.size >= CHUNK_THRESHOLD:
                try:
                    ids.update(store.children(e.id))
                except MlvcError:
                    pass
        memo[tid] = (ids, logical, files)
    return memo[tree_id]


def disk_usage(ctx, specs: list[str] | None = None) -> dict:
    """Per-run rows and store totals (what ``mlvc du`` prints)."""
    store = ctx.store
    run_ids = [ctx.resolve(s) for s in specs] if specs else ctx.refs.run_ids()
    runs = sorted(((read_run(store, r).started, r) for r in run_ids), key=lambda x: (x[0], x[1]))
    memo: dict = {}
    sizes: dict[bytes, int] = {}
    earlier: set[bytes] = set()
    rows = []
    total_logical = 0
    for _started, rid in runs:
        ids, logical, files = _objects(store, rid, memo)
        for o in ids - sizes.keys():
            sizes[o] = store.stored_size(ObjectId(o))
        stored = sum(sizes[o] for o in ids)
        new = sum(sizes[o] for o in ids - earlier)
        earlier |= ids
        total_logical += logical
        run = read_run(store, rid)
        rows.append(
            {
                "id": rid.hex,
                "name": run.name,
                "files": files,
                "logical": logical,
                "stored": stored,
                "new": new,
                "ratio": logical / stored if stored else None,
            }
        )
    on_disk = _disk_bytes(ctx.dir / "objects")
    return {
        "runs": rows,
        "store": {
            "runs": len(rows),
            "logical": total_logical,
            "stored": on_disk,
            "ratio": total_logical / on_disk if on_disk else None,
            "packs": len(list((ctx.dir / "objects" / "pack").glob("*.pack"))),
            "link_cache": _disk_bytes(ctx.dir / "cache" / "files"),
        },
    }


def _disk_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _dirs, names in os.walk(folder):
        for n in names:
            try:
                total += os.lstat(os.path.join(dirpath, n)).st_size
            except OSError:
                continue
    return total
