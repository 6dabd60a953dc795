"""Every error mlvc raises: one hierarchy, each a complete sentence for the user.

Each class carries the ``exit_code`` the CLI exits with and the ``http_status`` a server
answers with. The class that first uses an exit code owns it and says what it means
(``meaning``); ``EXIT_CODES``, documented in docs/cli.md, is built from those owners, so
the table and the classes cannot drift apart. Anything that is not an ``MlvcError`` is a bug
and keeps its traceback.
"""

from __future__ import annotations

from typing import ClassVar


class MlvcError(Exception):
    """Base class: a user-facing failure with a one-line message."""

    exit_code: ClassVar[int] = 1
    http_status: ClassVar[int] = 500
    meaning: ClassVar[str] = "general error"

    @property
    def message(self) -> str:
        return str(self)


# -- bad input -------------------------------------------------------------------------------


class UsageError(MlvcError):
    """The command was given bad input (a malformed KEY=VALUE, an unreadable params file...)."""

    exit_code = 2
    http_status = 400
    meaning = "bad input (usage, KEY=VALUE, params file)"


class ParamConflict(UsageError):
    """A live run logged a param again with another value."""


class UnreadablePath(UsageError):
    """A file or folder a run should record cannot be read or listed; nothing is recorded."""

    def __init__(self, path: str, err: OSError, what: str = "read"):
        why = (err.strerror or type(err).__name__).lower()
        super().__init__(
            f"cannot {what} {path}: {why}; fix its permissions, or leave it out of the run "
            "(.mlvcignore for code, other --data/--artifacts paths for data)"
        )
        self.path = path


class AddressRefused(UsageError):
    """A webhook URL that is not https, or whose host is or resolves to a private address."""


class UnknownWebhook(UsageError):
    """No webhook endpoint has the given id."""


class UnknownMessage(UsageError):
    """No webhook delivery of the given message id is known."""


class SignatureError(UsageError):
    """Input that does not fit the model's signature: a missing column, a wrong type."""


class BadPayload(UsageError):
    """A scoring request body that cannot be read."""


class UnsupportedMediaType(UsageError):
    """A scoring request in a content type the server does not read."""

    http_status = 415


# -- the repository --------------------------------------------------------------------------


class NotARepository(MlvcError):
    exit_code = 3
    http_status = 404
    meaning = "not an mlvc repository / already one"

    def __init__(self, path: str):
        super().__init__(
            f"not an mlvc repository (or any parent up to /): {path}; run `mlvc init` first"
        )
        self.path = path


class AlreadyARepository(MlvcError):
    exit_code = 3
    http_status = 409


class UnsupportedRepository(MlvcError):
    """The repository's config declares a format or hash this mlvc cannot read (or is not TOML)."""

    exit_code = 14
    meaning = (
        "unsupported repository: .mlvc/config declares another format version or hash, "
        "or is not TOML"
    )


# -- names that resolve to nothing -----------------------------------------------------------


def quoted(spec: str) -> str:
    r"""``repr(spec)`` for a message, with an undecodable byte of a command-line argument
    (a lone surrogate, os.fsdecode's) shown as git and fsck show it, ``\xff``, not
    ``\udcff`` (a backslash the user typed stays as repr shows it)."""
    text = repr(spec)
    if "\\udc" not in text:
        return text
    import re

    return re.sub(r"(?<!\\)((?:\\\\)*)\\udc([89a-f][0-9a-f])", r"\1\\x\2", text)


class UnknownRun(MlvcError):
    """A run name, id prefix, tag or HEAD expression that names no run."""

    exit_code = 4
    http_status = 404
    meaning = "unknown or ambiguous run or model, or path not in run"

    def __init__(self, spec: str, candidates: list[str] | None = None, why: str = ""):
        hint = f"; {why}" if why else ""
        if candidates:
            hint += "; did you mean: " + ", ".join(candidates[:8])
        super().__init__(f"unknown run {quoted(spec)}{hint}")
        self.spec = spec
        self.candidates = candidates or []


class AmbiguousRun(MlvcError):
    exit_code = 4
    http_status = 400

    def __init__(self, spec: str, candidates: list[str]):
        shown = ", ".join(candidates[:8]) + (" ..." if len(candidates) > 8 else "")
        super().__init__(f"run {quoted(spec)} is ambiguous; it could be: {shown}")
        self.spec = spec
        self.candidates = candidates


class PathNotInRun(MlvcError):
    exit_code = 4
    http_status = 404


class UnknownModel(MlvcError):
    """A model name, version, alias or URI that names nothing."""

    exit_code = 4
    http_status = 404


class UnknownObject(MlvcError):
    """A file id prefix that no file of any run or registered model has (``mlvc which``)."""

    exit_code = 4
    http_status = 404


