"""The fluent tracking API, shaped like MLflow's: ``mlvc.start_run`` and ``mlvc.log_*``.

    with mlvc.start_run(name="sweep-1", params={"lr": 0.01}) as run:
        for step in range(100):
            mlvc.log_metric("loss", loss, step=step)

The active runs are a stack kept in a context variable, so each thread, asyncio task or
server request has its own (a thread you start begins with none: pass it the run object, or
run it in ``contextvars.copy_context()``). Logging with no active run starts one, as MLflow
does; runs still open when the process exits are recorded then (an ``atexit`` hook
registered by the first ``start_run``, not at import).

This layer decides which repository a run belongs to (``Repo()`` found from the working
directory, or the one ``mlvc run`` names when it started this process), and passes it down.
"""

from __future__ import annotations

import atexit
import sys
import threading
import weakref
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from ..core.ids import ObjectId, RunId
from ..errors import UsageError
from ..runs.attached import attach, staged_dir, staged_repo_paths
from ..runs.live import LiveRun
from . import remote

_stack: ContextVar[list[LiveRun] | None] = ContextVar("mlvc_active_runs", default=None)
_pending_seed: ContextVar[int | None] = ContextVar("mlvc_pending_seed", default=None)
_open: weakref.WeakSet[LiveRun] = weakref.WeakSet()  # every unfinished run, for atexit
_exit_hook = threading.Lock()
_hooked = False
# (repository root, experiment id) chosen by set_experiment for the runs started next
_experiment: ContextVar[tuple[Path, str] | None] = ContextVar("mlvc_experiment", default=None)
_last: tuple[Path, ObjectId] | None = None  # the run this process recorded last


def _runs() -> list[LiveRun]:
    stack = _stack.get()
    if stack is None:
        stack = []
        _stack.set(stack)
    return stack


def start_run(
    name: str | None = None,
    params: dict | None = None,
    tags: dict | None = None,
    message: str | None = None,
    repo=None,
    data=(),
    nested: bool = True,
) -> LiveRun:
    """Start a live run; inside another active run it becomes that run's child.

    In a process started by ``mlvc run`` (or ``mlvc reproduce``), the first top-level run
    is not a run of its own: it adds to the run ``mlvc run`` records (mlvc.runs.attached).
    With ``MLVC_TRACKING_URI`` set (and no ``repo`` given), the run is logged to that
    server (mlvc.api.remote).
    """
    stack = _runs()
    if repo is None and staged_dir() is None and remote.configured():
        run = remote.start_run(name, params, tags, message)  # MLVC_TRACKING_URI: on a server
        _track(run, stack)
        return run
    parent = stack[-1] if stack and nested else None
    run = attach_staged(repo, name, params, tags) if parent is None else None
    if run is None:
        from .repo import Repo

        ctx = (repo if repo is not None else Repo()).ctx
        eid = _experiment_for(ctx, parent)
        run = LiveRun.create(
            ctx,
            name=name or "",
            message=message or "",
            params=params,
            tags=tags,
            data=data,
            parent=parent,
            meta={"extra": {"experiment_id": eid}} if eid else None,
        )
        if parent is None:
            seed = take_pending_seed()
            if seed is not None and "mlvc.seed" not in run._params:
                run.log_param("mlvc.seed", seed)
    _track(run, stack)
    return run


def attach_staged(repo, name, params, tags) -> LiveRun | None:
    """The run ``mlvc run`` staged for this process, if it started it and it is free."""
    d = staged_dir()
    if d is None:
        return None
    if repo is not None and Path(repo.dir).resolve() != d.parent.parent.resolve():
        return None  # the script asked for another project
    from .repo import Repo

    root, worktree = staged_repo_paths()
    ctx = Repo(root).ctx
    return attach(ctx.with_worktree(worktree) if worktree else ctx, d, name, params, tags)


def _track(run: LiveRun, stack: list[LiveRun]) -> None:
    global _hooked
    stack.append(run)
    _open.add(run)
    run.on_finish.append(lambda r: _untrack(r, stack))
    with _exit_hook:
        if not _hooked:
            atexit.register(_end_all)
            _hooked = True


def _untrack(run: LiveRun, stack: list[LiveRun]) -> None:
    global _last
    ctx = getattr(run, "ctx", None)  # a run on a server (api.remote) has none here
    if ctx is not None and getattr(run, "run_id", None) is not None:
        _last = (ctx.layout.root, run.run_id)
    _open.discard(run)
    if run in stack:
        stack.remove(run)


