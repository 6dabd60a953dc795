"""Recording a run: capture code, data, artifacts and environment, then write the run.

Write order (docs/architecture.md): every object → one filesystem sync → journal entry →
``refs/runs/<id>`` → HEAD, name and tag refs → an attempt to ingest into the index. A crash
at any point leaves either no run or a complete one; the index catches up on its next sync.
"""

from __future__ import annotations

import contextvars
import json
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import fsmonitor, speedups
from ..core.faults import crash_point
from ..core.ids import ObjectId
from ..core.names import safe_relpath
from ..core.objects import Env, Run, TreeEntry, is_reserved_name
from ..core.params import (
    check_case,
    check_metrics,
    check_params,
    flatten,
    load_metrics_file,
    load_params_file,
)
from ..errors import UnreadablePath, UsageError
from ..refs.runlist import remember
from ..refs.store import check_ref_name
from ..store.typed import write_object
from ..workspace.project import ProjectConfig, load_project
from ..workspace.trees import Packed, build_tree
from .notify import run_published

if TYPE_CHECKING:
    from ..workspace.context import RepoContext
    from ..workspace.statcache import FileHasher

JUNK_IN_DATA = {".mlvc", ".git", "__pycache__", ".ipynb_checkpoints", ".DS_Store"}


@dataclass
class RunSpec:
    """Everything a caller can say about a run; the rest is captured."""

    message: str = ""
    name: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    params_files: Iterable[str] = ()
    metrics_files: Iterable[str] = ()
    data: Iterable[str] = ()
    artifacts: Iterable[str] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    command: tuple[str, ...] = ()
    exit_code: int | None = None
    status: str = "finished"
    started: int | None = None
    ended: int | None = None
    series: ObjectId | None = None
    parents: tuple[ObjectId, ...] | None = None
    reproduces: ObjectId | None = None
    models: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    capture_code: bool = True
    capture_env: bool = True
    inputs: Inputs | None = None  # captured earlier (a live run captures at its start)
    artifact_entries: Mapping[str, TreeEntry] = field(default_factory=dict)  # logged by API
    series_metrics: Mapping[str, float] = field(default_factory=dict)  # last value per key
    move_head: bool = True
    project_files: bool = True  # read mlvc.toml's [track] params/metrics files


def now_us() -> int:
    return time.time_ns() // 1000


def project_path(root: Path, path: str | os.PathLike, cwd: Path | None = None) -> str:
    """A user-given path (relative to cwd, or absolute) as a project-relative POSIX path."""
    full = (Path(cwd or os.getcwd()) / path).absolute()
    try:
        rel = Path(os.path.normpath(full)).relative_to(root)
    except ValueError:
        raise UsageError(f"path {path} is outside the project {root}; move it inside") from None
    if not os.path.lexists(root / rel):
        raise UsageError(f"path {path} does not exist; check the spelling or create it first")
    if str(rel) == ".":
        raise UsageError(f"path {path} is the whole project; name a file or folder inside it")
    refuse_reserved(path, rel.as_posix())
    return safe_relpath(rel.as_posix())


def refuse_reserved(given: str | os.PathLike, rel: str) -> None:
    """Refuse a tracked path at or inside ``.mlvc`` or ``.git`` (any case, any depth)."""
    for part in rel.split("/"):
        if is_reserved_name(part):
            raise UsageError(
                f"path {given} is inside {part}, git's or mlvc's own folder; mlvc never "
                "records those: name a file or folder of the project instead"
            )


def _junk_in_data(name: str) -> bool:
    return name in JUNK_IN_DATA or is_reserved_name(name)


def expand(root: Path, rels: Iterable[str]) -> list[str]:
    """Every file at or below each project-relative path (symlinks kept, not followed).

    A folder that cannot be listed raises UnreadablePath: a run never silently lacks data.
    """
    out: set[str] = set()
    base = os.fspath(root)
    for rel in _folders_given(base, rels, out):
        stack = [rel]  # iterative: any depth
        while stack:
            folder = stack.pop()
            try:
                with os.scandir(os.path.join(base, folder)) as it:
                    entries = list(it)
            except OSError as e:
                raise UnreadablePath(folder, e, "list") from None
            for entry in entries:
                if _junk_in_data(entry.name):
                    continue
                path = f"{folder}/{entry.name}"
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError as e:
                    raise UnreadablePath(path, e) from None
                if is_dir:
                    stack.append(path)
                else:
                    out.add(path)  # files, and links (to folders too), never followed
    return sorted(out)


