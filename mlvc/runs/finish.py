"""Finishing a staged run: the RunSpec it holds, recorded once, then unstaged.

Whoever finishes a staged run — the live run at its end, ``mlvc run`` when its command
exits, a reaper when the run's process died — reads it through ``StagedRun`` (the format,
mlvc.runs.staging) and records it here. Recording never loses a run that happened: what
cannot be stored is kept as text or left out, and noted in ``extra``. It is safe to do
twice: the stored run's id is noted in the staged run before any ref names it, so a
recorder killed after that point is followed by one that publishes the same run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.ids import ObjectId
from ..core.params import MAX_PARAM_BYTES, check_key, storable_params
from ..errors import MlvcError, UsageError
from ..refs.store import check_ref_name
from ..store.locks import writing
from ..store.typed import read_run
from .record import Inputs, RunSpec, publish_run, record_run
from .staging import StagedRun, crash_point, last_values

if TYPE_CHECKING:
    import pyarrow as pa

    from ..store.odb import ObjectStore
    from ..workspace.context import RepoContext


def staged_spec(
    ctx: RepoContext,
    staged: StagedRun,
    status: str,
    base_params: Mapping[str, Any] | None = None,
) -> tuple[RunSpec, Path]:
    """The RunSpec of a staged run and the folder it ran in, read defensively: nothing in
    meta.json makes it fail. What cannot be stored is kept as text or left out, and
    noted in ``extra["unstorable"]``. ``base_params`` go under the staged params."""
    notes: dict[str, Any] = {}
    inputs = staged.inputs
    if not staged.own_outputs:  # `mlvc run`, a server's run: the run's outputs are its own
        inputs = replace(inputs, artifact_paths=_outputs_now(ctx, inputs))
    params, changed, dropped = storable_params({**(base_params or {}), **staged.params})
    if changed:
        notes["params"] = changed
    if dropped:
        notes["dropped_params"] = dropped
    tags, bad_tags = storable_tags(staged.tags)
    if bad_tags:
        notes["dropped_tags"] = bad_tags
    name = staged.name
    try:
        name = check_ref_name(name, "name") if name else ""
    except UsageError:
        notes["name"], name = name[:200], ""
    artifacts, bad_artifacts = staged.artifact_entries()
    if bad_artifacts:
        notes["dropped_artifacts"] = bad_artifacts
    extra: dict[str, Any] = {**staged.extra, "live_key": staged.key}
    for k, v in (("error", staged.error), ("children", staged.children), ("parent", staged.parent)):
        if v:
            extra[k] = v
    if notes:
        extra["unstorable"] = notes
    argv, series = staged.argv, staged.read_series()
    spec = RunSpec(
        message=staged.message[:MAX_PARAM_BYTES],
        name=name,
        params=params,
        tags=tags,
        models=staged.models,
        command=("python", *argv) if argv and argv[0].endswith(".py") else tuple(argv),
        status=status,
        started=staged.started,
        series=series_blob(ctx.store, series),
        series_metrics=last_values(series),
        inputs=inputs,
        extra=extra,
        artifact_entries=artifacts,
        move_head=staged.move_head,
        parents=staged.parents,
        reproduces=staged.reproduces,
    )
    return spec, Path(staged.cwd) if staged.cwd else ctx.root


def stored_run(ctx: RepoContext, staged: StagedRun) -> ObjectId | None:
    """The run a staged run was already stored as, published now if no ref names it
    yet (its recorder died in between); None if it was never stored."""
    note = staged.stored_note()
    if note is None:
        return None
    oid, move_head = note
    if not ctx.store.has(oid):
        return None  # gone (gc of an unreferenced object): record the run again
    if not ctx.refs.has_run(oid):
        publish_run(ctx, oid, read_run(ctx.store, oid), move_head=move_head)
    return oid


def record_staged(
    ctx: RepoContext, staged: StagedRun, spec: RunSpec, cwd: Path, phase: str
) -> ObjectId:
    """``record_run`` that notes the stored id here first (``phase`` names the crash
    points the fault tests use: ``<phase>-stored``, ``<phase>-published``)."""
    oid = _record_once(ctx, staged, spec, cwd, phase)
    crash_point(f"{phase}-published")
    return oid


def _record_once(
    ctx: RepoContext, staged: StagedRun, spec: RunSpec, cwd: Path, phase: str
) -> ObjectId:
    def stored(run_id: ObjectId) -> None:
        staged.note_stored(run_id, spec.move_head)
        crash_point(f"{phase}-stored")

    return record_run(ctx, spec, cwd, on_stored=stored)


def commit_staged(ctx: RepoContext, staged: StagedRun, status: str, phase: str = "end") -> ObjectId:
    """Record a staged run from what it holds (at its end, or found dead), then unstage it.

    What it holds never loses the run: a run whose project params or metrics files
    cannot be read, or whose name or values cannot be stored, is recorded without them
    (the error noted in ``extra``). Finishing the job again is safe: the stored run's id
    is noted here (``recorded``) before any ref names it, so a recorder killed after
    that point is followed by one that publishes the same run.
    """
    with writing(ctx.dir, ctx.store):  # the series blob is named only by the run
        oid = stored_run(ctx, staged)
        if oid is None:
            oid = _record_keeping_the_run(ctx, staged, status, phase)
        crash_point(f"{phase}-published")
        staged.unstage()
        return oid


def _record_keeping_the_run(
    ctx: RepoContext, staged: StagedRun, status: str, phase: str
) -> ObjectId:
    spec, cwd = staged_spec(ctx, staged, status)
    try:
        return _record_once(ctx, staged, spec, cwd, phase)
    except MlvcError as e:  # a project file, a name, a size: record without the extras
        extra = {**spec.extra, "record_error": str(e)}
        try:
            return _record_once(
                ctx, staged, replace(spec, project_files=False, extra=extra), cwd, phase
            )
        except MlvcError as again:  # still too big or odd: keep the run, lose the extras
            extra = {"live_key": spec.extra["live_key"], "record_error": str(again)[:2000]}
            bare = replace(spec, project_files=False, params={}, tags={}, models={},
                           message=spec.message[:1000], extra=extra)  # fmt: skip
            return _record_once(ctx, staged, bare, cwd, phase)


def series_blob(store: ObjectStore, table: pa.Table, *, presorted: bool = False) -> ObjectId | None:
    """The series as the blob a run names (core/series_blob.py: an Arrow IPC file, sorted by
    key and step), or None. ``presorted``: the rows are in that order already."""
    if table.num_rows == 0:
        return None
    import pyarrow as pa

    from ..core.series_blob import encode_series

    if not presorted:
        table = table.sort_by([("key", "ascending"), ("step", "ascending")])
    table = table.set_column(2, "timestamp", table["timestamp"].cast(pa.timestamp("us", "UTC")))
    return store.add_bytes(encode_series(table.combine_chunks()))


def _outputs_now(ctx: RepoContext, inputs: Inputs) -> tuple[str, ...]:
    """The artifact paths captured at the start, plus the configured ones (declared outputs,
    ``[track]`` artifacts and metrics files) that the run created since."""
    from ..workspace.project import load_project
    from .record import project_path

    try:
        configured = load_project(ctx.root).artifacts
    except MlvcError:
        return inputs.artifact_paths
    out = set(inputs.artifact_paths)
    for p in configured:
        try:
            out.add(project_path(ctx.root, p, ctx.root))
        except MlvcError:
            continue  # not there (or not inside the project): nothing to record
    data = set(inputs.data_paths)
    return tuple(sorted(p for p in out if not _under(p, data)))


def _under(path: str, folders: set[str]) -> bool:
    parts = path.split("/")
    return any("/".join(parts[:i]) in folders for i in range(1, len(parts) + 1))


def _map(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def storable_tags(tags: Any) -> tuple[dict[str, str], dict[str, str]]:
    """The tags a run can record, and the refused ones (repr of the key -> the start of
    its value), from whatever a staged run or an importer holds (never raises)."""
    out, dropped = {}, {}
    for k, v in _map(tags).items():
        try:
            check_ref_name(check_key(k), "tag")
        except UsageError:
            dropped[repr(k)[:200]] = str(v)[:200]
            continue
        out[k] = str(storable_params({"t": v})[0].get("t", ""))
    return out, dropped
