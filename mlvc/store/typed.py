"""Typed reads and writes of structured objects, and walks over stored trees.

``read_run`` / ``read_tree`` / ``read_env`` decode one verified object (bad bytes raise
``CorruptObject``); ``write_object`` stores one; ``walk`` yields every file entry under a
tree with its path, without recursion; ``totals`` counts and sizes them; ``lookup`` finds
one path.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..core.ids import ObjectId
from ..core.names import safe_relpath
from ..core.objects import DIR, DecodeError, Env, Run, Tree, TreeEntry, decode, encode, tree_rows
from ..errors import CorruptObject
from .odb import ObjectStore


def read_object(store: ObjectStore, oid: ObjectId, kind: type):
    """Read and decode one structured object, verified; bad bytes raise CorruptObject."""
    return decode_object(store, oid, store.read_bytes(oid), kind)


def decode_object(store: ObjectStore, oid: ObjectId, data, kind: type):
    """Decode the verified content ``data`` of the object ``oid`` of ``store`` (any
    bytes-like object); bad bytes raise CorruptObject, naming where the object lies."""
    try:
        return decode(data, expect=kind)
    except DecodeError as e:
        raise _corrupt(store, oid, e) from None


def read_run(store: ObjectStore, oid: ObjectId) -> Run:
    return read_object(store, oid, Run)


def read_tree(store: ObjectStore, oid: ObjectId) -> Tree:
    return read_object(store, oid, Tree)


def read_env(store: ObjectStore, oid: ObjectId) -> Env:
    return read_object(store, oid, Env)


def write_object(store: ObjectStore, obj) -> ObjectId:
    return store.add_bytes(encode(obj))


def walk(
    store: ObjectStore, tree_id: ObjectId | None, prefix: str = ""
) -> Iterator[tuple[str, TreeEntry]]:
    """Every non-directory entry under a tree, depth first in name order, with its full
    POSIX path. Iterative, so a tree of any depth is walked without recursion."""
    if tree_id is None:
        return
    stack = [iter([(prefix, e) for e in read_tree(store, tree_id).entries])]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        folder, e = item
        path = f"{folder}{e.name}"
        if e.kind == DIR:
            sub = path + "/"
            stack.append(iter([(sub, c) for c in read_tree(store, e.id).entries]))
        else:
            yield path, e


def totals(store: ObjectStore, tree_id: ObjectId | None) -> tuple[int, int]:
    """How many files ``walk`` would yield under a tree and their total size, each distinct
    subtree read once and its entries left as plain values (a commit's summary of 20k files
    in a few ms instead of ~50). Iterative, like ``walk``; bad bytes raise CorruptObject."""
    if tree_id is None:
        return 0, 0
    sums: dict[bytes, tuple[int, int]] = {}  # subtree id -> (files, size)
    rows: dict[bytes, tuple] = {}  # read, waiting for its subtrees' sums
    stack: list[bytes] = [tree_id]
    while stack:
        oid = stack[-1]
        if oid in sums:
            stack.pop()
            continue
        if oid not in rows:
            rows[oid] = _tree_rows(store, ObjectId(oid))
            todo = [i for _n, kind, i, _s in rows[oid] if kind == DIR and i not in sums]
            if todo:
                stack += todo
                continue
        files = size = 0
        for _n, kind, i, s in rows.pop(oid):
            if kind == DIR:
                files, size = files + sums[i][0], size + sums[i][1]
            else:
                files, size = files + 1, size + s
        sums[oid] = files, size
        stack.pop()
    return sums[tree_id]


def _tree_rows(store: ObjectStore, oid: ObjectId) -> tuple:
    try:
        return tree_rows(store.read_bytes(oid))
    except DecodeError as e:
        raise _corrupt(store, oid, e) from None


def _corrupt(store: ObjectStore, oid: ObjectId, e: DecodeError) -> CorruptObject:
    """Bad bytes of a verified object, named with where the object lies."""
    where = getattr(store, "_where", lambda o: "?")(oid)
    return CorruptObject(oid.hex, where, str(e))


def lookup(store: ObjectStore, tree_id: ObjectId | None, path: str) -> TreeEntry | None:
    """The entry at a POSIX path inside a tree, or None."""
    if tree_id is None:
        return None
    parts = [p for p in safe_relpath(path).split("/") if p]
    entry = None
    current = tree_id
    for i, part in enumerate(parts):
        entry = read_tree(store, current).get(part)
        if entry is None:
            return None
        if i < len(parts) - 1:
            if entry.kind != DIR:
                return None
            current = entry.id
    return entry