class AmbiguousObject(UnknownObject):
    """A file id prefix that several files share (``mlvc which``): no one file is named."""

    http_status = 400


# -- damage and danger -----------------------------------------------------------------------


class CorruptObject(MlvcError):
    """An object whose bytes do not hash to its id (or cannot be decoded)."""

    exit_code = 5
    meaning = "corrupt, missing or unsafe object"

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


class UnsafePath(MlvcError):
    """A tree entry that would escape the checkout target (``..``, absolute, via a link)."""

    exit_code = 5
    http_status = 400


class StoreNeedsRepair(MlvcError):
    """gc found pack indexes it cannot trust: it deletes nothing until fsck has run."""

    exit_code = 5


class PackError(MlvcError):
    """A pack index file that cannot be trusted (torn, truncated or damaged)."""

    exit_code = 5


class FsckFailed(MlvcError):
    """``mlvc fsck`` found problems (it lists every one before exiting)."""

    exit_code = 9
    meaning = "fsck found problems"


# -- the working tree ------------------------------------------------------------------------


class DirtyWorkingTree(MlvcError):
    """Checkout would overwrite changes that no run records."""

    exit_code = 6
    http_status = 409
    meaning = "uncommitted changes would be overwritten (use --force)"

    def __init__(self, paths: list[str]):
        shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        super().__init__(
            f"checkout would overwrite uncommitted changes in {shown}; "
            "commit them, or pass --force to discard them"
        )
        self.paths = paths


class PathInTheWay(MlvcError):
    """A folder holding files no run records stands where checkout must write a file."""

    exit_code = 6
    http_status = 409


class FileChanged(MlvcError):
    """A file changed (size, mtime, ctime or inode) while mlvc read it."""

    exit_code = 19
    http_status = 409
    meaning = "a file changed while mlvc read it (run the command again once it is complete)"

    def __init__(self, path):
        super().__init__(
            f"file {path} changed while mlvc read it (is something still writing it?); "
            "run the command again once it is complete"
        )
        self.path = str(path)


# -- the index and locks ---------------------------------------------------------------------


class QueryError(MlvcError):
    exit_code = 7
    http_status = 400
    meaning = "SQL query failed"


class IndexDamaged(QueryError):
    """The index file failed a check while a query read it (the caller rebuilds it)."""

    http_status = 500


class IndexBusy(MlvcError):
    exit_code = 8
    http_status = 503
    meaning = "index busy for too long"


class GcBusy(MlvcError):
    """gc could not have the repository to itself: commits kept it busy."""

    exit_code = 17
    http_status = 503
    meaning = "gc could not start: commits kept the repository busy (run it again later)"


class RefLocked(MlvcError):
    """A ref's lock file is held by another process (or left by a dead one)."""

    exit_code = 18
    http_status = 503
    meaning = "a ref is locked by another process (or a stale .lock file)"


class RefExists(MlvcError):
    """A create-only write found the ref already there (another writer won the race)."""

    http_status = 409


class RefMoved(MlvcError):
    """A compare-and-swap write found the ref somewhere else than the writer expected."""

    http_status = 409


# -- running and reproducing -----------------------------------------------------------------


class CommandFailed(MlvcError):
    """The command of ``mlvc run`` exited non-zero (the run is recorded as ``failed``)."""

    exit_code = 10
    meaning = "the command of `mlvc run` failed (its own exit code is recorded in the run)"


class ReproductionDiffers(MlvcError):
    """``mlvc reproduce`` re-ran a run and the result was not the same (verdict DIFFERENT)."""

    exit_code = 11
    http_status = 422
    meaning = "`mlvc reproduce`: the re-run came out DIFFERENT"


class NotReproducible(MlvcError):
    """A run that cannot be re-executed: it records no command, or its files are gone."""

    exit_code = 12
    http_status = 422
    meaning = "the run cannot be reproduced (no recorded command)"


class EnvironmentBuildFailed(MlvcError):
    """The recorded environment could not be rebuilt (a version pip cannot install, say)."""

    exit_code = 13
    meaning = "the recorded environment could not be rebuilt (`--env recorded`)"


class NothingToCompare(MlvcError):
    """``mlvc reproduce``: the run has no outputs and no metrics, so nothing was checked."""

    exit_code = 15
    http_status = 422
    meaning = "`mlvc reproduce`: NOTHING TO COMPARE (the run has no outputs and no metrics)"


class BisectFailed(MlvcError):
    """``mlvc bisect`` could not name a culprit: a probe failed, or A or B re-ran to a
    different value of the metric (the runs are not deterministic)."""

    exit_code = 22
    http_status = 422
    meaning = "`mlvc bisect`: a probe failed, or A or B did not reproduce their own metric"


