"""The JSON the web UI reads beyond the rest of /api/v1: the runs table page by page, the
runs in progress, a run's relatives, and a run's files (their bytes under a sandboxing CSP,
and previews). Each handler is one library call (``Repo.table_page``, ``Repo.preview``...)."""

from __future__ import annotations

import os
import urllib.parse

from ...api.preview import IMAGES, kind_of
from ..app import endpoint
from ..v1._common import answer, bad, bool_arg, int_arg, text_arg

FILE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "private, max-age=300",
    "Referrer-Policy": "no-referrer",
}


def file_type(path: str) -> tuple[str, bool]:
    """(content type, inline?) of a run's file, decided by its name from an allow-list,
    never by sniffing: images and text inline, the rest as an ``application/octet-stream``
    attachment (HTML and SVG included: never rendered)."""
    ext = os.path.splitext(path)[1].lower()
    if ext in IMAGES:
        return IMAGES[ext], True
    if kind_of(path) in ("text", "json", "table") and ext not in (".html", ".svg", ".xml"):
        return "text/plain; charset=utf-8", True
    return "application/octet-stream", False


def _ref(call) -> str:
    ref = call.path_params["ref"]
    if len(ref) > 1000 or "\x00" in ref:
        raise bad("ref: too long or holds a NUL character")
    return ref


def _list(query, name: str, limit: int = 500) -> list[str]:
    values = query.getlist(name)
    if len(values) > limit or any(len(v) > 1000 or "\x00" in v for v in values):
        raise bad(f"{name}: at most {limit} values of at most 1000 characters")
    return values


def table(call):
    """``GET /api/v1/ui/table?where=&sort=&col=&offset=&limit=&group=&count=``: a page of
    runs (``count=0``: without counting them, ``total`` null)."""
    q = call.query
    where = text_arg(q, "where", required=False, limit=10_000, empty=True) or ""
    group = text_arg(q, "group", required=False, empty=True) or ""
    return answer(
        call.state.repo.table_page(
            where=where,
            order=_list(q, "sort", 20),
            columns=_list(q, "col") or None,
            offset=int_arg(q, "offset", 0, 0, 1 << 40),
            limit=int_arg(q, "limit", 100, 0, 1000),
            group=group,
            count=bool_arg(q, "count", True),
        )
    )


def columns(call):
    """``GET /api/v1/ui/columns``: what the column chooser offers, and experiment names."""
    repo = call.state.repo
    return answer({"columns": repo.table_columns(), "experiments": repo.experiments()})


def live(call):
    """``GET /api/v1/ui/live``: the runs in progress, with their latest metrics."""
    return answer({"runs": call.state.repo.live_runs()})


def relatives(call):
    """``GET /api/v1/ui/runs/{ref}/relatives``: children and reproductions of a run."""
    return answer(call.state.repo.relatives(_ref(call)))


def preview(call):
    """``GET /api/v1/ui/runs/{ref}/preview?path=``: the head of one of a run's files."""
    path = text_arg(call.query, "path", limit=4096)
    return answer(call.state.repo.preview(_ref(call), path))


def file(call):
    """``GET /api/v1/ui/runs/{ref}/file?path=``: a run's file, verified as it streams, with
    a sandboxing CSP; only images and text are shown inline."""
    from starlette.responses import StreamingResponse

    path = text_arg(call.query, "path", limit=4096)
    chunks = call.state.repo.cat(f"{_ref(call)}:{path}")
    first = next(chunks, b"")  # a missing file fails here, as a 404, before any byte is sent
    media, inline = file_type(path)
    name = urllib.parse.quote(os.path.basename(path) or "file", safe="")
    disposition = "inline" if inline else "attachment"
    headers = {**FILE_HEADERS, "Content-Disposition": f"{disposition}; filename*=UTF-8''{name}"}

    def body():
        yield first
        yield from chunks

    return StreamingResponse(body(), media_type=media, headers=headers)


def alias_history(call):
    """``GET /api/v1/ui/models/{name}/history``: every alias move of a model, oldest first."""
    from ...models.api import alias_history

    return answer({"history": alias_history(call.path_params["name"], repo=call.state.repo)})


def routes(state) -> list:
    from starlette.routing import Route

    def get(path: str, handler) -> Route:
        return Route(path, endpoint(state, handler, "read"), methods=["GET"])

    return [
        get("/api/v1/ui/table", table),
        get("/api/v1/ui/columns", columns),
        get("/api/v1/ui/live", live),
        get("/api/v1/ui/runs/{ref}/relatives", relatives),
        get("/api/v1/ui/runs/{ref}/preview", preview),
        get("/api/v1/ui/runs/{ref}/file", file),
        get("/api/v1/ui/models/{name}/history", alias_history),
    ]
