"""Recording an MLflow history as mlvc runs, the way ``mlvc server`` records a run the
MLflow client logs to it (mlvc.server.mlflow.store), so its MLflow API answers for both alike:

- an experiment is a JSON blob named by ``refs/mlflow/experiments/<id>``; a source
  experiment keeps its id unless the repository holds another experiment under it (then it
  joins the experiment of the same name, or takes the next free id);
- a run is an ordinary mlvc run whose ``extra.live_key`` is its MLflow run id (the index's
  ``live_keys`` table answers ``get_run(<mlflow id>)``), with ``extra.experiment_id``, the
  MLflow user as author, its tags (every ``mlflow.*`` one, ``mlflow.parentRunId`` included),
  params typed as the server types them, its whole series as the run's Parquet blob, its
  dataset inputs in ``extra.mlflow_inputs`` and its artifacts in the run's artifacts tree;
- a deleted run gets the server's overlay ``refs/mlflow/runs/<id>`` with its stage.

Each run is recorded on its own (objects → sync → journal → run ref), so an import killed at
any point leaves whole runs only; a run already in the repository (its live key is known) is
never recorded twice, which makes importing again idempotent and resumable. Runs still
``RUNNING`` in the source are left for a later import (mlvc runs are immutable once
recorded): importing again after they end brings them in whole. The index is updated once
at the end (or every HELD_POINTS points), from the runs and points the import holds
(``Index.try_ingest``'s bulk ingest); runs journalled meanwhile are ingested by any reader.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ...core import progress
from ...core.ids import ObjectId
from ...core.names import safe_relpath
from ...core.objects import FILE, TreeEntry
from ...core.params import check_key, storable_params, typed_value
from ...errors import MlvcError, UsageError
from ...refs.store import check_ref_name
from ...runs.experiments import EXPERIMENTS, read_blob, write_blob
from ...runs.finish import series_blob, storable_tags
from ...runs.record import Inputs, RunSpec, record_runs
from ...store.locks import writing
from .source import ENDED, Artifact, Experiment, RunData, RunInfo, Source

if TYPE_CHECKING:
    import pyarrow as pa

    from ...workspace.context import RepoContext

OVERLAYS = "refs/mlflow/runs"
NO_INPUTS = Inputs(code=None, git={}, env=None, data=None, data_paths=(), artifact_paths=())
BATCH = 500  # runs read from the source, then recorded and published, at once
HELD_POINTS = 2_000_000  # metric points kept for the index (bulk ingest) before it is updated


@dataclass
class ImportReport:
    """What an import did (``mlvc import mlflow`` prints it as one line)."""

    source: str
    experiments_new: int = 0
    experiments: int = 0
    runs_new: int = 0
    runs_present: int = 0
    runs_running: int = 0
    points: int = 0
    artifact_files: int = 0
    artifact_bytes: int = 0
    model_versions_new: int = 0
    logged_models_new: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    recorded: dict[str, str] = field(default_factory=dict, repr=False)  # MLflow id -> run

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        out = asdict(self)
        del out["recorded"]
        return out

    def summary(self) -> str:
        return (
            f"imported {self.runs_new} runs ({self.points} metric points, "
            f"{self.artifact_files} artifact files, {self.artifact_bytes} bytes) and "
            f"{self.experiments_new} new experiments, {self.model_versions_new} new model "
            f"versions, {self.logged_models_new} new logged models from {self.source} in "
            f"{self.seconds:.1f}s; "
            f"{self.runs_present} runs already here, {self.runs_running} still running "
            "(imported once they end)" + "".join(f"; {n}" for n in self.notes[:5])
        )


def param_in(text: str) -> Any:
    """A param as the server stores an MLflow param: typed when its text reads back the
    same (mlvc.server.mlflow.tracking.param_in), else the text."""
    value = typed_value(text)
    out = repr(value) if isinstance(value, float) else str(value)
    return value if out == text else text


def import_history(
    ctx: RepoContext, source: Source, experiments: Iterable[str] = ()
) -> ImportReport:
    """Import ``source`` (every experiment, or those named) into the repository."""
    started = time.monotonic()
    report = ImportReport(source.description)
    chosen = _chosen(source, list(experiments))
    ids = _import_experiments(ctx, chosen, report)
    infos: dict[str, RunInfo] = {}
    held: dict[str, tuple] = {}  # for the index: run id -> (run, its points), see _held
    with progress.bar("import runs") as bar:
        batches = _batches(source, [e.experiment_id for e in chosen], _known_keys(ctx),
                           infos, report, bar)  # fmt: skip
        for datas in _read_ahead(source, batches):
            _import_batch(ctx, source, datas, ids, report, held)
    _import_logged_models(ctx, source, chosen, ids, report)
    _import_registry(ctx, source, infos, report)
    ctx.index.try_ingest(held)  # once, at the end: the runs, models and versions imported
    report.seconds = time.monotonic() - started
    return report


def _chosen(source: Source, names: list[str]) -> list[Experiment]:
    exps = source.experiments()
    if not names:
        return exps
    by_name = {e.name: e for e in exps}
    missing = [n for n in names if n not in by_name]
    if missing:
        have = ", ".join(sorted(by_name)[:10]) or "none"
        raise UsageError(
            f"no experiment named {missing[0]!r} in {source.description} (it has: {have})"
        )
    return [by_name[n] for n in names]


# -- experiments ---------------------------------------------------------------------------


def _import_experiments(
    ctx: RepoContext, chosen: list[Experiment], report: ImportReport
) -> dict[str, str]:
    """Source experiment id -> the repository's, writing the experiments it lacks."""
    here: dict[str, dict] = {}
    for name in ctx.refs.names(EXPERIMENTS.removeprefix("refs/")):
        exp = read_blob(ctx, f"{EXPERIMENTS}/{name}")
        if exp is not None and exp.get("experiment_id") == name:
            here[name] = exp
    by_name = {e["name"]: i for i, e in here.items()}
    out: dict[str, str] = {}
    for exp in chosen:
        report.experiments += 1
        if exp.name in by_name:
            out[exp.experiment_id] = by_name[exp.name]
            continue
        eid = exp.experiment_id
        if eid in here or not eid.isdigit():
            eid = str(max((int(i) for i in here if i.isdigit()), default=0) + 1)
        value = {
            "experiment_id": eid,
            "name": exp.name,
            "artifact_location": f"mlflow-artifacts:/{eid}",  # served by mlvc from now on
            "lifecycle_stage": exp.lifecycle_stage,
            "tags": dict(exp.tags),
            "creation_time": exp.creation_time,
            "last_update_time": exp.last_update_time,
        }
        if exp.lifecycle_stage != "active":
            value["stage_ns"] = time.time_ns()
        write_blob(
            ctx, f"{EXPERIMENTS}/{eid}", value, ctx.author(), f"import mlflow experiment {exp.name}"
        )
        here[eid], by_name[exp.name], out[exp.experiment_id] = value, eid, eid
        report.experiments_new += 1
    return out


