"""The watcher: a detached process that evaluates alert rules and notices stalled runs.

Training processes only flush metric blocks (mlvc.runs.staging); nothing about alerts runs
in them. When a live run starts in a project whose mlvc.toml has ``[[alerts]]`` or
``[events] stall_after``, ``ensure_watcher`` starts this process unless one holds
``.mlvc/alerts/watcher.lock``. It polls every POLL_S: new metric blocks of each live run are
evaluated against the rules (mlvc.events.alerts), a live run with no new point for
``stall_after`` gets one ``run.stalled`` per stall, and the points a run flushed just
before it was recorded are evaluated from its stored series once ``commit.created`` names
it. It exits once no run has been live for IDLE_S.

State per run (``.mlvc/alerts/<live key>.json``: blocks read, per rule whether it alerts,
when it last fired and the window's last points) is written durably with the events it
decides to emit, before they are written: a watcher killed at any point is followed by one
that neither fires again nor misses a transition.

Usage (internal): ``python -m mlvc.runs.watch PROJECT_ROOT``
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.crashlog import append_log
from ..core.durable import replace_file
from ..core.events import Event
from ..core.ids import ObjectId
from ..core.layout import Layout
from ..events import publish
from ..events.alerts import Rule, RuleState, load_rules, stall_after, step_rule
from ..workspace.project import load_project
from .staging import StagedRun, folders, kind_of

if TYPE_CHECKING:
    from ..workspace.context import RepoContext

POLL_S = 0.1
IDLE_S = 5.0
LOCK = "watcher.lock"
LOG = "watcher.log"
CURSOR = "watcher.cursor"  # the last commit.created a watcher read


@dataclass
class WatchConfig:
    rules: list[Rule] = field(default_factory=list)
    stall_after: float | None = None

    @property
    def active(self) -> bool:
        return bool(self.rules) or self.stall_after is not None


def load_config(root: Path, check_sql: bool = True) -> WatchConfig:
    """The alert rules and stall setting of the project at ``root`` (UsageError if bad)."""
    raw = load_project(root).raw
    source = str(Path(root) / "mlvc.toml")
    return WatchConfig(load_rules(raw, source, check_sql), stall_after(raw, source))


def ensure_watcher(ctx: RepoContext, config: WatchConfig | None = None) -> bool:
    """Start the watcher if the project watches anything and none runs; True if started.
    Call after staging the run: a watcher about to exit looks once more after letting go
    of its lock, so either it sees the new run or this sees the lock free."""
    config = config if config is not None else load_config(ctx.layout.root)
    if not config.active:
        return False
    lock = _lock_path(ctx.layout)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # one is watching
    finally:
        os.close(fd)
    from ..core.spawn import spawn_detached

    return spawn_detached("mlvc.runs.watch", [str(ctx.layout.root)])


def _lock_path(layout: Layout) -> Path:
    return layout.alerts / LOCK


# -- state --------------------------------------------------------------------------------


@dataclass
class RunState:
    key: str
    block: int = -1  # the last metric block read
    counts: dict[str, int] = field(default_factory=dict)  # points read per metric
    last_point_us: int = 0
    stalled: bool = False
    rules: dict[str, RuleState] = field(default_factory=dict)
    pending: list[dict] = field(default_factory=list)  # events decided, maybe not written

    def to_dict(self) -> dict:
        return {
            "key": self.key, "block": self.block, "counts": self.counts,
            "last_point_us": self.last_point_us, "stalled": self.stalled,
            "rules": {k: v.to_dict() for k, v in self.rules.items()}, "pending": self.pending,
        }  # fmt: skip

    @classmethod
    def load(cls, layout: Layout, key: str) -> RunState:
        try:
            d = json.loads((layout.alerts / f"{key}.json").read_text())
            return cls(
                key, int(d["block"]), {str(k): int(v) for k, v in d["counts"].items()},
                int(d["last_point_us"]), bool(d["stalled"]),
                {k: RuleState.from_dict(v) for k, v in d["rules"].items()},
                [e for e in d.get("pending", []) if isinstance(e, dict)],
            )  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return cls(key)

    def save(self, layout: Layout, sync: bool = True) -> None:
        """Replace the state file. ``sync=False`` when no event was decided: a state lost
        to a power cut then is an older one that every event written so far came after, so
        reading the same points again from it decides nothing already announced."""
        data = json.dumps(self.to_dict(), sort_keys=True).encode()
        replace_file(layout.alerts / f"{self.key}.json", data, sync=sync)


# -- one pass -----------------------------------------------------------------------------


class Watcher:
    """Evaluates what changed since the last pass; one per repository at a time."""

    def __init__(self, ctx: RepoContext):
        from ..events.alerts import connect

        self.ctx = ctx
        self.layout = ctx.layout
        self.con = connect()
        self.config = WatchConfig()
        self._config_stamp: tuple | None = None
        self.states: dict[str, RunState] = {}
        self.done: set[str] = set()  # recorded runs whose folder may linger a moment
        self.cursor: str | None = None  # commit.created events read up to here
        self.layout.alerts.mkdir(parents=True, exist_ok=True)
        self._reload()

    def _reload(self) -> None:
        path = self.layout.root / "mlvc.toml"
        try:
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._config_stamp:
            self._config_stamp = stamp
            self.config = load_config(self.layout.root)

    def tick(self) -> int:
        """One pass over the live runs; returns how many are live."""
        try:
            self._reload()
        except Exception as e:  # a bad edit while watching: keep the rules we had
            self._log(f"mlvc.toml: {e}")
        live = 0
        now_us = time.time_ns() // 1000
        seen = set()
        for path in folders(self.layout):
            if kind_of(path) != "run":
                continue
            staged = StagedRun.load(path)
            if staged is None or staged.key in self.done:
                continue
            seen.add(staged.key)
            alive = staged.alive()
            live += alive
            self._run(staged, alive, now_us)
        self._finish_recorded(seen)
        return live

    def _state(self, key: str) -> RunState:
        st = self.states.get(key)
        if st is None:
            st = self.states[key] = RunState.load(self.layout, key)
            self._flush_pending(st)
        return st

    def _flush_pending(self, st: RunState) -> None:
        if not st.pending:
            return
        for d in st.pending:
            try:
                publish(self.ctx, Event.from_dict(d))
            except ValueError:
                continue
        st.pending = []
        st.save(self.layout, sync=False)  # writing them again would be harmless

    def _run(self, staged: StagedRun, alive: bool, now_us: int) -> None:
        st = self._state(staged.key)
        events: list[Event] = []
        blocks = [(n, _by_metric(t)) for n, t in staged.blocks_after(st.block)]
        if st.last_point_us == 0:
            st.last_point_us = int(staged.started or now_us)
        for number, points in blocks:
            st.block = number
            st.last_point_us = now_us
            if st.stalled:
                st.stalled = False
            events += self._evaluate(staged, st, points, now_us)
        stall = self.config.stall_after
        if stall and alive and not st.stalled and now_us - st.last_point_us > stall * 1e6:
            st.stalled = True
            events.append(Event.new("run.stalled", {
                **_about(staged), "stall_after_s": stall,
                "last_point_at_us": st.last_point_us,
            }))  # fmt: skip
        if blocks or events:
            self._commit(st, events)

    def _commit(self, st: RunState, events: list[Event]) -> None:
        st.pending = [e.to_dict() for e in events]
        # decided durably first: a restart writes them, never twice
        st.save(self.layout, sync=bool(events))
        self._flush_pending(st)

    def _evaluate(
        self, staged: StagedRun | None, st: RunState, points: dict[str, list], now_us: int,
        about: dict | None = None,
    ) -> list[Event]:  # fmt: skip
        from ..events.alerts import evaluate

        about = about if about is not None else _about(staged)
        meta = staged.meta if staged is not None else {}
        experiment = str(meta.get("experiment_id") or about.get("experiment_id") or "0")
        tags = dict(meta.get("tags") or about.get("tags") or {})
        out = []
        for metric, pts in points.items():
            st.counts[metric] = st.counts.get(metric, 0) + len(pts)
        for rule in self.config.rules:
            pts = points.get(rule.metric)
            if not pts or not rule.in_scope(experiment, tags):
                continue
            rs = st.rules.setdefault(rule.name, RuleState())
            reference = self._reference(rule, staged) if rule.compare else None
            results = evaluate(self.con, rule, rs.tail, pts, reference)
            keep = rule.window - 1
            rs.tail = [*rs.tail, *pts][-keep:] if keep else []
            for kind, step, value in step_rule(rs, rule, results, now_us):
                data = {**about, **rule.describe(), "step": step, "value": value}
                if rule.compare:
                    data["reference"] = reference
                out.append(Event.new(kind, data))
        return out

    def _reference(self, rule: Rule, staged: StagedRun | None) -> float | None:
        """The compared value: the metric's final value in the parent run, or in the run
        the model version was registered from."""
        from ..errors import MlvcError
        from ..events.alerts import model_ref
        from ..refs import registry
        from ..store.typed import read_run

        try:
            if rule.compare == "parent":
                parents = staged.parents if staged is not None else None
                rid = parents[0] if parents else self.ctx.refs.read("HEAD")
            else:
                name, alias, version = model_ref(rule.compare)
                info = registry.get(self.ctx.refs, name, version, alias)
                rid = ObjectId.parse(info.run_id) if info.run_id else None
            if rid is None:
                return None
            value = read_run(self.ctx.store, rid).metrics.get(rule.metric)
            return float(value) if isinstance(value, (int, float)) else None
        except (MlvcError, ValueError, OSError):
            return None

    def _finish_recorded(self, seen: set[str]) -> None:
        """Runs recorded since the last pass: evaluate the points flushed after the last
        block read (from the stored series), then drop their state."""
        from ..core.events import read_events

        if self.cursor is None:
            self.cursor = _start_cursor(self.layout)
        read = False
        for event in read_events(self.layout, self.cursor, ["commit.created"]):
            self.cursor, read = event.id, True
            key = event.data.get("live_key")
            if key in self.states:  # recorded: its folder goes next (or went)
                self._finish_one(self.states[key], event)
                self.done.add(key)
            elif key not in self.done and self.config.rules:
                self._finish_unseen(event)  # `mlvc commit --metric`, or a run too quick to see
        if read:
            _save_cursor(self.layout, self.cursor)
        gone = [k for k in self.states if k not in seen]
        for key in gone:  # the run left live/ with no commit.created yet: keep a while
            st = self.states.get(key)
            if st is not None and time.time_ns() // 1000 - st.last_point_us > 60e6:
                self._drop(key)

    def _finish_one(self, st: RunState, event: Event) -> None:
        from ..store.typed import read_run

        try:
            run = read_run(self.ctx.store, ObjectId.parse(event.data["run_id"]))
            points = _series_after(self.ctx.store, run.series, st.counts) if run.series else {}
        except Exception as e:
            self._log(f"could not read the series of run {event.data.get('run_id')}: {e}")
            points = {}
        self._finish_one_points(st, event, points)

    def _finish_unseen(self, event: Event) -> None:
        """A run recorded without this watcher seeing it live: its whole series (or, for a
        snapshot, its final metrics as step 0) evaluated once, under its run id."""
        from ..store.typed import read_run

        run_id = event.data.get("run_id")
        if not isinstance(run_id, str):
            return
        points: dict[str, list] = {}
        try:
            run = read_run(self.ctx.store, ObjectId.parse(run_id))
            if run.series:
                points = _series_after(self.ctx.store, run.series, {})
        except Exception as e:
            self._log(f"could not read run {run_id}: {e}")
            return
        for k, v in run.metrics.items():  # the record's floats (the event's JSON says "nan")
            if k not in points and isinstance(v, (int, float)) and not isinstance(v, bool):
                points[k] = [(0, float(v))]
        if points:
            st = self._state(run_id)
            self._finish_one_points(st, event, points)

    def _finish_one_points(self, st: RunState, event: Event, points: dict[str, list]) -> None:
        about = {k: event.data.get(k) for k in ("live_key", "name", "run_id", "experiment_id")}
        about["tags"] = event.data.get("tags") or {}
        events = self._evaluate(None, st, points, time.time_ns() // 1000, about)
        if events:
            self._commit(st, events)
        self._drop(st.key)

    def _drop(self, key: str) -> None:
        self.states.pop(key, None)
        (self.layout.alerts / f"{key}.json").unlink(missing_ok=True)

    def _log(self, text: str) -> None:
        append_log(self.layout.alerts / LOG, text)


def _start_cursor(layout: Layout) -> str:
    """Where a new watcher starts reading commit.created: after the last one a watcher read
    (so a restart evaluates no run twice), and at most two minutes back (recent commits only)."""
    from ..core.events import id_at

    recent = id_at(time.time_ns() // 1000 - 120_000_000)
    try:
        saved = (layout.alerts / CURSOR).read_text().strip()
    except OSError:
        return recent
    return max(saved, recent) if saved.startswith("evt_") else recent


def _save_cursor(layout: Layout, cursor: str) -> None:
    # unsynced: a lost update re-reads two minutes at most
    replace_file(layout.alerts / CURSOR, cursor.encode(), sync=False)


def _about(staged: StagedRun) -> dict[str, Any]:
    meta = staged.meta
    return {
        "live_key": staged.key,
        "name": meta.get("name") or "",
        "experiment_id": str(meta.get("experiment_id") or "0"),
    }


def _by_metric(table) -> dict[str, list]:
    """{metric: [(step, value)...]} of a table of points, in its order."""
    points: dict[str, list] = {}
    cols = (table.column(c).to_pylist() for c in ("key", "step", "value"))
    for k, s, v in zip(*cols, strict=True):
        points.setdefault(str(k), []).append((s, v))
    return points


def _series_after(store, series: ObjectId, counts: dict[str, int]) -> dict[str, list]:
    from ..core.series_blob import read_series

    points = _by_metric(read_series(store.read_bytes(series)))
    return {k: p[counts.get(k, 0) :] for k, p in points.items() if len(p) > counts.get(k, 0)}


# -- the process --------------------------------------------------------------------------


def main(root: str) -> int:
    from ..core.settings import Settings
    from ..workspace.context import RepoContext

    layout = Layout.of(root)
    layout.alerts.mkdir(parents=True, exist_ok=True)
    fd = os.open(_lock_path(layout), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another watcher has it
    try:
        watcher = Watcher(RepoContext.open(layout, Settings.from_env()))
        idle_since = time.monotonic()
        while True:
            live = watcher.tick()
            if live or watcher.states:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > IDLE_S:
                fcntl.flock(fd, fcntl.LOCK_UN)  # then look once more (see ensure_watcher)
                if watcher.tick() == 0:
                    return 0
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return 0  # a new watcher took over
                idle_since = time.monotonic()
            time.sleep(POLL_S)
    except Exception:
        append_log(layout.alerts / LOG)
        return 1
    finally:
        os.close(fd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
