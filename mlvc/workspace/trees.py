"""Building trees of files: ``build_tree`` turns project-relative paths on disk into nested
tree objects (like git). Reading them back is ``mlvc.store.typed``."""

from __future__ import annotations

import marshal
import os
import re
import stat
import struct
from collections.abc import Iterable
from pathlib import Path

import blake3

from ..core.ids import DIGEST_SIZE, ObjectId
from ..core.names import safe_relpath
from ..core.objects import DIR, EXEC, FILE, SYMLINK, Tree, TreeEntry, is_reserved_name
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
    listing: dict[str, list[tuple[str, os.stat_result]] | Packed] | None = None,
) -> ObjectId | None:
    """Store every file in ``paths`` (relative to root) and the trees that hold them.

    ``hasher(abs_path, stat) -> ObjectId`` stores one regular file; by default
    ``store.add_file``. If it also has ``map(list of (abs_path, stat)) -> list of ids``,
    that is used instead, to store many files at once; if its ``cache`` has ``tree_get``
    and ``tree_put`` (statcache.StatCache), a folder whose files' stats all match those
    its stored tree was made from reuses that tree without reading its files (see
    ``_signatures``). Symlinks are stored as a blob of their target, and only if
    ``links.record_problem`` finds none (else UnsafePath). ``extra`` adds already-stored
    entries by path (they win over files at the same path). ``listing`` adds whole folders
    as ``runs.record.walk_data`` listed them, ``{folder: [(name, lstat), ...]}`` or
    ``{folder: Packed}`` (the C walk): their files are placed by folder with the walk's
    stat, not looked at again; a packed folder becomes Python objects only if its tree is
    not reused. Returns the root
    tree id, or
    None when there are no files. A file that cannot be read raises UnreadablePath naming
    it, before anything refers to what was stored.
    """
    add = hasher or (lambda p, st: store.add_file(p))
    nested: dict = {}
    extra = extra or {}
    prefix = os.path.join(os.fspath(root), "")
    checked: set[str] = set()  # folders whose path is normal and safe
    nodes: dict[str, dict] = {}  # folder path -> its dict in nested
    lstat, islink = os.lstat, stat.S_ISLNK
    paths = list(paths)
    packs: dict[int, tuple] = {}  # id(folder) -> (base, Packed, folder): files still packed
    if listing:  # regular files placed by folder; links go the way of single paths
        paths += _place_listing(nested, nodes, prefix, listing, extra, packs)
    for rel in paths:
        if extra and rel in extra:
            continue
        folder, _, name = rel.rpartition("/")
        if folder not in checked or name in _ODD or "\0" in name or is_reserved_name(name):
            rel = safe_relpath(rel)  # the whole path checked once per folder (or raises)
            folder, _, name = rel.rpartition("/")
            checked.add(folder)
        full = prefix + rel
        try:
            st = lstat(full)
            link = islink(st.st_mode)
            target = os.readlink(full) if link else ""
        except OSError as e:
            raise _unreadable(rel, e) from None
        kind = SYMLINK if link else EXEC if st.st_mode & 0o111 else FILE
        if link and _CACHE_LINK.search(target) and _is_file(full):
            kind = FILE  # a `checkout --link symlink` file: record the content it stands for
            st = os.stat(full)
        if not (link or stat.S_ISREG(st.st_mode)):
            continue  # sockets, fifos, devices: not content
        node = nodes.get(folder)
        if node is None:
            node = nodes[folder] = _folder_node(nested, rel)
        if packs and not link and id(node) in packs:  # a file also given alone: unpacked,
            _unpack(node, *packs.pop(id(node)))  # so that it is placed once, as without C
        if type(node.get(name)) is dict:
            raise UnsafePath(f"{rel!r} is both a file and a folder in the captured set")
        if kind == SYMLINK:
            problem = record_problem(rel, target)
            if problem:
                raise UnsafePath(
                    f"symlink {rel} -> {target} {problem}; mlvc records only relative links "
                    "that stay inside the project: replace it with such a link or with the "
                    "files themselves, or leave it out (.mlvcignore for code)"
                )
            raw = os.fsencode(target)
            node[name] = TreeEntry(name, kind, store.add_bytes(raw), len(raw))
        else:
            node[name] = _File(name, kind, full, st, target)
    for rel, entry in extra.items():
        rel = safe_relpath(rel)
        name = rel.rsplit("/", 1)[-1]
        _place(nested, rel, TreeEntry(name, entry.kind, entry.id, entry.size))
    if not nested:
        return None
    cache = getattr(add, "cache", None)
    if not (getattr(add, "map", None) and hasattr(cache, "tree_get")):
        cache = None
    folders = _folders(nested)
    sigs = _signatures(folders, cache.clock, packs) if cache is not None else {}
    reused = _reusable(store, cache, folders, sigs) if cache is not None else {}
    build = [(path, node) for path, node in folders if id(node) not in reused]
    for _path, node in build:
        if id(node) in packs:
            _unpack(node, *packs.pop(id(node)))
    # the files of every folder that is not reused, stored at once (in parallel with .map)
    _store_files(
        add, os.fspath(root), [c for _p, n in build for c in n.values() if type(c) is _File]
    )
    return _write_trees(store, nested, build, reused, sigs, cache)