def _folders_given(base: str, rels: Iterable[str], files: set[str]) -> Iterator[str]:
    """The paths of ``rels`` that are real folders; the others (files, links) go in files."""
    for rel in rels:
        full = os.path.join(base, rel)
        if os.path.islink(full) or not os.path.isdir(full):
            files.add(rel)
        else:
            yield rel


def walk_data(
    root: Path, rels: Iterable[str]
) -> tuple[list[str], dict[str, list[tuple[str, os.stat_result]] | Packed]]:
    """What ``expand`` finds, listed and ``lstat``-ed in one pass for ``build_tree``:
    (paths not found by listing a folder, {folder: [(name, lstat), ...]}).

    Each folder is opened once and its entries are statted relative to it (no path lookup
    per file); junk and reserved names are dropped as ``expand`` drops them. The listing
    is what ``build_tree(listing=...)`` takes, so no file is looked at twice. A name gone
    between the listing and its stat is returned as a path, for ``build_tree`` to report;
    a folder that cannot be listed raises UnreadablePath: a run never silently lacks data.

    With the C walker (mlvc._walk, unless MLVC_PURE=1) a folder's listing is a ``Packed``
    instead: its regular files' stats as bytes, no Python object per file (same walk).
    """
    loose: set[str] = set()
    listing: dict[str, list[tuple[str, os.stat_result]] | Packed] = {}
    base = os.fspath(root)
    lstat, isdir = os.lstat, stat.S_ISDIR
    fast = speedups.extension("mlvc._walk")
    monitor = fsmonitor.SESSION.get()
    for rel in _folders_given(base, rels, loose):
        if fast is not None:
            try:
                if monitor is not None:  # served: only the folders changed since
                    found = monitor.walk(fast, base, rel, _junk_in_data)
                else:
                    found = fast.walk(base, rel, _junk_in_data)
            except OSError as e:
                raise UnreadablePath(e.filename, e, e.filename2) from None
            for folder, packed, links, gone, newest in found:
                if folder not in listing:  # a folder given twice (one inside the other)
                    listing[folder] = Packed(packed, links, newest)
                    loose.update(f"{folder}/{name}" for name in gone)
            continue
        stack = [rel]  # iterative: any depth
        while stack:
            folder = stack.pop()
            if folder in listing:
                continue  # given twice (a folder and one inside it)
            try:  # O_NOFOLLOW: a folder swapped for a link since it was listed is refused
                fd = os.open(os.path.join(base, folder), _DIR_FLAGS)
            except OSError as e:
                raise UnreadablePath(folder, e, "list") from None
            try:
                try:
                    names = os.listdir(fd)
                except OSError as e:
                    raise UnreadablePath(folder, e, "list") from None
                files = listing[folder] = []
                for name in _data_names(names):
                    try:
                        st = lstat(name, dir_fd=fd)
                    except FileNotFoundError:
                        loose.add(f"{folder}/{name}")  # gone since the listing
                        continue
                    except OSError as e:
                        raise UnreadablePath(f"{folder}/{name}", e) from None
                    if isdir(st.st_mode):
                        stack.append(f"{folder}/{name}")
                    else:
                        files.append((name, st))  # files, and links (never followed)
            finally:
                os.close(fd)
    return sorted(loose), listing


_DIR_FLAGS = (
    os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
)


def _data_names(names: list[str]) -> list[str]:
    """The names of a folder that are not junk; one pass over the joined names first (most
    folders hold nothing to drop, and 20k calls of is_reserved_name cost ~6 ms)."""
    joined = "\0".join(names)
    if joined.isascii():
        low = joined.lower()
        if "git" not in low and "mlvc" not in low and not JUNK_IN_DATA.intersection(names):
            return names
    return [n for n in names if not _junk_in_data(n)]


