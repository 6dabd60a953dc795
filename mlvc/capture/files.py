"""Which files are the project's code.

In a git work tree, git decides (tracked files plus untracked ones it does not ignore);
elsewhere a walk applies every ``.gitignore`` found, nested ones relative to their folder.
Both modes then drop the same junk (caches, virtualenvs, git's and mlvc's own folders), apply
``.mlvcignore`` files (gitignore syntax, nested the same way; they can only remove files) and
leave out the run's data and artifact paths. Files the project names as its params files
(``[track] params``) are code whatever the ignore files say: a run must restore them.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
import sys
from collections.abc import Iterable
from pathlib import Path

from ..core.objects import is_reserved_name
from ..errors import UnreadablePath
from .git import run_git

JUNK_DIRS = frozenset(
    {
        ".mlvc",
        ".git",
        "__pycache__",
        ".ipynb_checkpoints",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
        ".tox",
        ".nox",
        "node_modules",
        ".hypothesis",
    }
)
JUNK_FILES = frozenset({".DS_Store", ".git"})  # a .git *file* marks a worktree or submodule
# A folder holding one of these is a Python environment, not code: venv/virtualenv, conda.
ENV_MARKERS = ("pyvenv.cfg", "conda-meta")
GITIGNORE, MLVCIGNORE = ".gitignore", ".mlvcignore"
LS_FILES_TIMEOUT = 120.0
_UNLISTABLE = re.compile(r"^warning: could not open directory '(?P<path>.*)': (?P<why>.*)$")


def code_files(root: Path, exclude: Iterable[str] = (), include: Iterable[str] = ()) -> list[str]:
    """Sorted POSIX paths, relative to root, of every file of the project's code.

    ``exclude`` names project-relative files or folders (a run's data and artifacts): nothing
    at or below them is returned. ``include`` names files that are code even when ignored
    (the ``[track] params`` files), unless excluded. Symlinks are listed as paths, never
    followed. When git lists nothing at all (root is ignored by an enclosing repository,
    say), the walk is used.
    """
    root = Path(root)
    excludes = _normalize_excludes(root, exclude)
    if "." in excludes:
        return []
    listed = _git_listing(root, excludes)
    files = _filter_listing(root, listed, excludes) if listed else _walk(root, excludes)
    return sorted({*files, *_included(root, include, excludes)})


def _included(root: Path, include: Iterable[str], excludes: frozenset[str]) -> list[str]:
    """The files of ``include`` that exist (not folders), inside root and not excluded."""
    out = []
    for path in _normalize_excludes(root, include):
        parts = path.split("/")
        if path == "." or any("/".join(parts[:i]) in excludes for i in range(1, len(parts) + 1)):
            continue
        full = os.path.join(root, path)
        if os.path.islink(full) or os.path.isfile(full):
            out.append(path)
    return out


def _normalize_excludes(root: Path, exclude: Iterable[str]) -> frozenset[str]:
    out = set()
    for item in exclude:
        path = os.fspath(item)
        if os.path.isabs(path):
            path = os.path.relpath(path, root)
        path = posixpath.normpath(path.replace(os.sep, "/"))
        if path != ".." and not path.startswith("../"):
            out.add(path)
    return frozenset(out)


def _junk_dir(name: str) -> bool:
    return name in JUNK_DIRS or name.endswith(".egg-info") or is_reserved_name(name)


def _junk_file(name: str) -> bool:
    return name in JUNK_FILES or name.endswith(".pyc") or is_reserved_name(name)


# -- ignore files ----------------------------------------------------------------------------

# pathspec ends its regexes with a group that also matches any path *below* a match, because
# it checks files one by one. The walk checks each folder itself, so it needs exact matches.
_ANY_END = "(?:(?P<ps_d>/)|$)"  # a pattern that matches files and folders
_DIR_END = "(?P<ps_d>/)"  # a pattern ending in "/": folders only
_INSIDE_DIRS = re.compile(r"[^/]/\*\*/$")  # "a/**/": folders below a, not a itself


class _IgnoreFile:
    """One .gitignore/.mlvcignore: its patterns apply to paths below ``base`` (``"a/b/"``).

    Git's rule for one path: the last pattern that matches the path itself decides; what
    lies inside an ignored folder is never looked at. pathspec compiles the patterns (with
    git's wildmatch, escapes and ``**`` rules); matching here is exact, one path at a time.
    """

    __slots__ = ("base", "rules", "file_rules", "quick")

    def __init__(self, base: str, patterns):
        self.base = base
        self.rules = [r for p in patterns if (r := _exact_rule(p)) is not None][::-1]
        self.file_rules = [(rx, negate) for rx, negate, dir_only in self.rules if not dir_only]
        # One regex for all file rules: most paths match none, and one search instead of
        # one per pattern is what keeps a 20k-file walk fast.
        self.quick = _union([rx for rx, _ in self.file_rules])

    def decide(self, rel: str, is_dir: bool) -> bool | None:
        """True: ignored; False: re-included by a ``!`` rule; None: no rule matches."""
        local = rel[len(self.base) :]
        if is_dir:
            for rx, negate, dir_only in self.rules:
                if rx.search(local + "/" if dir_only else local):
                    return not negate
            return None
        if not self.file_rules or (self.quick and self.quick.search(local) is None):
            return None
        for rx, negate in self.file_rules:
            if rx.search(local):
                return not negate
        return None


def _union(regexes: list[re.Pattern]) -> re.Pattern | None:
    plain = re.compile("").flags
    if any(rx.flags != plain for rx in regexes):
        return None
    try:
        return re.compile("|".join(f"(?:{rx.pattern})" for rx in regexes))
    except re.error:  # e.g. a group name used twice
        return None


def _exact_rule(pattern) -> tuple[re.Pattern, bool, bool] | None:
    """(regex matching exactly the paths the pattern names, is a negation, folders only)."""
    if pattern.include is None or pattern.regex is None:
        return None  # blank line or comment
    rx, flags = pattern.regex.pattern, pattern.regex.flags
    if rx.endswith(_ANY_END):
        exact, dir_only = rx[: -len(_ANY_END)] + r"\Z", False
    elif rx.endswith(_DIR_END):
        inside = _INSIDE_DIRS.search(str(pattern.pattern).rstrip())
        exact, dir_only = rx[: -len(_DIR_END)] + (r"/.+/\Z" if inside else r"/\Z"), True
    else:
        exact, dir_only = rx, False  # "*", "a/**": every path (inside a), no folder mark
    return re.compile(exact, flags), not pattern.include, dir_only


def _load_ignore(folder: str, base: str, name: str) -> _IgnoreFile | None:
    try:
        with open(os.path.join(folder, name), encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    except OSError as e:  # unread, its rules would silently let ignored files in
        raise UnreadablePath(base + name, e) from None
    from pathspec import GitIgnoreSpec  # 40 ms to import: only when an ignore file exists

    ignore = _IgnoreFile(base, GitIgnoreSpec.from_lines(lines).patterns)
    return ignore if ignore.rules else None


def _ignored(chain: tuple[_IgnoreFile, ...], rel: str, is_dir: bool = False) -> bool:
    """Git's precedence: the deepest ignore file with a rule for the path decides."""
    for ignore in reversed(chain):
        decision = ignore.decide(rel, is_dir)
        if decision is not None:
            return decision
    return False


def _drop_ignored(chain: tuple[_IgnoreFile, ...], files: list[str]) -> list[str]:
    """The files the chain does not ignore; one quick regex pass per ignore file first."""
    if not chain or not files:
        return files
    suspects: set[str] = set()
    for ignore in chain:
        if ignore.quick is None:
            suspects = set(files)
            break
        n, search = len(ignore.base), ignore.quick.search
        suspects.update(f for f in files if search(f[n:]))
    if not suspects:
        return files
    return [f for f in files if f not in suspects or not _ignored(chain, f)]


# -- outside git: the walk -------------------------------------------------------------------


def _walk(root: Path, excludes: frozenset[str]) -> list[str]:
    out: list[str] = []
    # (relative prefix "a/b/", folder path, .gitignore chain, .mlvcignore chain)
    stack: list[tuple[str, str, tuple, tuple]] = [("", os.fspath(root), (), ())]
    while stack:
        prefix, folder, gitignores, mlvcignores = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as e:
            raise UnreadablePath(prefix.rstrip("/") or ".", e, "list") from None
        names = {e.name for e in entries}
        if prefix and any(m in names for m in ENV_MARKERS):
            continue
        if GITIGNORE in names and (g := _load_ignore(folder, prefix, GITIGNORE)):
            gitignores = (*gitignores, g)
        if MLVCIGNORE in names and (m := _load_ignore(folder, prefix, MLVCIGNORE)):
            mlvcignores = (*mlvcignores, m)
        file_names = []
        for entry in entries:
            name = entry.name
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError as e:
                raise UnreadablePath(prefix + name, e) from None
            if is_dir:
                rel = prefix + name
                if _junk_dir(name) or rel in excludes:
                    continue
                if _ignored(gitignores, rel, True) or _ignored(mlvcignores, rel, True):
                    continue
                stack.append((rel + "/", entry.path, gitignores, mlvcignores))
            elif entry.is_file(follow_symlinks=False) or entry.is_symlink():
                file_names.append(name)  # sockets, fifos and devices are not code
        files = [prefix + n for n in file_names if not _junk_file(n)]
        if excludes:
            files = [f for f in files if f not in excludes]
        out.extend(_drop_ignored(mlvcignores, _drop_ignored(gitignores, files)))
    return out


# -- inside git: filter git's listing --------------------------------------------------------


def _git_listing(root: Path, excludes: frozenset[str]) -> list[str] | None:
    """Tracked plus untracked-not-ignored paths below root, or None outside a work tree."""
    # Excluded folders are also handed to git so a big untracked data folder is never listed.
    specs = [f":(exclude,literal){e}" for e in sorted(excludes)] if len(excludes) < 256 else []
    warnings: list[str] = []
    raw = run_git(
        root,
        "ls-files",
        "-z",
        "--cached",
        "--others",
        "--exclude-standard",
        "--",
        ".",
        *specs,
        timeout=LS_FILES_TIMEOUT,
        stderr=warnings,
    )
    if raw is None:
        return None
    for line in warnings:  # git lists what it can and only warns about the rest
        m = _UNLISTABLE.match(line)
        if m:
            raise UnreadablePath(m["path"].rstrip("/"), PermissionError(0, m["why"]), "list")
    text = raw.decode(sys.getfilesystemencoding(), "surrogateescape")
    return list(dict.fromkeys(p for p in text.split("\0") if p))


def _filter_listing(root: Path, listed: list[str], excludes: frozenset[str]) -> list[str]:
    """Apply junk, environment, .mlvcignore and exclude rules to git's list of paths.

    Environments and nested .mlvcignore files are recognised from the listing itself (a
    folder git lists ``pyvenv.cfg`` or ``conda-meta/`` in), which saves a stat per folder.
    """
    top = os.fspath(root)
    by_folder: dict[str, list[str]] = {}
    for path in listed:
        folder, _, name = path.rstrip("/").rpartition("/")  # nested repos are listed as "sub/"
        if name not in ("", "."):
            by_folder.setdefault(folder, []).append(name)
    envs = {f for f, names in by_folder.items() if ENV_MARKERS[0] in names}
    envs |= {f.rpartition("/")[0] for f in by_folder if f.rpartition("/")[2] == ENV_MARKERS[1]}
    with_rules = {f for f, names in by_folder.items() if MLVCIGNORE in names} | {""}
    rules: dict[str, tuple[_IgnoreFile, ...]] = {}  # folder -> .mlvcignore chain inside it
    kept: dict[str, bool] = {"": True}  # folder -> whether anything below it may be kept

    def chain(folder: str) -> tuple[_IgnoreFile, ...]:
        if folder not in rules:
            inherited = chain(folder.rpartition("/")[0]) if folder else ()
            own = None
            if folder in with_rules:
                full = os.path.join(top, folder)
                own = _load_ignore(full, folder + "/" if folder else "", MLVCIGNORE)
            rules[folder] = (*inherited, own) if own else inherited
        return rules[folder]

    def keep_folder(folder: str) -> bool:
        if folder not in kept:
            parent, _, name = folder.rpartition("/")
            kept[folder] = (
                keep_folder(parent)
                and folder not in excludes
                and folder not in envs
                and not _junk_dir(name)
                and not _ignored(chain(parent), folder, True)
            )
        return kept[folder]

    out = []
    for folder, names in by_folder.items():
        if not keep_folder(folder):
            continue
        base = folder + "/" if folder else ""
        kinds = _kinds(top, folder, names)
        files = []
        for name in names:
            path = base + name
            is_dir = kinds.get(name)
            if is_dir is None or path in excludes or _junk_file(name):
                continue  # is_dir None: tracked but deleted from the work tree
            if not is_dir:
                files.append(path)
            elif keep_folder(path) and os.path.lexists(os.path.join(top, path, ".git")):
                # a submodule or nested repository: its own git rules apply
                inner = {e[len(path) + 1 :] for e in excludes if e.startswith(path + "/")}
                out.extend(f"{path}/{p}" for p in code_files(Path(top, path), inner))
        out.extend(_drop_ignored(chain(folder), files))
    return out


def _kinds(top: str, folder: str, names: list[str]) -> dict[str, bool]:
    """name -> is a real folder, for the names that exist in ``top/folder``.

    One scandir per folder rather than a stat per file: on network and virtual filesystems
    a stat costs microseconds, and a project has ten times fewer folders than files.
    Absent names (deleted, or below a deleted folder) are left out; anything else that
    cannot be looked at raises UnreadablePath.
    """
    full = os.path.join(top, folder) if folder else top
    if len(names) >= 8:
        try:
            with os.scandir(full) as it:
                return {e.name: e.is_dir(follow_symlinks=False) for e in it}
        except (FileNotFoundError, NotADirectoryError):
            return {}
        except OSError as e:
            raise UnreadablePath(folder or ".", e, "list") from None
    kinds = {}
    for name in names:
        try:
            kinds[name] = stat.S_ISDIR(os.lstat(os.path.join(full, name)).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as e:
            raise UnreadablePath(f"{folder}/{name}" if folder else name, e) from None
    return kinds
