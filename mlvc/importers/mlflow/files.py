"""Reading MLflow's file store (a ``./mlruns`` folder): ``<experiment>/meta.yaml``,
``<experiment>/<run>/{meta.yaml, params/, tags/, metrics/, inputs/, artifacts/}`` and
``<experiment>/datasets/<id>/meta.yaml``; deleted experiments sit in ``.trash/``. Keys
with slashes are nested folders. A metric file holds ``timestamp value step`` lines.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ...errors import ImportSourceError, MissingExtra
from .source import (
    LOGGED_MODEL_ID,
    Artifact,
    Experiment,
    LoggedModel,
    ModelVersion,
    RegisteredModel,
    RunData,
    RunInfo,
    dataset_input,
    logged_status,
    metrics_table,
    model_version,
    version_files,
)

STATUS = {1: "RUNNING", 2: "SCHEDULED", 3: "FINISHED", 4: "FAILED", 5: "KILLED"}


def _yaml(path: Path) -> dict:
    try:
        import yaml
    except ImportError:
        raise MissingExtra(
            "reading an MLflow file store needs PyYAML: pip install 'mlvc[mlflow-import]'"
        ) from None

    try:
        value = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _local_path(uri: str) -> Path | None:
    """The local folder an artifact URI names (a path or file://), else None."""
    if not uri:
        return None
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if parts.scheme == "" or (len(parts.scheme) == 1 and os.name == "nt"):
        return Path(uri)
    return None


def local_artifacts(uri: str) -> Iterator[Artifact]:
    """Every file under a run's local artifact folder (symlinks not followed); nothing for
    an artifact store that is not a local folder (the run is imported without them)."""
    root = _local_path(uri)
    if root is None or not root.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            if full.is_symlink() or not full.is_file():
                continue
            rel = full.relative_to(root).as_posix()
            yield Artifact(rel, full.stat().st_size, partial(open, full, "rb"), str(full))


def _values(folder: Path) -> dict[str, str]:
    """key -> file content for every file below ``folder`` (keys with / are folders)."""
    out = {}
    if not folder.is_dir():
        return out
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            full = Path(dirpath) / name
            try:
                out[full.relative_to(folder).as_posix()] = full.read_text()
            except (OSError, UnicodeDecodeError):
                continue
    return out


class FileSource:
    def __init__(self, uri: str):
        root = _local_path(uri)
        if root is None or not root.is_dir():
            raise ImportSourceError(f"no MLflow file store at {uri}; give the ./mlruns folder")
        if not any((p / "meta.yaml").is_file() for p in root.iterdir() if p.is_dir()):
            raise ImportSourceError(
                f"{uri} holds no MLflow experiment (no <id>/meta.yaml); give the ./mlruns folder"
            )
        self.root = root
        self.description = str(root)
        self._folders: dict[str, Path] = {}

    def registry(self) -> list[RegisteredModel]:
        """``models/<name>/{meta.yaml, tags/, aliases/, version-<n>/{meta.yaml, tags/}}``;
        a version MLflow deleted (stage ``Deleted_Internal``) is left out."""
        out = []
        folder = self.root / "models"
        for m in sorted(folder.iterdir()) if folder.is_dir() else []:
            meta = _yaml(m / "meta.yaml") if m.is_dir() else {}
            if not isinstance(meta.get("name"), str):
                continue
            model = RegisteredModel(
                meta["name"], _int(meta.get("creation_timestamp")),
                _int(meta.get("last_updated_timestamp")), str(meta.get("description") or ""),
                _values(m / "tags"),
            )  # fmt: skip
            aliases = meta.get("aliases") if isinstance(meta.get("aliases"), dict) else {}
            for alias, number in {**aliases, **_values(m / "aliases")}.items():
                if _int(number) is not None:
                    model.aliases[str(alias)] = _int(number)
            for v in sorted(m.glob("version-*")):
                vm = _yaml(v / "meta.yaml")
                version = model_version(vm, _values(v / "tags"))
                if version is not None and vm.get("current_stage") != "Deleted_Internal":
                    model.versions.append(version)
            model.versions.sort(key=lambda x: x.version)
            out.append(model)
        return out

    def model_files(self, version: ModelVersion, runs: dict[str, RunInfo]) -> list[Artifact]:
        return version_files(version, runs, self.artifacts)

    def logged_models(self, experiment_ids: list[str]) -> list[LoggedModel]:
        """``<experiment>/models/<model id>/{meta.yaml, params/, tags/, artifacts/}``."""
        out = []
        for eid in experiment_ids:
            folder = self._folders.get(eid)
            models = folder / "models" if folder is not None else None
            for m in sorted(models.iterdir()) if models and models.is_dir() else []:
                meta = _yaml(m / "meta.yaml")
                mid = str(meta.get("model_id") or "")
                if not LOGGED_MODEL_ID.match(mid) or mid != m.name:
                    continue
                out.append(LoggedModel(
                    mid, eid, str(meta.get("name") or ""), str(m / "artifacts"),
                    _int(meta.get("creation_timestamp")), _int(meta.get("last_updated_timestamp")),
                    logged_status(meta.get("status")), str(meta.get("model_type") or ""),
                    str(meta.get("source_run_id") or ""), str(meta.get("status_message") or ""),
                    _values(m / "params"), _values(m / "tags"),
                    deleted=meta.get("lifecycle_stage") == "deleted",
                ))  # fmt: skip
        return out

    def logged_model_files(self, model: LoggedModel) -> Iterator[Artifact]:
        return local_artifacts(model.artifact_location)

    def close(self) -> None:
        pass

    def experiments(self) -> list[Experiment]:
        out = []
        for base in (self.root, self.root / ".trash"):
            if not base.is_dir():
                continue
            for folder in sorted(base.iterdir()):
                meta = _yaml(folder / "meta.yaml") if folder.is_dir() else {}
                if "experiment_id" not in meta or "name" not in meta:
                    continue
                eid = str(meta["experiment_id"])
                self._folders[eid] = folder
                out.append(Experiment(
                    eid, str(meta["name"]), str(meta.get("artifact_location") or ""),
                    str(meta.get("lifecycle_stage") or "active"), _int(meta.get("creation_time")),
                    _int(meta.get("last_update_time")), _values(folder / "tags"),
                ))  # fmt: skip
        return out

    def runs(self, experiment_ids: list[str]) -> list[RunInfo]:
        out = []
        for eid in experiment_ids:
            folder = self._folders.get(eid)
            if folder is None:
                continue
            for run in sorted(folder.iterdir()):
                meta = _yaml(run / "meta.yaml") if run.is_dir() else {}
                rid = meta.get("run_id") or meta.get("run_uuid")
                if not rid or not isinstance(rid, str):
                    continue
                status = meta.get("status")
                status = STATUS.get(status, status) if isinstance(status, int) else str(status)
                out.append(RunInfo(
                    rid, eid, str(meta.get("run_name") or ""), str(meta.get("user_id") or ""),
                    status, _int(meta.get("start_time")), _int(meta.get("end_time")),
                    str(meta.get("lifecycle_stage") or "active"),
                    str(meta.get("artifact_uri") or ""),
                ))  # fmt: skip
        out.sort(key=lambda r: (r.start_time or 0, r.run_id))
        return out

    def _run_dir(self, run: RunInfo) -> Path:
        return self._folders[run.experiment_id] / run.run_id

    def details(self, runs: list[RunInfo]) -> Iterator[RunData]:
        for run in runs:
            d = self._run_dir(run)
            yield RunData(run, _values(d / "params"), _values(d / "tags"), _metrics(d / "metrics"),
                          self._inputs(run, d / "inputs"))  # fmt: skip

    def _inputs(self, run: RunInfo, folder: Path) -> list[dict[str, Any]]:
        if not folder.is_dir():
            return []
        out = []
        for inp in sorted(folder.iterdir()):
            meta = _yaml(inp / "meta.yaml")
            if meta.get("source_type") != "DATASET":
                continue
            ds_dir = self._folders[run.experiment_id] / "datasets" / str(meta.get("source_id"))
            ds = _yaml(ds_dir / "meta.yaml")
            if not ds:
                continue
            dataset = {"name": ds.get("name"), "digest": ds.get("digest"),
                       "source_type": ds.get("source_type"), "source": ds.get("source"),
                       "schema": ds.get("schema"), "profile": ds.get("profile")}  # fmt: skip
            tags = meta.get("tags") if isinstance(meta.get("tags"), dict) else {}
            out.append(dataset_input(dataset, {str(k): str(v) for k, v in tags.items()}))
        return out

    def artifacts(self, run: RunInfo) -> Iterator[Artifact]:
        uri = run.artifact_uri
        if _local_path(uri) is None or not _local_path(uri).is_dir():
            uri = str(self._run_dir(run) / "artifacts")  # a moved ./mlruns: its own folder
        return local_artifacts(uri)


def _metrics(folder: Path):
    cols: dict[str, list] = {"key": [], "step": [], "timestamp": [], "value": []}
    for key, text in sorted(_values(folder).items()):
        for line in text.splitlines():
            parts = line.split()
            if len(parts) < 2:
                continue
            try:
                ts, value = int(parts[0]), float(parts[1])
                step = int(parts[2]) if len(parts) > 2 else 0
            except ValueError:
                continue
            cols["key"].append(key)
            cols["step"].append(step)
            cols["timestamp"].append(ts)
            cols["value"].append(value)
    return metrics_table(cols)


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
