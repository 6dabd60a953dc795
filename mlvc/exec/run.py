"""``mlvc run``: run an entry point's command (or a sweep of them) and record each run.

A sweep runs the grid of ``--sweep`` values; with ``-j N`` up to N at once, each in its own
scratch checkout of the captured code and data (``.mlvc/worktrees/<key>``), so parallel runs
never overwrite each other's outputs. Every run of a sweep has the HEAD of its start as
parent and the tag ``sweep=<id>``. HEAD follows what the project folder holds: runs in the
project move it, parallel runs (whose outputs stay in their artifacts) do not.

The steps are planning (mlvc.exec.plan) and running one command (mlvc.exec.execute).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import replace
from typing import TYPE_CHECKING

from ..core.objects import Run
from ..errors import CommandFailed, UsageError
from ..runs.record import Inputs
from ..runs.staging import new_key, pin
from ..store.locks import writing
from .execute import Outcome, capture, env_warnings, execute
from .plan import Echo, Launch, log_name, plan

if TYPE_CHECKING:
    from ..workspace.context import RepoContext


def run_entry(
    ctx: RepoContext,
    entry: str,
    params: Iterable[str] = (),
    sweeps: Iterable[str] = (),
    jobs: int = 1,
    hashseed: bool = True,
    name: str = "",
    message: str = "",
    tags: Mapping[str, str] | None = None,
    echo: Echo = print,
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """``mlvc run``: validate, run and record every point; see ``check`` for failures."""
    launches = plan(ctx, entry, params, sweeps, hashseed, name, message, tags)
    return run_all(ctx, launches, jobs, echo, on_done)


def check(outcomes: list[Outcome]) -> None:
    """Raise CommandFailed (the runs are recorded already) if any command failed."""
    failed = [o for o in outcomes if o.status != "finished"]
    if failed and len(outcomes) == 1:
        o = failed[0]
        raise CommandFailed(
            f"the command exited with code {o.exit_code}; recorded as run {o.run_id.short} "
            f"({o.status}); its output: `mlvc show {o.run_id.short}:{log_name(o.launch)}`"
        )
    if failed:
        shown = ", ".join(f"{o.run_id.short} (exit {o.exit_code})" for o in failed[:5])
        raise CommandFailed(f"{len(failed)} of {len(outcomes)} runs failed: {shown}")


def run_all(
    ctx: RepoContext,
    launches: list[Launch],
    jobs: int = 1,
    echo: Echo = print,
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Run every launch: one after another in the project, or ``jobs`` at a time in
    scratch checkouts. A run that fails does not stop the others; ``on_done`` sees each
    outcome as soon as it is recorded."""
    if jobs < 1:
        raise UsageError(f"-j {jobs}: the number of parallel runs must be at least 1")
    done = on_done or (lambda outcome: None)
    if jobs == 1 or len(launches) == 1:
        outcomes = []
        for launch in launches:
            outcomes.append(execute(ctx, launch, echo=echo))
            done(outcomes[-1])
        return outcomes
    with contextlib.ExitStack() as pinned:
        with writing(ctx.dir, ctx.store):  # the inputs stay gc roots until every run is in
            inputs, facts = capture(ctx, launches[0])
            pinned.enter_context(pin(ctx.layout, [inputs.code, inputs.data, inputs.env]))
        for w in env_warnings(launches[0], facts):
            echo(f"warning: {w}")
        launches = [replace(launch, move_head=False) for launch in launches]
        pool = ThreadPoolExecutor(max_workers=jobs)
        try:
            futures = [pool.submit(_isolated, ctx, launch, inputs, echo) for launch in launches]
            for f in as_completed(futures):
                done(f.result())
            return [f.result() for f in futures]
        except KeyboardInterrupt:
            pool.shutdown(wait=True, cancel_futures=True)  # the running ones record as killed
            raise
        finally:
            pool.shutdown(wait=True)


def _isolated(ctx: RepoContext, launch: Launch, inputs: Inputs, echo: Echo) -> Outcome:
    from ..workspace.checkout import checkout

    wt = ctx.layout.worktrees / new_key()
    try:
        checkout(ctx.store, Run(code=inputs.code, data=inputs.data), wt, ("code", "data"))
        view = ctx.fresh(worktree=wt)  # a store of its own: this runs in a thread
        return execute(view, launch, inputs=inputs, echo=echo, interactive=False)
    finally:
        shutil.rmtree(wt, ignore_errors=True)
