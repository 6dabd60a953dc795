"""The REST scoring server behind ``mlvc models serve`` (Starlette on uvicorn: ``mlvc[serve]``).

    GET  /ping          200 with an empty line once the model is loaded (health check)
    GET  /version       mlvc's version and the model's URI, id and flavor
    GET  /metadata      signature, input example (as a ready-to-send payload), requirements
    POST /invocations   score a payload (see mlvc.models.payload): JSON in MLflow's formats,
                        CSV or Arrow IPC; answers ``{"predictions": ...}``, or an Arrow IPC
                        stream when the request's Accept header asks for one

Unreadable payloads and input that does not fit the signature get 400 with a message, an
unsupported content type 415, a body over the size limit 413; an exception raised by the
model gets 500 with its message, and the server keeps serving.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

from .. import __version__
from . import payload
from .errors import BadPayload, MissingExtra, SignatureError, UnsupportedMediaType
from .loading import Model, locate, manifest_of

ENV_DIR, ENV_URI, ENV_ID = "MLVC_SERVE_MODEL_DIR", "MLVC_SERVE_URI", "MLVC_SERVE_MODEL_ID"
ENV_TRUSTED = "MLVC_SERVE_TRUSTED"  # the serving parent's trust decision, for its workers
MAX_BODY = int(os.environ.get("MLVC_SERVE_MAX_BODY", 64 << 20))
EXAMPLE_ROWS = 20
log = logging.getLogger("mlvc.serve")


def require_extra() -> None:
    try:
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

    from .signature import kind_of, to_table

    if example is None:
        return None
    if kind_of(example) in ("numpy", "list"):
        return {"inputs": payload.jsonable(np.asarray(example)[:EXAMPLE_ROWS])}
    table = to_table(example).slice(0, EXAMPLE_ROWS)
    rows = [list(r.values()) for r in payload.jsonable(table)]
    return {"dataframe_split": {"columns": table.column_names, "data": rows}}


def _error(status: int, code: str, message: str):
    from starlette.responses import JSONResponse

    return JSONResponse({"error_code": code, "message": message}, status_code=status)


def create_app(model: Model):
    """The Starlette app serving one loaded model."""
    import warnings

    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

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

    async def ping(request):
        return Response("\n", media_type="text/plain")

    async def version(request):
        return JSONResponse(version_doc)

    async def metadata(request):
        return JSONResponse(meta)

    async def invocations(request):
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_BODY:
            return _error(413, "REQUEST_TOO_LARGE", f"the body is over {MAX_BODY} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return _error(413, "REQUEST_TOO_LARGE", f"the body is over {MAX_BODY} bytes")
        try:
            data = payload.parse(bytes(body), request.headers.get("content-type"), schema)
            pred = await run_in_threadpool(model.predict, data)
        except UnsupportedMediaType as e:
            return _error(415, "UNSUPPORTED_MEDIA_TYPE", str(e))
        except (BadPayload, SignatureError) as e:
            return _error(400, "BAD_REQUEST", str(e))
        except Exception as e:  # the model's own failure: report it and keep serving
            log.error("model error: %s", "".join(traceback.format_exception(e)).rstrip())
            return _error(500, "INTERNAL_ERROR", f"the model failed: {type(e).__name__}: {e}")
        try:
            if payload.ARROW in request.headers.get("accept", ""):
                return Response(payload.predictions_arrow(pred), media_type=payload.ARROW)
            return Response(payload.predictions_json(pred), media_type=payload.JSON)
        except Exception as e:
            return _error(500, "INTERNAL_ERROR", f"the predictions cannot be encoded: {e}")

    routes = [
        Route("/ping", ping, methods=["GET"]),
        Route("/health", ping, methods=["GET"]),
        Route("/version", version, methods=["GET"]),
        Route("/metadata", metadata, methods=["GET"]),
        Route("/invocations", invocations, methods=["POST"]),
    ]
    return Starlette(routes=routes)


def app_from_env():
    """App factory for uvicorn's worker processes: the model folder comes from the env."""
    path = os.environ[ENV_DIR]
    from pathlib import Path

    model = Model(Path(path), manifest_of(Path(path)), os.environ.get(ENV_URI, path),
                  os.environ.get(ENV_ID) or None, os.environ.get(ENV_TRUSTED) == "1")  # fmt: skip
    return create_app(model)


def serve(
    uri: str,
    host: str = "127.0.0.1",
    port: int = 5000,
    workers: int = 1,
    repo=None,
    access_log: bool = False,
    trust: bool | None = None,
) -> None:
    """Load the model at ``uri`` and serve it until interrupted. ``trust`` as for
    ``mlvc.models.load``."""
    require_extra()
    import uvicorn

    from . import trust as trust_model

    loc = locate(uri, repo)
    trusted = loc.trusted or (trust_model.from_env() if trust is None else bool(trust))
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
    options = {"host": host, "port": port, "access_log": access_log, "log_level": "info"}
    if workers > 1:
        uvicorn.run("mlvc.models.serving:app_from_env", factory=True, workers=workers, **options)
    else:
        uvicorn.run(create_app(model), **options)
