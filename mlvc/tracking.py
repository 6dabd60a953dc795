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
import re
import secrets
import shutil
import socket
import sys
import threading
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

from .commit import (
    Inputs,
    RunSpec,
    capture_inputs,
    crash_point,
    now_us,
    publish_run,
    record_run,
)
from .errors import FileChanged, MlvcError, UsageError
from .gc import writing
from .ids import ObjectId
from .objects import FILE, TreeEntry
from .odb import _stamp
from .params import (
    INT_MAX,
    INT_MIN,
    MAX_PARAM_BYTES,
    case_twin,
    check_case,
    check_key,
    check_param,
    flatten,
    storable_params,
)
from .refs import check_ref_name
from .trees import read_run, safe_relpath

LIVE = "live"
RECORDED = "recorded"  # in a staged run: its stored run's id, noted before any ref names it
UNSTAGED = ".unstaged-"  # a recorded staged run being removed (left by a crash: removed later)
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


_crash_point = crash_point


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
        if name:  # what cannot be recorded is refused before the run exists
            check_ref_name(name, "name")
        params = flatten(dict(params)) if params else {}
        check_case({k: _param_value(check_key(k), v) for k, v in params.items()}, "param")
        for k, v in (tags or {}).items():
            _tag_value(k, v)
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
        with writing(repo.dir, repo.store):  # gc waits until meta.json names the inputs
            inputs = capture_inputs(repo, data=data, code=capture, env=capture)
            self._meta["inputs"] = {
                "code": inputs.code.hex if inputs.code else None,
                "git": dict(inputs.git),
                "env": inputs.env.hex if inputs.env else None,
                "data": inputs.data.hex if inputs.data else None,
                "data_paths": list(inputs.data_paths),
                "artifact_paths": list(inputs.artifact_paths),
            }
            self._write_meta()
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
        """Stage one param; what a run cannot store is refused here (UsageError) and the
        run goes on (see mlvc.params for the limits)."""
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
        self._meta["params"] = self._params
        self._write_meta()

    def log_params(self, params: dict[str, Any]) -> None:
        for k, v in flatten(dict(params)).items():
            self.log_param(k, v)

    def set_tag(self, key: str, value: Any = "") -> None:
        self._tags[key] = _tag_value(key, value)
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

        ``timestamp`` is in seconds since the epoch (default: now). NaN and inf are kept. A
        point that cannot be stored (not a number, a step or time out of the 64-bit range)
        is refused with a UsageError and the run goes on.
        """
        try:
            value = float(value)
        except (TypeError, ValueError, OverflowError):
            raise UsageError(
                f"metric {key!r}: {type(value).__name__} value is not a number a float holds"
            ) from None
        ns = _now_ns() if timestamp is None else _timestamp_ns(key, timestamp)
        st = self._keys.get(key) or self._new_key(key)
        if step is None:
            step = st[1]
        elif type(step) is not int or not INT_MIN <= step < INT_MAX:
            step = _step(key, step)
        st[1] = step + 1
        self._codes.append(st[0])
        self._steps.append(step)
        self._times.append(ns)
        self._values.append(value)

    def log_metrics(
        self, metrics: dict[str, float], step: int | None = None, timestamp: float | None = None
    ) -> None:
        for k, v in metrics.items():
            self.log_metric(k, v, step, timestamp)

    def _new_key(self, key: str) -> list:
        check_key(key)
        twin = case_twin(key, self._keys)
        if twin is not None:
            raise UsageError(
                f"metric {key!r} differs only in case from {twin!r}, already logged in this "
                "run; SQL cannot tell them apart, so use one spelling"
            )
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
        with writing(self.repo.dir, self.repo.store):  # until meta.json names them
            for f in files:
                rel = name if f == src else f"{name}/{f.relative_to(src).as_posix()}"
                kind = "exec" if os.access(f, os.X_OK) else FILE
                st = f.stat()
                oid = self.repo.store.add_file(f)
                if _stamp(f.stat()) != _stamp(st):  # the size recorded is the bytes stored
                    raise FileChanged(f)
                self._artifacts[rel] = [kind, oid.hex, st.st_size]
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
        with writing(self.repo.dir, self.repo.store):  # until meta.json names it
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


def _step(key: str, step: Any) -> int:
    """A step given as another integer type (numpy), checked; else a UsageError."""
    try:
        as_int = int(step) if not isinstance(step, bool | float) else None
    except (TypeError, ValueError):
        as_int = None
    if as_int is None or as_int != step or not INT_MIN <= as_int < INT_MAX:
        raise UsageError(f"metric {key!r}: step {step!r} is not a 64-bit integer")
    return as_int


def _timestamp_ns(key: str, timestamp: Any) -> int:
    try:
        ns = int(float(timestamp) * 1e9)
    except (TypeError, ValueError, OverflowError):
        ns = None
    if ns is None or not INT_MIN <= ns <= INT_MAX:
        raise UsageError(
            f"metric {key!r}: timestamp {timestamp!r} is not seconds since the epoch "
            "(years 1678 to 2262)"
        )
    return ns


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


def commit_staged(
    repo, live_dir: Path, meta: dict, status: str, key: str | None = None, phase: str = "end"
) -> ObjectId:
    """Record a staged live run (ours at its end, or a dead one found later) and unstage it.

    What its meta.json holds never loses the run: a value that cannot be stored is kept as
    text (or cut) and noted in ``extra["unstorable"]``, and a run whose project params or
    metrics files cannot be read is recorded without them (the error noted in ``extra``).
    Finishing the job again is safe: the stored run's id is noted in the staged folder
    (``recorded``) before any ref names it, so a recorder killed after that point is
    followed by one that publishes the same run instead of recording a second one.
    """
    with writing(repo.dir, repo.store):  # the series blob is named only by the run
        return _commit_staged(repo, live_dir, meta, status, key, phase)


def _commit_staged(repo, live_dir: Path, meta, status: str, key: str | None, phase: str):
    meta = meta if isinstance(meta, dict) else {}
    oid = stored_run(repo, live_dir)
    if oid is None:
        spec, cwd = _staged_spec(repo, live_dir, meta, status, key or live_dir.name)

        def stored(run_id: ObjectId) -> None:
            note_stored(live_dir, run_id, spec.move_head)
            _crash_point(f"{phase}-stored")

        try:
            oid = record_run(repo, spec, cwd, on_stored=stored)
        except MlvcError as e:  # a project file, a name, a size: record without the extras
            extra = {**spec.extra, "record_error": str(e)}
            try:
                oid = record_run(repo, replace(spec, project_files=False, extra=extra), cwd,
                                 on_stored=stored)  # fmt: skip
            except MlvcError as again:  # still too big or odd: keep the run, lose the extras
                extra = {"live_key": spec.extra["live_key"], "record_error": str(again)[:2000]}
                bare = replace(spec, project_files=False, params={}, tags={}, models={},
                               message=spec.message[:1000], extra=extra)  # fmt: skip
                oid = record_run(repo, bare, cwd, on_stored=stored)
    _crash_point(f"{phase}-published")
    unstage(live_dir)
    return oid


def unstage(live_dir: Path) -> None:
    """Remove a recorded staged run: first renamed out of the reaper's sight in one step (a
    half-removed folder could otherwise pass for an unrecorded run), then deleted."""
    gone = live_dir.with_name(f"{UNSTAGED}{live_dir.name.lstrip('.')}-{secrets.token_hex(4)}")
    try:
        os.rename(live_dir, gone)
    except OSError:
        return
    shutil.rmtree(gone, ignore_errors=True)


def note_stored(live_dir: Path, oid: ObjectId, move_head: bool) -> None:
    """Note in a staged run that its run object is stored (durably, before any ref)."""
    path = live_dir / RECORDED
    tmp = path.with_name(f".{RECORDED}.{secrets.token_hex(4)}")
    with open(tmp, "w") as f:
        f.write(json.dumps({"id": oid.hex, "move_head": move_head}))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def stored_run(repo, live_dir: Path) -> ObjectId | None:
    """The run a staged folder was already stored as, published now if no ref names it yet
    (its recorder died in between); None if it was never stored."""
    try:
        note = json.loads((live_dir / RECORDED).read_text())
        oid = ObjectId.parse(note["id"])
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if not repo.store.has(oid):
        return None  # gone (gc of an unreferenced object): record the run again
    if not repo.refs.has_run(oid):
        publish_run(repo, oid, read_run(repo.store, oid), move_head=note.get("move_head", True))
    return oid


def read_meta(live_dir: Path) -> dict | None:
    """A staged run's meta.json, or None when it is missing or not a JSON map."""
    try:
        meta = json.loads((live_dir / "meta.json").read_text(), parse_int=_json_int)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _json_int(text: str) -> int | str:
    # Python refuses to read an int of over 4,300 digits: keep it as the text it is
    return int(text) if len(text) < 4000 else text


