"""mlvc's own REST API under ``/api/v1`` (OpenAPI document at ``/api/v1/openapi.json``).

runs      list (newest first), get by any ref the CLI takes, diff, read-only SQL query
          (JSON or an Arrow IPC stream)                                  runs.py
objects   HEAD/GET (streamed, verified)/PUT (re-hashed, refused on a mismatch) by id,
          and which of a list of ids the server lacks                   objects.py
refs      list, get, compare-and-swap PUT; the model registry's aliases refs.py
series    metric series for charts, sampled to a few thousand points each  series.py
live      runs logged by ``mlvc.start_run`` with MLVC_TRACKING_URI: start, idempotent
          batches (params, tags, metric points), end                     live.py
events    the event journal as a server-sent-events stream            events.py
remote    the repository as a remote (push, fetch, clone over http): the
          bucket layout of docs/remotes.md, built from its packs and refs  remote.py
"""

from __future__ import annotations

from ..app import endpoint
from . import events, live, objects, refs, remote, runs, series
from .openapi import document


def routes(state) -> list:
    from starlette.routing import Route

    doc = document()

    def openapi(call):
        return doc

    return literal_first(
        [
            Route("/api/v1/openapi.json", endpoint(state, openapi, "read"), methods=["GET"]),
            *live.routes(state),  # before runs/{ref}: POST /api/v1/runs/live is theirs
            *runs.routes(state),
            *series.routes(state),
            *objects.routes(state),
            *refs.routes(state),
            *remote.routes(state),
            *events.routes(state),
        ]
    )


REFUSAL = "method_not_allowed"  # the name of the 405 routes literal_first adds
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"}


def literal_first(routes: list) -> list:
    """A path without parameters answers 405 (with its ``Allow``) to the methods it does not
    serve, rather than falling through to a templated route: as OpenAPI reads paths
    (``PUT /api/v1/objects/missing`` is not a PUT of object "missing")."""
    from starlette.routing import Route

    from ..app import error_response

    served: dict[str, set[str]] = {}
    for r in routes:
        if "{" not in r.path:
            served.setdefault(r.path, set()).update(r.methods or ())
    out = list(routes)
    for path, methods in served.items():
        allow = ", ".join(sorted(methods))

        async def refuse(request, allow=allow):
            return error_response(
                405,
                "ENDPOINT_NOT_FOUND",
                f"{request.method} is not allowed on {request.url.path}",
                {"Allow": allow},
            )

        last = max(i for i, r in enumerate(out) if r.path == path)
        refusal = Route(path, refuse, methods=sorted(METHODS - methods), name=REFUSAL)
        out.insert(last + 1, refusal)
    return out
