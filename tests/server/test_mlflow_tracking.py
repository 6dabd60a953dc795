"""MLflow's tracking REST API on a real `mlvc server`, driven by the unmodified MLflow client
(in a subprocess) and by raw JSON; what it logs is then read back with `mlvc` itself."""

from __future__ import annotations

import json


def test_the_shared_server_answers_health_and_unknown_routes(server):
    status, body, _ = server.call("GET", "/health", token=None)
    assert status == 200 and body["status"] == "ok"
    status, body, _ = server.call("GET", "/api/2.0/mlflow/no/such/route")
    assert status == 404 and body["error_code"] == "ENDPOINT_NOT_FOUND"
    assert json.dumps(body).count("\n") == 0