def _refuse_reserved_file(root: Path, path: Path, given: str | os.PathLike) -> None:
    """Params/metrics files are tracked paths too: none inside ``.mlvc``/``.git``."""
    try:
        rel = Path(os.path.normpath(path.absolute())).relative_to(root)
    except ValueError:
        return  # outside the project: read, never recorded as a path
    refuse_reserved(given, rel.as_posix())


@dataclass(frozen=True)
class Inputs:
    """What a run read, captured when it starts: code, git facts, environment, data."""

    code: ObjectId | None
    git: Mapping[str, Any]
    env: ObjectId | None
    data: ObjectId | None
    data_paths: tuple[str, ...]
    artifact_paths: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (ids as hex), as a staged run keeps them; ``from_dict`` reads it."""
        return {
            "code": self.code.hex if self.code else None,
            "git": dict(self.git),
            "env": self.env.hex if self.env else None,
            "data": self.data.hex if self.data else None,
            "data_paths": list(self.data_paths),
            "artifact_paths": list(self.artifact_paths),
        }

    @classmethod
    def from_dict(cls, value: Any) -> Inputs:
        """The inputs ``to_dict`` wrote, read defensively: what is missing or malformed (a
        damaged staged run) reads as absent, never as an error."""
        d = value if isinstance(value, dict) else {}
        git = d.get("git")
        return cls(
            _oid(d.get("code")),
            git if isinstance(git, dict) else {},
            _oid(d.get("env")),
            _oid(d.get("data")),
            _strings(d.get("data_paths")),
            _strings(d.get("artifact_paths")),
        )


def _oid(text: Any) -> ObjectId | None:
    try:
        return ObjectId.parse(text) if isinstance(text, str) and text else None
    except ValueError:
        return None


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def capture_inputs(
    ctx: RepoContext,
    data: Iterable[str] = (),
    artifacts: Iterable[str] = (),
    cwd: Path | None = None,
    code: bool = True,
    env: bool = True,
) -> Inputs:
    """Store the project's code, data and environment; paths are relative to ``cwd``."""
    with _writing(ctx) as hasher:
        return _capture_inputs(ctx, data, artifacts, cwd, code, env, hasher)


@contextmanager
def _writing(ctx: RepoContext) -> Iterator[FileHasher]:
    """Hold gc off while objects are written, hash through the stat cache, then save it."""
    from ..store.locks import writing

    with writing(ctx.dir, ctx.store):
        hasher = ctx.file_hasher()
        yield hasher
        if hasher is not None and hasher.cache is not None:
            hasher.cache.save()


def _capture_inputs(
    ctx: RepoContext,
    data: Iterable[str],
    artifacts: Iterable[str],
    cwd: Path | None,
    code: bool,
    env: bool,
    hasher: FileHasher,
) -> Inputs:
    root, store = ctx.root, ctx.store
    cfg = load_project(root)
    # configured paths are relative to the root; configured artifacts may not exist yet
    data_paths = sorted(
        {project_path(root, p, root) for p in cfg.data} | {project_path(root, p, cwd) for p in data}
    )
    configured = [p for p in cfg.artifacts if os.path.lexists(root / p)]
    art_paths = sorted(
        {project_path(root, p, root) for p in configured}
        | {project_path(root, p, cwd) for p in artifacts}
    )
    overlap = set(data_paths) & set(art_paths)
    if overlap:
        raise UsageError(f"{sorted(overlap)[0]} is given as both data and artifacts; pick one")
    # The code, git facts and environment are captured on a helper thread while the data is
    # walked and stored here: they wait on git and scan installed packages, and the C walk
    # makes its system calls without the GIL, so on two cores the two run side by side. The
    # helper is waited for on the way out, so nothing is written once this returns or raises.
    with _Helper(_capture_rest, ctx, data_paths, art_paths, cfg, code, env, hasher) as rest:
        loose, listing = walk_data(root, data_paths)  # every file listed and statted once
        data_tree = build_tree(store, root, loose, hasher=hasher, listing=listing)
        code_tree, git, env_id = rest.result()
    return Inputs(code_tree, git, env_id, data_tree, tuple(data_paths), tuple(art_paths))


