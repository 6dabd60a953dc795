"""The REST scoring server behind ``mlvc models serve`` (Starlette on uvicorn: ``mlvc[serve]``).

    GET  /ping          200 with an empty line once the model is loaded (health check)
    GET  /version       mlvc's version and the model's URI, id and flavor
    GET  /metadata      signature, input example (as a ready-to-send payload), requirements
    POST /invocations   score a payload (see mlvc.models.payload): JSON in MLflow's formats,
                        CSV or Arrow IPC; answers ``{"predictions": ...}``, or an Arrow IPC
                        stream when the request's Accept header asks for one

Errors are JSON ``{"error_code", "message"}``, the message one line, never a traceback:
    400 BAD_REQUEST             an unreadable body, input that does not fit the signature, or
                                missing/infinite values the model raised on
    408 REQUEST_TIMEOUT         a body slower than ``body_timeout`` (and a request head slower
                                than ``header_timeout``: mlvc.server.http_guard)
    413 REQUEST_TOO_LARGE       a body over the limit, refused as soon as that is known
    415 UNSUPPORTED_MEDIA_TYPE  a content type the server does not read
    500 INTERNAL_ERROR          the model raised (``the model failed: ValueError: ...``)
    503 SERVER_BUSY             ``max_concurrency`` requests are being scored; Retry-After: 1

The event loop only moves bytes: parsing, the signature check, the model and encoding run
in worker threads (bodies over BIG_BODY one at a time, which bounds memory), so /ping
answers while a big batch is scored. Limits: mlvc.server.limits.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback

from .._version import __version__
from ..models import payload
from ..models.errors import (
    BadPayload,
    MissingExtra,
    ModelFailed,
    SignatureError,
    UnsupportedMediaType,
    one_line,
)
from ..models.loading import Model, locate, manifest_of
from .limits import Limits

ENV_DIR, ENV_URI, ENV_ID = "MLVC_SERVE_MODEL_DIR", "MLVC_SERVE_URI", "MLVC_SERVE_MODEL_ID"
ENV_TRUSTED = "MLVC_SERVE_TRUSTED"  # the serving parent's trust decision, for its workers
EXAMPLE_ROWS = 20
BIG_BODY = 1 << 20  # bodies above this are parsed and scored one at a time
log = logging.getLogger("mlvc.serve")


def require_extra() -> None:
    try:
        import httptools  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise MissingExtra(
            "`mlvc models serve` needs the serve extra: pip install 'mlvc[serve]'"
        ) from None


def metadata_doc(model: Model) -> dict:
    """What ``GET /metadata`` answers."""
    m = model.metadata
    sig = m.get("signature") or {}
    example = None
    try:
        example = _example_payload(model.input_example)
    except Exception:  # an unreadable example must not stop the server
        example = None
    return {
        "uri": model.uri,
        "model_id": model.model_id,
        "flavor": model.flavor,
        "flavors": sorted(m.get("flavors", {})),
        "signature": sig or None,
        "input_kind": m.get("input_kind"),
        "input_example": example,
        "requirements": model.requirements,
        "created": m.get("created"),
        "mlvc_version": __version__,
    }


def _example_payload(example):
    import numpy as np

    from ..models.signature import kind_of, to_table

    if example is None:
        return None
    if kind_of(example) in ("numpy", "list"):
        return {"inputs": payload.jsonable(np.asarray(example)[:EXAMPLE_ROWS])}
    table = to_table(example).slice(0, EXAMPLE_ROWS)
    rows = [list(r.values()) for r in payload.jsonable(table)]
    return {"dataframe_split": {"columns": table.column_names, "data": rows}}


_CODES = {400: "BAD_REQUEST", 415: "UNSUPPORTED_MEDIA_TYPE"}


def _error(status: int, code: str, message: str, headers: dict | None = None):
    from starlette.responses import JSONResponse

    body = {"error_code": code, "message": message}
    return JSONResponse(body, status_code=status, headers=headers)


class _Refused(Exception):
    """A request answered with an error; ``close``: before its body was read in full, so
    the connection closes (the rest of the body is never read)."""

    def __init__(self, status: int, code: str, message: str, close: bool = True):
        super().__init__(message)
        self.status, self.code, self.close = status, code, close

    def response(self):
        return _error(
            self.status, self.code, str(self), {"connection": "close"} if self.close else None
        )


async def _read_body(request, limit: int, drain: int, timeout: float, what: str) -> bytearray:
    """The request body, refused with 413 past ``limit`` bytes and with 408 when it takes
    more than ``timeout`` seconds. A body up to ``drain`` bytes is read to its end (and
    dropped), so that a client still sending it can read the answer; a bigger one is
    refused as soon as that is known, and the connection closed."""
    import anyio
    from starlette.requests import ClientDisconnect

    message = f"the body is over {limit} bytes{what}"
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > drain):
        raise _Refused(413, "REQUEST_TOO_LARGE", message)
    body, size = bytearray(), 0
    try:
        with anyio.fail_after(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > drain:
                    raise _Refused(413, "REQUEST_TOO_LARGE", message)
                if size <= limit:
                    body += chunk
                elif body:
                    body = bytearray()  # over the limit: drop it, read on to the end
    except TimeoutError:
        raise _Refused(
            408, "REQUEST_TIMEOUT", f"the body did not arrive within {timeout:g} seconds"
        ) from None
    except ClientDisconnect:
        raise _Refused(
            400, "BAD_REQUEST", "the client disconnected before the body ended"
        ) from None
    if size > limit:
        raise _Refused(413, "REQUEST_TOO_LARGE", message, close=False)
    return body


def score(model: Model, schema, body: bytes, ctype: str | None, accept: str) -> tuple:
    """``(status, error code, message)``, or ``(200, None, media type, bytes)``, for one
    request; runs in a worker thread. Client mistakes are 400s; only the model's own
    failure is a 500."""
    try:
        data = payload.parse(body, ctype, schema)
    except (UnsupportedMediaType, BadPayload) as e:  # their http_status says which
        return e.http_status, _CODES.get(e.http_status, "BAD_REQUEST"), str(e)
    except RecursionError:
        return 400, "BAD_REQUEST", "the body is nested too deeply"
    except Exception as e:  # a body our parsers choke on is still the client's
        log.warning("unreadable body: %s", one_line(e))
        return 400, "BAD_REQUEST", f"the body cannot be read: {one_line(e)}"
    try:
        data = model.prepare(data)
    except SignatureError as e:
        return 400, "BAD_REQUEST", str(e)
    except Exception as e:
        return 400, "BAD_REQUEST", f"the input does not fit the model: {one_line(e)}"
    try:
        pred = model.predict_prepared(data)
    except ModelFailed as e:
        cause = e.__cause__ or e
        where = payload.missing_values(data)
        if where:  # a value the signature lets through and the model cannot take
            return (
                400,
                "BAD_REQUEST",
                (
                    f"the model cannot take the input's missing or infinite values ({where}): "
                    f"{one_line(cause)}"
                ),
            )
        log.error("%s", e)
        log.debug("%s", "".join(traceback.format_exception(cause)).rstrip())
        return 500, "INTERNAL_ERROR", str(e)
    except Exception as e:  # an mlvc error raised while scoring
        log.error("the model failed: %s", one_line(e))
        return 500, "INTERNAL_ERROR", f"the model failed: {one_line(e)}"
    try:
        if payload.ARROW in accept:
            return 200, None, payload.ARROW, payload.predictions_arrow(pred)
        return 200, None, payload.JSON, payload.predictions_json(pred)
    except Exception as e:
        return 500, "INTERNAL_ERROR", f"the predictions cannot be encoded: {one_line(e)}"


def create_app(model: Model, limits: Limits | None = None):
    """The Starlette app serving one loaded model."""
    import warnings

    import anyio
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    limits = limits or Limits()
    model.for_serving()
    # Columns are checked against the signature before sklearn sees an array (for_serving).
    warnings.filterwarnings("ignore", message="X does not have valid feature names")
    meta = metadata_doc(model)
    schema = model.signature.inputs if model.signature else None
    version_doc = {
        "mlvc_version": __version__,
        "uri": model.uri,
        "model_id": model.model_id,
        "flavor": model.flavor,
    }
    threads = anyio.CapacityLimiter(limits.max_concurrency)
    big = anyio.CapacityLimiter(1)
    busy = {"n": 0}  # requests in /invocations; the event loop is one thread: no lock needed

    async def ping(request):
        return Response("\n", media_type="text/plain")

    async def version(request):
        return JSONResponse(version_doc)

    async def metadata(request):
        return JSONResponse(meta)

    async def invocations(request):
        if busy["n"] >= limits.max_concurrency:
            message = f"the server is scoring {busy['n']} requests, its limit; retry shortly"
            return _error(503, "SERVER_BUSY", message, {"Retry-After": "1"})
        busy["n"] += 1
        try:
            return await _invocations(request)
        finally:
            busy["n"] -= 1

    async def _invocations(request):
        ctype = request.headers.get("content-type")
        is_json = payload.media_type(ctype) == payload.JSON
        limit = min(limits.max_json_body, limits.max_body) if is_json else limits.max_body
        what = "; send big batches as CSV or Arrow" if is_json and limit < limits.max_body else ""
        try:
            body = await _read_body(request, limit, limits.max_body, limits.body_timeout, what)
        except _Refused as e:
            return e.response()
        job = functools.partial(
            score, model, schema, body, ctype, request.headers.get("accept", "")
        )
        if len(body) > BIG_BODY:
            async with big:  # one big body at a time: its parse holds memory and the GIL
                result = await anyio.to_thread.run_sync(job, limiter=threads)
        else:
            result = await anyio.to_thread.run_sync(job, limiter=threads)
        if result[1] is not None:
            return _error(result[0], result[1], result[2])
        return Response(result[3], media_type=result[2])

    routes = [
        Route("/ping", ping, methods=["GET"]),
        Route("/health", ping, methods=["GET"]),
        Route("/version", version, methods=["GET"]),
        Route("/metadata", metadata, methods=["GET"]),
        Route("/invocations", invocations, methods=["POST"]),
    ]
    return Starlette(routes=routes)


def app_from_env():
    """App factory for uvicorn's worker processes: the model folder and limits come from
    the environment the serving parent set."""
    from pathlib import Path

    path = os.environ[ENV_DIR]
    model = Model(Path(path), manifest_of(Path(path)), os.environ.get(ENV_URI, path),
                  os.environ.get(ENV_ID) or None, os.environ.get(ENV_TRUSTED) == "1")  # fmt: skip
    return create_app(model, Limits.from_env())


def serve(
    uri: str,
    host: str = "127.0.0.1",
    port: int = 5000,
    workers: int = 1,
    repo=None,
    access_log: bool = False,
    trust: bool | None = None,
    max_concurrency: int | None = None,
) -> None:
    """Load the model at ``uri`` and serve it until interrupted. ``trust`` as for
    ``mlvc.models.load``; limits from the environment (mlvc.server.limits), and
    ``max_concurrency`` when given."""
    require_extra()
    import uvicorn

    from ..models import trust as trust_model
    from .http_guard import GuardedHttpToolsProtocol

    limits = Limits.from_env(max_concurrency=max_concurrency)
    loc = locate(uri, repo)
    trusted = loc.trusted or (trust_model.from_env() if trust is None else bool(trust))
    # uvicorn's worker processes (and the header guard) read these from the environment.
    os.environ.update(limits.to_env())
    os.environ[ENV_TRUSTED] = "1" if trusted else ""
    os.environ[ENV_DIR] = str(loc.path)
    os.environ[ENV_URI] = str(uri)
    os.environ[ENV_ID] = loc.model_id.hex if loc.model_id else ""
    # Load once here, so a model that cannot load fails before the port opens.
    model = Model(loc.path, manifest_of(loc.path), str(uri), os.environ[ENV_ID] or None, trusted)
    print(
        f"mlvc: serving {uri} ({model.flavor}) on http://{host}:{port} with {workers} worker(s)",
        file=sys.stderr,
        flush=True,
    )
    options = {
        "host": host,
        "port": port,
        "access_log": access_log,
        "log_level": "info",
        "http": GuardedHttpToolsProtocol,
        "timeout_keep_alive": limits.keep_alive,
    }
    if workers > 1:
        uvicorn.run("mlvc.server.scoring:app_from_env", factory=True, workers=workers, **options)
    else:
        uvicorn.run(create_app(model, limits), **options)
