"""The events a run's life emits (``run.started``, ``commit.created``, ``run.<status>``):
their payloads in one place, so every path (CLI, Python API, server, reaper) sends the same."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..events import emit

if TYPE_CHECKING:
    from ..core.ids import ObjectId
    from ..core.objects import Run
    from ..workspace.context import RepoContext
    from .staging import StagedRun

ENDED = {"finished", "failed", "killed"}
log = logging.getLogger("mlvc.events")


def run_started(ctx: RepoContext, staged: StagedRun) -> None:
    """A live run was staged: ``run.started`` with its live key (``run:<key>`` names it)."""
    meta = staged.meta
    emit(
        ctx,
        "run.started",
        {
            "live_key": staged.key,
            "name": meta.get("name") or "",
            "tags": dict(meta.get("tags") or {}),
            "experiment_id": str(meta.get("experiment_id") or "0"),
            "started": meta.get("started"),
        },
    )


def run_data(oid: ObjectId, run: Run) -> dict[str, Any]:
    """What events say about a recorded run."""
    extra = run.extra if isinstance(run.extra, dict) else {}
    data = {
        "run_id": oid.hex,
        "name": run.name,
        "status": run.status,
        "author": run.author,
        "message": run.message,
        "parents": [p.hex for p in run.parents],
        "tags": dict(run.tags),
        "metrics": {k: v for k, v in run.metrics.items() if isinstance(v, (int, float))},
        "experiment_id": str(extra.get("experiment_id") or "0"),
        "started": run.started,
        "ended": run.ended,
    }
    if isinstance(extra.get("live_key"), str):
        data["live_key"] = extra["live_key"]
    if run.reproduces is not None:
        data["reproduces"] = run.reproduces.hex
    return data


def run_published(ctx: RepoContext, oid: ObjectId, run: Run) -> None:
    """A run record became visible: ``commit.created``, then ``run.<status>`` when it ended
    a live run's life (finished, failed, killed by the reaper or a lease expiry); a plain
    ``mlvc commit`` snapshot had no life to end."""
    data = run_data(oid, run)
    emit(ctx, "commit.created", data)
    if run.status in ENDED and "live_key" in data:
        emit(ctx, f"run.{run.status}", data)
    if "live_key" not in data:  # a snapshot's final metrics meet the alert rules too
        _watch_snapshot(ctx)


def _watch_snapshot(ctx: RepoContext) -> None:
    """Start the alert watcher for a recorded snapshot when the project has rules (a live
    run started it when it began). The run is recorded: a bad rule only warns here."""
    from ..errors import MlvcError
    from ..workspace.project import load_project

    try:  # no [[alerts]]: nothing to watch, and mlvc.runs.watch (~10 ms of imports) unread
        if not load_project(ctx.layout.root).raw.get("alerts"):
            return
    except (MlvcError, OSError):
        pass  # load_config below says what is wrong
    from .watch import ensure_watcher, load_config

    try:
        config = load_config(ctx.layout.root, check_sql=False)
    except (MlvcError, OSError) as e:
        log.warning("alert rules not evaluated: %s", e)
        return
    if config.rules:
        ensure_watcher(ctx, config)
