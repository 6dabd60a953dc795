"""Reachability: every object a set of roots leads to, and what one record references.

gc marks with it (mlvc.maintenance.gc), push computes a run's closure with it, and fetch
walks a remote's records with ``links`` (mlvc.remotes). Structured objects are scanned for
ids generically (any 32-byte id or 64-hex string in their body), so kinds added later are
followed too; trees by entry kind; chunk lists by chunk.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from ..core.ids import ObjectId
from ..core.objects import DIR, DecodeError, unpack
from ..errors import MissingObject, MlvcError
from .odb import CHUNK_THRESHOLD, CHUNKED, _parse_chunk_list

_HEX64 = re.compile(r"^[0-9a-f]{64}$")

# What an id is known to be before its record is read: "?" anything, "blob" a chunk (never
# read: it references nothing), "small" a file under the chunking threshold (only a chunk
# list if crafted), "big" a file that may be a chunk list, "tree" a folder's tree.
ANY, BLOB, SMALL, BIG, TREE = "?", "blob", "small", "big", "tree"
# A run record's own sections: anything, but a run without it is incomplete (fetch refuses it)
NEEDED = "needed"
RUN_SECTIONS = ("code", "data", "artifacts", "env", "series")


def links(oid: ObjectId, rec: bytes, what: str, content: Callable[[], bytes | memoryview],
          where: str = "", sizes: dict | None = None) -> list[tuple[ObjectId, str]]:  # fmt: skip
    """The ids one record references, each with what it is known to be.

    ``content`` returns the record's verified content (called only for structured
    objects); it and the chunk-list parser raise MlvcError for a damaged record. ``sizes``
    receives the size a tree gives each file it names."""
    if rec[:1] == CHUNKED:
        return [(c, BLOB) for c, _n in _parse_chunk_list(rec[1:], oid, where or oid.hex)]
    if what in (BLOB, SMALL):
        return []
    data = content()
    if data[:1] != b"\x93":  # msgpack [kind, version, body]: structured objects only
        return []
    try:
        kind, _version, body = unpack(bytes(data))
    except (DecodeError, ValueError, TypeError):
        return []
    if kind == "tree":
        out = []
        for _name, k, cid, size in body:
            sub = TREE if k == DIR else (BIG if size >= CHUNK_THRESHOLD else SMALL)
            out.append((ObjectId(cid), sub))
            if sizes is not None and k != DIR:
                sizes[cid] = size
        return out
    needed = set()
    if kind == "run" and isinstance(body, dict):
        needed = {v for k in RUN_SECTIONS if isinstance(v := body.get(k), bytes) and len(v) == 32}
    return [(c, NEEDED if c in needed else ANY) for c in ids_in(body)]


def reachable(
    store,
    start: set[ObjectId],
    damaged: set | None = None,
    stop: Callable[[ObjectId], bool] | None = None,
) -> set[bytes]:
    """Every object reachable from ``start``.

    Objects read to find others are verified; ``damaged`` receives those that exist but do
    not verify (what they reference cannot be known). ``stop(id)`` true: the id is not
    followed nor returned (push stops at what the remote already has)."""
    damaged = set() if damaged is None else damaged
    seen: set[bytes] = set()
    stack: list[tuple[ObjectId, str]] = [(o, ANY) for o in start]
    while stack:
        oid, what = stack.pop()
        if oid in seen:
            continue
        if stop is not None and stop(oid):
            continue
        seen.add(oid)
        if what == BLOB:
            continue
        try:
            rec = store._record(oid, fetch=False)  # a lazy clone's promises stay remote
        except MissingObject:
            continue  # a root may be any 64-hex string; fsck reports missing objects
        except MlvcError:
            damaged.add(oid)
            continue
        try:
            stack.extend(
                links(oid, rec, what, lambda o=oid, r=rec: store._verified(o, r), store._where(oid))
            )
        except MlvcError:
            damaged.add(oid)
    return seen


def ids_in(value) -> Iterator[ObjectId]:
    """Every 32-byte id and 64-hex string anywhere in a decoded body."""
    if isinstance(value, bytes) and len(value) == 32:
        yield ObjectId(value)
    elif isinstance(value, str):
        if len(value) == 64 and _HEX64.match(value):
            yield ObjectId.parse(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from ids_in(k)
            yield from ids_in(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from ids_in(v)
