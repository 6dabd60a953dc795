"""Runs in progress, and the reaper that records the ones whose process died.

A live run's process may die without ending it (``kill -9``, a crash, a power cut). Its
staged run stays under ``.mlvc/live/`` (mlvc.runs.staging) holding everything flushed; the
reaper records it as ``killed``. Reaping writes (objects, refs, the journal), so only
commands that write call it: ``mlvc runs`` (``Repo.live_runs``), ``Repo.reap``, commits
(``Repo.commit``, ``mlvc run``) and the start of a live run. Reads (``log``, ``query``,
``show``, ``lineage``) never do: they work on a read-only repository and on a server's GET.
The index worker does not reap either: it sits in a lower layer than runs, and the commit
that starts it has reaped already.

A reaper claims a dead run by renaming its folder (one rename wins), so any number of
reapers may run at once; a claim whose reaper died is claimed again by the next one.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from ..core.ids import ObjectId
from ..store.locks import writing
from .finish import commit_staged
from .staging import StagedRun, crash_point, folders, kind_of, last_values, parse_claim, pid_alive

if TYPE_CHECKING:
    from pathlib import Path

    from ..workspace.context import RepoContext

ABANDONED_AFTER = 3600.0  # seconds: a folder without meta.json and points is then removed


def live_runs(ctx: RepoContext, dead: bool = False) -> list[dict[str, Any]]:
    """Runs in progress: their metadata and latest metric values. Only reads.

    With ``dead``, also the staged runs whose process is gone and that no reaper has
    recorded yet (their ``status`` is ``dead``: the next reap records them as killed)."""
    out = []
    for path in folders(ctx.layout):
        staged = StagedRun.load(path) if kind_of(path) == "run" else None
        if staged is None:
            continue
        alive = staged.alive()
        if not alive and not dead:
            continue
        series = staged.read_series()
        out.append(
            {
                "key": staged.key,
                "name": staged.name,
                "pid": staged.pid,
                "started": staged.started,
                "params": staged.params,
                "tags": staged.tags,
                "metrics": last_values(series),
                "points": series.num_rows,
                "status": "running" if alive else "dead",
            }
        )
    return out


def reap_dead_runs(ctx: RepoContext) -> list[ObjectId]:
    """Record every live run whose process is gone as ``killed``; returns their ids.

    Also finishes the claims of reapers that died at work. A run that cannot be recorded
    now (a store error) is kept, with a warning, for the next reaper to try again.
    """
    done = []
    for path in folders(ctx.layout):
        if kind_of(path) == "run" and _running(path):
            continue  # the common case, decided without taking the gc lock
        try:
            with writing(ctx.dir, ctx.store):  # gc must not run between claim and record
                claimed = _claim(path)
                if claimed is not None:
                    done.append(commit_staged(ctx, claimed, "killed", phase="reap"))
        except Exception as e:  # never fail the command that happened to reap
            print(
                f"mlvc: warning: could not record the dead live run {path.name} ({e}); "
                "the next mlvc command that writes tries again",
                file=sys.stderr,
            )
    return done


def _running(path: Path) -> bool:
    staged = StagedRun.load(path)
    return staged is not None and staged.alive()


def _claim(path: Path) -> StagedRun | None:
    """Take a dead run (or a dead reaper's claim) for this process; None if it is not one,
    or another reaper took it first."""
    kind = kind_of(path)
    if kind == "unstaged":  # recorded already; its remover died
        StagedRun(path).remove()
        return None
    if kind == "claim":
        key, pid, start = parse_claim(path.name)
        staged = StagedRun.load(path, key=key)
        if pid_alive(pid, start) or staged is None:
            return None
        if not staged.local:
            return None  # claimed on the run's own host: only a reaper there can tell
    elif kind == "run":
        staged = StagedRun.load(path)
        if staged is None:
            _drop_if_abandoned(StagedRun(path))
            return None
        if staged.alive():
            return None
        if not staged.has_inputs and not staged.holds_anything():
            staged.remove()  # died while starting: nothing was logged
            return None
    else:
        return None
    claimed = staged.claim()
    if claimed is not None:
        crash_point("reap-claimed")
    return claimed


def _drop_if_abandoned(staged: StagedRun) -> None:
    """A folder without a meta.json: removed after an hour if it holds no points (its run
    died before writing anything useful). One whose meta.json is damaged, or that holds
    points, is left for fsck to name: it may name objects nothing else does."""
    if staged.meta_written():
        return
    try:
        old = time.time() - staged.path.stat().st_mtime > ABANDONED_AFTER
    except OSError:
        return
    if old and not staged.has_series():
        staged.remove()