def _capture_rest(
    ctx: RepoContext,
    data_paths: list[str],
    art_paths: list[str],
    cfg: ProjectConfig,
    code: bool,
    env: bool,
    hasher: FileHasher,
) -> tuple[ObjectId | None, dict, ObjectId | None]:
    """What a capture stores besides the data: the code tree, git facts and environment."""
    from ..capture import capture_env, code_files, git_facts

    root, store = ctx.root, ctx.store
    code_tree, git = None, {}
    if code:
        files = code_files(root, exclude=[*data_paths, *art_paths], include=cfg.params)
        code_tree = build_tree(store, root, files, hasher=hasher)
        git = dict(git_facts(root))
        if git.get("patch"):
            git["patch"] = store.add_bytes(git["patch"].encode()).hex
    env_id = None
    if env:
        found = capture_env(
            root, cfg.env_variables, cfg.env_files, cache=ctx.layout.dists, tmp=ctx.layout.tmp
        )
        env_id = write_object(store, Env(found))
    return code_tree, git, env_id


def _ask_author(ctx: RepoContext):
    """A started thread that looks the author up (its answer is cached for the process),
    or None when the settings name one."""
    import threading

    if ctx.settings.author:
        return None
    thread = threading.Thread(target=ctx.author, name="mlvc-author", daemon=True)
    thread.start()
    return thread


class _Helper:
    """``fn(*args, **kwargs)`` on a thread, in a copy of the caller's context (its progress
    bar settings); ``result()`` waits for it and returns or raises what it did, and leaving
    the ``with`` block waits for it whatever happens (a one-job ThreadPoolExecutor without
    importing concurrent.futures, ~3 ms of a commit's start)."""

    def __init__(self, fn, *args, **kwargs):
        import threading

        self._value = None
        self._error: BaseException | None = None
        run = contextvars.copy_context().run

        def target() -> None:
            try:
                self._value = run(fn, *args, **kwargs)
            except BaseException as e:  # re-raised by result() in the caller's thread
                self._error = e

        self._thread = threading.Thread(target=target, name="mlvc-data", daemon=True)
        self._thread.start()

    def result(self):
        self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self._value

    def __enter__(self) -> _Helper:
        return self

    def __exit__(self, *exc) -> None:
        self._thread.join()


def gather_params(ctx: RepoContext, spec: RunSpec, cwd: Path | None) -> tuple[dict, dict]:
    """Params and metrics from mlvc.toml files, the spec's files, then the spec's values."""
    cfg = load_project(ctx.root) if spec.project_files else ProjectConfig()
    base = Path(cwd or os.getcwd())
    for f in [*cfg.params, *cfg.metrics]:
        _refuse_reserved_file(ctx.root, ctx.root / f, f)
    for f in [*spec.params_files, *spec.metrics_files]:
        _refuse_reserved_file(ctx.root, base / f, f)
    params: dict[str, Any] = {}
    for f in cfg.params:
        params.update(load_params_file(ctx.root / f))
    for f in spec.params_files:
        params.update(load_params_file(base / f))
    params.update(flatten(dict(spec.params)))  # as files and live runs: nested keys dotted
    metrics: dict[str, float] = {}
    for f in cfg.metrics:
        metrics.update(load_metrics_file(ctx.root / f))
    for f in spec.metrics_files:
        metrics.update(load_metrics_file(base / f))
    metrics.update(check_metrics(spec.metrics))
    check_case({**spec.series_metrics, **metrics}, "metric")
    return check_params(params), metrics


def record_run(
    ctx: RepoContext,
    spec: RunSpec,
    cwd: Path | None = None,
    on_stored: Callable[[ObjectId], None] | None = None,
) -> ObjectId:
    """Capture and store one run; returns its id. The library behind ``mlvc commit``.

    ``on_stored(id)`` is called once the run object is stored and synced, before any ref
    names it (a staged run notes its id there, so a recorder killed later never records
    it twice)."""
    with _writing(ctx) as hasher:
        finish_publishing(ctx)  # a commit killed half way: its refs before ours
        return _record_run(ctx, spec, cwd, hasher, on_stored)


