"""mlvc's own REST API under ``/api/v1`` (OpenAPI document at ``/api/v1/openapi.json``).

runs      list (newest first), get by any ref the CLI takes, diff, read-only SQL query
          (JSON or an Arrow IPC stream)                                  runs.py
objects   HEAD/GET (streamed, verified)/PUT (re-hashed, refused on a mismatch) by id,
          and which of a list of ids the server lacks                   objects.py
refs      list, get, compare-and-swap PUT; the model registry's aliases refs.py
live      runs logged by ``mlvc.start_run`` with MLVC_TRACKING_URI: start, idempotent
          batches (params, tags, metric points), end                     live.py
remote    the repository as a remote (push, fetch, clone over http): the
          bucket layout of docs/remotes.md, built from its packs and refs  remote.py
"""

from __future__ import annotations

from ..app import endpoint
from . import live, objects, refs, remote, runs
from .openapi import document


def routes(state) -> list:
    from starlette.routing import Route

    doc = document()

    def openapi(call):
        return doc

    return [
        Route("/api/v1/openapi.json", endpoint(state, openapi, "read"), methods=["GET"]),
        *live.routes(state),  # before runs/{ref}: POST /api/v1/runs/live is theirs
        *runs.routes(state),
        *objects.routes(state),
        *refs.routes(state),
        *remote.routes(state),
    ]