class ProbeFailed(BisectFailed):
    """A probe's command exited non-zero or wrote no value of the metric."""


class NotDeterministic(BisectFailed):
    """Re-running A or B unchanged gave another value of the metric."""


# -- models ----------------------------------------------------------------------------------


class ModelError(MlvcError):
    """A model that cannot be saved, read or loaded (bad directory, unknown flavor...)."""


class ModelFailed(ModelError):
    """The model itself raised while scoring (its own bug, or input it cannot take)."""

    @classmethod
    def of(cls, e: BaseException) -> ModelFailed:
        return cls(f"the model failed: {one_line(e)}")


class UntrustedModel(MlvcError):
    """A model whose files would run code (a pickle) and that does not come from this
    repository; loading it needs an explicit opt-in (``trust=True``, ``--trust``)."""

    exit_code = 16
    http_status = 403
    meaning = (
        "a model from outside this repository would run pickled code: pass --trust if you trust it"
    )


class MissingExtra(MlvcError):
    """An optional dependency a command needs is not installed."""

    exit_code = 20
    http_status = 501
    meaning = "an optional dependency is not installed (the message names the pip extra)"


class ImportSourceError(MlvcError):
    """An import source (an MLflow store or server) cannot be read: missing, unreachable,
    refusing us, or of a schema this mlvc does not know."""

    exit_code = 21
    http_status = 502
    meaning = "an import source could not be read (missing, unreachable, or an unknown schema)"


# -- the command server (mlvc daemon) -------------------------------------------------------


class CommandServerFailed(MlvcError):
    """``mlvc daemon start`` saw no command server answer (its log file says why)."""


# -- the client of a server (mlvc.api.remote) -----------------------------------------------


class ServerAlreadyRunning(MlvcError):
    """Another ``mlvc server`` serves this repository (one process is its index's writer)."""

    http_status = 409


class ServerUnreachable(MlvcError):
    """The server MLVC_TRACKING_URI names does not answer."""

    http_status = 502


class ServerRefused(MlvcError):
    """A server answered with an error: its message, and the exit code the same failure
    has locally (400 bad input 2, 404 unknown 4, 409 conflict 6, else 1)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status
        self.exit_code = {400: 2, 404: 4, 409: 6}.get(status, 1)


# -- remotes (mlvc.remotes) --------------------------------------------------------------


class RemoteError(MlvcError):
    """A remote could not be reached or answered with an error (the message says which)."""

    http_status = 502


class MissingOnRemote(RemoteError):
    """A path the remote should hold is not there."""

    http_status = 404


class RemoteRejected(MlvcError):
    """A push lost a race on a moving name: fetch first (like git's non-fast-forward)."""

    exit_code = 6
    http_status = 409


# -- hooks (mlvc.events.hooks) ---------------------------------------------------------------


class HookRejected(MlvcError):
    """A ``pre-commit``, ``pre-alias`` or ``pre-push`` hook vetoed the change: nothing
    changed. The message is one line, then the hook's own lines."""

    exit_code = 23
    http_status = 409
    meaning = "a pre-commit, pre-alias or pre-push hook refused the change"

    def __init__(self, hook: str, why: str, lines: list[str]):
        said = f": {lines[0]}" if lines else ""
        super().__init__(f"the {hook} hook refused the change ({why}){said}")
        self.hook, self.lines = hook, lines
        self.details = [f"{hook}: {ln}" for ln in lines[1:]]  # printed under the error

    @property
    def message(self) -> str:
        """The line and the hook's further lines (what a server answers)."""
        return "\n".join([str(self), *self.details])


def one_line(e: BaseException, limit: int = 500) -> str:
    """``Type: first line of the message``, cut to ``limit`` characters."""
    text = str(e).strip()
    line = f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def error_classes() -> list[type[MlvcError]]:
    """Every MlvcError class, base first."""
    out, todo = [], [MlvcError]
    while todo:
        cls = todo.pop(0)
        out.append(cls)
        todo.extend(cls.__subclasses__())
    return out


def _exit_codes() -> dict[int, str]:
    owners: dict[int, str] = {}
    for c in error_classes():
        if "meaning" in vars(c):
            if c.exit_code in owners:  # two owners of one code: a merge or a slip, never meant
                raise AssertionError(f"exit code {c.exit_code} has two owners ({c.__name__})")
            owners[c.exit_code] = c.meaning
    return {0: "success", **dict(sorted(owners.items())), 130: "interrupted (Ctrl-C)"}


INTERRUPTED = 130
# exit code -> what it means; docs/cli.md is generated from it
EXIT_CODES = _exit_codes()