def _known_keys(ctx: RepoContext) -> set[str]:
    """MLflow run ids (live keys) of the runs the repository holds (none, without opening
    the index, in a repository with no run yet: a first import never needs DuckDB here)."""
    try:
        with os.scandir(ctx.dir / "refs" / "runs") as it:
            if not any(not e.name.startswith(".") for e in it):
                return set()
    except FileNotFoundError:
        return set()
    with ctx.index.connect_readonly() as con:
        return {r[0] for r in con.execute("SELECT DISTINCT live_key FROM live_keys").fetchall()}


# -- runs ----------------------------------------------------------------------------------


def _batches(
    source: Source, experiment_ids: list[str], known: set[str], infos: dict[str, RunInfo],
    report: ImportReport, bar: progress.Bar | None,
) -> Iterator[list[RunInfo]]:  # fmt: skip
    """The runs to import, BATCH at a time, as the source lists them (a REST source page by
    page: the first batch is recorded while later pages are still coming); every run listed
    is kept in ``infos``, those already here or still running are counted, not imported."""
    batch: list[RunInfo] = []
    for r in source.runs(experiment_ids):
        infos[r.run_id] = r
        if r.run_id in known:
            report.runs_present += 1
            continue
        if not r.ended:
            report.runs_running += 1
            continue
        batch.append(r)
        if bar is not None:
            bar.total_files += 1
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _read_ahead(source: Source, batches: Iterator[list[RunInfo]]) -> Iterator[list[RunData]]:
    """Each batch's details, the next batch read by a thread while the caller records this
    one (reading the source, SQLite or HTTP, overlaps writing the repository). One batch
    ahead at most: memory stays two batches. An error in the thread is raised here."""
    from concurrent.futures import ThreadPoolExecutor

    def read() -> list[RunData] | None:
        batch = next(batches, None)
        return None if batch is None else list(source.details(batch))

    with ThreadPoolExecutor(1, thread_name_prefix="mlvc-import-read") as pool:
        ahead = pool.submit(progress.carry(read))
        while True:
            datas = ahead.result()
            if datas is None:
                return
            ahead = pool.submit(progress.carry(read))
            yield datas


