"""The errors mlvc raises, each a complete sentence for the user, with a documented exit code.

The CLI maps every ``MlvcError`` to ``exit_code`` and prints ``str(error)`` on one line;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class MlvcError(Exception):
    """Base class: a user-facing failure with a one-line message."""

    exit_code = 1


class UsageError(MlvcError):
    """The command was given bad input (a malformed KEY=VALUE, an unreadable params file...)."""

    exit_code = 2


class NotARepository(MlvcError):
    exit_code = 3

    def __init__(self, path: str):
        super().__init__(
            f"not an mlvc repository (or any parent up to /): {path}; run `mlvc init` first"
        )
        self.path = path


class AlreadyARepository(MlvcError):
    exit_code = 3


class UnknownRun(MlvcError):
    """A run name, id prefix, tag or HEAD expression that names no run."""

    exit_code = 4

    def __init__(self, spec: str, candidates: list[str] | None = None, why: str = ""):
        hint = f"; {why}" if why else ""
        if candidates:
            hint += "; did you mean: " + ", ".join(candidates[:8])
        super().__init__(f"unknown run {spec!r}{hint}")
        self.spec = spec
        self.candidates = candidates or []


class AmbiguousRun(MlvcError):
    exit_code = 4

    def __init__(self, spec: str, candidates: list[str]):
        shown = ", ".join(candidates[:8]) + (" ..." if len(candidates) > 8 else "")
        super().__init__(f"run {spec!r} is ambiguous; it could be: {shown}")
        self.spec = spec
        self.candidates = candidates


class PathNotInRun(MlvcError):
    exit_code = 4


class CorruptObject(MlvcError):
    """An object whose bytes do not hash to its id (or cannot be decoded)."""

    exit_code = 5

    def __init__(self, oid: str, path: str, detail: str = "", expected=None, got=None):
        why = f": {detail}" if detail else ""
        super().__init__(
            f"corrupt object {oid} at {path}{why}; run `mlvc fsck` to list every damaged object"
        )
        self.oid = oid
        self.path = path
        self.expected = expected
        self.got = got


class MissingObject(MlvcError):
    exit_code = 5

    def __init__(self, oid: str):
        super().__init__(
            f"object {oid} is missing from the store; run `mlvc fsck` to list every problem"
        )
        self.oid = oid


class FileChanged(MlvcError):
    """A file changed (size, mtime, ctime or inode) while mlvc read it."""

    exit_code = 1

    def __init__(self, path):
        super().__init__(
            f"file {path} changed while mlvc read it (is something still writing it?); "
            "run the command again once it is complete"
        )
        self.path = str(path)


class DirtyWorkingTree(MlvcError):
    """Checkout would overwrite changes that no run records."""

    exit_code = 6

    def __init__(self, paths: list[str]):
        shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        super().__init__(
            f"checkout would overwrite uncommitted changes in {shown}; "
            "commit them, or pass --force to discard them"
        )
        self.paths = paths


class UnreadablePath(UsageError):
    """A file or folder a run should record cannot be read or listed; nothing is recorded."""

    def __init__(self, path: str, err: OSError, what: str = "read"):
        why = (err.strerror or type(err).__name__).lower()
        super().__init__(
            f"cannot {what} {path}: {why}; fix its permissions, or leave it out of the run "
            "(.mlvcignore for code, other --data/--artifacts paths for data)"
        )
        self.path = path


class UnsafePath(MlvcError):
    """A tree entry that would escape the checkout target (``..``, absolute, via a link)."""

    exit_code = 5


class QueryError(MlvcError):
    exit_code = 7


class IndexBusy(MlvcError):
    exit_code = 8


class CommandFailed(MlvcError):
    """The command of ``mlvc run`` exited non-zero (the run is recorded as ``failed``)."""

    exit_code = 10


class ReproductionDiffers(MlvcError):
    """``mlvc reproduce`` re-ran a run and the result was not the same (verdict DIFFERENT)."""

    exit_code = 11


class NotReproducible(MlvcError):
    """A run that cannot be re-executed: it records no command, or its files are gone."""

    exit_code = 12


class NothingToCompare(MlvcError):
    """``mlvc reproduce``: the run has no outputs and no metrics, so nothing was checked."""

    exit_code = 15


class EnvironmentBuildFailed(MlvcError):
    """The recorded environment could not be rebuilt (a version pip cannot install, say)."""

    exit_code = 13


class UnsupportedRepository(MlvcError):
    """The repository's config declares a format or hash this mlvc cannot read (or is not TOML)."""

    exit_code = 14


# One table, documented in docs/cli.md: keep the two in step.
EXIT_CODES = {
    0: "success",
    1: "general error",
    2: "bad input (usage, KEY=VALUE, params file)",
    3: "not an mlvc repository / already one",
    4: "unknown or ambiguous run or model, or path not in run",
    5: "corrupt, missing or unsafe object",
    6: "uncommitted changes would be overwritten (use --force)",
    7: "SQL query failed",
    8: "index busy for too long",
    9: "fsck found problems",
    10: "the command of `mlvc run` failed (its own exit code is recorded in the run)",
    11: "`mlvc reproduce`: the re-run came out DIFFERENT",
    12: "the run cannot be reproduced (no recorded command)",
    13: "the recorded environment could not be rebuilt (`--env recorded`)",
    14: "unsupported repository: .mlvc/config declares another format version or hash, "
    "or is not TOML",
    15: "`mlvc reproduce`: NOTHING TO COMPARE (the run has no outputs and no metrics)",
    16: "a model from outside this repository would run pickled code: pass --trust if you trust it",
    130: "interrupted (Ctrl-C)",
}


class GcBusy(MlvcError):
    exit_code = 8


class StoreNeedsRepair(MlvcError):
    """gc found pack indexes it cannot trust: it deletes nothing until fsck has run."""

    exit_code = 5
