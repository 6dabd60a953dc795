"""Keep a remote's listing short: many index and runs files are merged into one of each.

Every push adds a pack, its index and a runs file, so without this a remote pushed to a
thousand times would cost a thousand index lookups per object and a listing of pages. Past
``MAX_FILES`` of either kind, a push writes one merged file covering the others (an index
may cover many packs; the format allows it), then deletes the ones it merged: written
first, deleted after, so a reader always finds every object through one file or another. A
reader that listed just before the deletion retries its listing (state.py). Two pushers
merging at once only write two supersets.
"""

from __future__ import annotations

import heapq
import secrets
from pathlib import Path

from ..store.pack.index import write_index
from . import format as fmt
from .state import RemoteState, cache_file

MAX_FILES = 16


def consolidate(transport, state: RemoteState, tmp: Path) -> int:
    """Merge the remote's index files, and its runs files, when there are too many of
    either; returns how many files were replaced."""
    replaced = 0
    idx_files = [p for p in state.files if fmt.is_idx(p)]
    if len(idx_files) > MAX_FILES and len(state.indexes) == len(idx_files):
        packs: dict[str, int] = {}
        streams = []
        for idx in state.indexes:
            ok = {p for i, p in enumerate(idx.packs) if idx.usable[i]}
            for i, p in enumerate(idx.packs):
                if p in ok:
                    packs.setdefault(p, idx.sizes[i])
            streams.append(_usable(idx, ok))
        tmp.mkdir(parents=True, exist_ok=True)
        path = write_index(tmp, f"merge-{secrets.token_hex(8)}.idx", list(packs.items()),
                           heapq.merge(*streams, key=lambda e: e[0]), durable=False)  # fmt: skip
        try:
            data = path.read_bytes()
        finally:
            path.unlink(missing_ok=True)
        merged = fmt.idx_path(fmt.content_name(data))
        transport.put(merged, data)
        cache_file(state.cache / merged, data)
        replaced += _delete(transport, [p for p in idx_files if p != merged])
    runs_files = [p for p in state.files if fmt.is_runs(p)]
    if len(runs_files) > MAX_FILES:
        data = fmt.encode_runs(state.runs)
        merged = fmt.runs_path(fmt.content_name(data))
        transport.put(merged, data)
        cache_file(state.cache / merged, data)
        replaced += _delete(transport, [p for p in runs_files if p != merged])
    return replaced


def _usable(idx, packs: set[str]):
    return (e for e in idx.entries() if e[1] in packs)


def _delete(transport, paths: list[str]) -> int:
    for p in paths:
        transport.delete(p)
    return len(paths)