def _place_listing(
    nested: dict, nodes: dict[str, dict], prefix: str, listing: dict, extra: dict, packs: dict
) -> list[str]:
    """Put the regular files of walked folders in ``nested`` (one check per folder: the
    walk dropped junk and reserved names, and a listed name has no "/" or NUL); return the
    paths of the links found, for the per-path code (targets checked there). A ``Packed``
    folder gets its node, and its files stay packed in ``packs`` by the node's id."""
    links = []
    isreg, islink = stat.S_ISREG, stat.S_ISLNK
    for folder, entries in listing.items():
        if type(entries) is Packed:
            links += [f"{folder}/{name}" for name in entries.links]
            if entries.data:
                folder = safe_relpath(folder)
                node = nodes.get(folder)
                if node is None:
                    node = nodes[folder] = _folder_node(nested, f"{folder}/-")
                packs[id(node)] = (f"{prefix}{folder}/", entries, folder)
                if extra:  # entries given by path win over listed files: placed one by one
                    _unpack(node, *packs.pop(id(node)), skip=extra)
            continue
        if not entries:
            continue
        folder = safe_relpath(folder)
        node = None  # made at the first file: a folder of sockets or links alone has none
        base = f"{prefix}{folder}/"
        for name, st in entries:
            mode = st.st_mode
            if extra and f"{folder}/{name}" in extra:
                continue
            if isreg(mode):
                if node is None:
                    node = nodes.get(folder)
                    if node is None:
                        node = nodes[folder] = _folder_node(nested, f"{folder}/{name}")
                if type(node.get(name)) is dict:
                    rel = f"{folder}/{name}"
                    raise UnsafePath(f"{rel!r} is both a file and a folder in the captured set")
                node[name] = _File(name, EXEC if mode & 0o111 else FILE, base + name, st, "")
            elif islink(mode):
                links.append(f"{folder}/{name}")
    return links


class Packed:
    """One folder as the C walk (mlvc._walk) lists it: ``data``, its regular files' stats
    packed as ``_pack_file`` packs them, sorted by name bytes; ``links``, its symlinks'
    names; ``newest``, the largest mtime_ns or ctime_ns of those files."""

    __slots__ = ("data", "links", "newest")

    def __init__(self, data: bytes, links: list[str], newest: int):
        self.data, self.links, self.newest = data, links, newest


class _St:
    """The part of a stat a packed file carries (what hashers and the stat cache read)."""

    __slots__ = ("st_mode", "st_size", "st_mtime_ns", "st_ino", "st_ctime_ns", "st_dev")


# a packed file: u32 name length, u32 mode, u64 size, mtime_ns as (i64 >> 32, u32 low
# bits), u64 inode, ctime_ns likewise, u64 device, then the name's bytes (mlvc/_walk.c)
_ENTRY = struct.Struct("=IIQqIQqIQ")
_LOW = 0xFFFFFFFF