def _import_batch(
    ctx: RepoContext, source: Source, datas: list[RunData], ids: dict[str, str],
    report: ImportReport, held: dict[str, tuple],
) -> None:  # fmt: skip
    """Record a batch of runs: their objects, then the runs (one sync, one ref batch). The
    index is not updated here but once at the end, or when ``held`` (the runs and their
    points, for ``Index.try_ingest``'s bulk ingest) reaches HELD_POINTS points."""
    items, deleted, points, tables = [], [], 0, []
    with writing(ctx.dir, ctx.store):  # until the runs name their objects
        for data in datas:
            eid = ids[data.info.experiment_id]
            spec, table = _spec(ctx, source, data, eid, report)
            user = data.info.user_id or "mlflow"
            items.append((replace(ctx, settings=ctx.settings.as_user(user)), spec))
            tables.append(table)
            points += table.num_rows if table is not None else 0
            if data.info.lifecycle_stage == "deleted":
                deleted.append((data.info.run_id, eid))
        recorded = record_runs(ctx, items, ingest=False)
        for data, (oid, run), table in zip(datas, recorded, tables, strict=True):
            report.recorded[data.info.run_id] = oid.hex
            held[oid.hex] = (run, table)
    for rid, eid in deleted:
        overlay = {"lifecycle_stage": "deleted", "stage_ns": time.time_ns(), "experiment_id": eid}
        write_blob(ctx, f"{OVERLAYS}/{rid}", overlay, ctx.author(), "import mlflow: deleted")
    report.runs_new += len(items)
    report.points += points
    progress.advance(files=len(items))
    if sum(t.num_rows for _run, t in held.values() if t is not None) >= HELD_POINTS:
        ctx.index.try_ingest(held)
        held.clear()


def _spec(
    ctx: RepoContext, source: Source, data: RunData, eid: str, report: ImportReport
) -> tuple[RunSpec, pa.Table | None]:
    """The RunSpec of one MLflow run (its artifacts and series stored), and the points of
    its series (key, step, timestamp µs, value; None without one)."""
    info = data.info
    notes: dict[str, Any] = {}
    artifacts = _store_artifacts(ctx, source.artifacts(info), report, notes)
    series, points = _series(ctx, data.metrics, notes, data.metrics_sorted)
    params, changed, dropped = storable_params({k: param_in(v) for k, v in data.params.items()})
    if changed or dropped:
        notes["params"] = {**changed, **dropped}
    tags, bad_tags = storable_tags(data.tags)
    if bad_tags:
        notes["dropped_tags"] = bad_tags
    extra: dict[str, Any] = {
        "experiment_id": eid,
        "live_key": info.run_id,
        "imported_from": {"tool": "mlflow", "source": source.description},
    }
    if data.inputs:
        extra["mlflow_inputs"] = data.inputs[:1000]
    if notes:
        extra["unstorable"] = notes
    started = (info.start_time or info.end_time or 0) * 1000
    spec = RunSpec(
        name=_name(info.name),
        params=params,
        tags=tags,
        status=ENDED[info.status],
        started=started,
        ended=(info.end_time * 1000) if info.end_time else started,
        series=series,
        series_metrics=_last_values(points, data.metrics_sorted) if series is not None else {},
        extra=extra,
        capture_code=False,
        capture_env=False,
        inputs=NO_INPUTS,
        artifact_entries=artifacts,
        move_head=False,
        parents=(),
        project_files=False,
    )
    return spec, points if series is not None else None


def _name(name: str) -> str:
    try:
        return check_ref_name(name, "name") if name else ""
    except MlvcError:
        return ""  # kept in the mlflow.runName tag, as the server keeps it