def _record_run(
    ctx: RepoContext,
    spec: RunSpec,
    cwd: Path | None,
    hasher: FileHasher,
    on_stored: Callable[[ObjectId], None] | None = None,
) -> ObjectId:
    run = _build_run(ctx, spec, cwd, hasher)
    oid = ctx.store.add_bytes(_encoded(run))
    # the intent's bytes go to disk with the objects' and its name right after the objects
    # are visible, in the store's sync: no wait for the disk of its own (PackedStore.sync)
    intent = _Intent(ctx, [(oid, run, spec.move_head)], durable=False)
    try:
        ctx.store.sync(publish=intent.place, files=[intent.tmp] if intent.tmp else [])
    finally:
        intent.discard()
    if on_stored is not None:
        on_stored(oid)
    _publish_staged(ctx, intent)
    return oid


def record_runs(
    ctx: RepoContext, items: Sequence[tuple[RepoContext, RunSpec]], ingest: bool = True
) -> list[tuple[ObjectId, Run]]:
    """Record runs given whole (an importer's): each stored as ``record_run`` stores it
    (``items`` pair a spec with the context of its author), then one filesystem sync for
    them all, their refs in one batch, and one index update (none if not ``ingest``: the
    caller updates the index later, or a reader does). Returns each run's id and object."""
    with _writing(ctx) as hasher:
        finish_publishing(ctx)
        stored = []
        for run_ctx, spec in items:
            run = _build_run(run_ctx, spec, ctx.root, hasher)
            stored.append((ctx.store.add_bytes(_encoded(run)), run, spec.move_head))
        ctx.store.sync()
        publish_runs(ctx, stored, ingest)
    return [(oid, run) for oid, run, _move in stored]


def _build_run(ctx: RepoContext, spec: RunSpec, cwd: Path | None, hasher: FileHasher) -> Run:
    """The run ``spec`` describes, its inputs captured and artifacts stored (not the run)."""
    started = spec.started or now_us()
    name = check_ref_name(spec.name, "name") if spec.name else ""
    for tag in spec.tags:
        check_ref_name(tag, "tag")
    params, metrics = gather_params(ctx, spec, cwd)
    _encoded(  # refuse a record no reader could load before anything is written
        Run(name=name, message=spec.message, command=tuple(spec.command), params=params,
            metrics={**spec.series_metrics, **metrics}, tags=dict(spec.tags),
            models=dict(spec.models), extra=dict(spec.extra))
    )  # fmt: skip
    # git's author (a `git config` process) is asked while the files are captured
    author = _ask_author(ctx) if spec.inputs is None else None
    inputs = spec.inputs or capture_inputs(
        ctx, spec.data, spec.artifacts, cwd, spec.capture_code, spec.capture_env
    )
    art_files, art_listing = walk_data(ctx.root, inputs.artifact_paths)
    artifacts = build_tree(
        ctx.store,
        ctx.root,
        art_files,
        hasher=hasher,
        extra=dict(spec.artifact_entries),
        listing=art_listing,
    )
    if author is not None:
        author.join()
    head = ctx.refs.read("HEAD") if spec.parents is None else None
    parents = spec.parents if spec.parents is not None else ((head,) if head else ())
    return Run(
        parents=tuple(parents),
        name=name,
        message=spec.message,
        author=ctx.author(),
        started=started,
        ended=spec.ended or now_us(),
        status=spec.status,
        command=tuple(spec.command),
        cwd=_cwd_in_project(ctx.root, cwd),
        exit_code=spec.exit_code,
        code=inputs.code,
        git=inputs.git,
        data=inputs.data,
        artifacts=artifacts,
        params=params,
        metrics={**spec.series_metrics, **metrics},
        series=spec.series,
        env=inputs.env,
        tags=dict(spec.tags),
        models=dict(spec.models),
        reproduces=spec.reproduces,
        extra={
            **spec.extra,
            "paths": {"data": list(inputs.data_paths), "artifacts": list(inputs.artifact_paths)},
        },
    )


