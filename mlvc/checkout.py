"""Materializing a run's files, and comparing the working tree with a run (status).

Checkout writes each file to a temp file beside its destination while verifying its hash,
then renames it into place, so a corrupt object never reaches the working tree. Files that
already hold the right content are left alone. In place, files the current HEAD run recorded
but the target run lacks are removed, and any file that differs from what HEAD recorded is
an uncommitted change that checkout refuses to overwrite without ``force``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from . import progress
from .errors import DirtyWorkingTree, UnsafePath, UsageError
from .ids import ObjectId
from .materialize import is_cache_link, place
from .objects import EXEC, SYMLINK, Run, TreeEntry
from .odb import ObjectStore, hash_file
from .trees import file_entry_kind, safe_relpath, walk

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
    except FileNotFoundError:
        return False
    kind = file_entry_kind(st)
    if kind == SYMLINK and entry.kind != SYMLINK:
        return is_cache_link(path, entry.id)
    if kind != entry.kind or (kind != SYMLINK and st.st_size != entry.size):
        return False
    if kind == SYMLINK:
        return ObjectId.of(os.readlink(path).encode()) == entry.id
    known = cache.get(path, st) if cache is not None else None
    if known is None:
        known = hash_file(path)
        if cache is not None:
            cache.put(path, st, known)
    return known == entry.id


def _check_inside(dest: Path, rel: str) -> Path:
    """The destination path for ``rel``, refusing any parent that is a symlink (escape)."""
    target = dest / rel
    parent = dest
    for part in Path(rel).parts[:-1]:
        parent = parent / part
        if parent.is_symlink():
            raise UnsafePath(f"refusing to write {rel}: {parent} is a symbolic link")
    return target


def _check_link(dest: Path, rel: str, link: str) -> None:
    if os.path.isabs(link):
        raise UnsafePath(f"refusing symlink {rel} -> {link}: absolute link targets are not allowed")
    resolved = os.path.normpath(os.path.join(os.path.dirname(rel), link))
    if resolved == ".." or resolved.startswith("../"):
        raise UnsafePath(f"refusing symlink {rel} -> {link}: it points outside the checkout")


def write_entry(
    store: ObjectStore,
    dest: Path,
    rel: str,
    entry: TreeEntry,
    link: str = "copy",
    mlvc_dir: Path | None = None,
) -> None:
    """Write one file atomically and verified (temp + rename in the same folder).

    ``link`` (with ``mlvc_dir``, the repository's ``.mlvc``) asks for a hardlink or symlink
    to a verified read-only copy instead of a private copy (materialize.py).
    """
    target = _check_inside(dest, rel)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.mlvc-{secrets.token_hex(4)}")
    try:
        if entry.kind == SYMLINK:
            link = store.read_bytes(entry.id).decode()
            _check_link(dest, rel, link)
            os.symlink(link, tmp)
        else:
            place(store, mlvc_dir, entry.id, tmp, link, 0o755 if entry.kind == EXEC else 0o644)
        if target.is_dir() and not target.is_symlink():
            raise UnsafePath(f"cannot write file {rel}: a folder is in the way")
        os.replace(tmp, target)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


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
) -> CheckoutResult:
    """Make ``dest`` hold the run's files. ``head`` is the run ``dest`` is known to match.

    ``cache`` is the stat cache of ``dest`` (in place), ``link`` how files are made.
    """
    sections = tuple(sections)
    want = run_files(store, run, sections)
    have = run_files(store, head, sections) if head is not None else {}
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
        dirty = [p for p in to_write if os.path.lexists(dest / p) and not clean(p)]
        dirty += [p for p in to_remove if not clean(p)]
        if dirty:
            raise DirtyWorkingTree(sorted(dirty))

    total = sum(e.size for e in to_write.values())
    with progress.bar("checkout", total_bytes=total, total_files=len(to_write)):
        for p in sorted(to_write):
            write_entry(store, dest, p, to_write[p], link, mlvc_dir)
            result.written.append(p)
            progress.advance(files=1)
    if cache is not None:
        cache.save()
    for p in sorted(to_remove):
        os.unlink(dest / p)
        result.removed.append(p)
        _prune_empty(dest, (dest / p).parent)
    return result


def _prune_empty(dest: Path, folder: Path) -> None:
    while folder != dest and dest in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


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
