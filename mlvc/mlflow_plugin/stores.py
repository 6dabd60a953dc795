"""MLflow's REST stores, answered in this process: every call MLflow's ``RestStore`` (the
tracking one and the registry one) would send over HTTP goes to ``Local.call`` instead, so
the plugin speaks exactly what ``mlvc server`` speaks, entity for entity."""

from __future__ import annotations

import json

from mlflow.exceptions import RestException
from mlflow.store.model_registry.rest_store import RestStore as _RegistryRestStore
from mlflow.store.tracking.rest_store import RestStore as _TrackingRestStore
from mlflow.utils.proto_json_utils import parse_dict
from mlflow.utils.rest_utils import MlflowHostCreds

from .local import artifact_uri_out, error_json, local_for


def _answer(local, endpoint: str, method: str, json_body, response_proto):
    body = json.loads(json_body) if isinstance(json_body, str) else json_body
    try:
        answer = local.call(endpoint, method, body)
    except Exception as e:
        as_json = error_json(e)
        if as_json is None:
            raise
        raise RestException(as_json) from None
    parse_dict(js_dict=artifact_uri_out(answer or {}), message=response_proto)
    return response_proto


class TrackingStore(_TrackingRestStore):
    """MLflow's tracking store over a local mlvc repository."""

    def __init__(self, store_uri: str):
        self.local = local_for(store_uri)
        self.store_uri = store_uri
        super().__init__(lambda: MlflowHostCreds(store_uri))

    def _call_endpoint(self, api, json_body=None, endpoint=None, retry_timeout_seconds=None,
                       response_proto=None):  # fmt: skip
        infos = self._V3_METHOD_TO_INFO if api in self._V3_APIS else self._METHOD_TO_INFO
        path, method = infos[api]
        return _answer(self.local, endpoint or path, method, json_body,
                       response_proto or api.Response())  # fmt: skip


class RegistryStore(_RegistryRestStore):
    """MLflow's model registry store over a local mlvc repository."""

    def __init__(self, store_uri: str):
        self.local = local_for(store_uri)
        self.store_uri = store_uri
        super().__init__(lambda: MlflowHostCreds(store_uri))

    def _call_endpoint(self, api, json_body, call_all_endpoints=False, extra_headers=None):
        endpoints = (self._get_all_endpoints_from_method(api) if call_all_endpoints
                     else [self._get_endpoint_from_method(api)])  # fmt: skip
        path, method = endpoints[0]
        return _answer(self.local, path, method, json_body, self._get_response_from_method(api))
