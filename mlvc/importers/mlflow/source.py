"""What an MLflow source yields, whatever it is (SQL store, ``./mlruns`` file store, REST
server): experiments, runs, and per run its params, tags, metric points, dataset inputs and
artifacts. Each reader (``sql``, ``files``, ``rest``) fills these; ``write`` records them.

Values are MLflow's own: times in ms since the epoch, statuses as MLflow names them
(``FINISHED``...), params and tags as text, a metric series as an Arrow table
(key, step, timestamp ms, value) with NaN and ±inf kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from ...errors import UsageError

if TYPE_CHECKING:
    import pyarrow as pa

RUN_ID = re.compile(r"^[0-9a-zA-Z_-]{1,64}$")  # MLflow run ids are 32 hex; be lenient, not unsafe
STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
ENDED = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}


@dataclass
class Experiment:
    experiment_id: str
    name: str
    artifact_location: str = ""
    lifecycle_stage: str = "active"
    creation_time: int | None = None
    last_update_time: int | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class RunInfo:
    run_id: str
    experiment_id: str
    name: str
    user_id: str
    status: str
    start_time: int | None
    end_time: int | None
    lifecycle_stage: str = "active"
    artifact_uri: str = ""

    @property
    def ended(self) -> bool:
        return self.status in ENDED


@dataclass
class Artifact:
    """One artifact file: its path inside the run's artifacts, its size, and how to read it
    (``open()`` returns a binary file; ``local`` is its path when it is a local file)."""

    path: str
    size: int
    open: Callable[[], BinaryIO]
    local: str | None = None


@dataclass
class RunData:
    info: RunInfo
    params: dict[str, str]
    tags: dict[str, str]
    metrics: pa.Table  # key, step, timestamp (ms), value
    inputs: list[dict[str, Any]] = field(default_factory=list)  # DatasetInput proto JSON
    metrics_sorted: bool = False  # the points are in (key, step) order already


@dataclass
class ModelVersion:
    version: int
    creation_time: int | None
    last_updated_time: int | None
    description: str
    user_id: str
    stage: str
    source: str
    run_id: str
    tags: dict[str, str] = field(default_factory=dict)
    run_link: str = ""
    status: str = "READY"  # PENDING_REGISTRATION and FAILED_REGISTRATION are not imported


def model_version(fields: dict[str, Any], tags: dict[str, str]) -> ModelVersion | None:
    """A version from MLflow's fields for it (a file store's ``meta.yaml`` and the REST API
    name them alike), or None without a version number."""
    try:
        number = int(fields.get("version"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None

    def text(key: str, default: str = "") -> str:
        return str(fields.get(key) or default)

    def ms(key: str) -> int | None:
        try:
            return int(fields[key]) if fields.get(key) is not None else None
        except (TypeError, ValueError):
            return None

    return ModelVersion(
        number, ms("creation_timestamp"), ms("last_updated_timestamp"), text("description"),
        text("user_id"), text("current_stage", "None"), text("source"), text("run_id"), tags,
        text("run_link"), text("status", "READY"),
    )  # fmt: skip


@dataclass
class RegisteredModel:
    name: str
    creation_time: int | None
    last_updated_time: int | None
    description: str
    tags: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)
    versions: list[ModelVersion] = field(default_factory=list)


@dataclass
class LoggedModel:
    """An MLflow 3 logged model (``mlflow.<flavor>.log_model``): its own id, fields, params
    and tags; its files under ``artifact_location``."""

    model_id: str
    experiment_id: str
    name: str
    artifact_location: str
    creation_time: int | None
    last_updated_time: int | None
    status: str  # PENDING, READY or FAILED
    model_type: str = ""
    source_run_id: str = ""
    status_message: str = ""
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    deleted: bool = False


LOGGED_MODEL_ID = re.compile(r"^m-[0-9a-f]{32}$")
LOGGED_STATUS = {"1": "PENDING", "2": "READY", "3": "FAILED", "LOGGED_MODEL_PENDING": "PENDING",
                 "LOGGED_MODEL_READY": "READY", "LOGGED_MODEL_UPLOAD_FAILED": "FAILED",
                 "PENDING": "PENDING", "READY": "READY", "FAILED": "FAILED"}  # fmt: skip


def logged_status(value: Any) -> str:
    return LOGGED_STATUS.get(str(value), "FAILED")


class Source(Protocol):
    """An MLflow history to import from."""

    description: str

    def experiments(self) -> list[Experiment]: ...

    def runs(self, experiment_ids: list[str]) -> Iterable[RunInfo]:
        """The runs of the experiments, as the source lists them (a stream: a REST source
        yields a page while it fetches the next)."""
        ...

    def details(self, runs: list[RunInfo]) -> Iterator[RunData]:
        """Params, tags, metrics and inputs of ``runs`` (a batch), in any order."""
        ...

    def artifacts(self, run: RunInfo) -> Iterator[Artifact]: ...

    def registry(self) -> list[RegisteredModel]:
        """Registered models with their versions and aliases ([] where not read yet)."""
        ...

    def model_files(self, version: ModelVersion, runs: dict[str, RunInfo]) -> list[Artifact]:
        """The files of a version's model folder ([] when its source cannot be read here)."""
        ...

    def logged_models(self, experiment_ids: list[str]) -> list[LoggedModel]:
        """The experiments' MLflow 3 logged models ([] where the source has none)."""
        ...

    def logged_model_files(self, model: LoggedModel) -> Iterator[Artifact]: ...

    def close(self) -> None: ...


