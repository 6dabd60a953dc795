"""Reading typed objects from a store, and building / walking trees of files.

``build_tree`` turns a list of project-relative paths into nested tree objects (like git);
``walk`` yields every file entry with its full path; ``lookup`` finds one path.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

from .errors import CorruptObject, UnsafePath
from .ids import ObjectId
from .objects import (
    DIR,
    EXEC,
    FILE,
    SYMLINK,
    DecodeError,
    Env,
    Run,
    Tree,
    TreeEntry,
    decode,
    encode,
)
from .odb import ObjectStore


def read_object(store: ObjectStore, oid: ObjectId, kind: type):
    """Read and decode one structured object, verified; bad bytes raise CorruptObject."""
    data = store.read_bytes(oid)
    try:
        return decode(data, expect=kind)
    except DecodeError as e:
        where = getattr(store, "_where", lambda o: "?")(oid)
        raise CorruptObject(oid.hex, where, str(e)) from None


def read_run(store: ObjectStore, oid: ObjectId) -> Run:
    return read_object(store, oid, Run)


def read_tree(store: ObjectStore, oid: ObjectId) -> Tree:
    return read_object(store, oid, Tree)


def read_env(store: ObjectStore, oid: ObjectId) -> Env:
    return read_object(store, oid, Env)


def write_object(store: ObjectStore, obj) -> ObjectId:
    return store.add_bytes(encode(obj))


def safe_relpath(path: str) -> str:
    """Normalize a project-relative POSIX path, refusing absolute paths and '..'."""
    if path and "\0" not in path and not {"", ".", ".."} & set(path.split("/")):
        return path  # already normal: the common case, without pathlib's cost
    p = PurePosixPath(path)
    if p.is_absolute() or any(part in ("..", "") for part in p.parts) or "\0" in path:
        raise UnsafePath(f"path {path!r} is absolute or leaves the project; use a path inside it")
    return p.as_posix()


def file_entry_kind(st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        return SYMLINK
    if st.st_mode & 0o111:
        return EXEC
    return FILE


def build_tree(
    store: ObjectStore,
    root: Path,
    paths: Iterable[str],
    hasher=None,
    extra: dict[str, TreeEntry] | None = None,
) -> ObjectId | None:
    """Store every file in ``paths`` (relative to root) and the trees that hold them.

    ``hasher(abs_path, stat) -> ObjectId`` stores one regular file; by default
    ``store.add_file``. If it also has ``map(list of (abs_path, stat)) -> list of ids``,
    that is used instead, to store many files at once. Symlinks are stored as a blob of their target. ``extra`` adds
    already-stored entries by path (they win over files at the same path). Returns the root
    tree id, or None when there are no files.
    """
    add = hasher or (lambda p, st: store.add_file(p))
    nested: dict = {}
    extra = extra or {}
    regular: list[tuple[str, str, str, os.stat_result]] = []
    base = os.fspath(root)
    for rel in paths:
        if rel in extra:
            continue
        rel = safe_relpath(rel)
        full = os.path.join(base, rel)
        st = os.lstat(full)
        kind = file_entry_kind(st)
        if kind == SYMLINK:
            target = os.readlink(full).encode()
            oid, size = store.add_bytes(target), len(target)
            _place(nested, rel, TreeEntry(rel.rsplit("/", 1)[-1], kind, oid, size))
        elif stat.S_ISREG(st.st_mode):
            regular.append((rel, kind, full, st))
        # sockets, fifos, devices: not content
    # a hasher with .map (statcache.FileHasher) stores many files at once, in parallel
    many = getattr(add, "map", None)
    jobs = [(full, st) for _rel, _kind, full, st in regular]
    oids = many(jobs) if many else [add(full, st) for full, st in jobs]
    for (rel, kind, _full, st), oid in zip(regular, oids, strict=True):
        _place(nested, rel, TreeEntry(rel.rsplit("/", 1)[-1], kind, oid, st.st_size))
    for rel, entry in extra.items():
        rel = safe_relpath(rel)
        name = rel.rsplit("/", 1)[-1]
        _place(nested, rel, TreeEntry(name, entry.kind, entry.id, entry.size))
    if not nested:
        return None
    return _write_nested(store, nested)[0]


def _place(nested: dict, rel: str, entry: TreeEntry) -> None:
    node = nested
    parts = rel.split("/")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UnsafePath(f"{rel!r} is both a file and a folder in the captured set")
    if isinstance(node.get(parts[-1]), dict):
        raise UnsafePath(f"{rel!r} is both a file and a folder in the captured set")
    node[parts[-1]] = entry


def _write_nested(store: ObjectStore, node: dict) -> tuple[ObjectId, int]:
    entries = []
    for name, child in node.items():
        if isinstance(child, dict):
            oid, size = _write_nested(store, child)
            entries.append(TreeEntry(name, DIR, oid, size))
        else:
            entries.append(child)
    tree = Tree.of(entries)
    return write_object(store, tree), tree.size


def walk(
    store: ObjectStore, tree_id: ObjectId | None, prefix: str = ""
) -> Iterator[tuple[str, TreeEntry]]:
    """Every non-directory entry under a tree, depth first, with its full POSIX path."""
    if tree_id is None:
        return
    for e in read_tree(store, tree_id).entries:
        path = f"{prefix}{e.name}"
        if e.kind == DIR:
            yield from walk(store, e.id, path + "/")
        else:
            yield path, e


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
