"""The artifact proxy, ``/api/2.0/mlflow-artifacts/artifacts/<path>``: what the MLflow client
uses when ``runs/create`` answers an ``mlflow-artifacts:/<experiment>/<run>/artifacts`` URI.

PUT stores the bytes as an object of the open run (streamed to a temp file under
``.mlvc/tmp`` first: memory stays bounded whatever the size), GET streams a file back,
GET without a file (``?path=``) lists a folder, DELETE drops an open run's file. Paths of
MLflow 3 logged models (``<experiment>/models/<model_id>/artifacts/...``) go to the
``mlflow.model_artifacts`` extra. A path with ``..``, an absolute path, a NUL or a
backslash is refused (400).
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from ...core.names import safe_relpath
from ...errors import MlvcError
from ...store.typed import lookup, walk
from .wire import bad, not_found


def check_path(path: str) -> str:
    if not path:
        return ""
    if "\0" in path or "\\" in path or path.startswith("/") or ".." in path.split("/"):
        raise bad(f"artifact path {path[:100]!r} is absolute, climbs out with '..', or holds a "
                  "NUL or a backslash")  # fmt: skip
    return path.strip("/")


def split(path: str) -> tuple[str, str, str, str]:
    """(kind 'run' or 'model', experiment id, run or model id, path inside its artifacts)."""
    path = check_path(path)
    parts = path.split("/")
    if len(parts) >= 4 and parts[1] == "models" and parts[3] == "artifacts":
        return "model", parts[0], parts[2], "/".join(parts[4:])
    if len(parts) >= 3 and parts[2] == "artifacts":
        return "run", parts[0], parts[1], "/".join(parts[3:])
    raise not_found(
        f"no artifact location {path[:100]!r}: use <experiment>/<run_id>/artifacts/<path>"
    )


def _models(state) -> Any:
    helper = state.extras.get("mlflow.model_artifacts")
    if helper is None:
        raise not_found("logged-model artifacts are not served here")
    return helper


def _rel(rel: str) -> str:
    try:
        return safe_relpath(rel)
    except MlvcError as e:
        raise bad(e.message) from None


def _files(store, rid: str) -> dict[str, tuple[str, str, int]]:
    """path -> (kind, id hex, size) of a run's artifacts (open or recorded)."""
    opened = store.open.get(rid)
    if opened is not None:
        with opened.lock:
            return opened.run.artifacts
    found = store.run_record(rid)
    if found is None:
        raise not_found(f"no run with id {rid!r}")
    run = found[1]
    return {p: (e.kind, e.id.hex, e.size) for p, e in walk(store.ctx.store, run.artifacts)}


def list_artifacts(call):
    path = call.query.get("path") or ""
    kind, _eid, oid, rel = split(path)
    if kind == "model":
        return {"files": _models(call.state).list(oid, rel)}
    files = _files(call.state.extras["mlflow.runs"], oid)
    prefix = f"{rel}/" if rel else ""
    out: dict[str, dict] = {}
    for p, (_k, _h, size) in sorted(files.items()):
        if not p.startswith(prefix):
            continue
        head, sep, _ = p[len(prefix) :].partition("/")
        if sep:
            out.setdefault(head, {"path": head, "is_dir": True})
        else:
            out[head] = {"path": head, "is_dir": False, "file_size": size}
    return {"files": list(out.values())}


def download(call):
    from starlette.responses import StreamingResponse

    kind, _eid, oid, rel = split(call.path_params["path"])
    if kind == "model":
        return _models(call.state).get(oid, rel)
    chunks = run_file(call.state.extras["mlflow.runs"], oid, rel)
    return StreamingResponse(chunks, media_type="application/octet-stream")


def run_file(store, oid: str, rel: str):
    """The bytes (an iterator of chunks) of the artifact ``rel`` of run ``oid``."""
    rel = _rel(rel)
    opened = store.open.get(oid)
    if opened is not None:
        entry = _files(store, oid).get(rel)
        file_id = entry[1] if entry else None
    else:
        found = store.run_record(oid)
        if found is None:
            raise not_found(f"no run with id {oid!r}")
        e = lookup(store.ctx.store, found[1].artifacts, rel)
        file_id = e.id.hex if e is not None and e.kind != "dir" else None
    if file_id is None:
        raise not_found(f"run {oid} has no artifact file {rel!r}")
    from ...core.ids import ObjectId

    return store.ctx.store.iter_content(ObjectId.parse(file_id))


def delete(call):
    kind, _eid, oid, rel = split(call.path_params["path"])
    if kind == "model":
        _models(call.state).delete(oid, rel, call.principal.name)
        return {}
    store = call.state.extras["mlflow.runs"]
    opened = store.touch(oid)
    if opened is None:
        if store.run_record(oid) is None:
            raise not_found(f"no run with id {oid!r}")
        raise bad(f"run {oid} has ended; a recorded run's artifacts cannot be deleted")
    with opened.lock:
        opened.run.forget_artifacts(_rel(rel))
        opened.run.save()
    return {}


def uploader(state):
    """The raw (streaming) PUT handler."""
    from starlette.concurrency import run_in_threadpool

    async def upload(request, principal):
        kind, _eid, oid, rel = split(request.path_params["path"])
        if kind == "model":
            return await _models(state).put(oid, rel, request, principal.name)
        store = state.extras["mlflow.runs"]
        opened, rel = await run_in_threadpool(open_for_upload, store, oid, rel)
        tmp_dir = state.ctx.layout.tmp
        tmp_dir.mkdir(parents=True, exist_ok=True)
        tmp = tmp_dir / f"upload-{secrets.token_hex(8)}"
        try:
            with open(tmp, "wb") as f:
                async for chunk in request.stream():
                    f.write(chunk)
            await run_in_threadpool(add_file, opened, oid, rel, tmp)
        finally:
            os.unlink(tmp) if tmp.exists() else None
        from ..app import json_response

        return json_response(200, {})

    return upload


def open_for_upload(store, oid: str, rel: str):
    """(the open run ``oid``, the checked path ``rel``) for an upload; 404 for an unknown
    run, 400 for a recorded one or an empty path."""
    rel = _rel(rel)
    if not rel:
        raise bad("an artifact upload needs a file path after artifacts/")
    opened = store.touch(oid)
    if opened is None:
        if store.run_record(oid) is None:
            raise not_found(f"no run with id {oid!r}")
        raise bad(f"run {oid} has ended; mlvc runs are immutable once recorded")
    return opened, rel


def add_file(opened, oid: str, rel: str, path) -> None:
    """Store the file at ``path`` as the artifact ``rel`` of the open run."""
    with opened.lock:
        if opened.run.has_ended:
            raise bad(f"run {oid} ended during the upload")
        for p in opened.run.artifacts:
            if p.startswith(rel + "/") or rel.startswith(p + "/"):
                raise bad(f"artifact {rel!r} clashes with {p!r}: a path is a file "
                          "or a folder, not both")  # fmt: skip
        try:
            opened.run.log_artifact(path, name=rel)
        except MlvcError as e:
            if e.http_status >= 500:
                raise
            raise bad(e.message) from None
