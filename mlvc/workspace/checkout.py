"""Materializing a run's files, and comparing the working tree with a run (status).

Checkout first decides everything (``_plan``): every path, name and link target is checked,
what is in the way is found, the objects to copy must be present. Only then does it write,
so a refusal never leaves a half-written target. Files are written to a temp file beside
their destination while their hash is verified, then renamed into place, so a corrupt object
never reaches the working tree. Files that already hold the right content are left alone.
In place, files the known state (HEAD, or what ``--only`` put there) recorded but the target
run lacks are removed, and a file that differs from that record is an uncommitted change
that checkout refuses to overwrite without ``force``.

What is refused, and why (docs/architecture.md, "Trust"): absolute paths, ``..``, ``.git``
and ``.mlvc`` at any depth (any case); names or paths too long for the filesystem; a path
that is a file in one section and a folder in another; writing through a folder that is a
symbolic link; links that lead outside the target or into ``.git``/``.mlvc`` once every
link on their way is followed (``links.why_outside``), the run's and those on disk alike.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..core import progress
from ..core.ids import ObjectId
from ..core.names import safe_relpath
from ..core.objects import EXEC, SYMLINK, Run, TreeEntry
from ..errors import (
    DirtyWorkingTree,
    MissingObject,
    PathInTheWay,
    UnreadablePath,
    UnsafePath,
    UsageError,
)
from ..store.odb import ObjectStore, hash_file
from ..store.typed import walk
from .links import NAME_MAX, PATH_MAX, shown, why_outside
from .materialize import is_cache_link, place
from .trees import file_entry_kind

SECTIONS = ("code", "data", "artifacts")


@dataclass
class CheckoutResult:
    written: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    target: str = ""
    run_id: ObjectId | None = None


def parse_sections(only: str | Iterable[str] | None) -> tuple[str, ...]:
    if only is None:
        return SECTIONS
    names = [s.strip() for s in (only.split(",") if isinstance(only, str) else only) if s.strip()]
    bad = [s for s in names if s not in SECTIONS]
    if bad or not names:
        raise UsageError(
            f"unknown section {bad[0] if bad else only!r}: choose from code, data, artifacts"
        )
    return tuple(names)


def run_files(
    store: ObjectStore, run: Run, sections: Iterable[str] = SECTIONS
) -> dict[str, TreeEntry]:
    """Every file a run recorded in the given sections, by project-relative path."""
    files: dict[str, TreeEntry] = {}
    for sec in sections:
        for path, entry in walk(store, run.sections[sec]):
            files[safe_relpath(path)] = entry
    return files


def current_entry_matches(path: str | Path, entry: TreeEntry, cache=None) -> bool:
    """Whether the file at ``path`` already holds exactly what ``entry`` records.

    ``cache`` (a StatCache) answers for files whose stat it knows, and learns the others.
    A symlink into the link cache (a ``--link symlink`` checkout) matches its object.
    """
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as e:
        raise UnreadablePath(os.fspath(path), e) from None
    kind = file_entry_kind(st)
    if kind == SYMLINK and entry.kind != SYMLINK:
        return is_cache_link(path, entry.id)
    if kind != entry.kind or (kind != SYMLINK and st.st_size != entry.size):
        return False
    if kind == SYMLINK:
        return ObjectId.of(os.fsencode(os.readlink(path))) == entry.id
    known = cache.get(path, st) if cache is not None else None
    if known is None:
        try:
            known = hash_file(path)
        except OSError as e:
            raise UnreadablePath(os.fspath(path), e) from None
        if cache is not None:
            cache.put(path, st, known)
    return known == entry.id


def _make_parents(dest: Path, rel: str, made: set[str] | None = None) -> None:
    """Create the folders of ``rel`` under ``dest`` one by one (any depth), refusing any that
    is a symbolic link: nothing is ever written through a link."""
    parts = rel.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        if made is not None and sub in made:
            continue
        path = os.path.join(dest, sub)
        try:
            os.mkdir(path)
        except FileExistsError:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                raise UnsafePath(
                    f"refusing to write {shown(rel)}: {shown(sub)} is a symbolic link"
                ) from None
            if not stat.S_ISDIR(st.st_mode):
                raise UnsafePath(f"cannot write {shown(rel)}: {shown(sub)} is a file") from None
        if made is not None:
            made.add(sub)


def read_link(store: ObjectStore, rel: str, entry: TreeEntry) -> str:
    """The target a symlink entry records, refusing one too long to be a path."""
    if entry.size >= PATH_MAX:
        raise UnsafePath(f"refusing symlink {shown(rel)}: its target is too long")
    raw = store.read_bytes(entry.id)
    if len(raw) >= PATH_MAX:
        raise UnsafePath(f"refusing symlink {shown(rel)}: its target is too long")
    return os.fsdecode(raw)


def write_entry(
    store: ObjectStore,
    dest: Path,
    rel: str,
    entry: TreeEntry,
    link: str = "copy",
    mlvc_dir: Path | None = None,
    made: set[str] | None = None,
) -> None:
    """Write one file atomically and verified (temp + rename in the same folder).

    ``link`` (with ``mlvc_dir``, the repository's ``.mlvc``) asks for a hardlink or symlink
    to a verified read-only copy instead of a private copy (materialize.py). Callers check
    the whole set first (``preflight``); the parent and link checks here are a second line.
    """
    _make_parents(dest, rel, made)
    target = Path(dest, rel)
    tmp = target.with_name(f".{target.name[:200]}.mlvc-{secrets.token_hex(4)}")
    try:
        if entry.kind == SYMLINK:
            link_target = read_link(store, rel, entry)
            if os.path.isabs(link_target):
                raise UnsafePath(
                    f"refusing symlink {shown(rel)} -> {shown(link_target)}: absolute target"
                )
            os.symlink(link_target, tmp)
        else:
            place(store, mlvc_dir, entry.id, tmp, link, 0o755 if entry.kind == EXEC else 0o644)
        if target.is_dir() and not target.is_symlink():
            raise PathInTheWay(f"cannot write file {shown(rel)}: a folder is in the way")
        os.replace(tmp, target)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


@dataclass
class _Plan:
    """What checkout will do, decided before its first write."""

    remove: list[str] = field(default_factory=list)  # recorded files the target run lacks
    replace: list[str] = field(default_factory=list)  # things in the way (with --force)
    clear: list[str] = field(default_factory=list)  # folders emptied by the removals


def preflight(
    store: ObjectStore,
    dest: Path,
    want: Mapping[str, TreeEntry],
    to_write: Mapping[str, TreeEntry],
    to_remove: Iterable[str] = (),
    force: bool = False,
    paths_checked: bool = False,
) -> _Plan:
    """Refuse, before anything is written, whatever this checkout could not do safely.

    ``want`` is every file the target will hold when done, ``to_write`` those to write now,
    ``to_remove`` recorded files to delete. Raises UnsafePath, PathInTheWay,
    DirtyWorkingTree or MissingObject; returns what is to be removed or cleared first.
    """
    if not paths_checked:
        check_paths(dest, want)
    disk = _Disk(dest)
    # a folder of yours where a removed file was stays (it is not the file the run recorded)
    plan = _Plan(remove=[p for p in sorted(to_remove) if disk.kind(p) != "dir"])
    gone = set(plan.remove)
    for p in plan.remove:
        for sub in _parents(p):
            if disk.kind(sub) == "link":
                raise UnsafePath(f"refusing to remove {shown(p)}: {shown(sub)} is a symbolic link")
    in_the_way: list[str] = []
    for p in sorted(to_write):
        for sub in _parents(p):
            kind = disk.kind(sub)
            if kind in (None, "dir") or sub in gone:
                continue
            if not force:
                if kind == "link":
                    raise UnsafePath(
                        f"refusing to write {shown(p)}: {shown(sub)} is a symbolic link "
                        "(--force replaces the link, never what it points to)"
                    )
                in_the_way.append(sub)
            elif sub not in plan.replace:
                plan.replace.append(sub)
                gone.add(sub)
        if disk.kind(p) == "dir":
            extra = disk.files_below(p) - gone
            if extra:
                raise PathInTheWay(
                    f"cannot write file {shown(p)}: the folder {shown(p)} is in the way and holds files "
                    f"no run here records ({shown(sorted(extra)[0])}); move it away first"
                )
            plan.clear.append(p)
    if in_the_way:
        raise DirtyWorkingTree(sorted(set(in_the_way)))
    links = {  # an unchanged link is on disk already, its blob need not be read
        p: read_link(store, p, e) if p in to_write else os.readlink(os.path.join(dest, p))
        for p, e in want.items()
        if e.kind == SYMLINK
    }

    def link_at(path: str) -> str | None:
        if path in want:
            return links.get(path)
        if path in gone:
            return None
        return disk.link(path)

    for p in sorted(to_write):
        if p in links:
            why = why_outside(p, links[p], link_at)
            if why:
                raise UnsafePath(f"refusing symlink {shown(p)} -> {shown(links[p])}: {why}")
    for e in to_write.values():
        if not store.has(e.id):
            raise MissingObject(e.id.hex)
    return plan


def check_paths(dest: Path, want: Iterable[str]) -> None:
    """Every path safe (``safe_relpath``), writable on this filesystem, and never both a
    file and a folder (two sections of a crafted run can disagree)."""
    room = PATH_MAX - 2 - len(os.fsencode(dest))
    paths = set(want)
    folders: set[str] = set()
    for p in paths:
        if safe_relpath(p) != p:
            raise UnsafePath(f"path {p!r} is not a normal path inside the checkout")
        raw = os.fsencode(p)
        if len(raw) > room:
            raise UnsafePath(f"path {p[:60]}... is too long to write here ({len(raw)} bytes)")
        parts = p.split("/")
        if any(len(os.fsencode(part)) > NAME_MAX for part in parts):
            raise UnsafePath(f"path {p[:60]!r} has a name too long for the filesystem")
        folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
    both = paths & folders
    if both:
        p = sorted(both)[0]
        raise UnsafePath(f"the run records {shown(p)} both as a file and as a folder")


def _parents(rel: str) -> list[str]:
    parts = rel.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


class _Disk:
    """What is at a path below ``dest`` now (lstat, memoized), links never followed."""

    def __init__(self, dest: Path):
        self.dest = os.fspath(dest)
        self._kinds: dict[str, str | None] = {}

    def _lstat(self, rel: str) -> os.stat_result | None:
        try:
            return os.lstat(os.path.join(self.dest, rel))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise UnreadablePath(os.path.join(self.dest, rel), e) from None

    def kind(self, rel: str) -> str | None:
        """ "dir", "link", "file" (anything else), or None when nothing is there.

        Looked at from the top down, so nothing below a file or a link is ever stat'ed.
        """
        if rel in self._kinds:
            return self._kinds[rel]
        parts = rel.split("/")
        start = len(parts)
        while start > 1 and "/".join(parts[: start - 1]) not in self._kinds:
            start -= 1
        for i in range(start, len(parts) + 1):
            sub = "/".join(parts[:i])
            parent = "/".join(parts[: i - 1])
            if parent and self._kinds[parent] != "dir":
                self._kinds[sub] = None
                continue
            st = self._lstat(sub)
            self._kinds[sub] = (
                None
                if st is None
                else "dir"
                if stat.S_ISDIR(st.st_mode)
                else "link"
                if stat.S_ISLNK(st.st_mode)
                else "file"
            )
        return self._kinds[rel]

    def link(self, rel: str) -> str | None:
        if self.kind(rel) != "link":
            return None
        return os.readlink(os.path.join(self.dest, rel))

    def files_below(self, rel: str) -> set[str]:
        """Every non-folder path below the folder ``rel`` (iterative)."""
        out: set[str] = set()
        stack = [rel]
        while stack:
            folder = stack.pop()
            try:
                with os.scandir(os.path.join(self.dest, folder)) as it:
                    entries = list(it)
            except OSError as e:
                raise UnreadablePath(os.path.join(self.dest, folder), e, "list") from None
            for e in entries:
                path = f"{folder}/{e.name}"
                (stack.append if e.is_dir(follow_symlinks=False) else out.add)(path)
        return out


def known_files(
    store: ObjectStore,
    head: Run | None,
    sections: Iterable[str],
    bases: Mapping[str, Run] | None = None,
) -> dict[str, TreeEntry]:
    """The files the target is known to hold, per section: ``bases`` (what ``--only``
    checked out) where given, else HEAD's record."""
    out: dict[str, TreeEntry] = {}
    for sec in sections:
        run = (bases or {}).get(sec, head)
        if run is not None:
            out.update(run_files(store, run, [sec]))
    return out


def checkout(
    store: ObjectStore,
    run: Run,
    dest: Path,
    sections: Iterable[str] = SECTIONS,
    head: Run | None = None,
    force: bool = False,
    link: str = "copy",
    mlvc_dir: Path | None = None,
    cache=None,
    bases: Mapping[str, Run] | None = None,
) -> CheckoutResult:
    """Make ``dest`` hold the run's files. ``head`` is the run ``dest`` is known to match,
    ``bases`` the runs some sections were since checked out from (``--only``).

    ``cache`` is the stat cache of ``dest`` (in place), ``link`` how files are made.
    Everything is checked before the first write (``preflight``).
    """
    sections = tuple(sections)
    want = run_files(store, run, sections)
    check_paths(dest, want)
    have = known_files(store, head, sections, bases)
    result = CheckoutResult(target=str(dest))
    if cache is not None:
        cache.begin()

    def matches(p: str, e: TreeEntry) -> bool:
        return current_entry_matches(dest / p, e, cache)

    def clean(p: str) -> bool:
        """Matches HEAD's record, and the store holds those bytes (else it is the only copy)."""
        return p in have and matches(p, have[p]) and store.has(have[p].id)

    to_write = {p: e for p, e in want.items() if not matches(p, e)}
    result.unchanged = len(want) - len(to_write)
    to_remove = [p for p in have if p not in want and os.path.lexists(dest / p)]
    if not force:
        dirty = [  # a folder in the way is preflight's to judge
            p
            for p in to_write
            if os.path.lexists(dest / p) and not (dest / p).is_dir() and not clean(p)
        ]
        dirty += [p for p in to_remove if not clean(p)]
        if dirty:
            raise DirtyWorkingTree(sorted(dirty))
    plan = preflight(store, dest, want, to_write, to_remove, force, paths_checked=True)

    # removals first: a file the old run had may stand where the new one has a folder
    for p in [*plan.remove, *plan.replace]:
        os.unlink(dest / p)
        if p in plan.remove:
            result.removed.append(p)
        _prune_empty(dest, (dest / p).parent)
    for p in plan.clear:
        _remove_empty_tree(dest / p)
    try:
        os.makedirs(dest, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the folder {dest}: {e.strerror}") from None
    total = sum(e.size for e in to_write.values())
    made: set[str] = set()
    with progress.bar("checkout", total_bytes=total, total_files=len(to_write)):
        for p in sorted(to_write):
            write_entry(store, dest, p, to_write[p], link, mlvc_dir, made)
            result.written.append(p)
            progress.advance(files=1)
    if cache is not None:
        cache.save()
    return result


def _prune_empty(dest: Path, folder: Path) -> None:
    while folder != dest and dest in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def _remove_empty_tree(folder: Path) -> None:
    """Remove a tree of empty folders bottom-up (preflight made sure it holds no file)."""
    if not os.path.isdir(folder) or os.path.islink(folder):
        return  # already pruned with the files removed from it
    stack = [os.fspath(folder)]
    while stack:
        top = stack[-1]
        subs = [e.path for e in os.scandir(top) if e.is_dir(follow_symlinks=False)]
        if subs:
            stack.extend(subs)
        else:
            os.rmdir(top)
            stack.pop()


def compare(
    store: ObjectStore,
    recorded: dict[str, TreeEntry],
    root: Path,
    present: Iterable[str],
    cache=None,
) -> dict:
    """Added / removed / modified paths of files on disk against a run's record."""
    present = set(present)
    base = os.fspath(root)
    added = sorted(present - set(recorded))
    removed = sorted(p for p in recorded if p not in present)
    modified = sorted(
        p
        for p in present & set(recorded)
        if not current_entry_matches(os.path.join(base, p), recorded[p], cache)
    )
    return {"added": added, "removed": removed, "modified": modified}
