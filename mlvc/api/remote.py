"""The client of an ``mlvc server``: ``MLVC_TRACKING_URI=http://host:port`` (and
``MLVC_TRACKING_TOKEN``) make ``mlvc.start_run`` log to the server, and ``mlvc log``,
``show``, ``diff`` and ``query`` read from it, with no local repository.

It speaks /api/v1 over the standard library's ``http.client`` (this layer does not import
the server). A ``RemoteRun`` buffers params, tags and metric points in memory and a
background thread sends them in batches (every second, or every ``BATCH_POINTS`` points),
each with a uuid ``batch_id``; a batch is sent again, with the same id, until the server
acknowledges it, backing off while the server is down or restarting, so no point is lost
and none is applied twice. Points are logged into the C metric buffer a local run uses (no
Python frame per call) and travel as an Arrow stream, columns of keys, values, steps and
times (the server also takes JSON, for other languages). Memory is bounded: past
``MLVC_TRACKING_MAX_BUFFER`` points (default 1,000,000; looked at every 50 ms, so a fast
loop may pass it by what it logs meanwhile) logging waits for the server, after one warning.
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
from ..core.params import check_key, flatten
from ..errors import MlvcError, ParamConflict, ServerRefused, ServerUnreachable, UsageError
from ..runs.metricbuf import new_buffer, table_of

if TYPE_CHECKING:
    import http.client

    import pyarrow as pa

    from ..diff.runs import RunDiff

ENV_URI = "MLVC_TRACKING_URI"
ENV_TOKEN = "MLVC_TRACKING_TOKEN"
ENV_MAX_BUFFER = "MLVC_TRACKING_MAX_BUFFER"
ENV_START_TIMEOUT = "MLVC_TRACKING_START_TIMEOUT"
ARROW = "application/vnd.apache.arrow.stream"
BATCH_POINTS = 100_000  # points in one batch at most (~2.5 MB as Arrow)
FLUSH_SECONDS = 1.0
POLL_SECONDS = 0.05  # how often the sender looks at the buffer
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
        return self.call_bytes(method, path, body, "application/json", accept)

    def call_bytes(self, method: str, path: str, body: bytes | None, content_type: str,
                   accept: str = "application/json") -> Any:  # fmt: skip
        """A request with ``body`` of ``content_type``; the answer as ``call`` gives it."""
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
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
        from ..core.ipc import IpcRefused, read_ipc

        data = self.client.call("POST", "/api/v1/query", {"sql": sql}, accept=ARROW)
        try:  # checked whole: a damaged answer would crash this process when read
            return read_ipc(data)
        except IpcRefused as e:
            raise ServerRefused(
                f"{self.client.uri}: its answer to the query is not a readable Arrow stream: {e}",
                502,
            ) from None


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
        self._pending_params: dict[str, Any] = {}
        self._pending_tags: dict[str, str] = {}
        # Points go into the metric buffer a local run uses (mlvc.runs.metricbuf: in C when
        # it was built), its bound methods serving log_metric(s) with no Python frame; the
        # sender takes them as columns into ``_queue`` (Arrow tables not yet acknowledged).
        self._buf = new_buffer()
        self._fast()
        self._queue: list[pa.Table] = []
        self._queued = 0  # points in _queue
        self._waiting = False  # log_metric(s) wait for room (the buffer is full)
        self._cond = threading.Condition()
        self._max = int(_env_number(ENV_MAX_BUFFER, MAX_BUFFER, whole=True))
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
            deadline=time.monotonic() + _env_number(ENV_START_TIMEOUT, START_TIMEOUT),
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
        """Buffer one point (sent within about a second); the same rules as ``LiveRun``.
        (A run's instances call their buffer's method directly: ``_fast`` binds it over
        this one while the buffer has room.)"""
        if self._waiting:
            self._wait_for_room()
        self._buf.log_metric(key, value, step, timestamp)

    def log_metrics(
        self, metrics: dict[str, float], step: int | None = None, timestamp: float | None = None
    ) -> None:
        """``log_metric`` for each item; the points before a refused one are kept."""
        if self._waiting:
            self._wait_for_room()
        self._buf.log_metrics(metrics, step, timestamp)

    def _fast(self) -> None:
        """log_metric(s) straight into the buffer (undone by ``_check_room`` at the cap)."""
        if type(self).log_metric is RemoteRun.log_metric:
            self.log_metric = self._buf.log_metric
        if type(self).log_metrics is RemoteRun.log_metrics:
            self.log_metrics = self._buf.log_metrics

    def _held(self) -> int:
        return len(self._buf) + self._queued

    def _check_room(self) -> None:
        """(The sender, under the lock, every POLL_SECONDS.) Past the cap, log_metric(s) go
        through the class's methods, which wait for room; once there is room, straight to
        the buffer again. The cap is checked this often, so a loop may overshoot it by what
        it logs in that time."""
        full = self._held() >= self._max and not self._closing
        if full and not self._waiting:
            self._waiting = True
            self.__dict__.pop("log_metric", None)
            self.__dict__.pop("log_metrics", None)
        elif not full and self._waiting:
            self._waiting = False
            self._fast()
            self._cond.notify_all()

    def _wait_for_room(self) -> None:
        with self._cond:
            if self._waiting and not self._warned:
                self._warned = True
                print(
                    f"mlvc: warning: {self._held()} metric points wait for the server at "
                    f"{self.client.uri} ({ENV_MAX_BUFFER} caps the buffer); logging waits "
                    "until it takes them",
                    file=sys.stderr,
                    flush=True,
                )
            while self._waiting and self._sender.is_alive():
                self._cond.wait(1.0)

    def _unsupported(self, *_a, **_k):
        raise UsageError(
            f"files cannot be logged to a server yet ({ENV_URI} is set): log params, tags and "
            "metrics, or unset it to record the run locally"
        )

    log_artifact = log_text = log_dict = log_bytes = record_model = _unsupported
    log_figure = log_image = log_table = _unsupported

    # -- sending ---------------------------------------------------------------------------

    def _due(self, since: float) -> bool:
        """Whether to send now: closing, a batch's worth held, or anything held for
        FLUSH_SECONDS."""
        held = self._held()
        if self._closing or held >= BATCH_POINTS:
            return True
        pending = held or self._pending_params or self._pending_tags
        return bool(pending) and time.monotonic() - since >= FLUSH_SECONDS

    def _take(self) -> tuple[dict, pa.Table] | None:
        """The next batch (under the condition's lock): its JSON head and its points, at
        most BATCH_POINTS of the oldest; None when nothing is pending."""
        taken = self._buf.take()
        if taken is not None:
            self._queue.append(table_of(taken))
            self._queued += self._queue[-1].num_rows
        if not (self._queue or self._pending_params or self._pending_tags):
            return None
        points = self._queue.pop(0) if self._queue else None
        if points is not None and points.num_rows > BATCH_POINTS:
            self._queue.insert(0, points.slice(BATCH_POINTS))
            points = points.slice(0, BATCH_POINTS)
        head = {"batch_id": uuid.uuid4().hex, "params": self._pending_params,
                "tags": self._pending_tags}  # fmt: skip
        self._pending_params, self._pending_tags = {}, {}
        return head, points

    def _send_loop(self) -> None:
        batch, since = None, time.monotonic()
        while True:
            with self._cond:
                if batch is None:
                    self._check_room()
                    if not self._due(since):
                        self._cond.wait(POLL_SECONDS)
                        continue
                    batch, since = self._take(), time.monotonic()
                    if batch is None:
                        if self._closing:
                            return
                        continue
            head, points = batch
            n = points.num_rows if points is not None else 0
            try:
                self._send_batch(head, points)
                self._sent += n
            except ServerUnreachable:  # end() gave up: keep the points for its count
                if points is not None:
                    with self._cond:
                        self._queue.insert(0, points)
                return
            except Exception as e:  # refused for good: say so, keep the run going
                print(f"mlvc: warning: a batch of {n} points was refused by the server at "
                      f"{self.client.uri}: {e}", file=sys.stderr)  # fmt: skip
            with self._cond:
                self._queued -= n
            batch = None

    _json_only = False  # the server takes batches as JSON only (an mlvc before Arrow ones)

    def _send_batch(self, head: dict, points: pa.Table | None) -> None:
        """Deliver one batch as an Arrow stream; to a server that answers that it is not
        JSON (one from before Arrow batches), as JSON rows, this one and the rest."""
        path = f"/api/v1/runs/live/{self.key}/batches"
        if not self._json_only:
            try:
                self._deliver("POST", path, head, None, body=_arrow_batch(head, points))
                return
            except ServerRefused as e:
                if not (e.status == 415 or (e.status == 400 and "not valid JSON" in str(e))):
                    raise
                self._json_only = True
        self._deliver("POST", path, {**head, "metrics": _json_rows(points)}, None)

    def _deliver(self, method: str, path: str, payload: dict, deadline: float | None,
                 body: bytes | None = None):  # fmt: skip
        """Send until the server answers; retry (same payload, so the same batch id) with
        backoff on no answer, 429 and 5xx. ``deadline`` None: until ``end`` gives up.
        ``body``: an Arrow stream sent instead of ``payload`` as JSON."""
        delay = 0.05
        while True:
            try:
                if body is not None:
                    return self.client.call_bytes(method, path, body, ARROW)
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
            self._pause(delay)
            delay = min(delay * 2, 2.0)

    _give_up_at: float | None = None

    def _pause(self, seconds: float) -> None:
        """Sleep between retries, still looking at the buffer every POLL_SECONDS: logging
        goes on meanwhile, and past the cap it must wait."""
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            with self._cond:
                self._check_room()
            time.sleep(min(left, POLL_SECONDS))

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
            left = self._held()
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


def _env_number(name: str, default: float, whole: bool = False) -> float:
    """A positive number from the environment variable ``name`` (``default`` if unset); a
    one-line UsageError naming it otherwise."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        value = None
    if value is None or not 0 < value < float("inf"):
        kind = "a whole number" if whole else "a number of seconds"
        raise UsageError(f"{name}={text!r} is not {kind} above 0")
    return value


def _json_rows(points: pa.Table | None) -> list[list]:
    """A batch's points as the JSON form's ``[key, value, step, timestamp_ns]`` rows (NaN
    and infinities as ``"nan"``, ``"inf"``, ``"-inf"``)."""
    if points is None:
        return []
    keys = points.column("key").cast("string").to_pylist()
    values = points.column("value").to_pylist()
    steps, times = points.column("step").to_pylist(), points.column("timestamp_ns").to_pylist()
    return [
        [k, v if math.isfinite(v) else str(v).lower(), s, t]
        for k, v, s, t in zip(keys, values, steps, times, strict=True)
    ]


def _arrow_batch(head: dict, points: pa.Table | None) -> bytes:
    """A batch as the server's Arrow form takes it: the points' columns, ``head`` (batch
    id, params, tags) as JSON in the schema's ``mlvc.batch`` metadata."""
    import pyarrow as pa

    if points is None:
        points = table_of(([], [], [], [], []))
    meta = {b"mlvc.batch": json.dumps(head).encode()}  # NaN params too, as in call()
    points = points.replace_schema_metadata(meta)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, points.schema) as writer:
        writer.write_table(points)
    return sink.getvalue().to_pybytes()


def start_run(name: str | None = None, params: dict | None = None, tags: dict | None = None,
              message: str | None = None) -> RemoteRun:  # fmt: skip
    """A run on the server ``MLVC_TRACKING_URI`` names."""
    return RemoteRun(Client.from_env(), name or "", message or "", params, tags)
