"""Reading an MLflow tracking server over its REST API: ``experiments/search`` and
``runs/search`` in pages (params, tags, latest metrics and inputs come with each run), each
metric's whole history for 100 runs in one ``metrics/get-history-bulk`` request (falling back
to ``get-history-bulk-interval`` and ``get-history``), and the artifacts through the
``mlflow-artifacts`` proxy (one listing of an experiment's folder names the runs that have
any; those are listed and downloaded). The requests of a batch of runs go out from a pool of
threads, each holding one keep-alive connection. ``MLFLOW_TRACKING_TOKEN`` is sent as a
bearer token."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from ...errors import ImportSourceError, UsageError
from .files import local_artifacts
from .source import (
    LOGGED_MODEL_ID,
    Artifact,
    Experiment,
    LoggedModel,
    ModelVersion,
    RegisteredModel,
    RunData,
    RunInfo,
    check_run_id,
    logged_status,
    metrics_table,
    model_version,
    version_files,
)

THREADS = 16
PAGE = 1000
RUNS_PAGE = 500  # runs/search: smaller than the largest page, so importing starts sooner
HISTORY_PAGE = 25_000
BULK_PAGE = 2500  # get-history-bulk-interval's largest page (points per run)
RETRY = {429, 500, 502, 503, 504}
TIMEOUT = 60.0


class RestSource:
    def __init__(self, uri: str, token: str | None = None):
        parts = urlsplit(uri)
        if not parts.hostname:
            raise UsageError(f"no host in {uri!r}; give http(s)://HOST[:PORT][/prefix]")
        self.description = uri
        self.https = parts.scheme == "https"
        self.host, self.port = parts.hostname, parts.port
        self.prefix = parts.path.rstrip("/")
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix="mlvc-import")
        self._runs: dict[str, dict] = {}  # run id -> its runs/search answer
        self._listed: dict[str, list[Artifact]] = {}  # run id -> its artifacts (details)
        self._parents: dict[str, set[str] | None] = {}  # _folders' listings

    def registry(self) -> list[RegisteredModel]:
        """``registered-models/search`` (with tags and aliases), then each model's
        ``model-versions/search``, in pages."""
        out = []
        for m in self._get_pages("/api/2.0/mlflow/registered-models/search",
                                 {"max_results": PAGE}, "registered_models"):  # fmt: skip
            if not isinstance(m.get("name"), str):
                continue
            model = RegisteredModel(
                m["name"], _int(m.get("creation_timestamp")),
                _int(m.get("last_updated_timestamp")), m.get("description") or "", _kv(m),
            )  # fmt: skip
            for a in m.get("aliases") or []:
                if _int(a.get("version")) is not None and a.get("alias"):
                    model.aliases[str(a["alias"])] = _int(a["version"])
            name = model.name.replace("'", "\\'")
            q = {"filter": f"name = '{name}'", "max_results": 10_000}
            for v in self._get_pages("/api/2.0/mlflow/model-versions/search", q,
                                     "model_versions"):  # fmt: skip
                version = model_version(v, _kv(v))
                if version is not None and v.get("name") == model.name:
                    model.versions.append(version)
            model.versions.sort(key=lambda x: x.version)
            out.append(model)
        return out

    def model_files(self, version: ModelVersion, runs: dict[str, RunInfo]) -> list[Artifact]:
        """A ``runs:/`` version's files, listed and read through the artifact proxy."""
        return version_files(version, runs, self._artifacts)

    def logged_models(self, experiment_ids: list[str]) -> list[LoggedModel]:
        """``logged-models/search`` in pages (a server without it: [])."""
        out = []
        for i in range(0, len(experiment_ids), 100):
            body = {"experiment_ids": experiment_ids[i : i + 100], "max_results": 100}
            try:
                found = list(self._pages("/api/2.0/mlflow/logged-models/search", body, "models"))
            except ImportSourceError as e:
                if " 404 " in str(e) or " 501 " in str(e):
                    return []  # an MLflow 2 server
                raise
            for m in found:
                info, data = m.get("info") or {}, m.get("data") or {}
                mid = str(info.get("model_id") or "")
                if not LOGGED_MODEL_ID.match(mid):
                    continue
                out.append(LoggedModel(
                    mid, str(info.get("experiment_id") or ""), info.get("name") or "",
                    info.get("artifact_uri") or "", _int(info.get("creation_timestamp_ms")),
                    _int(info.get("last_updated_timestamp_ms")), logged_status(info.get("status")),
                    info.get("model_type") or "", info.get("source_run_id") or "",
                    info.get("status_message") or "", _kv({"tags": data.get("params")}),
                    _kv(info),
                ))  # fmt: skip
        return out

    def logged_model_files(self, model: LoggedModel) -> Iterator[Artifact]:
        uri = model.artifact_location
        if not uri.startswith("mlflow-artifacts:"):
            return local_artifacts(uri)
        return self._walk(model.model_id, uri.removeprefix("mlflow-artifacts:").lstrip("/"), "")

    def _get_pages(self, path: str, query: dict, field: str) -> Iterator[dict]:
        token = None
        while True:
            q = {**query, **({"page_token": token} if token else {})}
            answer = self._json("GET", f"{path}?{urlencode(q)}")
            yield from answer.get(field) or []
            token = answer.get("next_page_token")
            if not token:
                return

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # -- HTTP ------------------------------------------------------------------------------

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            conn = self._local.conn = cls(self.host, self.port, timeout=TIMEOUT)
        return conn

    def _request(self, method: str, path: str, body: Any = None) -> http.client.HTTPResponse:
        """One request, retried on a dropped connection or a 429/5xx (a few times)."""
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(4):
            conn = self._conn()
            try:
                conn.request(method, self.prefix + path, body=data, headers=self.headers)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                self._local.conn = None
                if attempt == 3:
                    raise ImportSourceError(
                        f"cannot reach the MLflow server {self.description}: {e}"
                    ) from None
                time.sleep(0.2 * (attempt + 1))
                continue
            if resp.status in RETRY and attempt < 3:
                resp.read()
                time.sleep(0.2 * (attempt + 1))
                continue
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    def _json(self, method: str, path: str, body: Any = None) -> dict:
        resp = self._request(method, path, body)
        raw = resp.read()
        if resp.status != 200:
            try:
                message = json.loads(raw).get("message") or raw[:200].decode(errors="replace")
            except ValueError:
                message = raw[:200].decode(errors="replace")
            if resp.status in (401, 403):
                message += " (set MLFLOW_TRACKING_TOKEN to the server's token)"
            raise ImportSourceError(
                f"the MLflow server {self.description} answered {resp.status} to {path}: {message}"
            )
        try:
            out = json.loads(raw) if raw else {}
        except ValueError:
            raise ImportSourceError(
                f"{self.description} answered {path} with no JSON: is it an MLflow server?"
            ) from None
        return out if isinstance(out, dict) else {}

    def _pages(self, path: str, body: dict, field: str) -> Iterator[dict]:
        token = None
        while True:
            answer = self._json("POST", path, {**body, **({"page_token": token} if token else {})})
            yield from answer.get(field) or []
            token = answer.get("next_page_token")
            if not token:
                return

    # -- experiments and runs ----------------------------------------------------------------

    def experiments(self) -> list[Experiment]:
        out = []
        body = {"max_results": PAGE, "view_type": "ALL"}
        for e in self._pages("/api/2.0/mlflow/experiments/search", body, "experiments"):
            tags = {t["key"]: t.get("value", "") for t in e.get("tags") or []}
            out.append(Experiment(
                str(e["experiment_id"]), e["name"], e.get("artifact_location", ""),
                e.get("lifecycle_stage", "active"), _int(e.get("creation_time")),
                _int(e.get("last_update_time")), tags,
            ))  # fmt: skip
        return out

    def runs(self, experiment_ids: list[str]) -> Iterator[RunInfo]:
        """The runs, oldest first, page by page as ``runs/search`` answers (each page sorted
        by start time, then run id): the next page is asked for by a pool thread while the
        caller imports this one."""
        for i in range(0, len(experiment_ids), 100):  # runs/search takes 100 at most
            body = {"experiment_ids": experiment_ids[i : i + 100], "max_results": RUNS_PAGE,
                    "run_view_type": "ALL", "order_by": ["attributes.start_time ASC"]}  # fmt: skip
            for page in self._pages_ahead("/api/2.0/mlflow/runs/search", body, "runs"):
                out = [self._run_info(r) for r in page]
                out.sort(key=lambda r: (r.start_time or 0, r.run_id))
                yield from out

    def _run_info(self, r: dict) -> RunInfo:
        info = r.get("info") or {}
        rid = check_run_id(info.get("run_id") or info.get("run_uuid"))
        self._runs[rid] = r
        return RunInfo(
            rid, str(info.get("experiment_id")), info.get("run_name", ""),
            info.get("user_id", ""), info.get("status", "FINISHED"),
            _int(info.get("start_time")), _int(info.get("end_time")),
            info.get("lifecycle_stage", "active"), info.get("artifact_uri", ""),
        )  # fmt: skip

    def _pages_ahead(self, path: str, body: dict, field: str) -> Iterator[list[dict]]:
        """``_pages`` a page at a time, each next page fetched by the pool meanwhile."""

        def fetch(token: str | None) -> dict:
            return self._json("POST", path, {**body, **({"page_token": token} if token else {})})

        ahead = self._pool.submit(fetch, None)
        while ahead is not None:
            answer = ahead.result()
            token = answer.get("next_page_token")
            ahead = self._pool.submit(fetch, token) if token else None
            yield answer.get(field) or []

    def details(self, runs: list[RunInfo]) -> Iterator[RunData]:
        """The batch's histories and artifact listings are fetched by the pool at once:
        each metric key's histories for up to 100 runs in one ``get-history-bulk-interval``
        request (complete when a run has fewer points than the page: MLflow samples only
        beyond it), ``get-history`` for the rest (and where a server lacks the former)."""
        with_files = self._with_artifacts(runs)
        jobs = [self._pool.submit(self._fetch, run, run.run_id in with_files) for run in runs]
        bulk = self._bulk_histories(runs)
        for run, job in zip(runs, jobs, strict=True):
            histories, self._listed[run.run_id] = job.result()
            histories += bulk.pop(run.run_id, [])
            found = self._runs.pop(run.run_id, None) or {}
            data = found.get("data") or {}
            cols: dict[str, list] = {"key": [], "step": [], "timestamp": [], "value": []}
            for points in histories:
                for m in points:
                    cols["key"].append(m["key"])
                    cols["step"].append(int(m.get("step") or 0))
                    cols["timestamp"].append(int(m.get("timestamp") or 0))
                    cols["value"].append(_float(m.get("value")))
            inputs = (found.get("inputs") or {}).get("dataset_inputs") or []
            yield RunData(
                run,
                {p["key"]: p.get("value", "") for p in data.get("params") or []},
                {t["key"]: t.get("value", "") for t in data.get("tags") or []},
                metrics_table(cols),
                inputs,
            )

    def _fetch(self, run: RunInfo, listed: bool) -> tuple[list[list[dict]], list[Artifact]]:
        """A run's artifact listing (``listed``: it may have artifacts), its inputs when
        runs/search left them out, and its histories when the bulk endpoint is not there."""
        found = self._runs.get(run.run_id) or {}
        inputs = found.get("inputs")
        if not isinstance(inputs, dict) or inputs.get("dataset_inputs") == []:
            # MLflow's runs/search carries a run's inputs ({} when it has none: proto JSON
            # leaves an empty list out); a server answering none, or an explicit empty list
            # (mlvc's search does), may have left them out: runs/get always carries them
            got = self._json("GET", "/api/2.0/mlflow/runs/get?" + urlencode({"run_id": run.run_id}))
            found["inputs"] = (got.get("run") or {}).get("inputs") or {}
        keys = [] if self._has_bulk else _keys(found)
        files = list(self._artifacts(run)) if listed else []
        return [self._history(run.run_id, k) for k in keys], files

    def _with_artifacts(self, runs: list[RunInfo]) -> set[str]:
        """The runs of the batch whose artifacts must be listed: with the artifact proxy's
        usual ``<experiment>/<run id>/artifacts`` locations, one listing of each experiment
        folder names the runs that have any (a run with none has no folder there: no request
        per run for it); a run elsewhere, or a server that does not list that folder (mlvc's
        answers 404), is listed run by run as before."""
        out: set[str] = set()
        parents: dict[str, list[str]] = {}
        for run in runs:
            parts = run.artifact_uri.removeprefix("mlflow-artifacts:").strip("/").split("/")
            proxied = run.artifact_uri.startswith("mlflow-artifacts:")
            if proxied and len(parts) >= 3 and parts[-2:] == [run.run_id, "artifacts"]:
                parents.setdefault("/".join(parts[:-2]), []).append(run.run_id)
            else:
                out.add(run.run_id)
        for parent, ids in parents.items():
            present = self._folders(parent)
            out.update(ids if present is None else (i for i in ids if i in present))
        return out

    def _folders(self, parent: str) -> set[str] | None:
        """The folder names in the artifact proxy's ``parent`` (None when it does not list
        it), listed once per import: the runs imported have ended."""
        if parent not in self._parents:
            resp = self._request("GET", "/api/2.0/mlflow-artifacts/artifacts?"
                                 + urlencode({"path": parent}))  # fmt: skip
            raw = resp.read()
            try:
                files = json.loads(raw).get("files", []) if resp.status == 200 else None
            except (ValueError, AttributeError):
                files = None
            self._parents[parent] = (
                {f.get("path") for f in files if isinstance(f, dict) and f.get("is_dir")}
                if isinstance(files, list)
                else None
            )
        return self._parents[parent]

    _has_bulk = True  # until the server answers 404 to get-history-bulk-interval

    def _bulk_histories(self, runs: list[RunInfo]) -> dict[str, list[list[dict]]]:
        """run id -> its histories, each key's read for 100 runs at once; a run with a full
        page (maybe sampled) is read again whole with ``get-history``."""
        by_key: dict[str, list[str]] = {}
        for run in runs:
            for k in _keys(self._runs.get(run.run_id) or {}):
                by_key.setdefault(k, []).append(run.run_id)
        jobs = [
            (key, self._pool.submit(self._bulk, ids[i : i + 100], key))
            for key, ids in by_key.items()
            for i in range(0, len(ids), 100)
        ]
        out: dict[str, list[list[dict]]] = {}
        for key, job in jobs:
            for rid, points in job.result().items():
                if len(points) >= BULK_PAGE:
                    points = self._history(rid, key)
                out.setdefault(rid, []).append(points)
        return out

    _has_plain_bulk = True  # until the server answers 404 to get-history-bulk

    def _bulk(self, run_ids: list[str], key: str) -> dict[str, list[dict]]:
        """One key's histories of up to 100 runs: ``get-history-bulk`` (one SQL query on
        MLflow's side for them all, every point, at most HISTORY_PAGE in all), else, when
        the page is full or the server lacks it (mlvc's), ``get-history-bulk-interval``."""
        if self._has_plain_bulk:
            q = [("run_id", r) for r in run_ids] + [("metric_key", key),
                                                    ("max_results", HISTORY_PAGE)]  # fmt: skip
            resp = self._request("GET", "/ajax-api/2.0/mlflow/metrics/get-history-bulk?"
                                 + urlencode(q))  # fmt: skip
            raw = resp.read()
            if resp.status == 404:
                self._has_plain_bulk = False
            elif resp.status == 200:
                found = _metric_list(raw)
                if found is not None and len(found) < HISTORY_PAGE:  # not cut: all of them
                    out: dict[str, list[dict]] = {rid: [] for rid in run_ids}
                    for m in found:
                        if m.get("run_id") in out:
                            out[m["run_id"]].append(m)
                    return out
        return self._bulk_interval(run_ids, key)

    def _bulk_interval(self, run_ids: list[str], key: str) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {rid: [] for rid in run_ids}
        if not self._has_bulk:
            return {rid: self._history(rid, key) for rid in run_ids}
        q = [("run_ids", r) for r in run_ids] + [("metric_key", key), ("max_results", BULK_PAGE)]
        resp = self._request("GET", "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval?"
                             + urlencode(q))  # fmt: skip
        raw = resp.read()
        if resp.status == 404:  # an older server: one history at a time
            self._has_bulk = False
            return {rid: self._history(rid, key) for rid in run_ids}
        if resp.status != 200:
            return {rid: self._history(rid, key) for rid in run_ids}
        for m in json.loads(raw).get("metrics") or []:
            if m.get("run_id") in out:
                out[m["run_id"]].append(m)
        return out

    def _history(self, run_id: str, key: str) -> list[dict]:
        out, token = [], None
        while True:
            q = {"run_id": run_id, "metric_key": key, "max_results": HISTORY_PAGE}
            if token:
                q["page_token"] = token
            answer = self._json("GET", "/api/2.0/mlflow/metrics/get-history?" + urlencode(q))
            out.extend(answer.get("metrics") or [])
            token = answer.get("next_page_token")
            if not token:
                return out

    # -- artifacts ---------------------------------------------------------------------------

    def artifacts(self, run: RunInfo) -> Iterator[Artifact]:
        return iter(self._listed.pop(run.run_id, []))

    def _artifacts(self, run: RunInfo) -> Iterator[Artifact]:
        uri = run.artifact_uri
        if not uri.startswith("mlflow-artifacts:"):
            return local_artifacts(uri)  # a server on this machine storing them in a folder
        base = uri.removeprefix("mlflow-artifacts:").lstrip("/")
        return self._walk(run.run_id, base, "")

    def _walk(self, run_id: str, base: str, path: str) -> Iterator[Artifact]:
        """The files below ``path``, listed through the artifact proxy (as MLflow's client
        lists an ``mlflow-artifacts:`` location)."""
        where = f"{base}/{path}" if path else base
        answer = self._json(
            "GET", "/api/2.0/mlflow-artifacts/artifacts?" + urlencode({"path": where})
        )
        for f in answer.get("files") or []:
            rel = f"{path}/{f['path']}" if path else f["path"]
            if f.get("is_dir"):
                yield from self._walk(run_id, base, rel)
                continue
            url = "/api/2.0/mlflow-artifacts/artifacts/" + quote(f"{base}/{rel}")
            yield Artifact(rel, int(f.get("file_size") or 0), lambda u=url: self._open(u))

    def _open(self, url: str):
        resp = self._request("GET", url)
        if resp.status != 200:
            resp.read()
            raise ImportSourceError(
                f"the MLflow server {self.description} answered {resp.status} to {url}"
            )
        return resp


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _metric_list(raw: bytes) -> list[dict] | None:
    """The ``metrics`` of a history answer (None when it is not one)."""
    try:
        found = json.loads(raw).get("metrics", [])
    except (ValueError, AttributeError):
        return None
    return [m for m in found if isinstance(m, dict)] if isinstance(found, list) else None


def _keys(run: dict) -> list[str]:
    """The metric keys of a runs/search answer (its latest metrics)."""
    return [m["key"] for m in (run.get("data") or {}).get("metrics") or [] if "key" in m]


def _kv(entity: dict) -> dict[str, str]:
    """An entity's ``tags`` list as a dict."""
    tags = entity.get("tags") or []
    return {t["key"]: t.get("value", "") for t in tags if isinstance(t, dict) and "key" in t}


def _float(value: Any) -> float:
    """A metric value as MLflow's JSON carries it (NaN and ±inf as strings or bare)."""
    return float(value) if value is not None else float("nan")
