"""MLflow's tracking REST API, so the unmodified MLflow client logs into mlvc.

Served under ``/api/2.0/mlflow/`` and ``/ajax-api/2.0/mlflow/`` (the same handlers), the
artifact proxy under ``/api/2.0/mlflow-artifacts/``. Wire details (mlvc.server.mlflow.wire):
proto-JSON field names, GET arguments as query strings, errors as ``{"error_code",
"message"}``.
"""

from __future__ import annotations

PREFIXES = ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow")


def routes(state) -> list:
    """Every MLflow route, bound to ``state``."""
    from . import logged_models, registry

    out: list = []
    out += logged_models.routes(state)
    out += registry.routes(state)
    out += logged_models.artifact_routes(state)  # until the generic artifact proxy serves them
    return out