def _staged_spec(repo, live_dir: Path, meta: dict, status: str, key: str) -> tuple[RunSpec, Path]:
    """The RunSpec of a staged run, read defensively: nothing in meta can make it fail."""
    notes: dict[str, Any] = {}
    inp = _map(meta.get("inputs"))
    inputs = Inputs(
        _oid(inp.get("code")),
        _map(inp.get("git")),
        _oid(inp.get("env")),
        _oid(inp.get("data")),
        _paths(inp.get("data_paths")),
        _paths(inp.get("artifact_paths")),
    )
    if not meta.get("mlvc_run"):  # `mlvc run` decides its outputs itself (fresh ones only)
        inputs = replace(inputs, artifact_paths=_outputs_now(repo, inputs))
    params, changed, dropped = storable_params(meta.get("params"))
    if changed:
        notes["params"] = changed
    if dropped:
        notes["dropped_params"] = dropped
    tags, bad_tags = _storable_tags(meta.get("tags"))
    if bad_tags:
        notes["dropped_tags"] = bad_tags
    name = meta.get("name") if isinstance(meta.get("name"), str) else ""
    try:
        name = check_ref_name(name, "name") if name else ""
    except UsageError:
        notes["name"], name = name[:200], ""
    artifacts = {}
    for path, entry in _map(meta.get("artifacts")).items():
        try:
            kind, oid, size = entry
            artifacts[safe_relpath(path)] = TreeEntry(
                path.rsplit("/", 1)[-1], kind, ObjectId.parse(oid), size
            )
        except (TypeError, ValueError):
            notes.setdefault("dropped_artifacts", []).append(str(path)[:200])
    extra: dict[str, Any] = {"live_key": key}
    for k in ("error", "children", "parent"):
        if meta.get(k):
            extra[k] = meta[k]
    if notes:
        extra["unstorable"] = notes
    argv = meta.get("argv")
    argv = [str(a) for a in argv] if isinstance(argv, list) else []
    started = meta.get("started")
    message = meta.get("message")
    series = read_series(live_dir)
    spec = RunSpec(
        message=message[:MAX_PARAM_BYTES] if isinstance(message, str) else "",
        name=name,
        params=params,
        tags=tags,
        models=_map(meta.get("models")),
        command=("python", *argv) if argv and argv[0].endswith(".py") else tuple(argv),
        status=status,
        started=started if type(started) is int and 0 < started <= INT_MAX else None,
        series=_series_blob(repo, series),
        series_metrics=last_values(series),
        inputs=inputs,
        extra=extra,
        artifact_entries=artifacts,
        move_head=_staged_bool(meta.get("move_head"), meta.get("parent") is None),
        parents=_staged_ids(meta.get("parents")),
        reproduces=_oid(meta.get("reproduces")),
    )
    cwd = meta.get("cwd")
    return spec, Path(cwd) if isinstance(cwd, str) and cwd else repo.root


