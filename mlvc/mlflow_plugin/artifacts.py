"""MLflow's artifact repository for ``mlvc-artifacts:/<experiment>/<run>/artifacts/...``: the
files of an open run (or of an MLflow 3 logged model) become objects in the repository, read
back from the store, through the functions the server's artifact proxy uses."""

from __future__ import annotations

import os
import posixpath
from urllib.parse import urlparse

from mlflow.entities import FileInfo
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repo import ArtifactRepository

from .local import error_json, local_for


def _tracking_uri(given: str | None) -> str:
    if given and given.startswith("mlvc:"):
        return given
    from mlflow.tracking import get_tracking_uri

    uri = get_tracking_uri()
    if not uri.startswith("mlvc:"):
        raise MlflowException(
            "mlvc-artifacts: URIs are read through an mlvc repository: set "
            "MLFLOW_TRACKING_URI=mlvc: (or mlvc:///path/to/repo)"
        )
    return uri


def _mlflow_error(e: Exception) -> Exception:
    as_json = error_json(e)
    if as_json is None:
        return e
    return MlflowException(as_json["message"], error_code=as_json["error_code"])


class MlvcArtifactRepository(ArtifactRepository):
    """Artifacts of runs and logged models in a local mlvc repository."""

    def __init__(self, artifact_uri: str, tracking_uri: str | None = None,
                 registry_uri: str | None = None):  # fmt: skip
        super().__init__(artifact_uri, tracking_uri=tracking_uri, registry_uri=registry_uri)
        self.local = local_for(_tracking_uri(tracking_uri))
        self.base = urlparse(artifact_uri).path.strip("/")

    def _path(self, *parts: str | None) -> str:
        return posixpath.join(self.base, *(p.strip("/") for p in parts if p))

    def _do(self, fn, *args):
        try:
            return fn(*args)
        except Exception as e:
            raise _mlflow_error(e) from None

    def log_artifact(self, local_file, artifact_path=None):
        name = os.path.basename(local_file)
        self._do(self._put, self._path(artifact_path, name), local_file)

    def log_artifacts(self, local_dir, artifact_path=None):
        for top, _dirs, files in os.walk(local_dir):
            rel = os.path.relpath(top, local_dir)
            for name in sorted(files):
                sub = None if rel == "." else rel.replace(os.sep, "/")
                where = posixpath.join(*(p for p in (artifact_path, sub) if p)) if (
                    artifact_path or sub) else None  # fmt: skip
                self.log_artifact(os.path.join(top, name), where)

    def _put(self, path: str, local_file) -> None:
        from ..server.mlflow import artifacts

        kind, _eid, oid, rel = artifacts.split(path)
        state = self.local.state
        if kind == "model":
            size = os.path.getsize(local_file)
            state.extras["mlflow.model_artifacts"].store_file(
                oid, rel, local_file, size, self.local.principal.name)  # fmt: skip
            return
        opened, rel = artifacts.open_for_upload(state.extras["mlflow.runs"], oid, rel)
        artifacts.add_file(opened, oid, rel, local_file)

    def list_artifacts(self, path=None):
        from ..server.mlflow import artifacts

        full = self._path(path)
        answer = self._do(artifacts.list_artifacts, _ListCall(self.local, full))
        prefix = (path or "").strip("/")
        out = []
        for f in answer["files"]:
            p = posixpath.join(prefix, f["path"]) if prefix else f["path"]
            out.append(FileInfo(p, f["is_dir"], None if f["is_dir"] else f.get("file_size")))
        return out

    def _download_file(self, remote_file_path, local_path):
        self._do(self._get, self._path(remote_file_path), local_path)

    def _get(self, path: str, local_path) -> None:
        from ..server.mlflow import artifacts

        kind, _eid, oid, rel = artifacts.split(path)
        state = self.local.state
        if kind == "model":
            _size, chunks = state.extras["mlflow.model_artifacts"].content(oid, rel)
        else:
            chunks = artifacts.run_file(state.extras["mlflow.runs"], oid, rel)
        tmp = f"{local_path}.part-{os.getpid()}"
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
        os.replace(tmp, local_path)

    def delete_artifacts(self, artifact_path=None):
        from ..server.mlflow import artifacts

        call = _ListCall(self.local, self._path(artifact_path))
        call.path_params = {"path": call.query.get("path")}
        self._do(artifacts.delete, call)


class _ListCall:
    """The few fields of a ``Call`` the artifact handlers read."""

    def __init__(self, local, path: str):
        from .local import Query

        self.state = local.state
        self.principal = local.principal
        self.query = Query({"path": path})
        self.path_params: dict = {}
