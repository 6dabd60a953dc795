"""Live runs from Python, with an API shaped like MLflow's fluent tracking.

    with mlvc.start_run(name="sweep-1", params={"lr": 0.01}) as run:
        for step in range(100):
            run.log_metric("loss", loss, step=step)
        run.log_artifact("model.pt")

A live run captures its inputs (code, git facts, environment, data) when it starts, stages
params, tags and metric blocks under ``.mlvc/live/<key>/`` (mlvc.runs.staging) while it
trains, and on leaving the block is recorded like ``mlvc commit`` (status ``finished``, or
``failed`` with the exception). Metric points are buffered in columns and flushed as Arrow
IPC blocks every second or 50,000 points by a background thread, so ``kill -9`` loses at
most that interval; the next mlvc command that writes finds the dead run's pid gone and
records it as ``killed`` (mlvc.runs.reaper).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.ids import ObjectId
from ..core.names import safe_relpath
from ..core.objects import FILE
from ..core.params import (
    MAX_PARAM_BYTES,
    case_twin,
    check_case,
    check_key,
    check_param,
    flatten,
)
from ..errors import FileChanged, ParamConflict, UsageError
from ..refs.store import check_ref_name
from ..store.locks import writing
from ..store.odb import _stamp
from .finish import commit_staged
from .metricbuf import columns, new_buffer
from .notify import run_started
from .reaper import reap_dead_runs
from .record import Inputs, capture_inputs, now_us
from .staging import StagedRun
from .watch import ensure_watcher, load_config

if TYPE_CHECKING:
    from ..workspace.context import RepoContext

FLUSH_POINTS = 50_000
FLUSH_SECONDS = 1.0


def _param_value(key: str, value: Any) -> bool | int | float | str:
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        value = value.item()
    if value is None or isinstance(value, list | tuple | dict):
        value = json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, bool | int | float | str):
        return check_param(key, value)
    raise UsageError(f"param {key!r} has a {type(value).__name__}; use int, float, bool or str")


def _tag_value(key: str, value: Any) -> str:
    """A tag's value as stored, after checking its key (also a ref name) and size."""
    check_ref_name(check_key(key), "tag")
    value = str(value)
    if len(value.encode("utf-8", "surrogatepass")) > MAX_PARAM_BYTES:
        raise UsageError(f"tag {key!r} is over {MAX_PARAM_BYTES} bytes; keep it short")
    return value


