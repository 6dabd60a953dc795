"""Runs as ``mlvc log``, ``show``, ``diff`` and ``query`` see them: the same JSON."""

from __future__ import annotations

from ..app import endpoint
from ._common import ARROW, answer, bad, body, bool_arg, field, int_arg, text_arg

MAX_LIMIT = 100_000
MAX_SQL = 100_000  # characters


def list_runs(call):
    """``GET /api/v1/runs?limit=&offset=``: newest first, the columns of ``mlvc log``."""
    limit = int_arg(call.query, "limit", 100, 0, MAX_LIMIT)
    offset = int_arg(call.query, "offset", 0, 0, 1 << 62)
    repo = call.state.repo
    sql = (
        "SELECT id, short_id, name, status, message, author, created, ended, parent "
        f"FROM runs ORDER BY created DESC, id LIMIT {limit} OFFSET {offset}"
    )
    head = repo.head()
    return answer({"runs": repo.query(sql).to_pylist(), "head": head.hex if head else None})


def get_run(call):
    """``GET /api/v1/runs/{ref}?files=``: what ``mlvc show --json REF`` prints."""
    files = bool_arg(call.query, "files", True)
    ref = call.path_params["ref"]
    if len(ref) > 1000 or "\x00" in ref:
        raise bad("ref: too long or holds a NUL character")
    return answer(call.state.repo.show(ref, files=files))


def diff(call):
    """``GET /api/v1/diff?a=&b=&patch=``: what ``mlvc diff --json A B`` prints, with
    ``unchanged_metrics`` for the text report."""
    a = text_arg(call.query, "a")
    b = text_arg(call.query, "b", required=False) or "HEAD"
    patch = bool_arg(call.query, "patch", False)
    d = call.state.repo.diff(a, b, patch=patch)
    return answer({**d.to_dict(), "unchanged_metrics": d.unchanged_metrics})


def query(call):
    """``POST /api/v1/query {"sql"}``: read-only SQL over the index, answered as
    ``{"columns", "rows"}`` or, with ``Accept: application/vnd.apache.arrow.stream``, as
    an Arrow IPC stream (the exact types, what ``Repo.query`` returns)."""
    sql = field(body(call), "sql", str)
    if len(sql) > MAX_SQL or "\x00" in sql:
        raise bad(f"sql: over {MAX_SQL} characters or holds a NUL character")
    table = call.state.repo.query(sql)
    if ARROW in (call.headers.get("accept") or ""):
        return _arrow(table)
    return answer(
        {"columns": table.column_names, "rows": [list(r.values()) for r in table.to_pylist()]}
    )


def _arrow(table):
    import pyarrow as pa
    import pyarrow.ipc as ipc
    from starlette.responses import Response

    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=65536)
    return Response(sink.getvalue().to_pybytes(), media_type=ARROW)


def routes(state) -> list:
    from starlette.routing import Route

    return [
        Route("/api/v1/runs", endpoint(state, list_runs, "read"), methods=["GET"]),
        Route("/api/v1/runs/{ref}", endpoint(state, get_run, "read"), methods=["GET"]),
        Route("/api/v1/diff", endpoint(state, diff, "read"), methods=["GET"]),
        Route("/api/v1/query", endpoint(state, query, "read"), methods=["POST"]),
    ]