def _series(
    ctx: RepoContext, metrics: pa.Table, notes: dict, presorted: bool
) -> tuple[ObjectId | None, pa.Table]:
    """The run's series blob (timestamps ms → µs) and the points in it, written for speed
    (series_blob ``fast``)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if metrics.num_rows == 0:
        return None, metrics
    keys = pc.unique(metrics["key"]).to_pylist()
    bad = []
    for k in keys:
        try:
            check_key(k)
        except MlvcError:
            bad.append(k)
    if bad:
        notes["dropped_metrics"] = [str(k)[:200] for k in bad[:100]]
        metrics = metrics.filter(pc.invert(pc.is_in(metrics["key"], pa.array(bad, pa.string()))))
        if metrics.num_rows == 0:
            return None, metrics
    points = pa.table({
        "key": metrics["key"], "step": metrics["step"],
        "timestamp": pc.multiply(metrics["timestamp"], 1000), "value": metrics["value"],
    })  # fmt: skip
    return series_blob(ctx.store, points, presorted=presorted), points


def _last_values(points: pa.Table, presorted: bool = False) -> dict[str, float]:
    """Each key's value at its highest step (then latest time, then largest value: the
    point MLflow's ``latest_metrics`` keeps), computed in Arrow, not point by point.
    ``presorted`` (by key, step): each key's last row is it, unless its step is shared."""
    import itertools

    import pyarrow.compute as pc

    if presorted:
        counts = pc.value_counts(points["key"])  # sorted keys: in order
        ends = list(itertools.accumulate(counts.field("counts").to_pylist()))
        steps = points["step"]
        if all(
            n == 1 or steps[e - 1] != steps[e - 2]
            for e, n in zip(ends, counts.field("counts").to_pylist(), strict=True)
        ):
            values = points["value"].take([e - 1 for e in ends]).to_pylist()
            return dict(zip(counts.field("values").to_pylist(), values, strict=True))
    t = points.sort_by([("key", "ascending"), ("step", "ascending"),
                        ("timestamp", "ascending"), ("value", "ascending")])  # fmt: skip
    counts = pc.value_counts(t["key"])
    last = list(itertools.accumulate(counts.field("counts").to_pylist()))
    keys = counts.field("values").to_pylist()
    values = t["value"].take([i - 1 for i in last]).to_pylist()
    return dict(zip(keys, values, strict=True))


def _store_artifacts(
    ctx: RepoContext, files: Iterable[Artifact], report: ImportReport, notes: dict
) -> dict[str, TreeEntry]:
    entries: dict[str, TreeEntry] = {}
    bad = []
    for a in files:
        try:
            rel = safe_relpath(a.path)
        except MlvcError:
            bad.append(a.path[:200])
            continue
        oid, size = _store_file(ctx, a)
        entries[rel] = TreeEntry(rel.rsplit("/", 1)[-1], FILE, oid, size)
        report.artifact_files += 1
        report.artifact_bytes += size
    if bad:
        notes["dropped_artifacts"] = bad[:100]
    return entries


def _store_file(ctx: RepoContext, a: Artifact) -> tuple[ObjectId, int]:
    """Store one artifact (a local file directly, else streamed to a temp file first)."""
    if a.local is not None:
        return ctx.store.add_file(a.local), os.path.getsize(a.local)
    tmp_dir = ctx.layout.tmp
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f"import-{secrets.token_hex(8)}"
    try:
        with a.open() as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        return ctx.store.add_file(tmp), tmp.stat().st_size
    finally:
        tmp.unlink(missing_ok=True)


# -- MLflow 3 logged models -------------------------------------------------------------------

LOGGED = "refs/mlflow/logged-models"  # the server's refs (mlvc.server.mlflow.logged_models)
LOGGED_FILES = "refs/mlflow/logged-model-files"


def _import_logged_models(
    ctx: RepoContext, source: Source, chosen: list[Experiment], ids: dict[str, str],
    report: ImportReport,
) -> None:  # fmt: skip
    """Each logged model the repository lacks, as ``mlvc server`` keeps one an MLflow client
    logs to it: its files as an mlvc model tree (``refs/mlflow/logged-model-files/<id>``,
    written first), then its fields (``refs/mlflow/logged-models/<id>``: the same id, name,
    experiment, source run by its MLflow id, status, params, tags, times)."""
    have = set(ctx.refs.names(LOGGED.removeprefix("refs/")))
    for m in source.logged_models([e.experiment_id for e in chosen]):
        if m.model_id in have or m.experiment_id not in ids:
            continue
        tree = None
        with writing(ctx.dir, ctx.store):
            if m.status == "READY":
                tree = _files_tree(ctx, source.logged_model_files(m))
                ctx.store.sync()
                if tree is not None:
                    ctx.refs.write(f"{LOGGED_FILES}/{m.model_id}", tree,
                                   "import mlflow logged model", ctx.author())  # fmt: skip
        meta = {
            "model_id": m.model_id, "experiment_id": ids[m.experiment_id], "name": m.name,
            "model_type": m.model_type, "source_run_id": m.source_run_id,
            "creator": "mlflow", "created_ms": m.creation_time, "updated_ms": m.last_updated_time,
            "status": m.status if tree is not None or m.status != "READY" else "FAILED",
            "status_message": m.status_message, "tags": dict(m.tags), "params": dict(m.params),
            "deleted": m.deleted, "tree": tree.hex if tree is not None else None,
        }  # fmt: skip
        write_blob(ctx, f"{LOGGED}/{m.model_id}", meta, ctx.author(), "import mlflow logged model")
        report.logged_models_new += 1