def _pack_file(name: str, st) -> bytes:
    raw = os.fsencode(name)
    m, c = st.st_mtime_ns, st.st_ctime_ns
    head = _ENTRY.pack(
        len(raw), st.st_mode, st.st_size, m >> 32, m & _LOW, st.st_ino, c >> 32, c & _LOW,
        st.st_dev,
    )  # fmt: skip
    return head + raw


def _unpack(node: dict, base: str, packed: Packed, folder: str, skip=None) -> None:
    """Put a packed folder's files in its node as ``_File``s (its tree is being built)."""
    data, at, end, size = packed.data, 0, len(packed.data), _ENTRY.size
    unpack, decode = _ENTRY.unpack_from, os.fsdecode
    while at < end:
        n, mode, fsize, mh, ml, ino, ch, cl, dev = unpack(data, at)
        name = decode(data[at + size : at + size + n])
        at += size + n
        if skip and f"{folder}/{name}" in skip:
            continue
        st = _St()
        st.st_mode, st.st_size, st.st_ino, st.st_dev = mode, fsize, ino, dev
        st.st_mtime_ns, st.st_ctime_ns = (mh << 32) | ml, (ch << 32) | cl
        if type(node.get(name)) is dict:
            rel = f"{folder}/{name}"
            raise UnsafePath(f"{rel!r} is both a file and a folder in the captured set")
        node[name] = _File(name, EXEC if mode & 0o111 else FILE, base + name, st, "")


class _File:
    """A regular file found by build_tree: its name, kind, path, stat, and id once stored."""

    __slots__ = ("name", "kind", "full", "st", "target", "oid")

    def __init__(self, name: str, kind: str, full: str, st: os.stat_result, target: str):
        self.name, self.kind, self.full, self.st, self.target = name, kind, full, st, target
        self.oid: ObjectId | None = None


def _folders(top: dict) -> list[tuple[str, dict]]:
    """Every folder of a nested dict as (path, node), children before their parent."""
    out: list[tuple[str, dict]] = []
    stack: list[tuple[str, dict, bool]] = [("", top, False)]
    while stack:
        path, node, children_done = stack.pop()
        if children_done:
            out.append((path, node))
            continue
        stack.append((path, node, True))
        for name, child in node.items():
            if type(child) is dict:
                stack.append((f"{path}/{name}" if path else name, child, False))
    return out


def _signatures(
    folders: list[tuple[str, dict]], clock: int, packs: dict
) -> dict[int, tuple[bytes, bool]]:
    """id(folder) -> (signature, cacheable), bottom-up.

    The signature is the BLAKE3 of the folder's path and, per entry in name order, its
    name and kind and: for a link-to-cache file (``--link symlink``), size, mtime, inode,
    ctime, mode, device and target; for an already-stored entry, its id and size; for a
    subfolder, its signature; followed by its regular files packed as ``_pack_file``
    packs them (size, mtimes, inode, ctime, mode, device, name), in name-bytes order:
    the bytes the C walk returns, so a packed folder is signed without unpacking it. Any
    change the stat cache would see in any file below changes it. Cacheable: every file
    below is strictly older than ``clock`` (racy git: a file written in the same tick as
    the look could change again unseen).
    """
    out: dict[int, tuple[bytes, bool]] = {}
    dumps, digest = marshal.dumps, blake3.blake3
    for path, node in folders:
        items: list[tuple] = []
        plain: list[_File] = []
        newest = 0
        ok = clock > 0
        for name in sorted(node):
            child = node[name]
            if type(child) is _File:
                st = child.st
                m, c = st.st_mtime_ns, st.st_ctime_ns
                if m > newest or c > newest:
                    newest = m if m > c else c
                if not child.target:
                    plain.append(child)
                    continue
                items.append(
                    (name, child.kind, st.st_size, m, st.st_ino, c, st.st_mode, st.st_dev,
                     child.target)
                )  # fmt: skip
            elif type(child) is dict:
                sig, child_ok = out[id(child)]
                ok = ok and child_ok
                items.append((name, DIR, sig))
            else:
                items.append((name, child.kind, bytes(child.id), child.size))
        pack = packs.get(id(node))
        if pack is not None:  # the C walk's bytes (a node has these or plain files)
            files = pack[1].data
            newest = max(newest, pack[1].newest)
        elif plain:
            if not "".join([f.name for f in plain]).isascii():
                plain.sort(key=lambda f: os.fsencode(f.name))  # the C walk's order
            files = b"".join([_pack_file(f.name, f.st) for f in plain])
        else:
            files = b""
        # marshal: one C call for the folder's other entries (its bytes are stable within a
        # Python version; another version only misses the cache)
        sig = digest(dumps((path, items), 4) + files).digest()
        out[id(node)] = (sig, ok and newest < clock)
    return out


