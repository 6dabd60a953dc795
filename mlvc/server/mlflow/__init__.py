"""MLflow's tracking REST API, so the unmodified MLflow client logs into mlvc.

Served under ``/api/2.0/mlflow/`` and ``/ajax-api/2.0/mlflow/`` (the same handlers), the
artifact proxy under ``/api/2.0/mlflow-artifacts/``. Wire details (mlvc.server.mlflow.wire):
proto-JSON field names, GET arguments as query strings, errors as ``{"error_code",
"message"}``. Terms:

    TrackingStore (store.py)   experiments, open runs (mlvc live runs kept by a lease), the
                               overlay of what changes on a run after it ended
    tracking.py                the handlers; search.py: filter strings, order_by, pages
    artifacts.py               the artifact proxy (bytes become objects of the run)

``state.extras["mlflow.runs"]`` is the TrackingStore (the logged-models module links models
to runs through it); ``state.extras["mlflow.model_artifacts"]``, when set, serves the
artifacts of MLflow 3 logged models.
"""

from __future__ import annotations

PREFIXES = ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow")
ARTIFACT_PREFIXES = ("/api/2.0/mlflow-artifacts", "/ajax-api/2.0/mlflow-artifacts")

# (method, path under a prefix, handler name in tracking, scope)
TRACKING = [
    ("POST", "/experiments/create", "create_experiment", "write"),
    ("GET", "/experiments/get", "get_experiment", "read"),
    ("GET", "/experiments/get-by-name", "get_experiment_by_name", "read"),
    ("POST", "/experiments/search", "experiments_search", "read"),
    ("GET", "/experiments/search", "experiments_search", "read"),
    ("POST", "/experiments/update", "update_experiment", "write"),
    ("POST", "/experiments/delete", "delete_experiment", "write"),
    ("POST", "/experiments/restore", "restore_experiment", "write"),
    ("POST", "/experiments/set-experiment-tag", "set_experiment_tag", "write"),
    ("POST", "/experiments/delete-experiment-tag", "delete_experiment_tag", "write"),
    ("POST", "/runs/create", "create_run", "write"),
    ("GET", "/runs/get", "get_run", "read"),
    ("POST", "/runs/update", "update_run", "write"),
    ("POST", "/runs/delete", "delete_run", "write"),
    ("POST", "/runs/restore", "restore_run", "write"),
    ("POST", "/runs/search", "runs_search", "read"),
    ("POST", "/runs/log-metric", "log_metric", "write"),
    ("POST", "/runs/log-parameter", "log_param", "write"),
    ("POST", "/runs/log-batch", "log_batch", "write"),
    ("POST", "/runs/set-tag", "set_tag", "write"),
    ("POST", "/runs/delete-tag", "delete_tag", "write"),
    ("POST", "/runs/log-inputs", "log_inputs", "write"),
    ("POST", "/runs/outputs", "log_outputs", "write"),
    ("POST", "/runs/log-model", "log_model", "write"),
    ("GET", "/metrics/get-history", "get_history", "read"),
    ("GET", "/metrics/get-history-bulk-interval", "get_history_bulk_interval", "read"),
]


def routes(state) -> list:
    """Every MLflow route, bound to ``state``; starts the TrackingStore."""
    from starlette.routing import Route

    from ..app import endpoint
    from . import artifacts, logged_models, registry, tracking
    from .store import TrackingStore

    store = TrackingStore(state)
    state.extras["mlflow.runs"] = store
    state.on_shutdown.append(store.shutdown)

    by_path: dict[str, dict[str, tuple]] = {}
    for method, path, name, scope in TRACKING:
        by_path.setdefault(path, {})[method] = (getattr(tracking, name), scope)
    out = []
    for prefix in PREFIXES:
        for path, methods in by_path.items():
            for method, (handler, scope) in methods.items():
                out.append(
                    Route(
                        prefix + path,
                        endpoint(state, handler, scope),
                        methods=[method],
                        name=f"{prefix}{path}:{method}",
                    )  # fmt: skip
                )
    upload = artifacts.uploader(state)
    for prefix in ARTIFACT_PREFIXES:
        base = prefix + "/artifacts"
        out += [
            Route(base, endpoint(state, artifacts.list_artifacts, "read"), methods=["GET"]),
            Route(
                base + "/{path:path}", endpoint(state, artifacts.download, "read"), methods=["GET"]
            ),  # fmt: skip
            Route(
                base + "/{path:path}", endpoint(state, upload, "write", raw=True), methods=["PUT"]
            ),  # fmt: skip
            Route(
                base + "/{path:path}",
                endpoint(state, artifacts.delete, "write"),
                methods=["DELETE"],
            ),  # fmt: skip
        ]
    out += logged_models.routes(state) + registry.routes(state)
    return out
