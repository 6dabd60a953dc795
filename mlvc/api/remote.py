"""The client of an ``mlvc server``: ``MLVC_TRACKING_URI=http://host:port`` (and
``MLVC_TRACKING_TOKEN``) make ``mlvc.start_run`` log to the server, and ``mlvc log``,
``show``, ``diff`` and ``query`` read from it, with no local repository.

It speaks /api/v1 over the standard library's ``http.client`` (this layer does not import
the server). A ``RemoteRun`` buffers params, tags and metric points in memory and a
background thread sends them in batches (every second, or every ``BATCH_POINTS`` points),
each with a uuid ``batch_id``; a batch is sent again, with the same id, until the server
acknowledges it, backing off while the server is down or restarting, so no point is lost
and none is applied twice. Memory is bounded: past ``MLVC_TRACKING_MAX_BUFFER`` points
(default 1,000,000) logging waits for the server, after one warning.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

from ..core.ids import ObjectId
from ..core.params import INT_MAX, INT_MIN, check_key, flatten
from ..errors import MlvcError, ParamConflict, ServerRefused, ServerUnreachable, UsageError

if TYPE_CHECKING:
    import http.client

    import pyarrow as pa

    from ..diff.runs import RunDiff

ENV_URI = "MLVC_TRACKING_URI"
ENV_TOKEN = "MLVC_TRACKING_TOKEN"
ENV_MAX_BUFFER = "MLVC_TRACKING_MAX_BUFFER"
ENV_START_TIMEOUT = "MLVC_TRACKING_START_TIMEOUT"
ARROW = "application/vnd.apache.arrow.stream"
BATCH_POINTS = 10_000  # points in one batch at most (about 400 KB of JSON)
FLUSH_SECONDS = 1.0
MAX_BUFFER = 1_000_000
START_TIMEOUT = 30.0  # seconds start_run keeps trying to reach the server
END_TIMEOUT = 300.0  # seconds end() keeps trying to deliver what is buffered
PAGE = 10_000


def configured() -> str | None:
    """The server URL from the environment, or None (work on the local repository)."""
    return os.environ.get(ENV_URI, "").strip() or None


class Client:
    """HTTP to one server: JSON in and out, errors as one-line ``MlvcError``s."""

    def __init__(self, uri: str, token: str | None = None, timeout: float = 60.0):
        parts = urlsplit(uri)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(
                f"{ENV_URI}={uri!r} is not an http(s) URL; use e.g. http://127.0.0.1:5000"
            )
        self.uri = uri.rstrip("/")
        self.scheme, self.host = parts.scheme, parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base = parts.path.rstrip("/")
        self.token = token
        self.timeout = timeout

    @classmethod
    def from_env(cls) -> Client:
        uri = configured()
        if uri is None:
            raise UsageError(f"{ENV_URI} is not set")
        return cls(uri, os.environ.get(ENV_TOKEN, "").strip() or None)

    def _connection(self) -> http.client.HTTPConnection:
        import http.client  # here: ssl and email load only when a server is called

        kind = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return kind(self.host, self.port, timeout=self.timeout)

    def send(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, bytes]:
        """One request; (status, body). Raises ServerUnreachable when there is no answer."""
        import http.client

        con = self._connection()
        try:
            con.request(method, self.base + path, body=body, headers=self._auth(headers or {}))
            response = con.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException) as e:
            raise self._unreachable(e) from None
        finally:
            con.close()

    def _auth(self, headers: dict) -> dict:
        head = {"User-Agent": "mlvc-client", **headers}
        if self.token:
            head["Authorization"] = f"Bearer {self.token}"
        return head

    def _unreachable(self, e: BaseException) -> ServerUnreachable:
        return ServerUnreachable(
            f"cannot reach the mlvc server at {self.uri} ({_reason(e)}): start it with "
            f"`mlvc server`, or set {ENV_URI} to its URL (unset it to use the local repository)"
        )

    def stream(self, path: str, block: int = 1 << 20) -> Iterator[bytes]:
        """``GET path`` answered in blocks (an object's content: never whole in memory)."""
        import http.client

        con = self._connection()
        try:
            con.request("GET", self.base + path, headers=self._auth({}))
            response = con.getresponse()
        except (OSError, http.client.HTTPException) as e:
            con.close()
            raise self._unreachable(e) from None
        if response.status != 200:
            data = response.read()
            con.close()
            raise self.error(response.status, data)

        def blocks() -> Iterator[bytes]:
            try:
                while data := response.read(block):
                    yield data
            finally:
                con.close()

        return blocks()

    def call(self, method: str, path: str, payload: Any = None, query: dict | None = None,
             accept: str = "application/json") -> Any:  # fmt: skip
        """A JSON request; the decoded JSON answer (or the raw bytes for another ``accept``)."""
        if query:
            path += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        body = None if payload is None else json.dumps(payload).encode()  # NaN params too
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = "application/json"
        status, data = self.send(method, path, body, headers)
        if status >= 300:
            raise self.error(status, data)
        if accept != "application/json":
            return data
        return json.loads(data) if data else None

    def error(self, status: int, data: bytes) -> MlvcError:
        try:
            message = str(json.loads(data).get("message", ""))
        except (ValueError, AttributeError):
            message = data[:200].decode("utf-8", "replace")
        if status == 401:
            return ServerRefused(
                f"the mlvc server at {self.uri} refused the credentials (401): set "
                f"{ENV_TOKEN} to a token from `mlvc token create` on the server",
                status,
            )
        if status == 403:
            return ServerRefused(
                f"the token in {ENV_TOKEN} may not do this on {self.uri} (403: {message}); "
                "ask for a token with more scope (`mlvc token create --scope write`)",
                status,
            )
        return ServerRefused(message or f"the server answered {status}", status)


def _reason(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


# -- reading: what `mlvc log/show/diff/query` need ------------------------------------------


class RemoteRepo:
    """The read side of ``Repo`` (``log``, ``head``, ``show``, ``cat``, ``diff``, ``query``)
    answered by a server; results are what the local ``Repo`` returns."""

    def __init__(self, client: Client):
        self.client = client

    @classmethod
    def from_env(cls) -> RemoteRepo:
        return cls(Client.from_env())

    def __repr__(self) -> str:
        return f"RemoteRepo({self.client.uri!r})"

    def log(self, limit: int | None = None) -> list[dict]:
        out: list[dict] = []
        while limit is None or len(out) < limit:
            page = PAGE if limit is None else min(PAGE, limit - len(out))
            got = self.client.call("GET", "/api/v1/runs", query={"limit": page,
                                                                 "offset": len(out)})  # fmt: skip
            rows = got["runs"]
            for row in rows:
                for k in ("created", "ended"):
                    if isinstance(row.get(k), str):
                        row[k] = datetime.fromisoformat(row[k])
            out += rows
            if len(rows) < page:
                break
        return out

    def head(self) -> ObjectId | None:
        try:
            return ObjectId.parse(self.client.call("GET", "/api/v1/refs/HEAD")["id"])
        except ServerRefused as e:
            if e.status == 404:
                return None
            raise

    def show(self, spec: str | ObjectId, files: bool = True) -> dict:
        ref = spec.hex if isinstance(spec, ObjectId) else str(spec)
        return self.client.call(
            "GET", f"/api/v1/runs/{quote(ref, safe='')}", query={"files": str(files).lower()}
        )

    def cat(self, spec: str) -> Iterator[bytes]:
        """The content of ``RUN:path`` (as ``Repo.cat``), fetched by its object id."""
        run_spec, _, path = spec.partition(":")
        path = path.strip("/")
        shown = self.show(run_spec)
        section, _, rest = path.partition("/")
        for sec in ("code", "data", "artifacts"):
            for e in (shown.get(sec) or {}).get("entries", []):
                if e["path"] == path or (sec == section and e["path"] == rest):
                    return self.client.stream(f"/api/v1/objects/{e['id']}")
        raise ServerRefused(
            f"run {shown['short_id']} has no file {path!r}; `mlvc show {run_spec}` lists them",
            404,
        )

    def diff(self, a: str, b: str, patch: bool = False) -> RunDiff:
        from ..diff.runs import RunDiff

        d = self.client.call(
            "GET", "/api/v1/diff", query={"a": a, "b": b, "patch": str(patch).lower()}
        )
        return RunDiff(**d)

    def query(self, sql: str) -> pa.Table:
        import pyarrow as pa

        data = self.client.call("POST", "/api/v1/query", {"sql": sql}, accept=ARROW)
        return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


# -- writing: a run logged to the server ----------------------------------------------------


class RemoteRun:
    """A run the server holds, fed by this process (the face of ``mlvc.runs.live.LiveRun``
    that training scripts use). ``id`` is the live key until it ends, then the run id."""

    def __init__(self, client: Client, name: str = "", message: str = "",
                 params: dict | None = None, tags: dict | None = None):  # fmt: skip
        self.client = client
        self.parent = None
        self.run_id: ObjectId | None = None
        self.started = time.time()
        self.on_end: list = []
        self.on_finish: list = []
        self._name = name
        self._params: dict[str, Any] = {}
        self._tags: dict[str, str] = {}
        self._steps: dict[str, int] = {}
        self._pending_params: dict[str, Any] = {}
        self._pending_tags: dict[str, str] = {}
        self._points: list[list] = []
        self._cond = threading.Condition()
        self._max = int(os.environ.get(ENV_MAX_BUFFER) or MAX_BUFFER)
        self._warned = False
        self._closing = False
        self._ended = False
        self._sent = 0
        from ..runs.live import _param_value, _tag_value

        flat = {k: _param_value(check_key(k), v) for k, v in flatten(dict(params or {})).items()}
        tag_map = {k: _tag_value(k, v) for k, v in (tags or {}).items()}
        self._params.update(flat)
        self._tags.update(tag_map)
        self.client_id = uuid.uuid4().hex
        started = self._deliver(
            "POST",
            "/api/v1/runs/live",
            {"name": name, "message": message, "params": flat, "tags": tag_map,
             "client_id": self.client_id, "argv": [str(a) for a in sys.argv]},
            deadline=time.monotonic() + float(os.environ.get(ENV_START_TIMEOUT) or START_TIMEOUT),
        )  # fmt: skip
        self.key = started["key"]
        self._sender = threading.Thread(target=self._send_loop, daemon=True,
                                        name=f"mlvc-remote-{self.key}")  # fmt: skip
        self._sender.start()

    @property
    def id(self) -> str:
        return self.run_id.hex if self.run_id else self.key

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"<RemoteRun {self.id} {self._name!r} on {self.client.uri}>"

    # -- logging ---------------------------------------------------------------------------

    def log_param(self, key: str, value: Any) -> None:
        self.log_params({key: value})

    def log_params(self, params: dict[str, Any]) -> None:
        staged = {}
        for k, v in flatten(dict(params)).items():
            from ..runs.live import _param_value

            value = _param_value(check_key(k), v)
            old = self._params.get(k, _MISSING)
            if old is not _MISSING and (old != value or type(old) is not type(value)):
                raise ParamConflict(
                    f"param {k!r} was already logged as {old!r} in this run and cannot change "
                    f"to {value!r}; start a new run for new params"
                )
            staged[k] = value
        with self._cond:
            self._params.update(staged)
            self._pending_params.update(staged)

    def set_tag(self, key: str, value: Any = "") -> None:
        self.set_tags({key: value})

    def set_tags(self, tags: dict[str, Any]) -> None:
        from ..runs.live import _tag_value

        checked = {k: _tag_value(k, v) for k, v in tags.items()}
        with self._cond:
            self._tags.update(checked)
            self._pending_tags.update(checked)

    def log_metric(
        self, key: str, value: float, step: int | None = None, timestamp: float | None = None
    ) -> None:
        """Buffer one point (sent within about a second); the same rules as ``LiveRun``."""
        try:
            value = float(value)
        except (TypeError, ValueError, OverflowError):
            raise UsageError(
                f"metric {key!r}: {type(value).__name__} value is not a number a float holds"
            ) from None
        ns = time.time_ns() if timestamp is None else int(float(timestamp) * 1e9)
        if key not in self._steps:
            check_key(key)
        if step is None:
            step = self._steps.get(key, 0)
        if isinstance(step, bool) or not isinstance(step, int) or not INT_MIN <= step < INT_MAX:
            raise UsageError(f"metric {key!r}: step {step!r} is not a 64-bit integer")
        self._steps[key] = step + 1
        point = [key, value if math.isfinite(value) else str(value).lower(), step, ns]
        with self._cond:
            if len(self._points) >= self._max:
                self._wait_for_room()
            self._points.append(point)
            if len(self._points) >= BATCH_POINTS:
                self._cond.notify_all()

    def log_metrics(
        self, metrics: dict[str, float], step: int | None = None, timestamp: float | None = None
    ) -> None:
        for k, v in metrics.items():
            self.log_metric(k, v, step, timestamp)

    def _wait_for_room(self) -> None:
        if not self._warned:
            self._warned = True
            print(
                f"mlvc: warning: {len(self._points)} metric points wait for the server at "
                f"{self.client.uri} ({ENV_MAX_BUFFER} caps the buffer); logging waits until "
                "it takes them",
                file=sys.stderr,
                flush=True,
            )
        while len(self._points) >= self._max:
            self._cond.wait(1.0)

    def _unsupported(self, *_a, **_k):
        raise UsageError(
            f"files cannot be logged to a server yet ({ENV_URI} is set): log params, tags and "
            "metrics, or unset it to record the run locally"
        )

    log_artifact = log_text = log_dict = record_model = _unsupported

    # -- sending ---------------------------------------------------------------------------

    def _take(self) -> dict | None:
        """The next batch (under the condition's lock), or None when nothing is pending."""
        if not (self._points or self._pending_params or self._pending_tags):
            return None
        points = self._points[:BATCH_POINTS]
        del self._points[:BATCH_POINTS]
        batch = {"batch_id": uuid.uuid4().hex, "params": self._pending_params,
                 "tags": self._pending_tags, "metrics": points}  # fmt: skip
        self._pending_params, self._pending_tags = {}, {}
        self._cond.notify_all()  # room in the buffer
        return batch

    def _send_loop(self) -> None:
        batch = None
        while True:
            with self._cond:
                if batch is None:
                    if not self._closing and len(self._points) < BATCH_POINTS:
                        self._cond.wait(FLUSH_SECONDS)
                    batch = self._take()
                    if batch is None:
                        if self._closing:
                            return
                        continue
            try:
                self._deliver("POST", f"/api/v1/runs/live/{self.key}/batches", batch,
                              deadline=None)  # fmt: skip
                self._sent += len(batch["metrics"])
            except ServerUnreachable:  # end() gave up: keep the points for its count
                with self._cond:
                    self._points[:0] = batch["metrics"]
                return
            except Exception as e:  # refused for good: say so, keep the run going
                print(f"mlvc: warning: a batch of {len(batch['metrics'])} points was refused "
                      f"by the server at {self.client.uri}: {e}", file=sys.stderr)  # fmt: skip
            batch = None

    def _deliver(self, method: str, path: str, payload: dict, deadline: float | None):
        """Send until the server answers; retry (same payload, so the same batch id) with
        backoff on no answer, 429 and 5xx. ``deadline`` None: until ``end`` gives up."""
        delay = 0.05
        while True:
            try:
                return self.client.call(method, path, payload)
            except ServerUnreachable:
                if deadline is not None and time.monotonic() > deadline:
                    raise
            except ServerRefused as e:
                if e.status not in (408, 429, 500, 502, 503, 504):
                    raise
                if deadline is not None and time.monotonic() > deadline:
                    raise
            give_up = self._give_up_at if deadline is None else None
            if give_up is not None and time.monotonic() > give_up:
                raise ServerUnreachable(f"gave up delivering to {self.client.uri}")
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    _give_up_at: float | None = None

    # -- ending ----------------------------------------------------------------------------

    def end(self, status: str = "finished", error: BaseException | None = None) -> ObjectId | None:
        """Send what is buffered, then record the run on the server; returns its id."""
        if self._ended:
            return self.run_id
        if error is not None:
            self.set_tag("mlvc.error", f"{type(error).__name__}: {error}"[:4000])
        with self._cond:
            self._closing = True
            self._give_up_at = time.monotonic() + END_TIMEOUT
            self._cond.notify_all()
        self._sender.join()
        with self._cond:
            left = len(self._points)
        if left:
            print(f"mlvc: warning: {left} points could not be sent to {self.client.uri}",
                  file=sys.stderr)  # fmt: skip
        got = self._deliver("POST", f"/api/v1/runs/live/{self.key}/end", {"status": status},
                            deadline=time.monotonic() + END_TIMEOUT)  # fmt: skip
        self.run_id = ObjectId.parse(got["run_id"])
        self._ended = True
        print(f"mlvc: run {self.run_id.hex} recorded on {self.client.uri}", file=sys.stderr)
        for hook in self.on_finish:
            hook(self)
        for hook in self.on_end:
            hook(self.run_id)
        return self.run_id

    def flush(self) -> None:
        """Wake the sender now (points go out within one request)."""
        with self._cond:
            self._cond.notify_all()

    def __enter__(self) -> RemoteRun:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is KeyboardInterrupt:
            self.end("killed", exc)
        else:
            self.end("failed" if exc is not None else "finished", exc)
        return False


_MISSING = object()


def start_run(name: str | None = None, params: dict | None = None, tags: dict | None = None,
              message: str | None = None) -> RemoteRun:  # fmt: skip
    """A run on the server ``MLVC_TRACKING_URI`` names."""
    return RemoteRun(Client.from_env(), name or "", message or "", params, tags)