def _staged_bool(value: Any, default: bool) -> bool:
    return value if isinstance(value, bool) else default


def _staged_ids(value: Any) -> tuple[ObjectId, ...] | None:
    """Parents a staged run was given (``mlvc run`` of a sweep, a reproduction), or None
    (the default: HEAD when it is recorded)."""
    if not isinstance(value, list):
        return None
    ids = [_oid(v) for v in value]
    return tuple(i for i in ids if i is not None)


def _outputs_now(repo, inputs: Inputs) -> tuple[str, ...]:
    """The artifact paths captured at the start, plus the configured ones (declared outputs,
    ``[track]`` artifacts and metrics files) that the run created since."""
    from .commit import project_path
    from .project import load_project

    try:
        configured = load_project(repo.root).artifacts
    except MlvcError:
        return inputs.artifact_paths
    out = set(inputs.artifact_paths)
    for p in configured:
        try:
            out.add(project_path(repo.root, p, repo.root))
        except MlvcError:
            continue  # not there (or not inside the project): nothing to record
    data = set(inputs.data_paths)
    return tuple(sorted(p for p in out if not _under(p, data)))


def _under(path: str, folders: set[str]) -> bool:
    parts = path.split("/")
    return any("/".join(parts[:i]) in folders for i in range(1, len(parts) + 1))


