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

from ..core.ids import ObjectId
from ..runs.attached import attach, staged_dir, staged_repo_paths
from ..runs.live import LiveRun
from . import remote

_stack: ContextVar[list[LiveRun] | None] = ContextVar("mlvc_active_runs", default=None)
_pending_seed: ContextVar[int | None] = ContextVar("mlvc_pending_seed", default=None)
_open: weakref.WeakSet[LiveRun] = weakref.WeakSet()  # every unfinished run, for atexit
_exit_hook = threading.Lock()
_hooked = False


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

        run = LiveRun.create(
            (repo if repo is not None else Repo()).ctx,
            name=name or "",
            message=message or "",
            params=params,
            tags=tags,
            data=data,
            parent=parent,
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
    _open.discard(run)
    if run in stack:
        stack.remove(run)


def active_run() -> LiveRun | None:
    """The innermost run started in this context and not ended, or None."""
    stack = _stack.get()
    return stack[-1] if stack else None


def active_run_or_start() -> LiveRun:
    """The active run; with none, a new one (as MLflow does), ended at exit."""
    return active_run() or start_run()


def live_run(key: str) -> LiveRun | None:
    """A live run of this process by its key (any context), or None."""
    for run in list(_open):
        if run.key == key:
            return run
    return None


def end_run(status: str = "finished") -> ObjectId | None:
    run = active_run()
    return run.end(status) if run is not None else None


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
