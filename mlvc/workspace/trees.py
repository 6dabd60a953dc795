"""Building trees of files: ``build_tree`` turns project-relative paths on disk into nested
tree objects (like git). Reading them back is ``mlvc.store.typed``."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

from ..core.ids import ObjectId
from ..core.names import safe_relpath
from ..core.objects import DIR, EXEC, FILE, SYMLINK, Tree, TreeEntry
from ..errors import MlvcError, UnreadablePath, UnsafePath
from ..store.odb import ObjectStore
from ..store.typed import write_object
from .links import record_problem


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