class LiveRun:
    """A run in progress. ``id`` is the live key until it ends, then the recorded run id.

    Made by ``LiveRun.create`` (a run of its own) or ``LiveRun.join`` (the run ``mlvc run``
    staged for this process, mlvc.runs.attached); both build it here, around its staged run.
    """

    def __init__(
        self,
        ctx: RepoContext,
        staged: StagedRun,
        parent: LiveRun | None = None,
        flusher: bool = True,
    ):
        """``flusher=False``: no flushing thread of its own; the owner calls ``flush_due``
        often (a server holding thousands of open runs flushes them from one thread)."""
        self.ctx = ctx
        self.staged = staged
        self.key = staged.key
        self.dir = staged.path
        self.parent = parent
        self.run_id: ObjectId | None = None
        self.started = staged.started or 0
        self._params: dict[str, Any] = dict(staged.params)
        self._tags: dict[str, str] = dict(staged.tags)
        self._artifacts: dict[str, list] = staged.artifacts  # path -> [kind, id hex, size]
        self._children: list[str] = []
        self.on_end: list = []  # callables given the recorded run id once the run has ended
        self.on_finish: list = []  # callables given the run once it has ended (fluent's stack)
        # the points since the last flush (mlvc.runs.metricbuf: in C when it was built);
        # its bound methods serve log_metric(s) with no Python frame of this class's
        self._buf = new_buffer()
        if type(self).log_metric is LiveRun.log_metric:
            self.log_metric = self._buf.log_metric
        if type(self).log_metrics is LiveRun.log_metrics:
            self.log_metrics = self._buf.log_metrics
        self._block = staged.block_count()
        self._flush_lock = threading.Lock()
        self._flushed_at = time.monotonic()
        self._ended = False
        self._stop: threading.Event | None = None
        self._flusher: threading.Thread | None = None
        if flusher:
            self._start_flusher()

    @classmethod
    def create(
        cls,
        ctx: RepoContext,
        name: str = "",
        message: str = "",
        params: dict[str, Any] | None = None,
        tags: dict[str, Any] | None = None,
        data: Iterable[str] = (),
        parent: LiveRun | None = None,
        capture: bool = True,
        reap: bool = True,
        meta: dict[str, Any] | None = None,
        flusher: bool = True,
        inputs: Inputs | None = None,
    ) -> LiveRun:
        """Start a run of its own: stage it, capture its inputs, stage its params and tags.

        A live run writes, so dead live runs are recorded first (mlvc.runs.reaper), unless
        ``reap`` is False (a server reaps on a timer instead of on every run it opens).
        ``meta``: more fields of its meta.json, in its first write. ``flusher``: see
        ``__init__``. ``inputs``: the run's inputs as given, nothing captured (a server's
        run read the client's files, not the server's working tree)."""
        params = cls.check_start(name, params, tags)  # refused before the run exists
        watching = load_config(ctx.layout.root)  # a bad alert rule too
        tags = {k: _tag_value(k, v) for k, v in (tags or {}).items()}
        if reap:
            reap_dead_runs(ctx)
        how = {
            "name": name,
            "message": message,
            "started": now_us(),
            "argv": list(sys.argv),
            "cwd": os.getcwd(),
            "parent": parent.key if parent else None,
            "tags": tags,
            "meta": meta,
        }
        if inputs is not None:  # nothing to capture: one durable write of meta.json
            staged = StagedRun.create(ctx.layout, inputs=inputs, **how)
        elif capture or data:
            # visible to `mlvc runs` at once, while its code, env and data are stored
            staged = StagedRun.create(ctx.layout, **how)
            with writing(ctx.dir, ctx.store):  # gc waits until meta.json names the inputs
                staged.set_inputs(capture_inputs(ctx, data=data, code=capture, env=capture))
                ctx.store.flush()  # a reaper must see its objects
                staged.save()
        else:  # little to capture: one durable write of meta.json
            with writing(ctx.dir, ctx.store):
                inputs = capture_inputs(ctx, data=data, code=False, env=False)
                ctx.store.flush()
                staged = StagedRun.create(ctx.layout, inputs=inputs, **how)
        run = cls(ctx, staged, parent, flusher=flusher)
        if params:
            run.log_params(params)
        run_started(ctx, staged)
        ensure_watcher(ctx, watching)
        return run

    @staticmethod
    def check_start(
        name: str = "", params: dict[str, Any] | None = None, tags: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Refuse (UsageError) a name, params or tags a run could not record; returns the
        params flattened. ``create`` calls it first; a server checks a request with it."""
        if name:
            check_ref_name(name, "name")
        params = flatten(dict(params)) if params else {}
        check_case({k: _param_value(check_key(k), v) for k, v in params.items()}, "param")
        for k, v in (tags or {}).items():
            _tag_value(k, v)
        return params

    @classmethod
    def join(cls, ctx: RepoContext, staged: StagedRun, flusher: bool = True) -> LiveRun:
        """A live run writing into ``staged``, a run that another process staged and will
        record (``mlvc run``)."""
        return cls(ctx, staged, flusher=flusher)

    def _start_flusher(self) -> None:
        self._stop = threading.Event()
        self._flusher = threading.Thread(
            target=self._flush_loop, daemon=True, name=f"mlvc-flush-{self.key}"
        )
        self._flusher.start()

    # -- identity --------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self.run_id.hex if self.run_id else self.key

    @property
    def name(self) -> str:
        return self.staged.name

    def __repr__(self) -> str:
        return f"<LiveRun {self.id} {self.name!r}>"

    # -- what it holds so far (copies: change them through the methods below) -------------

    @property
    def has_ended(self) -> bool:
        """True once ``end`` has recorded the run (nothing more may be logged)."""
        return self._ended

    @property
    def has_points(self) -> bool:
        """True once a block of metric points has been flushed to the staged run."""
        return self._block > 0

    @property
    def params(self) -> dict[str, Any]:
        return dict(self._params)

    @property
    def tags(self) -> dict[str, str]:
        return dict(self._tags)

    @property
    def artifacts(self) -> dict[str, tuple]:
        """path -> (kind, object id hex, size) of every artifact stored so far."""
        return {p: tuple(v) for p, v in self._artifacts.items()}

    # -- params and tags -------------------------------------------------------------------

    def log_param(self, key: str, value: Any) -> None:
        """Stage one param; what a run cannot store is refused here (UsageError) and the
        run goes on (see mlvc.core.params for the limits)."""
        self._stage_param(key, value)
        self._save()

    def log_params(self, params: dict[str, Any]) -> None:
        try:
            for k, v in flatten(dict(params)).items():
                self._stage_param(k, v)
        finally:  # those staged before a refused one are kept
            self._save()

    def _stage_param(self, key: str, value: Any) -> None:
        check_key(key)
        value = _param_value(key, value)
        twin = case_twin(key, self._params)
        if twin is not None:
            raise UsageError(
                f"param {key!r} differs only in case from {twin!r}, already logged in this "
                "run; SQL cannot tell them apart, so use one spelling"
            )
        old = self._params.get(key, _MISSING)
        if old is not _MISSING and (old != value or type(old) is not type(value)):
            raise ParamConflict(
                f"param {key!r} was already logged as {old!r} in this run and cannot change "
                f"to {value!r}; start a new run for new params"
            )
        self._params[key] = value
        self.staged.set_params(self._params)

    def delete_tag(self, key: str) -> None:
        """Forget tag ``key`` (nothing if it is not set)."""
        if self._tags.pop(key, None) is not None:
            self.staged.set_tags(self._tags)
            self._save()

    def set_tag(self, key: str, value: Any = "") -> None:
        self.set_tags({key: value})

    def set_tags(self, tags: dict[str, Any]) -> None:
        try:
            for k, v in tags.items():
                self._tags[k] = _tag_value(k, v)
        finally:
            self.staged.set_tags(self._tags)
            self._save()

    # -- metrics ---------------------------------------------------------------------------

    def log_metric(
        self, key: str, value: float, step: int | None = None, timestamp: float | None = None
    ) -> None:
        """Buffer one point; ``step`` defaults to one more than this key's last step.

        ``timestamp`` is in seconds since the epoch (default: now). NaN and inf are kept. A
        point that cannot be stored (not a number, a step or time out of the 64-bit range)
        is refused with a UsageError and the run goes on. (A run's instances call their
        buffer's method directly: ``__init__`` binds it over this one.)
        """
        self._buf.log_metric(key, value, step, timestamp)

    def log_metrics(
        self, metrics: dict[str, float], step: int | None = None, timestamp: float | None = None
    ) -> None:
        """``log_metric`` for each item of ``metrics``; the points before a refused one are
        kept."""
        self._buf.log_metrics(metrics, step, timestamp)

    def _flush_loop(self) -> None:
        while not self._stop.wait(0.05):
            self.flush_due()

    def flush_due(self) -> bool:
        """Flush the buffered points if there are 50,000 or the last flush was a second
        ago (what the flusher thread does every 50 ms); returns whether points remain
        buffered."""
        n = len(self._buf)
        if n >= FLUSH_POINTS or (n and time.monotonic() - self._flushed_at >= FLUSH_SECONDS):
            self.flush()
        return len(self._buf) > 0

    def flush(self) -> None:
        """Write buffered points as one Arrow IPC block (temp + rename)."""
        with self._flush_lock:
            self._flush_locked()

    def _flush_locked(self, note: dict | None = None) -> None:
        taken = self._buf.take()  # whole points only, the buffer emptied
        if taken is None:
            return
        self._block += 1
        self.staged.append_block(self._block, columns(taken), taken[0], note)
        self._flushed_at = time.monotonic()

    def log_block(self, points: Iterable[tuple], note: dict) -> list[tuple[int, str]]:
        """Stage ``points`` ((key, value, step, timestamp in s)) as one metric block of
        their own that carries ``note`` (a server's batch id): the points and the note are
        on disk together or not at all. Returns the points refused, (index, why)."""
        refused = []
        with self._flush_lock:
            self._flush_locked()
            for i, (key, value, step, timestamp) in enumerate(points):
                try:
                    self.log_metric(key, value, step, timestamp)
                except UsageError as e:
                    refused.append((i, str(e)))
            self._flush_locked(note)
        return refused

    # -- artifacts -------------------------------------------------------------------------

    def log_artifact(self, path: str | os.PathLike, name: str | None = None) -> str:
        """Store a file or folder now; it appears in the run's artifacts at ``name``.

        ``name`` defaults to the path inside the project (so checkout puts it back where it
        was), or the file's base name when it lies outside the project.
        """
        src = Path(path).absolute()
        if not src.exists():
            raise UsageError(f"artifact {path} does not exist")
        if name is None:
            try:
                name = src.relative_to(self.ctx.root).as_posix()
            except ValueError:
                name = src.name
        name = safe_relpath(name)
        files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
        with writing(self.ctx.dir, self.ctx.store):  # until meta.json names them
            for f in files:
                rel = name if f == src else f"{name}/{f.relative_to(src).as_posix()}"
                kind = "exec" if os.access(f, os.X_OK) else FILE
                st = f.stat()
                oid = self.ctx.store.add_file(f)
                if _stamp(f.stat()) != _stamp(st):  # the size recorded is the bytes stored
                    raise FileChanged(f)
                self._artifacts[rel] = [kind, oid.hex, st.st_size]
            self.staged.set_artifacts(self._artifacts)
            self._save()
        return name

    def forget_artifacts(self, name: str) -> None:
        """Drop logged artifacts at ``name`` or below it (before logging a replacement)."""
        for rel in [r for r in self._artifacts if r == name or r.startswith(name + "/")]:
            del self._artifacts[rel]
        self.staged.set_artifacts(self._artifacts)  # saved with the next artifact

    def record_model(self, name: str, record: dict) -> None:
        """Note a model logged by ``mlvc.models.log_model`` for the run's ``models`` field."""
        self.staged.set_model(name, record)
        self._save()

    def log_text(self, text: str, name: str) -> str:
        return self._log_bytes(text.encode(), name)

    def log_dict(self, obj: dict, name: str) -> str:
        """Store a dict as JSON, or YAML when ``name`` ends in .yaml/.yml."""
        if name.endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_dump(obj, sort_keys=True).encode()
        else:
            data = (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()
        return self._log_bytes(data, name)

    def log_bytes(self, data: bytes, name: str) -> str:
        """Store ``data`` as the artifact ``name`` (a figure, an image, a table...)."""
        return self._log_bytes(data, name)

    def log_figure(self, figure: Any, name: str) -> str:
        """A matplotlib figure (PNG, SVG, PDF by ``name``'s suffix) or a plotly figure
        (HTML) as the artifact ``name``."""
        from .media import figure_bytes

        return self._log_bytes(figure_bytes(figure, name), name)

    def log_image(self, image: Any, name: str) -> str:
        """A numpy array (uint8, or floats in [0, 1]) or a PIL image, as the PNG ``name``."""
        from .media import image_bytes

        return self._log_bytes(image_bytes(image), name)

    def log_table(self, data: Any, name: str) -> str:
        """A pandas DataFrame, an Arrow table or a dict of columns, as the Parquet file
        ``name`` (``mlvc.load_table`` reads it back)."""
        from .media import table_bytes

        return self._log_bytes(table_bytes(data), name)

    def add_extra(self, field: str, items: list, limit: int = 1000) -> None:
        """Append ``items`` to the list ``extra[field]`` of the run (its dataset inputs)."""
        extra = self.staged.meta.setdefault("extra", {})
        extra[field] = [*(extra.get(field) or []), *items][:limit]
        self._save()

    def _log_bytes(self, data: bytes, name: str) -> str:
        name = safe_relpath(name)
        with writing(self.ctx.dir, self.ctx.store):  # until meta.json names it
            self._artifacts[name] = [FILE, self.ctx.store.add_bytes(data).hex, len(data)]
            self.staged.set_artifacts(self._artifacts)
            self._save()
        return name

    # -- ending ----------------------------------------------------------------------------

    def _save(self) -> None:
        self.ctx.store.flush()  # a reaper must see the objects meta.json names
        self.staged.save()

    def save(self) -> None:
        """Make what is staged so far (and the objects it names) visible to other processes:
        after a change to ``staged.meta`` (a lease, a server's own fields)."""
        self._save()

    def end(self, status: str = "finished", error: BaseException | None = None) -> ObjectId | None:
        """Record the run; returns its id. Ending twice returns the same id."""
        if self._ended:
            return self.run_id
        if self._flusher is not None:
            self._stop.set()
            self._flusher.join()
        self.flush()
        if error is not None:
            self.staged.note_error(error)
        self.staged.set_children(self._children)
        self.run_id = self._conclude(status)
        self._ended = True  # only now: an end that failed to record can be tried again
        if self.run_id is not None and self.parent is not None:
            self.parent._children.append(self.run_id.hex)
        for hook in self.on_finish:
            hook(self)
        if self.run_id is not None:
            for hook in self.on_end:
                hook(self.run_id)
        return self.run_id

    def _conclude(self, status: str) -> ObjectId | None:
        """The last step of ending: record the staged run and unstage it. A run that joined
        another process's staged run hands it back instead (mlvc.runs.attached)."""
        return commit_staged(self.ctx, self.staged, status)

    def __enter__(self) -> LiveRun:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: Any) -> bool:
        if exc_type is KeyboardInterrupt:
            self.end("killed", exc)
        else:
            self.end("failed" if exc is not None else "finished", exc)
        return False


_MISSING = object()
