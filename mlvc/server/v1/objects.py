"""Objects by id: the seam remotes use. ``PUT`` takes an object's content (for a file, its
bytes), hashes it, and stores it only when the hash is the id it was sent to; ``GET``
streams it back verified, block by block (a chunked file chunk by chunk)."""

from __future__ import annotations

import secrets

from blake3 import blake3

from ...store.locks import writing
from ...store.odb import CHUNK_THRESHOLD
from ..app import ApiError, endpoint, error_response, json_response
from ._common import bad, body, field, not_found, object_id

MAX_IDS = 100_000  # ids in one ``objects/missing`` request


def get_object(call):
    """``GET``/``HEAD /api/v1/objects/{id}``: the content, streamed; HEAD: its size."""
    from starlette.responses import Response, StreamingResponse

    oid = object_id(call.path_params["id"], "id")
    store = call.state.ctx.store
    if not store.has(oid):
        raise not_found(f"no object {oid.hex}")
    size = store.size(oid)
    headers = {"content-length": str(size), "etag": f'"{oid.hex}"'}
    if call.method == "HEAD":
        return Response(b"", headers=headers, media_type="application/octet-stream")
    return StreamingResponse(
        store.iter_content(oid), headers=headers, media_type="application/octet-stream"
    )


def missing(call):
    """``POST /api/v1/objects/missing {"ids": [...]}``: the ids this server lacks."""
    ids = field(body(call), "ids", list)
    if len(ids) > MAX_IDS:
        raise bad(f"ids: at most {MAX_IDS} in one request (got {len(ids)})")
    parsed = [object_id(i, f"ids[{n}]") for n, i in enumerate(ids)]
    store = call.state.ctx.store
    return {"missing": [oid.hex for oid in parsed if not store.has(oid)]}


def put_handler(state):
    limit = state.options.limits.max_body

    async def put_object(request, principal):
        """``PUT /api/v1/objects/{id}``: store the body if BLAKE3(body) is ``id``."""
        from starlette.concurrency import run_in_threadpool

        try:
            oid = object_id(request.path_params["id"], "id")
        except ApiError as e:
            return error_response(e.status, e.code, e.message)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return _too_big(limit)
        h = blake3()
        size = 0
        head = bytearray()
        spill = None  # a temporary file once the body is over one record
        try:
            async for block in request.stream():
                size += len(block)
                if size > limit:
                    return _too_big(limit)
                h.update(block)
                if spill is None and len(head) + len(block) <= CHUNK_THRESHOLD:
                    head += block
                    continue
                if spill is None:
                    spill = state.ctx.layout.tmp / f"v1-put-{secrets.token_hex(8)}"
                    spill.parent.mkdir(parents=True, exist_ok=True)
                    f = open(spill, "wb")  # noqa: SIM115 - closed below
                    f.write(head)
                    head = bytearray()
                f.write(block)
            if spill is not None:
                f.close()
            got = h.hexdigest()
            if got != oid.hex:
                return error_response(
                    400,
                    "INVALID_PARAMETER_VALUE",
                    f"the body hashes to {got}, not {oid.hex}: nothing was stored",
                )
            stored = await run_in_threadpool(_store, state, oid, bytes(head), spill)
        finally:
            if spill is not None:
                if not f.closed:
                    f.close()
                spill.unlink(missing_ok=True)
        return json_response(201 if stored else 200, {"id": oid.hex, "size": size,
                                                      "stored": stored})  # fmt: skip

    return put_object


def _store(state, oid, data: bytes, spill) -> bool:
    store = state.ctx.store
    if store.has(oid):
        return False
    with writing(state.ctx.dir, store):
        got = store.add_file(spill) if spill is not None else store.add_bytes(data)
        store.flush()
    if got != oid:  # the same bytes hashed twice: cannot differ unless the disk lies
        raise ApiError(500, "INTERNAL_ERROR", f"stored {got.hex} for {oid.hex}")
    return True


def _too_big(limit: int):
    return error_response(
        413, "REQUEST_LIMIT_EXCEEDED", f"the body is over {limit} bytes (MLVC_SERVE_MAX_BODY)"
    )


def routes(state) -> list:
    from starlette.routing import Route

    return [
        Route("/api/v1/objects/missing", endpoint(state, missing, "read"), methods=["POST"]),
        Route("/api/v1/objects/{id}", endpoint(state, get_object, "read"),
              methods=["GET", "HEAD"]),
        Route("/api/v1/objects/{id}", endpoint(state, put_handler(state), "write", raw=True),
              methods=["PUT"]),
    ]  # fmt: skip
