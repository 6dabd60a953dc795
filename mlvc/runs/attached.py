"""How a live run inside a command started by ``mlvc run`` joins the run ``mlvc run`` records.

``mlvc run`` stages its run under ``.mlvc/live/<key>/`` (the same layout as a live run, with
the entry point's params and the captured inputs) and starts the command with:

    MLVC_RUN       the key of that staged run
    MLVC_REPO      the project root that holds ``.mlvc/``
    MLVC_WORKTREE  the folder the command runs in (the project, or a scratch checkout for
                   ``mlvc reproduce`` and ``mlvc run -j N``)

The first top-level ``mlvc.start_run()`` of the command (in whichever of its processes calls
first: it claims the staged run with an exclusive file) *attaches*: its params, tags, metric
points and artifacts go into the staged run, and ending it records nothing by itself. When
the command exits, ``mlvc run`` records one run holding the entry point's params, what the
script logged, its outputs, log and exit code. Runs nested inside the attached one are its
children as usual; top-level runs started after it ended are ordinary runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.ids import ObjectId
from ..core.layout import Layout
from ..errors import UsageError
from .live import LiveRun
from .staging import StagedRun

if TYPE_CHECKING:
    from ..workspace.context import RepoContext

RUN_ENV, REPO_ENV, WORKTREE_ENV = "MLVC_RUN", "MLVC_REPO", "MLVC_WORKTREE"
MLFLOW_URI_ENV = "MLFLOW_TRACKING_URI"  # `mlvc run` sets mlvc:///ROOT unless the user set it
SEED_PARAM = "mlvc.seed"  # the param mlvc.seed_everything records
SEED_ENV = "MLVC_SEED"  # set by `mlvc reproduce` to the recorded seed


def staged_dir() -> Path | None:
    """The staged run of the ``mlvc run`` that started this process, if any."""
    staged = _staged()
    return staged.path if staged is not None else None


def _staged() -> StagedRun | None:
    key, root = os.environ.get(RUN_ENV), os.environ.get(REPO_ENV)
    if not key or not root or "/" in key or key.startswith("."):
        return None
    staged = StagedRun.at(Layout.of(root), key)
    return staged if staged.exists() else None


def staged_repo_paths() -> tuple[str, str | None]:
    """(project root, worktree or None) of the ``mlvc run`` that started this process."""
    return os.environ[REPO_ENV], os.environ.get(WORKTREE_ENV) or None


def attach(
    ctx: RepoContext,
    d: Path,
    name: str | None = None,
    params: dict[str, Any] | None = None,
    tags: dict[str, Any] | None = None,
) -> AttachedRun | None:
    """Join the staged run at ``d`` (``staged_dir()``) through ``ctx``, the repository as
    the command sees it (its worktree); None when another process joined it first."""
    staged = StagedRun.load(d)
    if staged is None or not staged.join():
        return None
    run = AttachedRun.join(ctx, staged)
    if name:
        staged.note_attached(name=name)  # the staged run keeps the name `mlvc run` gave it
    if params:
        run.log_params(params)
    if tags:
        run.set_tags(tags)
    return run


def stage_param(key: str, value: Any) -> bool:
    """Add a param to the staged run when no live run is active; False when not staged."""
    staged = _staged()
    if staged is None:
        return False
    staged = StagedRun.load(staged.path)
    if staged is None:
        return False
    params = staged.params
    old = params.get(key)
    if old is not None and old != value:
        raise UsageError(
            f"param {key!r} is already {old!r} in this run; it cannot become {value!r}"
        )
    staged.set_params({**params, key: value})
    staged.save()
    return True


class AttachedRun(LiveRun):
    """A live run that writes into the run staged by ``mlvc run`` instead of its own.

    Ending it flushes everything into the staged run and records nothing: ``mlvc run``
    records the run when the command exits, so ``end`` returns None (there is no id yet).
    """

    def _conclude(self, status: str) -> ObjectId | None:
        self.staged.note_attached(status=status)
        self._save()
        return None
