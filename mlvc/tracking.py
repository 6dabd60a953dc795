"""Live runs from Python, with an API shaped like MLflow's fluent tracking.

    with mlvc.start_run(name="sweep-1", params={"lr": 0.01}) as run:
        for step in range(100):
            run.log_metric("loss", loss, step=step)
        run.log_artifact("model.pt")

A live run captures its inputs (code, git facts, environment, data) when it starts, stages
params, tags and metric blocks under ``.mlvc/live/<key>/`` while it trains, and on leaving
the block is recorded like ``mlvc commit`` (status ``finished``, or ``failed`` with the
exception). Metric points are buffered in columns and flushed as Arrow IPC blocks every
second or 50,000 points by a background thread, so ``kill -9`` loses at most that interval;
the next mlvc command that finds the dead run's pid gone records it as ``killed``.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from .commit import Inputs, RunSpec, capture_inputs, now_us, record_run
from .errors import MlvcError, UsageError
from .ids import ObjectId
from .objects import FILE, TreeEntry
from .params import check_key, flatten
from .trees import safe_relpath

LIVE = "live"
FLUSH_POINTS = 50_000
FLUSH_SECONDS = 1.0
_now_ns = time.time_ns


class ParamConflict(UsageError):
    pass


class NoActiveRun(MlvcError):
    exit_code = 2


def _param_value(key: str, value: Any):
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        value = value.item()
    if value is None or isinstance(value, list | tuple | dict):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, bool | int | float | str):
        return value
    raise UsageError(f"param {key!r} has a {type(value).__name__}; use int, float, bool or str")


def _proc_start(pid: int) -> str:
    """The kernel's start time of a process (guards against pid reuse), or '' if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def new_key() -> str:
    """A fresh live-run key: sortable by start time, unique by its random tail."""
    return f"{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(4)}"


def _atomic_json(path: Path, value: dict) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    tmp.write_text(json.dumps(value, sort_keys=True))
    os.replace(tmp, path)