def active_run() -> LiveRun | None:
    """The innermost run started in this context and not ended, or None."""
    stack = _stack.get()
    return stack[-1] if stack else None


def set_aside(run: LiveRun) -> None:
    """Take ``run`` off this context's stack without ending it (its end failed): later calls
    neither see it as the active run nor log into it; the exit hook tries to record it."""
    stack = _stack.get()
    if stack and run in stack:
        stack.remove(run)


def active_run_or_start() -> LiveRun:
    """The active run; with none, a new one (as MLflow does), ended at exit."""
    return active_run() or start_run()


def live_run(key: str) -> LiveRun | None:
    """A live run of this process by its key (any context), or None."""
    for run in list(_open):
        if run.key == key:
            return run
    return None


def end_run(status: str = "finished") -> RunId | None:
    """End the active run; its id (text that is also typed: ``RunId``), or None."""
    run = active_run()
    oid = run.end(status) if run is not None else None
    return RunId(oid) if oid is not None else None


def record_seed(seed: int) -> bool:
    """Keep a seed set while no run is active, for the next top-level run; True if kept."""
    if active_run() is not None:
        return False
    _pending_seed.set(seed)
    return True


def take_pending_seed() -> int | None:
    """The seed set while no run was active, once (for the run that starts next)."""
    seed = _pending_seed.get()
    _pending_seed.set(None)
    return seed


def log_param(key: str, value: Any) -> None:
    active_run_or_start().log_param(key, value)


def log_params(params: dict[str, Any]) -> None:
    active_run_or_start().log_params(params)


def log_metric(
    key: str, value: float, step: int | None = None, timestamp: float | None = None
) -> None:
    active_run_or_start().log_metric(key, value, step, timestamp)


def log_metrics(
    metrics: dict[str, float], step: int | None = None, timestamp: float | None = None
) -> None:
    active_run_or_start().log_metrics(metrics, step, timestamp)


def log_artifact(path: str, name: str | None = None) -> str:
    return active_run_or_start().log_artifact(path, name)


def log_text(text: str, name: str) -> str:
    return active_run_or_start().log_text(text, name)


def log_dict(obj: dict, name: str) -> str:
    return active_run_or_start().log_dict(obj, name)


def set_tag(key: str, value: Any = "") -> None:
    active_run_or_start().set_tag(key, value)


def set_tags(tags: dict[str, Any]) -> None:
    active_run_or_start().set_tags(tags)


def _end_all() -> None:
    """At exit: record every run still open, innermost first."""
    for run in sorted(_open, key=lambda r: -r.started):
        try:
            run.end("finished")
        except Exception as e:  # at exit there is no caller left to raise to
            print(f"mlvc: could not record run {run.id}: {e}", file=sys.stderr)


# -- MLflow's other fluent calls --------------------------------------------------------------


def _experiment_for(ctx, parent: LiveRun | None) -> str | None:
    if parent is not None:
        return parent.staged.extra.get("experiment_id")
    chosen = _experiment.get()
    return chosen[1] if chosen and chosen[0] == ctx.layout.root else None


def set_experiment(
    experiment_name: str | None = None, experiment_id: str | None = None, repo=None
) -> dict:
    """Runs started after this (in this context) belong to the experiment, created when
    there is none of that name; returns ``{"experiment_id", "name"}``. Without it a run
    belongs to "Default" (id "0"), as in MLflow."""
    from ..runs import experiments
    from .repo import Repo

    ctx = (repo if repo is not None else Repo()).ctx
    if experiment_name:
        eid = experiments.ensure(ctx, experiment_name, ctx.settings.who())
    elif experiment_id is not None:
        eid = str(experiment_id)
        if eid not in experiments.load(ctx):
            raise UsageError(f"no experiment with id {eid!r}")
    else:
        raise UsageError("set_experiment needs an experiment_name or an experiment_id")
    _experiment.set((ctx.layout.root, eid))
    return {"experiment_id": eid, "name": experiments.load(ctx)[eid]["name"]}


def log_artifacts(local_dir: str, artifact_path: str | None = None) -> list[str]:
    """Store what the folder ``local_dir`` holds under ``artifact_path`` (the folder's
    contents, not the folder itself, as MLflow does); returns the names stored."""
    src = Path(local_dir)
    if not src.is_dir():
        raise UsageError(f"log_artifacts: {local_dir} is not a folder")
    run = active_run_or_start()
    prefix = artifact_path.strip("/") + "/" if artifact_path and artifact_path.strip("/") else ""
    return [run.log_artifact(child, f"{prefix}{child.name}") for child in sorted(src.iterdir())]


