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

import json
import os
from pathlib import Path
from typing import Any

from ..core.layout import Layout
from ..errors import UsageError
from .live import LiveRun, _atomic_json

RUN_ENV, REPO_ENV, WORKTREE_ENV = "MLVC_RUN", "MLVC_REPO", "MLVC_WORKTREE"
SEED_PARAM = "mlvc.seed"  # the param mlvc.seed_everything records
SEED_ENV = "MLVC_SEED"  # set by `mlvc reproduce` to the recorded seed
CLAIM = "attached"


def staged_dir() -> Path | None:
    """The staged run of the ``mlvc run`` that started this process, if any."""
    key, root = os.environ.get(RUN_ENV), os.environ.get(REPO_ENV)
    if not key or not root or "/" in key or key.startswith("."):
        return None
    d = Layout.of(root).staged(key)
    return d if (d / "meta.json").is_file() else None


def staged_repo_paths() -> tuple[str, str | None]:
    """(project root, worktree or None) of the ``mlvc run`` that started this process."""
    return os.environ[REPO_ENV], os.environ.get(WORKTREE_ENV) or None


def attach(view, d: Path, name=None, params=None, tags=None) -> AttachedRun | None:
    """Join the staged run ``d`` (``staged_dir()``) through ``view``, the repository as the
    command sees it (its worktree); None when another process claimed it first."""
    try:
        fd = os.open(d / CLAIM, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return None
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    run = AttachedRun(view, d)
    if name:
        run._meta["attached_name"] = name  # the staged run keeps the name `mlvc run` gave it
    if params:
        run.log_params(params)
    for k, v in (tags or {}).items():
        run.set_tag(k, v)
    return run


def stage_param(key: str, value: Any) -> bool:
    """Add a param to the staged run when no live run is active; False when not staged."""
    d = staged_dir()
    if d is None:
        return False
    meta = json.loads((d / "meta.json").read_text())
    old = meta.setdefault("params", {}).get(key)
    if old is not None and old != value:
        raise UsageError(
            f"param {key!r} is already {old!r} in this run; it cannot become {value!r}"
        )
    meta["params"][key] = value
    _atomic_json(d / "meta.json", meta)
    return True


class AttachedRun(LiveRun):
    """A live run that writes into the run staged by ``mlvc run`` instead of its own."""

    def __init__(self, ctx, live_dir: Path):
        self.ctx = ctx
        self.key = live_dir.name
        self.dir = live_dir
        self.parent = None
        self.run_id = None
        self._meta = json.loads((live_dir / "meta.json").read_text())
        self.started = self._meta.get("started", 0)
        self._init_buffers()
        self._params = dict(self._meta.get("params", {}))
        self._tags = dict(self._meta.get("tags", {}))
        self._artifacts = dict(self._meta.get("artifacts", {}))
        (live_dir / "series").mkdir(exist_ok=True)
        self._block = len(list((live_dir / "series").glob("*.arrow")))
        self._ended = False
        self._start_flusher()

    def end(self, status: str = "finished", error: BaseException | None = None) -> None:
        """Flush everything into the staged run; ``mlvc run`` records it when the command
        exits, so there is no run id yet (returns None)."""
        if self._ended:
            return None
        self._ended = True
        self._stop.set()
        self._flusher.join()
        self.flush()
        if error is not None:
            import traceback

            tb = traceback.format_exception(type(error), error, error.__traceback__)
            self._meta["error"] = {
                "type": type(error).__name__,
                "message": str(error),
                "traceback": "".join(tb)[-4000:],
            }
        self._meta["children"] = self._children
        self._meta["attached_status"] = status
        self._write_meta()
        self._finished()
        return None