def _reusable(store, cache, folders, sigs) -> dict[int, tuple[ObjectId, int]]:
    """id(folder) -> (tree id, size) for every folder whose stored tree is reused, and for
    every folder below those (marked so nothing below a reused folder is looked at)."""
    reused: dict[int, tuple[ObjectId, int]] = {}
    skip = (ObjectId(bytes(DIGEST_SIZE)), 0)
    for path, node in reversed(folders):  # parents before children
        if id(node) in reused:
            below = skip
        else:
            sig, _ok = sigs[id(node)]
            hit = cache.tree_get(path, sig)
            if hit is None or not store.has(hit[0]):
                continue
            reused[id(node)] = hit
            below = skip
        for child in node.values():
            if type(child) is dict:
                reused[id(child)] = below
    return reused


def _store_files(add, base: str, files: list[_File]) -> None:
    many = getattr(add, "map", None)
    jobs = [(f.full, f.st) for f in files]
    try:
        oids = many(jobs) if many else [add(full, st) for full, st in jobs]
    except OSError as e:
        where = os.path.relpath(e.filename, base) if isinstance(e.filename, str) else "a file"
        raise _unreadable(where, e) from None
    for f, oid in zip(files, oids, strict=True):
        f.oid = oid


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


_ODD = frozenset({"", ".", ".."})


def _folder_node(nested: dict, rel: str) -> dict:
    """The dict in ``nested`` for the folder holding ``rel``, made as needed."""
    node = nested
    for part in rel.split("/")[:-1]:
        node = node.setdefault(part, {})
        if type(node) is not dict:
            raise UnsafePath(f"{rel!r} is both a file and a folder in the captured set")
    return node


def _not_utf8(path: str, node: dict) -> UnsafePath:
    for name in node:
        try:
            name.encode()
        except UnicodeEncodeError:
            shown = os.fsencode(f"{path}/{name}" if path else name)
            return UnsafePath(
                f"{shown!r} is a file name that is not valid UTF-8; mlvc records names as "
                "UTF-8 (a run's trees are read on every system): rename it, or leave it out"
            )
    return UnsafePath(f"a name in {path!r} is not valid UTF-8: rename it, or leave it out")


def _place(nested: dict, rel: str, entry: TreeEntry) -> None:
    node = _folder_node(nested, rel)
    parts = rel.split("/")
    if isinstance(node.get(parts[-1]), dict):
        raise UnsafePath(f"{rel!r} is both a file and a folder in the captured set")
    node[parts[-1]] = entry


def _write_trees(store, top, build, reused, sigs, cache) -> ObjectId:
    """Store the trees of the folders in ``build`` (children first); the root's id.

    A folder whose signature is cacheable is remembered in ``cache`` with its tree."""
    done = dict(reused)  # id(folder dict) -> (tree id, size)
    for path, node in build:
        entries = []
        for name, child in node.items():
            if type(child) is dict:
                oid, size = done[id(child)]
                entries.append(TreeEntry(name, DIR, oid, size))
            elif type(child) is _File:
                entries.append(TreeEntry(name, child.kind, child.oid, child.st.st_size))
            else:
                entries.append(child)
        tree = Tree.of(entries)
        try:
            oid = write_object(store, tree)
        except UnicodeEncodeError:  # a name os.fsdecode could only decode with surrogates
            raise _not_utf8(path, node) from None
        done[id(node)] = (oid, tree.size)
        if cache is not None:
            sig, ok = sigs[id(node)]
            if ok:
                cache.tree_put(path, sig, oid, tree.size)
    return done[id(top)][0]
