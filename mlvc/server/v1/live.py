"""Live runs logged over the network (``mlvc.start_run`` with ``MLVC_TRACKING_URI``).

The server holds each one as a ``LiveRun`` staged under ``.mlvc/live/<key>/`` like any live
run, marked ``server_api: v1`` and kept alive by a lease (``lease_until`` in its meta.json,
renewed by every batch) rather than by the server's process id alone, so a restart of the
server does not make a reaper record it as killed: the restarted server adopts it.

A client sends batches, each with a ``batch_id`` it chose (a uuid) and re-sends a batch
until it is acknowledged. The server applies a batch once: its points are written as one
metric block that carries its id (one atomic rename), and the ids of the last
``KEEP_BATCHES`` batches are kept in the run's meta.json too, so a batch sent again (also
after a restart, or a ``kill -9`` between the two writes) is acknowledged without being
applied twice. A run that sends nothing for the lease time is recorded as killed.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace

from ...core.params import INT_MAX, INT_MIN
from ...errors import MlvcError, UsageError
from ...runs.live import LiveRun
from ...runs.staging import StagedRun, folders, kind_of, pid_alive
from ..app import endpoint, log
from ._common import ARROW, bad, body, not_found
from ._common import field as arg

TABLE = "v1.live"  # state.extras key
MARK = "v1"  # meta.json's server_api for the runs held here
KEEP_BATCHES = 1000
KEEP_ENDED = 1000
STATUSES = ("finished", "failed", "killed")
MAX_ID = 200  # characters of a batch or client id


@dataclass
class Entry:
    run: LiveRun
    lock: threading.Lock = field(default_factory=threading.Lock)
    applied: OrderedDict = field(default_factory=OrderedDict)
    last: float = field(default_factory=time.monotonic)


class LiveTable:
    """The live runs this server holds for v1 clients, by key."""

    def __init__(self, state):
        self.state = state
        self.lease = state.options.lease_seconds
        self.runs: dict[str, Entry] = {}
        self.by_client: dict[str, str] = {}
        self.lock = threading.Lock()
        self.ended_path = state.ctx.layout.dir / "server" / "v1-ended.json"
        self.ended: OrderedDict[str, dict] = self._read_ended()
        self._stop = threading.Event()

    # -- starting, adopting ----------------------------------------------------------------

    def _ctx(self, author: str):
        ctx = self.state.ctx
        return replace(ctx, settings=ctx.settings.as_user(author))

    def start(self, principal, data: dict) -> dict:
        name = arg(data, "name", str, required=False, default="")
        message = arg(data, "message", str, required=False, default="")
        params = arg(data, "params", dict, required=False, default={})
        tags = arg(data, "tags", dict, required=False, default={})
        client_id = _short_id(arg(data, "client_id", str, required=False), "client_id")
        argv = arg(data, "argv", list, required=False, default=None)
        if argv is not None and not all(isinstance(a, str) for a in argv):
            raise bad("argv: expected an array of strings")
        tags = {k: v if isinstance(v, str) else json.dumps(v) for k, v in tags.items()}
        LiveRun.check_start(name, params, tags)  # a start sent again is checked the same
        with self.lock:
            if client_id and client_id in self.by_client:  # a start sent again
                return {"key": self.by_client[client_id], "name": name}
            for key, info in self.ended.items():
                if client_id and info.get("client_id") == client_id:
                    return {"key": key, "name": name, "run_id": info["id"]}
            run = LiveRun.create(
                self._ctx(principal.name),
                name=name,
                message=message,
                params=params,
                tags=tags,
                capture=False,
            )
            run.staged.meta.update(
                {"server_api": MARK, "server_author": principal.name, "client_id": client_id}
            )
            # the command is the client's (if it sent one), never the server's own
            run.staged.meta["argv"] = argv[:1000] if argv is not None else []
            self._renew(run)
            self.runs[run.key] = Entry(run)
            if client_id:
                self.by_client[client_id] = run.key
        return {"key": run.key, "name": run.name}

    def adopt(self) -> list[str]:
        """Take back the runs a previous server process held (at start)."""
        me = os.getpid()
        adopted = []
        for path in folders(self.state.ctx.layout):
            if kind_of(path) != "run":
                continue
            staged = StagedRun.load(path)
            if staged is None or staged.meta.get("server_api") != MARK:
                continue
            pid = staged.meta.get("pid")
            if pid != me and pid_alive(pid, staged.meta.get("proc_start") or ""):
                continue  # another server process holds it
            staged.adopt()
            author = staged.meta.get("server_author")
            run = LiveRun.join(self._ctx(author if isinstance(author, str) else ""), staged)
            entry = Entry(run)
            batches = staged.meta.get("v1_batches")
            noted = [n.get("batch") for n in staged.block_notes()]  # also those not in meta yet
            for b in [*(batches if isinstance(batches, list) else []), *noted]:
                if isinstance(b, str):
                    entry.applied[b] = True
            self._renew(run)
            self.runs[run.key] = entry
            client_id = staged.meta.get("client_id")
            if isinstance(client_id, str) and client_id:
                self.by_client[client_id] = run.key
            adopted.append(run.key)
        return adopted

    def _renew(self, run: LiveRun) -> None:
        run.staged.set_lease(time.time() + self.lease)
        run.staged.save()

    # -- batches ---------------------------------------------------------------------------

    def entry(self, key: str) -> Entry:
        with self.lock:
            entry = self.runs.get(key)
        if entry is None:
            if key in self.ended:
                raise bad(f"live run {key} has ended (run {self.ended[key]['id']})")
            raise not_found(f"no live run {key!r} on this server")
        return entry

    def batch(self, key: str, data: dict, points: list | None = None) -> dict:
        """Apply a batch once: ``data`` as JSON gives it, its points in ``metrics``; or, from
        an Arrow stream (``arrow_batch``), the rest of it with the ``points`` checked."""
        batch_id = _short_id(arg(data, "batch_id", str), "batch_id")
        params = arg(data, "params", dict, required=False, default={})
        tags = arg(data, "tags", dict, required=False, default={})
        if points is None:
            metrics = arg(data, "metrics", list, required=False, default=[])
            points = [_point(i, m) for i, m in enumerate(metrics)]  # all checked before any
        entry = self.entry(key)
        with entry.lock:
            entry.last = time.monotonic()
            run = entry.run
            if batch_id in entry.applied:
                return {"applied": False, "points": 0, "refused": []}
            if run.has_ended:
                raise bad(f"live run {key} has ended")
            refused = _apply(run, params, tags, points, batch_id)
            entry.applied[batch_id] = True
            while len(entry.applied) > KEEP_BATCHES:
                entry.applied.popitem(last=False)
            run.staged.meta["v1_batches"] = list(entry.applied)
            self._renew(run)
        return {"applied": True, "points": len(points) - len(refused["points"]),
                "refused": refused["messages"]}  # fmt: skip

    # -- ending ----------------------------------------------------------------------------

    def end(self, key: str, status: str) -> dict:
        if status not in STATUSES:
            raise bad(f"status: {status[:40]!r} is not one of {', '.join(STATUSES)}")
        with self.lock:
            if key in self.ended:
                return {"key": key, "run_id": self.ended[key]["id"]}
        entry = self.entry(key)
        with entry.lock:
            oid = entry.run.end(status)
            client_id = entry.run.staged.meta.get("client_id")
            with self.lock:
                self.runs.pop(key, None)
                self.by_client.pop(client_id, None)
                self.ended[key] = {"id": oid.hex, "client_id": client_id}
                while len(self.ended) > KEEP_ENDED:
                    self.ended.popitem(last=False)
                self._write_ended()
        return {"key": key, "run_id": oid.hex}

    def _read_ended(self) -> OrderedDict:
        try:
            data = json.loads(self.ended_path.read_text())
            return OrderedDict((str(k), v) for k, v in data.items() if isinstance(v, dict))
        except (OSError, ValueError, AttributeError):
            return OrderedDict()

    def _write_ended(self) -> None:
        self.ended_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.ended_path.with_name(f".{self.ended_path.name}.{os.getpid()}")
        with open(tmp, "w") as f:
            json.dump(self.ended, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.ended_path)

    # -- leases ----------------------------------------------------------------------------

    def expire(self) -> list[str]:
        """Record as killed every run that sent nothing for the lease time."""
        now = time.monotonic()
        with self.lock:
            stale = [k for k, e in self.runs.items() if now - e.last > self.lease]
        done = []
        for key in stale:
            try:
                self.end(key, "killed")
                done.append(key)
            except (MlvcError, Exception) as e:  # noqa: BLE001 - the next round tries again
                log.warning("could not record the expired live run %s: %s", key, e)
        return done

    def watch(self) -> None:
        period = max(0.2, min(self.lease / 4, 30.0))
        while not self._stop.wait(period):
            self.expire()

    def shutdown(self) -> None:
        """Save every run for the next server process (they are not ended)."""
        self._stop.set()
        with self.lock:
            entries = list(self.runs.values())
        for entry in entries:
            with entry.lock:
                try:
                    entry.run.flush()
                    self._renew(entry.run)
                except Exception as e:  # noqa: BLE001 - save the others
                    log.warning("could not save live run %s: %s", entry.run.key, e)


def _short_id(value, name: str) -> str | None:
    if value is not None and (not value or len(value) > MAX_ID):
        raise bad(f"{name}: 1 to {MAX_ID} characters")
    return value


def _point(i: int, m) -> tuple:
    where = f"metrics[{i}]"
    if not isinstance(m, list) or len(m) != 4:
        raise bad(f"{where}: expected [key, value, step, timestamp_ns]")
    key, value, step, ns = m
    if not isinstance(key, str):
        raise bad(f"{where}: the key must be a string")
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        value = float(value)
    elif value is None:
        value = math.nan
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise bad(f'{where}: the value must be a number (or "nan", "inf", "-inf")')
    step, ns = _int64(step, where, "step"), _int64(ns, where, "timestamp_ns")
    try:
        value = float(value)
    except OverflowError:
        raise bad(f"{where}: the value is too large for a float") from None
    return key, value, step, ns


def arrow_batch(data: bytes) -> tuple[dict, list]:
    """A batch sent as an Arrow IPC stream (``ARROW``): the JSON object of its schema's
    ``mlvc.batch`` metadata (batch_id, params, tags) and its points, (key, value, step,
    timestamp_ns) from the columns ``key`` (text), ``value`` (a float; null is NaN),
    ``step`` and ``timestamp_ns`` (64-bit integers). What the JSON form refuses, this
    refuses too, with a 400 naming the column."""
    import pyarrow as pa
    import pyarrow.types as pt

    from ...core.ipc import IpcRefused, read_ipc

    try:
        table = read_ipc(data)
    except IpcRefused as e:
        raise bad(f"the body is not an Arrow batch mlvc takes: {e}") from None
    meta = (table.schema.metadata or {}).get(b"mlvc.batch")
    try:
        head = json.loads(meta) if meta is not None else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        head = None
    if not isinstance(head, dict):
        raise bad("the Arrow stream's schema metadata must hold mlvc.batch, a JSON object")
    names = set(table.column_names)
    if names != {"key", "value", "step", "timestamp_ns"}:
        raise bad("the Arrow stream's columns must be key, value, step, timestamp_ns")
    key, value = table.column("key"), table.column("value")
    if pt.is_dictionary(key.type):
        key = key.cast(key.type.value_type)
    if not (pt.is_string(key.type) or pt.is_large_string(key.type)) or key.null_count:
        raise bad("the key column must be text, with no nulls")
    if not (pt.is_floating(value.type) or pt.is_integer(value.type)):
        raise bad("the value column must hold numbers")
    columns = [key.to_pylist(), value.cast(pa.float64()).fill_null(math.nan).to_pylist()]
    for name in ("step", "timestamp_ns"):
        col = table.column(name)
        if not pt.is_integer(col.type) or col.null_count:
            raise bad(f"the {name} column must hold integers, with no nulls")
        try:
            columns.append(col.cast(pa.int64()).to_pylist())  # a uint64 past INT64_MAX: refused
        except pa.ArrowInvalid:
            raise bad(f"the {name} column must hold 64-bit integers") from None
    return head, list(zip(*columns, strict=True))


def _int64(v, where: str, what: str) -> int:
    """A 64-bit integer; JSON does not tell 3 from 3.0, so an integral float is one too."""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not INT_MIN <= v <= INT_MAX:
        raise bad(f"{where}: the {what} must be a 64-bit integer")
    return v


def _apply(run: LiveRun, params: dict, tags: dict, points: list, batch_id: str) -> dict:
    """Stage what can be staged; what a run cannot store is refused point by point."""
    messages, bad_points = [], []
    try:
        run.log_params(params)
    except UsageError:
        for k, v in params.items():
            try:
                run.log_param(k, v)
            except UsageError as e:
                messages.append(str(e))
    for k, v in tags.items():
        try:
            run.set_tag(k, v if isinstance(v, str) else json.dumps(v))
        except UsageError as e:
            messages.append(str(e))
    # the points and the batch id reach the disk in one block (one rename): after a crash,
    # a batch is either in a block that says so, or not applied at all
    staged = [(k, v, step, ns / 1e9) for k, v, step, ns in points]
    for n, why in run.log_block(staged, {"batch": batch_id}):
        bad_points.append(n)
        if len(messages) < 20:
            messages.append(why)
    return {"messages": messages, "points": bad_points}


def table(state) -> LiveTable:
    live = state.extras.get(TABLE)
    if live is None:
        live = state.extras[TABLE] = LiveTable(state)
        adopted = live.adopt()
        if adopted:
            log.warning("adopted %d live runs of v1 clients: %s", len(adopted), adopted)
        threading.Thread(target=live.watch, daemon=True, name="mlvc-v1-leases").start()
        state.on_shutdown.append(live.shutdown)
    return live


def routes(state) -> list:
    from starlette.routing import Route

    live = table(state)

    def start(call):
        return live.start(call.principal, {} if call.body is None else body(call))  # optional

    def batch(call):
        if isinstance(call.body, bytes):  # an Arrow stream: what the mlvc client sends
            return live.batch(call.path_params["key"], *arrow_batch(call.body))
        return live.batch(call.path_params["key"], body(call))

    def end(call):
        data = call.body if isinstance(call.body, dict) else {}
        status = arg(data, "status", str, required=False, default="finished")
        return live.end(call.path_params["key"], status)

    base = "/api/v1/runs/live"
    return [
        Route(base, endpoint(state, start, "write"), methods=["POST"]),
        Route(
            base + "/{key}/batches",
            endpoint(state, batch, "write", binary=ARROW),
            methods=["POST"],
        ),
        Route(base + "/{key}/end", endpoint(state, end, "write"), methods=["POST"]),
    ]
