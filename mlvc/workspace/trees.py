"""Reading typed objects from a store, and building / walking trees of files.

``build_tree`` turns a list of project-relative paths into nested tree objects (like git);
``walk`` yields every file entry with its full path; ``lookup`` finds one path.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

from ..core.ids import ObjectId
from ..core.objects import (
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
    is_reserved_name,
)
from ..errors import CorruptObject, MlvcError, UnreadablePath, UnsafePath
from ..store.odb import ObjectStore
from .links import record_problem


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
    """Normalize a project-relative POSIX path, refusing absolute paths, '..' and the
    reserved names ``.git``/``.mlvc`` (``objects.is_reserved_name``) at any depth."""
    parts = path.split("/")
    if path and "\0" not in path and not {"", ".", ".."} & set(parts):
        normal = path  # already normal: the common case, without pathlib's cost
    else:
        p = PurePosixPath(path)
        if p.is_absolute() or any(part in ("..", "") for part in p.parts) or "\0" in path:
            raise UnsafePath(
                f"path {path!r} is absolute or leaves the project; use a path inside it"
            )
        normal = p.as_posix()
        parts = normal.split("/")
    for part in parts:
        if is_reserved_name(part):
            raise UnsafePath(
                f"path {normal!r} is inside {part}, git's or mlvc's own folder; mlvc never "
                "records or writes those"
            )
    return normal


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
    that is used instead, to store many files at once. Symlinks are stored as a blob of
    their target, and only if ``links.record_problem`` finds none (else UnsafePath).
    ``extra`` adds already-stored entries by path (they win over files at the same path).
    Returns the root tree id, or None when there are no files. A file that cannot be read
    raises UnreadablePath naming it, before anything refers to what was stored.
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
        try:
            st = os.lstat(full)
            kind = file_entry_kind(st)
            target = os.readlink(full) if kind == SYMLINK else ""
        except OSError as e:
            raise _unreadable(rel, e) from None
        if kind == SYMLINK and _CACHE_LINK.search(target) and _is_file(full):
            kind = FILE  # a `checkout --link symlink` file: record the content it stands for
            st = os.stat(full)
        if kind == SYMLINK:
            problem = record_problem(rel, target)
            if problem:
                raise UnsafePath(
                    f"symlink {rel} -> {target} {problem}; mlvc records only relative links "
                    "that stay inside the project: replace it with such a link or with the "
                    "files themselves, or leave it out (.mlvcignore for code)"
                )
            raw = os.fsencode(target)
            _place(
                nested, rel, TreeEntry(rel.rsplit("/", 1)[-1], kind, store.add_bytes(raw), len(raw))
            )
        elif stat.S_ISREG(st.st_mode):
            regular.append((rel, kind, full, st))
        # sockets, fifos, devices: not content
    # a hasher with .map (statcache.FileHasher) stores many files at once, in parallel
    many = getattr(add, "map", None)
    jobs = [(full, st) for _rel, _kind, full, st in regular]
    try:
        oids = many(jobs) if many else [add(full, st) for full, st in jobs]
    except OSError as e:
        where = os.path.relpath(e.filename, base) if isinstance(e.filename, str) else "a file"
        raise _unreadable(where, e) from None
    for (rel, kind, _full, st), oid in zip(regular, oids, strict=True):
        _place(nested, rel, TreeEntry(rel.rsplit("/", 1)[-1], kind, oid, st.st_size))
    for rel, entry in extra.items():
        rel = safe_relpath(rel)
        name = rel.rsplit("/", 1)[-1]
        _place(nested, rel, TreeEntry(name, entry.kind, entry.id, entry.size))
    if not nested:
        return None
    return _write_nested(store, nested)


# where materialize.place links a file for ``--link symlink`` (an absolute path)
_CACHE_LINK = re.compile(r"/\.mlvc/cache/files/[0-9a-f]{2}/[0-9a-f]{62}$")


def _is_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _unreadable(rel: str, e: OSError) -> MlvcError:
    if isinstance(e, FileNotFoundError | NotADirectoryError):
        return MlvcError(f"{rel} disappeared while it was being recorded; commit again")
    return UnreadablePath(rel, e)


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


def _write_nested(store: ObjectStore, top: dict) -> ObjectId:
    """Store the trees of a nested dict bottom-up, without recursion (any depth)."""
    done: dict[int, tuple[ObjectId, int]] = {}  # id(folder dict) -> (tree id, size)
    stack: list[tuple[dict, bool]] = [(top, False)]
    while stack:
        node, children_done = stack.pop()
        if not children_done:
            stack.append((node, True))
            stack.extend((c, False) for c in node.values() if isinstance(c, dict))
            continue
        entries = []
        for name, child in node.items():
            if isinstance(child, dict):
                oid, size = done.pop(id(child))
                entries.append(TreeEntry(name, DIR, oid, size))
            else:
                entries.append(child)
        tree = Tree.of(entries)
        done[id(node)] = (write_object(store, tree), tree.size)
    return done[id(top)][0]


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