class LiveRun:
    """A run in progress. ``id`` is the live key until it ends, then the recorded run id."""

    def __init__(
        self,
        repo,
        name: str = "",
        message: str = "",
        params=None,
        tags=None,
        data=(),
        parent: LiveRun | None = None,
        capture: bool = True,
    ):
        self.repo = repo
        self.key = new_key()
        self.dir = repo.dir / LIVE / self.key
        (self.dir / "series").mkdir(parents=True)
        self.parent = parent
        self.run_id: ObjectId | None = None
        self.started = now_us()
        self._init_buffers()
        self._meta = {
            "pid": os.getpid(),
            "proc_start": _proc_start(os.getpid()),
            "host": socket.gethostname(),
            "name": name,
            "message": message,
            "started": self.started,
            "argv": list(sys.argv),
            "parent": parent.key if parent else None,
            "cwd": os.getcwd(),
        }
        self._write_meta()  # visible to `mlvc runs` from now on
        inputs = capture_inputs(repo, data=data, code=capture, env=capture)
        self._meta["inputs"] = {
            "code": inputs.code.hex if inputs.code else None,
            "git": dict(inputs.git),
            "env": inputs.env.hex if inputs.env else None,
            "data": inputs.data.hex if inputs.data else None,
            "data_paths": list(inputs.data_paths),
            "artifact_paths": list(inputs.artifact_paths),
        }
        if params:
            self.log_params(params)
        for k, v in (tags or {}).items():
            self.set_tag(k, v)
        self._write_meta()
        self._start_flusher()

    def _init_buffers(self) -> None:
        self._params: dict[str, Any] = {}
        self._tags: dict[str, str] = {}
        self._artifacts: dict[str, list] = {}
        self._children: list[str] = []
        self.on_end: list = []  # callables given the recorded run id once the run has ended
        # metric columns; appended in this order, value last (see _flush)
        self._codes: list[int] = []
        self._steps: list[int] = []
        self._times: list[int] = []
        self._values: list[float] = []
        self._keys: dict[str, list] = {}  # key -> [code, next step]
        self._names: list[str] = []
        self._block = 0
        self._flush_lock = threading.Lock()

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
        return self._meta["name"]

    def __repr__(self) -> str:
        return f"<LiveRun {self.id} {self.name!r}>"

    # -- params and tags -------------------------------------------------------------------

    def log_param(self, key: str, value: Any) -> None:
        check_key(key, f"{key}={value!r}")
        value = _param_value(key, value)
        old = self._params.get(key, _MISSING)
        if old is not _MISSING and (old != value or type(old) is not type(value)):
            raise ParamConflict(
                f"param {key!r} was already logged as {old!r} in this run and cannot change "
                f"to {value!r}; start a new run for new params"
            )
        self._params[key] = value
        self._meta["params"] = self._params
        self._write_meta()

    def log_params(self, params: dict[str, Any]) -> None:
        for k, v in flatten(dict(params)).items():
            self.log_param(k, v)

    def set_tag(self, key: str, value: Any = "") -> None:
        check_key(key, f"{key}={value!r}")
        self._tags[key] = str(value)
        self._meta["tags"] = self._tags
        self._write_meta()

    def set_tags(self, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self.set_tag(k, v)

    # -- metrics ---------------------------------------------------------------------------

    def log_metric(
        self, key: str, value: float, step: int | None = None, timestamp: float | None = None
    ) -> None:
        """Buffer one point; ``step`` defaults to one more than this key's last step.

        ``timestamp`` is in seconds since the epoch (default: now). NaN and inf are kept.
        """
        st = self._keys.get(key) or self._new_key(key)
        if step is None:
            step = st[1]
        st[1] = step + 1
        self._codes.append(st[0])
        self._steps.append(step)
        self._times.append(_now_ns() if timestamp is None else int(timestamp * 1e9))
        self._values.append(float(value))

    def log_metrics(
        self, metrics: dict[str, float], step: int | None = None, timestamp: float | None = None
    ) -> None:
        for k, v in metrics.items():
            self.log_metric(k, v, step, timestamp)

    def _new_key(self, key: str) -> list:
        check_key(key, key)
        st = [len(self._names), 0]
        self._names.append(key)
        self._keys[key] = st
        return st

    def _flush_loop(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(0.05):
            if len(self._values) >= FLUSH_POINTS or (
                self._values and time.monotonic() - last >= FLUSH_SECONDS
            ):
                self.flush()
                last = time.monotonic()

    def flush(self) -> None:
        """Write buffered points as one Arrow IPC block (temp + rename)."""
        with self._flush_lock:
            n = len(self._values)  # value is appended last: the first n rows are complete
            if not n:
                return
            cols = [lst[:n] for lst in (self._codes, self._steps, self._times, self._values)]
            names = list(self._names)
            for lst in (self._codes, self._steps, self._times, self._values):
                del lst[:n]
            self._block += 1
            _write_block(self.dir / "series" / f"{self._block:08d}.arrow", cols, names)

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
                name = src.relative_to(self.repo.root).as_posix()
            except ValueError:
                name = src.name
        name = safe_relpath(name)
        files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
        for f in files:
            rel = name if f == src else f"{name}/{f.relative_to(src).as_posix()}"
            kind = "exec" if os.access(f, os.X_OK) else FILE
            self._artifacts[rel] = [kind, self.repo.store.add_file(f).hex, f.stat().st_size]
        self._meta["artifacts"] = self._artifacts
        self._write_meta()
        return name

    def forget_artifacts(self, name: str) -> None:
        """Drop logged artifacts at ``name`` or below it (before logging a replacement)."""
        for rel in [r for r in self._artifacts if r == name or r.startswith(name + "/")]:
            del self._artifacts[rel]

    def record_model(self, name: str, record: dict) -> None:
        """Note a model logged by ``mlvc.models.log_model`` for the run's ``models`` field."""
        self._meta.setdefault("models", {})[name] = record
        self._write_meta()

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

    def _log_bytes(self, data: bytes, name: str) -> str:
        name = safe_relpath(name)
        self._artifacts[name] = [FILE, self.repo.store.add_bytes(data).hex, len(data)]
        self._meta["artifacts"] = self._artifacts
        self._write_meta()
        return name

    # -- ending ----------------------------------------------------------------------------

    def _write_meta(self) -> None:
        getattr(self.repo.store, "flush", lambda: None)()  # a reaper must see its objects
        _atomic_json(self.dir / "meta.json", self._meta)

    def end(self, status: str = "finished", error: BaseException | None = None) -> ObjectId:
        """Record the run; returns its id. Ending twice returns the same id."""
        if self.run_id is not None:
            return self.run_id
        self._stop.set()
        self._flusher.join()
        self.flush()
        if error is not None:
            tb = traceback.format_exception(type(error), error, error.__traceback__)
            self._meta["error"] = {
                "type": type(error).__name__,
                "message": str(error),
                "traceback": "".join(tb)[-4000:],
            }
        self._meta["children"] = self._children
        self.run_id = commit_staged(self.repo, self.dir, self._meta, status)
        if self.parent is not None:
            self.parent._children.append(self.run_id.hex)
        _forget(self)
        for hook in self.on_end:
            hook(self.run_id)
        return self.run_id

    def __enter__(self) -> LiveRun:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is KeyboardInterrupt:
            self.end("killed", exc)
        else:
            self.end("failed" if exc is not None else "finished", exc)
        return False


_MISSING = object()


def _write_block(path: Path, cols: list[list], names: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.ipc as ipc

    codes, steps, times, values = cols
    table = pa.table(
        {
            "key": pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(names)),
            "step": pa.array(steps, pa.int64()),
            "timestamp": pa.array(times, pa.int64()),  # ns since epoch
            "value": pa.array(values, pa.float64()),
        }
    )
    tmp = path.with_name(f".{path.name}.tmp")
    with pa.OSFile(str(tmp), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    os.replace(tmp, path)


def read_series(live_dir: Path):
    """Every flushed point of a live run as one table (key, step, timestamp µs, value)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.ipc as ipc

    tables = []
    for block in sorted((live_dir / "series").glob("*.arrow")):
        try:
            t = ipc.open_file(pa.memory_map(str(block))).read_all()
        except (OSError, pa.ArrowInvalid):
            continue  # a block torn by a crash: everything before it is intact
        tables.append(t.set_column(0, "key", pc.cast(t["key"], pa.string())))
    schema = pa.schema(
        [
            ("key", pa.string()),
            ("step", pa.int64()),
            ("timestamp", pa.int64()),
            ("value", pa.float64()),
        ]
    )
    if not tables:
        return schema.empty_table()
    t = pa.concat_tables(tables)
    return t.set_column(2, "timestamp", pc.divide(t["timestamp"], 1000).cast(pa.int64()))


def last_values(table) -> dict[str, float]:
    """The value at the highest step of each key (the latest logged among equal steps)."""
    out: dict[str, tuple[int, float]] = {}
    for k, s, v in zip(
        table["key"].to_pylist(), table["step"].to_pylist(), table["value"].to_pylist(), strict=True
    ):
        if k not in out or s >= out[k][0]:
            out[k] = (s, v)
    return {k: v for k, (s, v) in out.items()}


def _series_blob(repo, table) -> ObjectId | None:
    if table.num_rows == 0:
        return None
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = table.sort_by([("key", "ascending"), ("step", "ascending")])
    table = table.set_column(2, "timestamp", table["timestamp"].cast(pa.timestamp("us", "UTC")))
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return repo.store.add_bytes(buf.getvalue())


def commit_staged(repo, live_dir: Path, meta: dict, status: str) -> ObjectId:
    """Record a staged live run (ours at its end, or a dead one found later) and unstage it."""
    series = read_series(live_dir)
    inp = meta.get("inputs") or {}

    def oid(h):
        return ObjectId.parse(h) if h else None

    inputs = Inputs(
        oid(inp.get("code")),
        inp.get("git", {}),
        oid(inp.get("env")),
        oid(inp.get("data")),
        tuple(inp.get("data_paths", ())),
        tuple(inp.get("artifact_paths", ())),
    )
    extra: dict[str, Any] = {"live_key": live_dir.name}
    for k in ("error", "children", "parent"):
        if meta.get(k):
            extra[k] = meta[k]
    argv = meta.get("argv") or []
    spec = RunSpec(
        message=meta.get("message", ""),
        name=meta.get("name", ""),
        params=meta.get("params", {}),
        tags=meta.get("tags", {}),
        models=meta.get("models", {}),
        command=("python", *argv) if argv and argv[0].endswith(".py") else tuple(argv),
        status=status,
        started=meta.get("started"),
        series=_series_blob(repo, series),
        series_metrics=last_values(series),
        inputs=inputs,
        extra=extra,
        artifact_entries={
            p: TreeEntry(p.rsplit("/", 1)[-1], k, ObjectId.parse(i), n)
            for p, (k, i, n) in meta.get("artifacts", {}).items()
        },
        move_head=meta.get("parent") is None,
    )
    run_id = record_run(repo, spec, Path(meta.get("cwd") or repo.root))
    shutil.rmtree(live_dir, ignore_errors=True)
    return run_id


# -- finding live and dead runs ------------------------------------------------------------


def _alive(meta: dict) -> bool:
    if meta.get("host") != socket.gethostname():
        return True  # another machine's run: we cannot tell, so leave it alone
    pid = meta.get("pid")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError):
        return True
    return not meta.get("proc_start") or _proc_start(pid) == meta["proc_start"]


def live_runs(repo) -> list[dict]:
    """Runs in progress: their metadata and latest metric values."""
    out = []
    base = repo.dir / LIVE
    for d in sorted(base.iterdir()) if base.is_dir() else []:
        try:
            meta = json.loads((d / "meta.json").read_text())
        except (OSError, ValueError):
            continue
        if d.name.startswith(".") or not _alive(meta):
            continue
        series = read_series(d)
        out.append(
            {
                "key": d.name,
                "name": meta.get("name", ""),
                "pid": meta.get("pid"),
                "started": meta.get("started"),
                "params": meta.get("params", {}),
                "tags": meta.get("tags", {}),
                "metrics": last_values(series),
                "points": series.num_rows,
                "status": "running",
            }
        )
    return out


def reap_dead_runs(repo) -> list[ObjectId]:
    """Record every live run whose process is gone as ``killed``; returns their ids."""
    base = repo.dir / LIVE
    if not base.is_dir():
        return []
    done = []
    for d in sorted(base.iterdir()):
        if d.name.startswith("."):
            continue
        try:
            meta = json.loads((d / "meta.json").read_text())
        except (OSError, ValueError):
            if time.time() - d.stat().st_mtime > 3600:
                shutil.rmtree(d, ignore_errors=True)  # died before writing anything useful
            continue
        if _alive(meta) or "inputs" not in meta:
            continue
        claimed = base / f".reaping-{d.name}-{os.getpid()}"
        try:
            os.rename(d, claimed)  # only one reaper wins the rename
        except OSError:
            continue
        done.append(commit_staged(repo, claimed, meta, "killed"))
    return done


# -- the fluent API ------------------------------------------------------------------------

_stack: list[LiveRun] = []
_stack_lock = threading.Lock()


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
    is not a run of its own: it adds to the run ``mlvc run`` records (mlvc.attached).
    """
    from .repo import Repo

    parent = _stack[-1] if _stack and nested else None
    if parent is None:
        from .attached import attach

        run = attach(repo, name=name, params=params, tags=tags)
        if run is not None:
            with _stack_lock:
                _stack.append(run)
            return run
    repo = repo if repo is not None else Repo()
    run = LiveRun(
        repo,
        name=name or "",
        message=message or "",
        params=params,
        tags=tags,
        data=data,
        parent=parent,
    )
    if parent is None:
        from .seeding import take_pending_seed

        seed = take_pending_seed()
        if seed is not None and "mlvc.seed" not in run._params:
            run.log_param("mlvc.seed", seed)
    with _stack_lock:
        _stack.append(run)
    return run


def _forget(run: LiveRun) -> None:
    with _stack_lock:
        if run in _stack:
            _stack.remove(run)


def active_run() -> LiveRun | None:
    return _stack[-1] if _stack else None


def _active() -> LiveRun:
    if not _stack:
        start_run()  # as MLflow does: logging outside a run starts one, ended at exit
    return _stack[-1]


def end_run(status: str = "finished") -> ObjectId | None:
    return _stack[-1].end(status) if _stack else None


def log_param(key, value):
    _active().log_param(key, value)


def log_params(params):
    _active().log_params(params)


def log_metric(key, value, step=None, timestamp=None):
    _active().log_metric(key, value, step, timestamp)


def log_metrics(metrics, step=None, timestamp=None):
    _active().log_metrics(metrics, step, timestamp)


def log_artifact(path, name=None):
    return _active().log_artifact(path, name)


def log_text(text, name):
    return _active().log_text(text, name)


def log_dict(obj, name):
    return _active().log_dict(obj, name)


def set_tag(key, value=""):
    _active().set_tag(key, value)


def set_tags(tags):
    _active().set_tags(tags)


@atexit.register
def _end_all() -> None:
    while _stack:
        try:
            _stack[-1].end("finished")
        except Exception as e:  # at exit there is no caller left to raise to
            print(f"mlvc: could not record run {_stack[-1].id}: {e}", file=sys.stderr)
            _stack.pop()