def _files_tree(ctx: RepoContext, files: Iterable[Artifact]) -> ObjectId | None:
    """The files stored as a tree (None when there are none)."""
    from ...workspace.trees import build_tree

    entries = _store_artifacts(ctx, files, ImportReport(""), {})
    return build_tree(ctx.store, ctx.root, [], extra=entries) if entries else None


# -- the model registry ----------------------------------------------------------------------

REGISTERED = "refs/mlflow/registered-models"  # the server's overlay (mlvc.server.mlflow.registry)


def _import_registry(
    ctx: RepoContext, source: Source, runs: dict[str, RunInfo], report: ImportReport
) -> None:
    """Registered models: each version an mlvc model version under the same number (its
    files stored as a model tree), aliases as mlvc aliases, and what MLflow keeps beside
    (descriptions, tags, stages, times, the MLflow run id) in the server's overlay."""
    from ...refs import registry

    for model in source.registry():
        try:
            registry.check_name(model.name)
        except MlvcError:
            report.notes.append(f"model {model.name[:80]!r} skipped: not a name mlvc takes")
            continue
        have = registry.versions(ctx.refs, model.name)
        doc = read_blob(ctx, f"{REGISTERED}/{model.name}") or {
            "name": model.name, "created_ms": model.creation_time,
            "updated_ms": model.last_updated_time, "description": model.description,
            "tags": dict(model.tags), "versions": {},
        }  # fmt: skip
        changed = not have and not doc.get("versions")
        for v in model.versions:
            if v.version in have:
                continue
            if v.status != "READY":
                report.notes.append(
                    f"{model.name} version {v.version} skipped: its registration is {v.status}"
                )
                continue
            if v.source.startswith("runs:/") and v.run_id and v.run_id not in runs:
                report.notes.append(  # --experiment left its run out: say so, not "unreadable"
                    f"{model.name} version {v.version} skipped: its run {v.run_id} is in an "
                    "experiment not imported (import that one too, or all: no --experiment)"
                )
                continue
            tree = _model_tree(ctx, source, v, runs)
            if tree is None:
                report.notes.append(
                    f"{model.name} version {v.version} skipped: its source {v.source[:100]} "
                    "is not a model folder mlvc can read"
                )
                continue
            with writing(ctx.dir, ctx.store):
                registry.create_version(ctx.refs, model.name, tree, v.source,
                                        _mlvc_run(ctx, v.run_id, report), v.user_id or "mlflow",
                                        trusted=True, number=v.version)  # fmt: skip
            doc.setdefault("versions", {})[str(v.version)] = {
                "created_ms": v.creation_time, "updated_ms": v.last_updated_time,
                "user_id": v.user_id, "description": v.description, "source": v.source,
                "run_id": v.run_id, "run_link": v.run_link, "model_id": "", "stage": v.stage,
                "tags": dict(v.tags),
            }  # fmt: skip
            report.model_versions_new += 1
            changed = True
        now = registry.versions(ctx.refs, model.name)
        for alias, number in model.aliases.items():
            if number in now and alias not in registry.aliases(ctx.refs, model.name):
                registry.set_alias(ctx.refs, model.name, alias, number, ctx.author())
        if changed:
            write_blob(
                ctx,
                f"{REGISTERED}/{model.name}",
                doc,
                ctx.author(),
                f"import mlflow model {model.name}",
            )


def _model_tree(ctx: RepoContext, source: Source, v, runs: dict[str, RunInfo]) -> ObjectId | None:

    logged = re.match(r"^models:/+(m-[0-9a-f]{32})/?$", v.source)
    if logged:  # an MLflow 3 version of a logged model: the files imported with it
        return ctx.refs.read_or_none(f"{LOGGED_FILES}/{logged.group(1)}")
    files = source.model_files(v, runs)
    if not any(a.path == "MLmodel" for a in files):
        return None
    with writing(ctx.dir, ctx.store):
        return _files_tree(ctx, files)


def _mlvc_run(ctx: RepoContext, mlflow_run_id: str, report: ImportReport) -> str | None:
    """The mlvc run of an MLflow run: recorded by this import, else by an earlier one."""
    if not mlflow_run_id:
        return None
    if mlflow_run_id in report.recorded:
        return report.recorded[mlflow_run_id]
    with ctx.index.connect_readonly() as con:
        row = con.execute(
            "SELECT run_id FROM live_keys WHERE live_key = ? ORDER BY run_id LIMIT 1",
            [mlflow_run_id],
        ).fetchone()
    return row[0] if row else None