def _encoded(run: Run) -> bytes:
    """The run's canonical bytes, or a one-line UsageError naming the part that cannot be
    stored or that makes the record bigger than a reader accepts (objects.MAX_OBJECT_BYTES)."""
    from ..core import objects

    parts = ("message", "name", "params", "metrics", "tags", "models", "extra", "command", "git")
    try:
        data = objects.encode(run)
    except (TypeError, ValueError, OverflowError) as e:  # UnicodeEncodeError is a ValueError
        bad = next((p for p in parts if not _packs(getattr(run, p))), "record")
        raise UsageError(f"the run's {bad} cannot be stored: {e}") from None
    limit = objects.MAX_OBJECT_BYTES
    if len(data) > limit:
        sizes = sorted(((len(objects.pack(getattr(run, p))), p) for p in parts), reverse=True)
        big = ", ".join(f"{p} {n} bytes" for n, p in sizes[:2])
        raise UsageError(
            f"the run record would be {len(data)} bytes, over the {limit}-byte limit of what "
            f"mlvc reads back (largest: {big}); keep big values in files (data or artifacts)"
        )
    return data


def _packs(value) -> bool:
    from ..core.objects import pack

    try:
        pack(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return True


def _cwd_in_project(root: Path, cwd: Path | None) -> str:
    try:
        rel = Path(cwd or os.getcwd()).resolve().relative_to(root).as_posix()
    except ValueError:
        return ""
    return "" if rel == "." else rel


def publish_run(ctx: RepoContext, oid: ObjectId, run: Run, move_head: bool = True) -> None:
    """Make a stored run visible: journal, run ref, HEAD, name and tags, then the index.

    The ref moves are written down first (``publishing/<id>``, each ref with the value it
    had), so a publish killed half way is finished by the next one (``finish_publishing``):
    a run is never left recorded without the HEAD, name or tags its commit gave it.
    """
    publish_runs(ctx, [(oid, run, move_head)])


def publish_runs(
    ctx: RepoContext, runs: Sequence[tuple[ObjectId, Run, bool]], ingest: bool = True
) -> None:
    """``publish_run`` for several stored runs: their intents written durable first, in one
    file for the batch (``publishing/batch-<first run id>``: one create, fsync and unlink
    for them all), then every ref in one batch, then one index update (if ``ingest``)."""
    if runs:
        _publish_staged(ctx, _Intent(ctx, runs, durable=True), ingest)


class _Intent:
    """The ref moves of runs about to be published, written to ``path`` (``publishing/``)
    before any ref moves. ``durable=False``: only its temp file is written so far, without
    fsync; ``place`` renames it in, inside the store's sync that makes both durable."""

    def __init__(self, ctx: RepoContext, runs: Sequence[tuple[ObjectId, Run, bool]], durable: bool):
        self.entries = []
        for oid, run, move_head in runs:
            moves = {"HEAD": move_head} if move_head else {}
            if run.name:
                moves[f"refs/names/{run.name}"] = True
            for tag, value in run.tags.items():
                if value == "":
                    moves[f"refs/tags/{tag}"] = True
            old = {ref: _hex(ctx.refs.read_or_none(ref)) for ref in moves}
            self.entries.append((oid, run, old))
        folder = ctx.layout.publishing
        if len(self.entries) == 1:
            oid, _run, old = self.entries[0]
            self.path, content = folder / oid.hex, old
        else:
            content = [[oid.hex, old] for oid, _run, old in self.entries]
            self.path = folder / f"{BATCH_PREFIX}{self.entries[0][0].hex}"
        self.tmp: Path | None = _intent_file(self.path, content, sync=durable)
        if durable:  # one run's folder entry is made durable by the refs' sync after it
            self.place(sync_folder=len(self.entries) > 1)

    def place(self, sync_folder: bool = False) -> None:
        from ..core.durable import fsync_dir

        if self.tmp is not None:
            os.replace(self.tmp, self.path)
            self.tmp = None
            if sync_folder:
                fsync_dir(self.path.parent)
        crash_point("publish-intent-written")

    def discard(self) -> None:
        """Remove the temp file if it was never placed (the store's sync failed)."""
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None


def _publish_staged(ctx: RepoContext, intent: _Intent, ingest: bool = True) -> None:
    """Every ref of a placed intent in one batch, then the intent goes, then the index."""
    from ..core.spawn import gathered
    from ..store.pack.merge import maybe_start as maybe_merge

    # one process start for the commit's background work (the index worker, the webhook
    # deliverer the events' consumers start, a merger of small packs), made last: two cost
    # a commit far more
    with gathered():
        with ctx.refs.batch():
            for oid, run, old in intent.entries:
                _publish(ctx, oid, run, old)
        intent.path.unlink(missing_ok=True)
        remember(ctx.layout.runlist, [(oid, run) for oid, run, _old in intent.entries])
        if ingest:
            ctx.index.try_ingest()
        maybe_merge(ctx.store, ctx.layout.root, ctx.settings.gc_auto)


BATCH_PREFIX = "batch-"  # publishing/batch-<id>: [[run id, intent], ...] of a batch


def publishing_ids(folder: Path) -> list[ObjectId]:
    """The run ids the intents in ``publishing/`` name (gc keeps them: their runs are
    stored and about to be published)."""
    out = []
    for _name, entries in _intents(folder):
        out += [oid for oid, _intent in entries]
    return out


def _intents(folder: Path) -> list[tuple[str, list[tuple[ObjectId, dict]]]]:
    """Each intent file's name and its (run id, intent) pairs, in name order; a file being
    written (a temp name) or damaged is skipped (fsck names what is damaged)."""
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    out = []
    for n in names:
        try:
            if n.startswith(BATCH_PREFIX):
                ObjectId.parse(n.removeprefix(BATCH_PREFIX))
                value = json.loads((folder / n).read_text())
                pairs = [(ObjectId.parse(h), i) for h, i in value]
            else:
                pairs = [(ObjectId.parse(n), json.loads((folder / n).read_text()))]
        except (ValueError, TypeError, OSError):
            continue
        out.append((n, [(oid, i) for oid, i in pairs if isinstance(i, dict)]))
    return out


def _publish(ctx: RepoContext, oid: ObjectId, run: Run, intent: dict[str, str | None]) -> None:
    """Journal, run ref, then every ref in ``intent`` that still holds the value it had when
    the publish began (compare and swap: a ref moved since by someone else is left alone),
    then the run's events, made durable with the refs."""
    ctx.index.journal(oid)
    with ctx.refs.batch():  # durable on return: one syncfs for every ref and reflog
        ctx.refs.add_run(oid)
        who = run.author
        why = {"HEAD": f"commit: {run.message or run.name}", "refs/names": "commit"}
        for i, (ref, old) in enumerate(sorted(intent.items(), key=lambda r: r[0] != "HEAD")):
            now = ctx.refs.read_or_none(ref)
            if now is not None and now != oid and now.hex != old:
                continue  # moved by another writer meanwhile
            if now != oid:
                reason = why.get(ref, why.get(ref.rsplit("/", 1)[0], "commit -t"))
                ctx.refs.write(ref, oid, reason, who)
            if i == 0:
                crash_point("publish-first-ref")
        # durable with the refs (the batch's one sync), before the intent goes: a publish
        # killed before its end is finished by the next one, which emits again
        run_published(ctx, oid, run)


def finish_publishing(ctx: RepoContext) -> list[ObjectId]:
    """Finish every publish a killed commit (or a killed batch of runs) left half done;
    returns their run ids."""
    from ..errors import MlvcError
    from ..store.typed import read_run

    folder = ctx.layout.publishing
    done = []
    for name, entries in _intents(folder):
        for oid, intent in entries:
            try:
                run = read_run(ctx.store, oid)
            except MlvcError:
                continue  # its run was never stored: nothing to publish
            _publish(ctx, oid, run, {str(k): v for k, v in intent.items()})
            done.append(oid)
        (folder / name).unlink(missing_ok=True)
    return done


def _intent_file(path: Path, content: Any, sync: bool) -> Path:
    """Write the temp file of ``publishing/<name>`` (fsynced if ``sync``); returns its path."""
    path.parent.mkdir(exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.urandom(4).hex()}.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(content, sort_keys=True))
        if sync:
            f.flush()
            os.fsync(f.fileno())
    return tmp


def _hex(oid: ObjectId | None) -> str | None:
    return oid.hex if oid is not None else None
