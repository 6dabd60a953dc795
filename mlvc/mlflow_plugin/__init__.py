"""MLflow's tracking-store plugin: ``MLFLOW_TRACKING_URI=mlvc:`` logs into a local repository.

MLflow finds these through the entry points in pyproject.toml (``mlflow.tracking_store``,
``mlflow.model_registry_store``, ``mlflow.artifact_repository``). No server runs: the MLflow
client's requests are answered in this process by the same handlers ``mlvc server`` serves
MLflow's REST API with (mlvc.server.mlflow), so the two cannot drift apart. Terms:

    mlvc: / mlvc:PATH / mlvc:///ABS   the repository found from the current folder, or the
                                      one at PATH (created-by-``mlvc init`` repositories only)
    Local (local.py)                  one repository's MLflow API inside this process
    mlvc-artifacts:/<exp>/<run>/artifacts/...   where MLflow writes a run's (or an MLflow 3
                                      logged model's) files; they become objects of the run
"""

from __future__ import annotations

SCHEME = "mlvc"
ARTIFACTS_SCHEME = "mlvc-artifacts"


def tracking_store(store_uri: str, artifact_uri: str | None = None):
    """The ``mlflow.tracking_store`` entry point."""
    from .stores import TrackingStore

    return TrackingStore(store_uri)


def registry_store(store_uri: str, tracking_uri: str | None = None):
    """The ``mlflow.model_registry_store`` entry point."""
    from .stores import RegistryStore

    return RegistryStore(store_uri)


def artifact_repository(artifact_uri: str, tracking_uri: str | None = None,
                        registry_uri: str | None = None):  # fmt: skip
    """The ``mlflow.artifact_repository`` entry point (a factory, so that loading the entry
    point imports nothing of MLflow's while MLflow itself is still importing)."""
    from .artifacts import MlvcArtifactRepository

    return MlvcArtifactRepository(artifact_uri, tracking_uri=tracking_uri,
                                  registry_uri=registry_uri)  # fmt: skip
