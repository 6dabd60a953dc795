"""``TrackingStore``: what the MLflow API keeps — experiments, the open runs, and the small
mutable overlay MLflow allows on a run after it ended.

- An **experiment** is a JSON blob named by ``refs/mlflow/experiments/<id>`` (refs are
  durable and logged); experiment "0", "Default", always exists.
- An MLflow **run** is an mlvc live run (mlvc.runs.live) held here while it is open; its
  MLflow ``run_id`` is the live key. Ending it records an ordinary mlvc run, found again by
  that key through the index's ``live_keys`` table. An mlvc run not logged over MLflow is
  addressed by its object id and belongs to experiment "0".
- **Liveness** is a lease: every request touching an open run pushes its staged
  ``lease_until`` forward (written at most every few seconds); a run whose lease expires is
  recorded as ``killed`` (here, or by any mlvc reaper). A restarted server joins the staged
  runs whose lease still holds, so logging continues.
- The **overlay** (``refs/mlflow/runs/<run_id>``, a JSON blob) holds what changes after a
  run: tags set or deleted, a new name, ``lifecycle_stage`` (deleted/active).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ...core.ids import ObjectId
from ...errors import MlvcError
from ...runs.experiments import EXPERIMENTS, new_experiment, next_id, read_blob, write_blob
from ...runs.finish import commit_staged
from ...runs.live import LiveRun
from ...runs.reaper import reap_dead_runs
from ...runs.record import Inputs
from ...runs.staging import StagedRun, folders, kind_of
from ...store.locks import writing
from ...store.typed import read_run
from .wire import bad, not_found

log = logging.getLogger("mlvc.server.mlflow")

OVERLAYS = "refs/mlflow/runs"
LEASE_WRITE_EVERY = 5.0  # seconds between lease writes of one run
REAP_EVERY = 30.0  # seconds between looks for dead live runs of other processes
FLUSH_EVERY = 0.05  # seconds between looks at the open runs' buffered points
PAGES_KEPT = 20_000  # recorded runs whose runs/search answer is kept (a few KiB each)
_HEX64 = frozenset("0123456789abcdef")
NO_INPUTS = Inputs(code=None, git={}, env=None, data=None, data_paths=(), artifact_paths=())


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Pages:
    """What runs/search answers for recorded runs, by object id, the most recent
    ``limit``: a recorded run never changes (what changes after, the overlay, is applied
    on each answer), so nothing here goes stale."""

    def __init__(self, limit: int = PAGES_KEPT):
        self.limit = limit
        self._items: OrderedDict[str, tuple] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, oid: str) -> tuple | None:
        with self._lock:
            parts = self._items.get(oid)
            if parts is not None:
                self._items.move_to_end(oid)
            return parts

    def put(self, oid: str, parts: tuple) -> None:
        with self._lock:
            self._items[oid] = parts
            self._items.move_to_end(oid)
            while len(self._items) > self.limit:
                self._items.popitem(last=False)

    def run_id(self, oid: str) -> str | None:
        """The MLflow run id (live key, else the object id) of a kept run."""
        parts = self.get(oid)
        return parts[0]["run_id"] if parts is not None else None


@dataclass
class Open:
    """An open MLflow run: the live run, its experiment, who logs it."""

    run: LiveRun
    experiment_id: str
    user: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    lease_written: float = 0.0  # when lease_until was last written to the staged run
    touched: float = field(default_factory=time.time)  # the last write request


class TrackingStore:
    """What MLflow's tracking API changes: experiments, open runs, overlays.

    A server's store (``owned=False``) keeps its REST runs alive by a lease and takes back
    the open MLflow runs a restart left behind. The MLflow plugin's store (``owned=True``,
    mlvc.mlflow_plugin) holds only the runs of its own process: they live as long as the
    process does (pid, like any live run), with no lease, and other processes' runs are
    left alone.
    """

    def __init__(self, state, owned: bool = False):
        self.state = state
        self.owned = owned
        # (name, tags) -> the live run a new top-level run joins instead, or None
        self.attach: Callable[[str, dict], LiveRun | None] | None = None
        self.ctx = state.ctx
        self.lease = float(state.options.lease_seconds)
        self.lock = threading.RLock()
        self.open: dict[str, Open] = {}
        self.handed: dict[str, tuple[Open, str]] = {}  # ended attached runs, with status
        self.recorded: dict[str, ObjectId] = {}  # run_id -> run object (cache)
        self.experiments: dict[str, dict] = {}
        self.overlays: dict[str, dict] = {}
        # open runs holding buffered points: one thread flushes them (not a thread per run)
        self.dirty: set[str] = set()
        self.pages = Pages()
        self._experiment_of: dict[str, str] = {}
        self._load()
        self._stop = threading.Event()
        if not owned:
            self._rejoin()
        self._thread = threading.Thread(target=self._expire_loop, daemon=True,
                                        name="mlvc-leases")  # fmt: skip
        self._thread.start()
        self._flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                         name="mlvc-flush")  # fmt: skip
        self._flusher.start()

    # -- durable JSON behind refs -----------------------------------------------------------

    def _read_blob(self, ref: str) -> dict | None:
        return read_blob(self.ctx, ref)

    def _write_blob(self, ref: str, value: dict, who: str, why: str) -> None:
        write_blob(self.ctx, ref, value, who, why)

    def _load(self) -> None:
        for name in self.ctx.refs.names(EXPERIMENTS.removeprefix("refs/")):
            exp = self._read_blob(f"{EXPERIMENTS}/{name}")
            if exp is not None and exp.get("experiment_id") == name:
                self.experiments[name] = exp
        if "0" not in self.experiments:
            self.experiments["0"] = self._new_experiment("0", "Default", {})
            self._write_blob(f"{EXPERIMENTS}/0", self.experiments["0"], "mlvc server", "create")
        for name in self.ctx.refs.names(OVERLAYS.removeprefix("refs/")):
            overlay = self._read_blob(f"{OVERLAYS}/{name}")
            if overlay is not None:
                self.overlays[name] = overlay

    # -- experiments -----------------------------------------------------------------------

    _new_experiment = staticmethod(new_experiment)

    def experiment(self, experiment_id: str) -> dict | None:
        return self.experiments.get(str(experiment_id))

    def experiment_or_404(self, experiment_id: str) -> dict:
        exp = self.experiment(experiment_id)
        if exp is None:
            raise not_found(f"no experiment with id {experiment_id!r}")
        return exp

    def experiment_by_name(self, name: str) -> dict | None:
        return next((e for e in self.experiments.values() if e["name"] == name), None)

    def create_experiment(self, name: str, location: str | None, tags: dict, who: str) -> str:
        with self.lock:
            if self.experiment_by_name(name) is not None:
                from ..app import ApiError

                raise ApiError(
                    400, "RESOURCE_ALREADY_EXISTS", f"experiment {name!r} already exists"
                )
            eid = next_id(self.experiments)
            exp = self._new_experiment(eid, name, tags, location)
            self._write_blob(f"{EXPERIMENTS}/{eid}", exp, who, f"create experiment {name}")
            self.experiments[eid] = exp
            return eid

    def change_experiment(self, experiment_id: str, who: str, why: str, **changes) -> dict:
        """Apply ``changes`` (name, lifecycle_stage, tags) to an experiment, durably."""
        with self.lock:
            exp = dict(self.experiment_or_404(experiment_id))
            name = changes.get("name")
            if name is not None and name != exp["name"] and self.experiment_by_name(name):
                from ..app import ApiError

                raise ApiError(
                    400, "RESOURCE_ALREADY_EXISTS", f"experiment {name!r} already exists"
                )
            exp.update(changes)
            exp["last_update_time"] = now_ms()
            if "lifecycle_stage" in changes:  # its runs follow (``stage_of``)
                exp["stage_ns"] = time.time_ns()
            self._write_blob(f"{EXPERIMENTS}/{experiment_id}", exp, who, why)
            self.experiments[str(experiment_id)] = exp
            return exp

    # -- open runs -------------------------------------------------------------------------

    def _ctx_for(self, user: str):
        return replace(self.ctx, settings=self.ctx.settings.as_user(user))

    def create_run(self, experiment_id: str, name: str, tags: dict, start_ms: int | None,
                   user: str) -> Open:  # fmt: skip
        from ...refs.store import check_ref_name

        try:
            name = check_ref_name(name, "name") if name else ""
        except MlvcError:
            name = ""  # MLflow names may hold anything: kept in the mlflow.runName tag
        meta: dict[str, Any] = {
            "argv": [],  # the server's own command line is not the run's
            "extra": {"experiment_id": experiment_id},
            "mlflow": {"user": user},
            "own_outputs": True,  # not the files the server's mlvc.toml names
        }
        if self.owned:  # the run of this very process: its argv, code and environment
            del meta["argv"], meta["own_outputs"]
        else:
            meta["lease_until"] = time.time() + self.lease
        if start_ms:
            meta["started"] = int(start_ms) * 1000
        # tags are checked before the run exists: a refused one leaves no run behind. Its
        # inputs are none of the server's files (code, env, the [track] data and artifacts
        # of the server's mlvc.toml): the client's process read its own. Dead runs of other
        # processes are reaped by the lease thread, not on every create (a look at every
        # staged run); the run is written once, lease included.
        run = self.attach(name, tags) if self.attach and "mlflow.parentRunId" not in tags else None
        if run is not None:  # the run `mlvc run` records (mlvc.runs.attached)
            opened = Open(run, experiment_id, user)
            with self.lock:
                self.open[run.key] = opened
            return opened
        inputs = None if self.owned else NO_INPUTS
        run = LiveRun.create(self._ctx_for(user), name=name, tags=tags, capture=self.owned,
                             reap=False, meta=meta, flusher=False,
                             inputs=inputs)  # fmt: skip
        run.started = run.staged.started or run.started
        opened = Open(run, experiment_id, user)
        opened.lease_written = opened.touched
        with self.lock:
            self.open[run.key] = opened
        return opened

    def _lease(self, opened: Open, force: bool = False) -> None:
        """Renew the lease: in memory at once, on disk (for reapers in other processes) at
        most every few seconds, and always well within the lease."""
        now = opened.touched = time.time()
        if self.owned:  # alive while this process is
            return
        if force or now - opened.lease_written >= min(LEASE_WRITE_EVERY, self.lease / 4):
            opened.run.staged.meta["lease_until"] = now + self.lease
            opened.run.save()
            opened.lease_written = now

    def touch(self, run_id: str) -> Open | None:
        """The open run ``run_id``, its lease renewed; None when it is not open."""
        opened = self.open.get(run_id)
        if opened is not None:
            with opened.lock:
                if not opened.run.has_ended:
                    self._lease(opened)
        return opened

    def live(self, run_id: str) -> LiveRun | None:
        opened = self.open.get(run_id)
        return opened.run if opened is not None else None

    def end_run(self, run_id: str, status: str) -> ObjectId | None:
        with self.lock:
            opened = self.open.pop(run_id, None)
        if opened is None:
            return None
        with opened.lock:
            oid = opened.run.end(status)
        if oid is not None:
            self.recorded[run_id] = oid
        else:  # an attached run: `mlvc run` records it when its command exits
            with self.lock:
                self.handed[run_id] = (opened, status)
        return oid

    def _rejoin(self) -> None:
        """Join the staged MLflow runs whose lease still holds (a restarted server), and
        record those whose lease expired meanwhile as killed, by their own user."""
        for path in folders(self.ctx.layout):
            staged = StagedRun.load(path) if kind_of(path) == "run" else None
            if staged is None or "mlflow" not in staged.meta:
                continue
            info = staged.meta["mlflow"] if isinstance(staged.meta["mlflow"], dict) else {}
            user = str(info.get("user") or "mlflow")
            if not staged.alive():
                self._reap(staged, user)
                continue
            run = LiveRun.join(self._ctx_for(user), staged, flusher=False)
            eid = str(staged.extra.get("experiment_id") or "0")
            opened = Open(run, eid, user)
            self._lease(opened, force=True)
            self.open[run.key] = opened
            log.info("rejoined the open run %s", run.key)

    def _reap(self, staged: StagedRun, user: str) -> None:
        ctx = self._ctx_for(user)
        try:
            with writing(ctx.dir, ctx.store):
                claimed = staged.claim()
                if claimed is not None:
                    commit_staged(ctx, claimed, "killed", phase="reap")
        except Exception:  # the next reaper tries again
            log.exception("could not record the expired run %s", staged.key)

    def logged(self, opened: Open) -> None:
        """``opened`` buffered points: the flusher thread writes them within a second."""
        self.dirty.add(opened.run.key)

    def _flush_loop(self) -> None:
        while not self._stop.wait(FLUSH_EVERY):
            for key in list(self.dirty):
                self.dirty.discard(key)  # before the look: a point logged meanwhile re-adds it
                opened = self.open.get(key)
                if opened is None or opened.run.has_ended:
                    continue
                try:
                    if opened.run.flush_due():
                        self.dirty.add(key)
                except Exception:  # a full disk: kept buffered, tried again
                    self.dirty.add(key)
                    log.exception("could not flush the points of run %s", key)

    def _expire_loop(self) -> None:
        reaped = time.monotonic()
        while not self._stop.wait(min(1.0, self.lease / 4)):
            if time.monotonic() - reaped >= REAP_EVERY:
                reaped = time.monotonic()
                try:
                    reap_dead_runs(self.ctx)
                except Exception:
                    log.exception("could not reap dead live runs")
            now = time.time()
            for key, opened in list(self.open.items()) if not self.owned else ():
                if now - opened.touched >= self.lease:
                    try:
                        self.end_run(key, "killed")
                        log.warning("run %s had no request for %ss: recorded as killed",
                                    key, self.lease)  # fmt: skip
                    except Exception:
                        log.exception("could not record the expired run %s", key)

    def shutdown(self) -> None:
        """Make every open run's points durable; the runs stay open (their lease)."""
        self._stop.set()
        for opened in list(self.open.values()):
            with opened.lock:
                if not opened.run.has_ended:
                    opened.run.flush()
                    opened.run.save()

    # -- recorded runs ---------------------------------------------------------------------

    def run_record(self, run_id: str) -> tuple[ObjectId, Any] | None:
        """The recorded run ``run_id`` (a live key, or an mlvc run id), or None."""
        oid = self.recorded.get(run_id)
        if oid is None:
            oid = self._find_recorded(run_id)
            if oid is None:
                return None
            self.recorded[run_id] = oid
        try:
            return oid, read_run(self.ctx.store, oid)
        except MlvcError:
            return None

    def _find_recorded(self, run_id: str) -> ObjectId | None:
        if len(run_id) == 64 and set(run_id) <= _HEX64:
            oid = ObjectId.parse(run_id)
            return oid if self.ctx.refs.has_run(oid) else None
        if len(run_id) > 64:
            return None
        with self.ctx.index.connect_readonly() as con:
            row = con.execute(
                "SELECT run_id FROM live_keys WHERE live_key = ? ORDER BY run_id LIMIT 1",
                [run_id],
            ).fetchone()
        return ObjectId.parse(row[0]) if row else None

    # -- the overlay -----------------------------------------------------------------------

    def overlay(self, run_id: str) -> dict:
        return self.overlays.get(run_id) or {}

    def change_overlay(self, run_id: str, who: str, why: str, fn) -> dict:
        with self.lock:
            overlay = json.loads(json.dumps(self.overlay(run_id)))
            fn(overlay)
            self._write_blob(f"{OVERLAYS}/{run_id}", overlay, who, why)
            self.overlays[run_id] = overlay
            return overlay

    # -- lifecycle: a run's own (the overlay) or its experiment's, whichever changed last ----
    #
    # MLflow marks every run of an experiment deleted when the experiment is deleted, and
    # every one active when it is restored. Here that is derived, not written run by run:
    # a run's stage is the one its overlay or its experiment was given last (``stage_ns``).

    def experiment_of(self, rid: str) -> str:
        opened = self.open.get(rid)
        if opened is not None:
            return opened.experiment_id
        ov = self.overlays.get(rid) or {}
        if isinstance(ov.get("experiment_id"), str):
            return ov["experiment_id"]
        eid = self._experiment_of.get(rid)
        if eid is None:  # a recorded run's experiment never changes: asked once
            found = self.run_record(rid)
            eid = found[1].extra.get("experiment_id") if found is not None else None
            eid = eid if isinstance(eid, str) else "0"
            if found is not None:
                self._experiment_of[rid] = eid
        return eid

    def stage_of(self, rid: str, experiment_id: str | None = None) -> str:
        eid = self.experiment_of(rid) if experiment_id is None else experiment_id
        exp = self.experiments.get(str(eid)) or {}
        ov = self.overlays.get(rid) or {}
        if ov.get("lifecycle_stage") and ov.get("stage_ns", 0) >= exp.get("stage_ns", 0):
            return ov["lifecycle_stage"]
        return exp.get("lifecycle_stage") or "active"

    def set_stage(self, rid: str, stage: str, who: str) -> None:
        eid = self.experiment_of(rid)

        def change(ov):
            ov.update(lifecycle_stage=stage, stage_ns=time.time_ns(), experiment_id=eid)

        self.change_overlay(rid, who, stage, change)

    def lifecycle(self) -> tuple[set[str], set[str], set[str]]:
        """(runs deleted by their own overlay or not, runs active by it, experiments
        deleted): a run with no stage of its own has its experiment's."""
        dead, alive = set(), set()
        for rid, ov in list(self.overlays.items()):
            if ov.get("lifecycle_stage"):
                (dead if self.stage_of(rid) == "deleted" else alive).add(rid)
        gone = {e for e, x in self.experiments.items() if x.get("lifecycle_stage") == "deleted"}
        return dead, alive, gone

    def deleted(self) -> set[str]:
        """Runs with a stage of their own that is deleted (see ``lifecycle``)."""
        return self.lifecycle()[0]

    def check_active(self, rid: str, experiment_id: str | None = None) -> None:
        """MLflow's refusal to change a deleted run (its words and code)."""
        if self.stage_of(rid, experiment_id) != "active":
            raise bad(f"The run {rid} must be in the 'active' state. Current state is deleted.")