def metrics_table(columns: dict[str, list] | None = None) -> pa.Table:
    """A metric table (key, step, timestamp ms, value) from Python columns (or empty)."""
    import pyarrow as pa

    columns = columns or {"key": [], "step": [], "timestamp": [], "value": []}
    return pa.table(
        {
            "key": pa.array(columns["key"], pa.string()),
            "step": pa.array(columns["step"], pa.int64()),
            "timestamp": pa.array(columns["timestamp"], pa.int64()),
            "value": pa.array(columns["value"], pa.float64()),
        }
    )


def dataset_input(dataset: dict[str, Any], tags: dict[str, str]) -> dict[str, Any]:
    """A DatasetInput as MLflow's REST API answers it (the fields set, none null)."""
    ds = {k: v for k, v in dataset.items() if v is not None}
    return {"tags": [{"key": k, "value": v} for k, v in tags.items()], "dataset": ds}


def check_run_id(run_id: Any) -> str:
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise UsageError(f"the MLflow source names a run {str(run_id)[:80]!r} that is no run id")
    return run_id


def version_files(version: ModelVersion, runs: dict[str, RunInfo], artifacts) -> list[Artifact]:
    """A version's files when its source is ``runs:/<run id>/<path>`` (``artifacts(run)``
    lists the run's) or a local folder; [] otherwise."""
    src = version.source
    if src.startswith("runs:/"):
        rid, _, path = src.removeprefix("runs:/").strip("/").partition("/")
        run = runs.get(rid)
        if run is None:
            return []
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        out = []
        for a in artifacts(run):
            if a.path.startswith(prefix):
                out.append(Artifact(a.path[len(prefix) :], a.size, a.open, a.local))
        return out
    from .files import local_artifacts

    return list(local_artifacts(src))


def open_source(uri: str, token: str | None = None) -> Source:
    """The reader for ``uri``: ``sqlite:///path``, ``postgresql://...``, ``mysql://...``, an
    ``http(s)://`` server, or a ``./mlruns`` folder (a path or ``file://``)."""
    scheme = uri.split(":", 1)[0].lower() if "://" in uri else ""
    if scheme.startswith(("sqlite", "postgresql", "postgres", "mysql")):
        from .sql import SqlSource

        return SqlSource(uri)
    if scheme in ("http", "https"):
        from .rest import RestSource

        return RestSource(uri, token)
    if scheme in ("", "file"):
        from .files import FileSource

        return FileSource(uri)
    raise UsageError(
        f"cannot import from {uri!r}: give sqlite:///path/mlflow.db, postgresql://..., "
        "mysql://..., an http(s):// MLflow server, or a ./mlruns folder"
    )