def _map(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _paths(value: Any) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def _oid(text: Any) -> ObjectId | None:
    try:
        return ObjectId.parse(text) if isinstance(text, str) and text else None
    except ValueError:
        return None


def _storable_tags(tags: Any) -> tuple[dict[str, str], dict[str, str]]:
    out, dropped = {}, {}
    for k, v in _map(tags).items():
        try:
            check_ref_name(check_key(k), "tag")
        except UsageError:
            dropped[repr(k)[:200]] = str(v)[:200]
            continue
        out[k] = str(storable_params({"t": v})[0].get("t", ""))
    return out, dropped


# -- finding live and dead runs ------------------------------------------------------------


def _alive(meta: dict) -> bool:
    if meta.get("host") != socket.gethostname():
        return True  # another machine's run: we cannot tell, so leave it alone
    return _pid_alive(meta.get("pid"), meta.get("proc_start") or "")


def _pid_alive(pid: Any, start: str) -> bool:
    """Whether process ``pid`` runs, and is the one that started at ``start`` (if known)."""
    if type(pid) is not int or pid <= 0:
        return True  # cannot tell: leave it alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return True  # no /proc: os.kill said it exists
    if fields[0] in ("Z", "X", "x"):
        return False  # killed and not yet reaped by its parent: it writes nothing more
    return not start or fields[19] == start


def live_runs(repo) -> list[dict]:
    """Runs in progress: their metadata and latest metric values."""
    out = []
    base = repo.dir / LIVE
    for d in sorted(base.iterdir()) if base.is_dir() else []:
        meta = None if d.name.startswith(".") else read_meta(d)
        if meta is None or not _alive(meta):
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


# A reaper claims a dead run by renaming its folder to .reaping-<key>-<pid>-<start time>
# (older mlvc: .reaping-<key>-<pid>); a claim whose reaper is gone is claimed again.
_CLAIM = re.compile(r"\.reaping-(?P<key>.+)-(?P<pid>\d+)-(?P<start>\d*)")
_OLD_CLAIM = re.compile(r"\.reaping-(?P<key>\d{14}-[0-9a-f]{8})-(?P<pid>\d+)")


def reap_dead_runs(repo) -> list[ObjectId]:
    """Record every live run whose process is gone as ``killed``; returns their ids.

    Also finishes the claims of reapers that died at work. A run that cannot be recorded
    now (a store error) is kept, with a warning, for the next mlvc command to try again.
    """
    base = repo.dir / LIVE
    if not base.is_dir():
        return []
    done = []
    for d in sorted(base.iterdir()):
        try:
            with writing(repo.dir, repo.store):  # gc must not run between claim and record
                claim = _claim(base, d)
                if claim is None:
                    continue
                path, key, meta = claim
                done.append(commit_staged(repo, path, meta, "killed", key=key, phase="reap"))
        except Exception as e:  # never fail the command that happened to reap
            print(
                f"mlvc: warning: could not record the dead live run {d.name} ({e}); "
                "the next mlvc command tries again",
                file=sys.stderr,
            )
    return done


def _claim(base: Path, d: Path) -> tuple[Path, str, dict] | None:
    """Take a dead run (or a dead reaper's claim) for this process: (folder, key, meta)."""
    name = d.name
    if name.startswith(UNSTAGED):  # recorded already; its remover died
        shutil.rmtree(d, ignore_errors=True)
        return None
    m = _OLD_CLAIM.fullmatch(name) or _CLAIM.fullmatch(name)
    if m is not None:
        start = m.groupdict().get("start") or ""
        meta = read_meta(d)
        if _pid_alive(int(m["pid"]), start) or meta is None:
            return None
        if meta.get("host") != socket.gethostname():
            return None  # claimed on the run's own host: only a reaper there can tell
        key = m["key"]
    elif name.startswith("."):
        return None
    else:
        key, meta = name, read_meta(d)
        if meta is None:
            _drop_if_abandoned(d)
            return None
        if _alive(meta):
            return None
        if "inputs" not in meta and not _holds_anything(d, meta):
            shutil.rmtree(d, ignore_errors=True)  # died while starting: nothing was logged
            return None
    me = os.getpid()
    target = base / f".reaping-{key}-{me}-{_proc_start(me)}"
    try:
        os.rename(d, target)  # only one reaper wins the rename
    except OSError:
        return None
    _crash_point("reap-claimed")
    return target, key, meta


def _holds_anything(d: Path, meta: dict) -> bool:
    return bool(
        meta.get("params") or any((d / "series").glob("*.arrow")) or (d / RECORDED).exists()
    )


def _drop_if_abandoned(d: Path) -> None:
    """A folder without a meta.json: removed after an hour if it holds no points (its run
    died before writing anything useful). One whose meta.json is damaged, or that holds
    points, is left for fsck to name: it may name objects nothing else does."""
    if os.path.lexists(d / "meta.json"):
        return
    try:
        old = time.time() - d.stat().st_mtime > 3600
    except OSError:
        return
    if old and not any((d / "series").glob("*.arrow")):
        shutil.rmtree(d, ignore_errors=True)


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