def log_figure(figure: Any, artifact_file: str) -> str:
    """A matplotlib figure (PNG, SVG, PDF by the name's suffix) or a plotly figure (HTML)."""
    return active_run_or_start().log_figure(figure, artifact_file)


def log_image(image: Any, artifact_file: str) -> str:
    """A numpy array (uint8, or floats in [0, 1]) or a PIL image, stored as PNG."""
    return active_run_or_start().log_image(image, artifact_file)


def log_table(data: Any, artifact_file: str) -> str:
    """A pandas DataFrame, an Arrow table or a dict of columns, stored as Parquet
    (``load_table`` reads it back)."""
    return active_run_or_start().log_table(data, artifact_file)


def load_table(artifact_file: str, run_id: str | None = None, output_format: str = "pandas",
               repo=None):  # fmt: skip
    """A table ``log_table`` stored: of the active run, or of the recorded run ``run_id``."""
    from ..runs.media import read_table

    run = active_run() if run_id is None else None
    if run is not None and hasattr(run, "artifacts") and artifact_file in run.artifacts:
        data = run.ctx.store.read_bytes(ObjectId.parse(run.artifacts[artifact_file][1]))
    else:
        from .repo import Repo

        r = repo if repo is not None else Repo()
        rid = run_id or (str(_last[1].hex) if _last else None)
        if rid is None:
            raise UsageError("load_table needs a run_id: no run is active or ended here")
        data = b"".join(r.cat(f"{rid}:artifacts/{artifact_file}"))
    return read_table(data, output_format)


def log_input(dataset: Any, name: str | None = None, source: str | None = None,
              context: str | None = None) -> dict:  # fmt: skip
    """Note a dataset the run read, by content id: a file or folder (stored, its id is the
    BLAKE3 of its content / its tree), or the id of content already stored. Kept as
    MLflow's dataset input (name, digest, source), which ``mlflow`` readers see too."""
    run = active_run_or_start()
    digest, where = _content_id(run.ctx, dataset)
    item = {"dataset": {"name": name or Path(where).name or digest[:12], "digest": digest,
                        "source_type": "mlvc", "source": source or where},
            "tags": [{"key": "mlflow.data.context", "value": context}] if context else []}  # fmt: skip
    run.add_extra("mlflow_inputs", [item])
    return item


def _content_id(ctx, dataset: Any) -> tuple[str, str]:
    """(id hex, where it came from) of a dataset given as a path or an id."""
    from ..store.locks import writing

    if isinstance(dataset, ObjectId):
        dataset = dataset.hex
    path = Path(str(dataset))
    if path.exists():
        with writing(ctx.dir, ctx.store):
            if path.is_file():
                oid = ctx.store.add_file(path)
            else:
                from ..workspace.trees import build_tree

                files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*")
                               if p.is_file())  # fmt: skip
                oid = build_tree(ctx.store, path, files)
                if oid is None:
                    raise UsageError(f"log_input: the folder {path} holds no files")
            ctx.store.flush()
        return oid.hex, str(path)
    text = str(dataset)
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        if not ctx.store.has(ObjectId.parse(text)):
            raise UsageError(f"log_input: no stored content has id {text}")
        return text, text
    raise UsageError(f"log_input: {text[:200]!r} is neither a file, a folder nor a content id")


def search_runs(filter_string: str | None = None, sql: str | None = None,
                experiment_names: list[str] | None = None,
                experiment_ids: list[str] | None = None, order_by: list[str] | None = None,
                max_results: int = 1000, output_format: str = "pandas", repo=None):  # fmt: skip
    """Runs matching an MLflow filter string (``"metrics.acc > 0.9 AND params.lr = '0.1'"``)
    in the experiments named (all by default), ordered (``["metrics.acc DESC"]``); or the
    rows of a read-only SQL query. A pandas DataFrame, or an Arrow table."""
    from . import search
    from .repo import Repo

    return search.search_runs(repo if repo is not None else Repo(), filter_string, sql,
                              experiment_names, experiment_ids, order_by, max_results,
                              output_format)  # fmt: skip


def get_run(run_id: str, repo=None) -> dict:
    """A recorded run (any id, prefix or name ``mlvc show`` takes) as a dict."""
    from . import search
    from .repo import Repo

    return search.get_run(repo if repo is not None else Repo(), str(run_id))


def last_active_run():
    """The active run, else the run this process recorded last (a dict), else None."""
    run = active_run()
    if run is not None:
        return run
    if _last is None:
        return None
    from .repo import Repo

    return get_run(_last[1].hex, Repo(_last[0]))
