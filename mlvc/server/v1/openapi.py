"""The OpenAPI 3 document of /api/v1 (written by hand; tests check every route is in it)."""

from __future__ import annotations

from ..._version import __version__
from ...index.series import MAX_KEYS, MAX_LIMIT, MAX_RUNS, MIN_LIMIT, X_AXES

_ID = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_ERROR = {
    "type": "object",
    "properties": {"error_code": {"type": "string"}, "message": {"type": "string"}},
    "required": ["error_code", "message"],
}
_ANY = {"type": "object", "additionalProperties": True}
# what the server accepts, so a generated request that fits the document is served (the
# server's own checks: mlvc.refs.store.check_ref_name, registry.check_alias, check_ref)
_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_+=-]|\.[A-Za-z0-9_+=-])*\.?"  # no ".."
_NAME = {"type": "string", "pattern": f"^{_PART}$", "maxLength": 200,
         "description": "letters, digits and . _ - + = (not starting with . or -, no ..)"}  # fmt: skip
_ALIAS = {**_NAME, "not": {"pattern": "^[0-9]+$"}, "description": "a name, not a number"}
_REF_NAME = {
    "type": "string",
    "pattern": r"^(HEAD|refs(/[A-Za-z0-9_][A-Za-z0-9._+=-]{0,199}){1,7})$",
    "description": "HEAD, or refs/ then 1 to 7 parts of letters, digits and . _ - + =",
}
_RUN_REF = {"type": "string", "minLength": 1, "maxLength": 1000, "pattern": "^[^\\x00]*$"}
_CLIENT_ID = {"type": "string", "minLength": 1, "maxLength": 200}
_INT64 = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}
_KEY = {"type": "string", "pattern": "^[A-Za-z_][\\w./-]{0,249}$"}  # core.params
_TAG_KEY = {"type": "string", "pattern": "^[A-Za-z_](?:[A-Za-z0-9_-]|\\.[A-Za-z0-9_-])*$",
            "maxLength": 200, "not": {"pattern": "^([0-9a-fA-F]{4,64}|HEAD)$"},
            "description": "a key that is also a ref name: no / or .., not HEAD or 4+ hex digits"}  # fmt: skip
_RUN_NAME = {"anyOf": [{"const": ""}, {**_NAME, "not": {"pattern": "^([0-9a-fA-F]{4,64}|HEAD)$"}}]}
# a param: a string of at most 64 KiB (UTF-8), a 64-bit integer, a float, a boolean, null;
# an array is stored as its JSON text, an object's keys are flattened with dots (a.b)
_PARAM_VALUE = {
    "anyOf": [
        {"type": "string", "maxLength": 65536},
        {"type": ["boolean", "null"]},
        {"type": "number", "description": "an integer literal must fit 64 bits"},
        {"type": "array"},
        {"$ref": "#/components/schemas/NestedParams"},
    ]
}
_PARAMS = {"type": "object", "propertyNames": _KEY, "additionalProperties": _PARAM_VALUE}
_NESTED = {  # {"opt": {"lr": 0.1}} is the param opt.lr
    "type": "object",
    "propertyNames": {"type": "string", "pattern": "^[\\w./-]{0,249}$"},
    "additionalProperties": _PARAM_VALUE,
}
# a tag: a string (at most 64 KiB); another JSON value is stored as its JSON text. A batch
# applies the tags it can and lists the others in "refused"; a start refuses them all (400)
_TAG_VALUE = {"anyOf": [{"type": "string", "maxLength": 65536}, {"not": {"type": "string"}}]}
_TAGS = {"type": "object", "propertyNames": _TAG_KEY, "additionalProperties": _TAG_VALUE}
# a batch applies what it can and lists each param or tag it could not in "refused"
_BATCH_TAGS = {"type": "object", "additionalProperties": True}


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    words = {400: "Bad request", 401: "No or bad token", 403: "Too little scope",
             404: "Not found", 405: "Refused", 409: "Conflict", 413: "Body too large",
             412: "Precondition failed", 416: "Range not satisfiable",
             428: "Precondition required", 503: "Busy",
             431: "Request line and headers over the server's limit (64 KiB by default)"}  # fmt: skip
    return {str(c): _json({"$ref": "#/components/schemas/Error"}, words[c]) for c in codes}


def _body(schema: dict, required: bool = True) -> dict:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _with_arrow(body: dict) -> dict:
    """A live batch's body: its JSON form, or the same batch as an Arrow IPC stream (what
    the mlvc client sends; ``live.arrow_batch``)."""
    arrow = {
        "schema": {"type": "string", "format": "binary"},
        "description": "An Arrow IPC stream with columns key (text), value (float; null is "
        "NaN), step and timestamp_ns (int64), and the batch's batch_id, params and tags as a "
        "JSON object in the schema metadata `mlvc.batch`.",
    }
    return {**body, "content": {**body["content"], "application/vnd.apache.arrow.stream": arrow}}


def _path(name: str, schema: dict | None = None, example: str | None = None) -> dict:
    p = {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}
    return p if example is None else {**p, "example": example}


def _opt(schema: dict) -> dict:
    """An optional field: absent and null mean the same (the default)."""
    return {"anyOf": [schema, {"type": "null"}]}


def _query(name: str, schema: dict, required: bool = False, example=None) -> dict:
    q = {"name": name, "in": "query", "required": required, "schema": schema}
    return q if example is None else {**q, "example": example}


def _op(summary: str, ok: dict, *codes: int, extra: dict | None = None, **more) -> dict:
    responses = {"200": ok, **(extra or {}), **_errors(401, 403, *codes, 431)}
    return {"summary": summary, "responses": responses, **more}


_STORED = {
    "type": "object",
    "properties": {"id": _ID, "size": {"type": "integer"}, "stored": {"type": "boolean"}},
}


_RUN_ROW = {
    "type": "object",
    "properties": {
        k: {}
        for k in (
            "id",
            "short_id",
            "name",
            "status",
            "message",
            "author",
            "created",
            "ended",
            "parent",
        )
    },  # fmt: skip
}
_REF = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "id": _ID, "symbolic": {"type": ["string", "null"]}},
}
_METRIC = {
    "type": "array",
    "minItems": 4,
    "maxItems": 4,
    "prefixItems": [
        {"type": "string"},
        {
            "oneOf": [
                {"type": ["number", "null"]},
                {"type": "string", "enum": ["nan", "inf", "-inf"]},
            ]
        },
        _INT64,
        _INT64,
    ],
    "description": "[key, value, step, timestamp in ns since the epoch]",
}


_LIVE = {
    "type": "object",
    "required": ["key", "name"],
    "properties": {
        "key": {"type": "string"},
        "name": {"type": "string"},
        "run_id": {**_ID, "description": "when a start sent again names a run that has ended"},
    },
}
_BATCH = {
    "type": "object",
    "required": ["applied", "points", "refused"],
    "properties": {
        "applied": {"type": "boolean", "description": "false: this batch_id was applied before"},
        "points": {"type": "integer", "description": "metric points stored"},
        "refused": {"type": "array", "items": {"type": "string"}},
    },
}
_ENDED = {"type": "object", "required": ["key", "run_id"],
          "properties": {"key": {"type": "string"}, "run_id": _ID}}  # fmt: skip


def _linked(response: dict, links: dict) -> dict:
    """``response`` with OpenAPI links: {operationId: {parameter: runtime expression}}."""
    return {**response, "links": {op: {"operationId": op, "parameters": params}
                                  for op, params in links.items()}}  # fmt: skip


def document() -> dict:
    key = _path("key")
    paths = {
        "/api/v1/openapi.json": {"get": _op("This document", _json(_ANY))},
        "/api/v1/runs": {
            "get": _op(
                "Runs newest first (the columns of `mlvc log --json`) and HEAD",
                _json(
                    {
                        "type": "object",
                        "properties": {
                            "runs": {"type": "array", "items": _RUN_ROW},
                            "head": {"type": ["string", "null"]},
                        },
                    }
                ),  # fmt: skip
                400,
                parameters=[
                    _query("limit", {"type": "integer", "minimum": 0, "maximum": 100000}),
                    _query("offset", {"type": "integer", "minimum": 0, "maximum": 2**62}),
                ],
            )
        },
        "/api/v1/runs/{ref}": {
            "get": _op(
                "A run as `mlvc show --json REF` prints it (id, prefix, name, tag, HEAD~N)",
                _json(_ANY),
                400,
                404,
                operationId="getRun",
                parameters=[
                    _path("ref", _RUN_REF, example="HEAD"),
                    _query("files", {"type": "boolean"}),
                ],
            )
        },
        "/api/v1/diff": {
            "get": _op(
                "What differs between runs a and b (`mlvc diff --json A B`)",
                _json(_ANY),
                400,
                404,
                parameters=[
                    _query("a", _RUN_REF, required=True, example="HEAD~1"),
                    _query("b", _RUN_REF, example="HEAD"),
                    _query("patch", {"type": "boolean"}),
                ],
            )
        },
        "/api/v1/series": {
            "get": _op(
                "Metric series of runs x keys for charts, each sampled server-side to at "
                "most `limit` points (min/max per bucket; NaN and infinities kept as "
                "'nan', 'inf', '-inf'); full resolution when the x window holds fewer",
                _json(_ANY),
                400,
                404,
                parameters=[
                    _query(
                        "run",
                        {"type": "array", "items": _RUN_REF, "minItems": 1, "maxItems": MAX_RUNS},
                        required=True,
                        example=["HEAD"],
                    ),
                    _query(
                        "key",
                        {"type": "array", "items": _RUN_REF, "maxItems": MAX_KEYS},
                        example=["loss"],
                    ),
                    _query("x", {"type": "string", "enum": list(X_AXES)}),
                    _query("x_min", {"type": "number"}),
                    _query("x_max", {"type": "number"}),
                    _query(
                        "limit", {"type": "integer", "minimum": MIN_LIMIT, "maximum": MAX_LIMIT}
                    ),
                ],
            )
        },  # fmt: skip
        "/api/v1/query": {
            "post": {
                **_op(
                    "Read-only SQL over the index: JSON, or Arrow IPC with "
                    "`Accept: application/vnd.apache.arrow.stream`",
                    {
                        "description": "OK",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "columns": {"type": "array", "items": {"type": "string"}},
                                        "rows": {"type": "array", "items": {"type": "array"}},
                                    },
                                }
                            },
                            "application/vnd.apache.arrow.stream": {
                                "schema": {"type": "string", "format": "binary"}
                            },
                        },
                    },  # fmt: skip
                    400,
                    413,
                ),
                "requestBody": _body(
                    {
                        "type": "object",
                        "required": ["sql"],
                        "properties": {"sql": {"type": "string"}},
                    }
                ),  # fmt: skip
            }
        },
        "/api/v1/objects/missing": {
            "post": {
                **_op(
                    "Which of these ids the server lacks",
                    _json(
                        {
                            "type": "object",
                            "properties": {"missing": {"type": "array", "items": _ID}},
                        }
                    ),  # fmt: skip
                    400,
                    413,
                ),
                "requestBody": _body(
                    {
                        "type": "object",
                        "required": ["ids"],
                        "properties": {"ids": {"type": "array", "items": _ID}},
                    }
                ),  # fmt: skip
            }
        },
        "/api/v1/objects/{id}": {
            "parameters": [_path("id", _ID)],
            "head": _op(
                "The object's size (Content-Length), or 404", {"description": "OK"}, 400, 404
            ),  # fmt: skip
            "get": _op(
                "The object's content, streamed and verified",
                {
                    "description": "OK",
                    "content": {
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        }
                    },
                },  # fmt: skip
                400,
                404,
            ),
            "put": {
                **_op(
                    "Store the body if its BLAKE3 is the id (else 400, nothing stored)",
                    _json(_STORED, "Already stored"),
                    400,
                    404,  # a path that is no route (e.g. an id holding a newline)
                    413,
                    extra={"201": _json(_STORED, "Stored")},
                ),
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        }
                    },
                },  # fmt: skip
            },
        },
        "/api/v1/refs": {
            "get": _op(
                "Every ref whose full name starts with prefix",
                _json(
                    {"type": "object", "properties": {"refs": {"type": "array", "items": _REF}}}
                ),  # fmt: skip
                400,
                parameters=[
                    _query(
                        "prefix", {"type": "string", "maxLength": 1000, "pattern": "^[^\\x00]*$"}
                    )
                ],  # fmt: skip
            )
        },
        "/api/v1/refs/{name}": {
            "parameters": [_path("name", _REF_NAME, example="refs/tags/baseline")],
            "get": _op("One ref (HEAD or refs/...)", _json(_REF), 400, 404),
            "put": {
                **_op(
                    "Compare-and-swap: move the ref to new if it is at old (null: absent)",
                    _json(_REF),
                    400,
                    404,  # a path that is no route (e.g. a name holding a newline)
                    409,
                ),  # fmt: skip
                "requestBody": _body(
                    {
                        "type": "object",
                        "required": ["new", "old"],
                        "properties": {"new": _ID, "old": {"oneOf": [_ID, {"type": "null"}]}},
                    }
                ),
            },  # fmt: skip
        },
        "/api/v1/models": {"get": _op("Registered models", _json(_ANY))},
        "/api/v1/models/{name}": {
            "get": _op(
                "A model's versions and aliases",
                _json(_ANY),
                400,
                404,
                parameters=[_path("name", _NAME)],
            ),  # fmt: skip
        },
        "/api/v1/models/{name}/aliases/{alias}": {
            "parameters": [
                _path("name", _NAME, example="demo"),
                _path("alias", _ALIAS, example="champion"),
            ],
            "put": {
                **_op("Point (or move) an alias at a version", _json(_ANY), 400, 404),
                "requestBody": _body(
                    {
                        "type": "object",
                        "required": ["version"],
                        "properties": {
                            "version": {"oneOf": [{"type": "integer"}, {"type": "string"}]}
                        },
                    }
                ),
            },  # fmt: skip
            "delete": _op("Remove an alias", _json(_ANY), 400, 404),
        },
        "/api/v1/runs/live": {
            "post": {
                **_op(
                    "Start a live run held by the server; returns its key",
                    _linked(
                        _json(_LIVE),
                        {
                            "liveBatch": {"key": "$response.body#/key"},
                            "liveEnd": {"key": "$response.body#/key"},
                        },
                    ),
                    400,
                    413,
                    operationId="liveStart",
                ),  # fmt: skip
                "requestBody": _body(
                    {
                        "type": "object",
                        "properties": {
                            "name": _opt(_RUN_NAME),
                            "message": _opt({"type": "string"}),
                            "params": _opt(_PARAMS),
                            "tags": _opt(_TAGS),
                            "client_id": _opt(_CLIENT_ID),
                            "argv": _opt({"type": "array", "items": {"type": "string"}}),
                        },
                    },
                    required=False,
                ),  # fmt: skip
            }
        },
        "/api/v1/runs/live/{key}/batches": {
            "post": {
                **_op(
                    "Apply a batch once (idempotent on batch_id)",
                    _json(_BATCH),
                    400,
                    404,
                    413,
                    parameters=[key],
                    operationId="liveBatch",
                ),  # fmt: skip
                "requestBody": _with_arrow(
                    _body(
                        {
                            "type": "object",
                            "required": ["batch_id"],
                            "properties": {
                                "batch_id": _CLIENT_ID,
                                "params": _opt(_BATCH_TAGS),
                                "tags": _opt(_BATCH_TAGS),
                                "metrics": _opt({"type": "array", "items": _METRIC}),
                            },
                        }
                    )
                ),  # fmt: skip
            }
        },
        "/api/v1/runs/live/{key}/end": {
            "post": {
                **_op(
                    "Record the run; returns its run id",
                    _linked(_json(_ENDED), {"getRun": {"ref": "$response.body#/run_id"}}),
                    400,
                    404,
                    parameters=[key],
                    operationId="liveEnd",
                ),  # fmt: skip
                "requestBody": _body(
                    {
                        "type": "object",
                        "properties": {
                            "status": _opt(
                                {"type": "string", "enum": ["finished", "failed", "killed"]}
                            )
                        },
                    },
                    required=False,
                ),  # fmt: skip
            }
        },
    }
    paths.update(_remote_paths())
    paths.update(_events_paths())
    paths.update(_ui_paths())
    return {
        "openapi": "3.1.0",
        "info": {"title": "mlvc server API", "version": __version__},
        "components": {
            "schemas": {"Error": _ERROR, "NestedParams": _NESTED},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }


def _remote_paths() -> dict:
    """The repository as a remote (v1/remote.py): the bucket layout of docs/remotes.md."""
    octets = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    path = _path("path")
    return {
        "/api/v1/remote": {
            "get": _op(
                "One listing of the remote's files: {files: {path: size}}",
                _json(_ANY),
                400,
                parameters=[
                    _query(
                        "prefix", {"type": "string", "maxLength": 1000, "pattern": "^[^\\x00]*$"}
                    )
                ],
            ),  # fmt: skip
        },
        "/api/v1/remote/{path}": {
            "parameters": [path],
            "get": _op(
                "A file (mlvc-remote.json, refs.json with an ETag, packs/*.pack|.idx|.runs); "
                "Range: bytes=a-b answers 206",
                {"description": "The file", "content": octets},
                404,
                416,
                extra={"206": {"description": "One range of the file", "content": octets}},
            ),  # fmt: skip
            "put": {
                **_op(
                    "Write a file: a pack (verified record by record, then stored), its "
                    ".idx, a .runs file (records the runs), refs.json by compare-and-swap "
                    "(If-Match / If-None-Match: *)",
                    _json(_ANY),
                    400,
                    404,
                    409,
                    412,
                    413,
                    428,
                ),  # fmt: skip
                "requestBody": {"required": True, "content": octets},
            },
        },
    }


def _events_paths() -> dict:
    evt_id = {"type": "string", "pattern": "^evt_[0-9a-f]{24}$"}
    stream = {
        "description": "A server-sent-events stream: per event `id:` (its id), `event:` (its "
        'type) and `data:` (its JSON {"id", "type", "timestamp", "data"}); `: keep-alive` '
        "comments between events",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
    params = [
        {"name": "Last-Event-ID", "in": "header", "required": False, "schema": evt_id},
        _query("after", evt_id),
        _query("types", {"type": "string", "maxLength": 1000}, example="run.*,model_version.*"),
        _query("type", {"type": "string", "maxLength": 1000}, example="run.*"),
        _query("follow", {"type": "boolean"}),
        _query("keepalive", {"type": "integer", "minimum": 1, "maximum": 3600}),
        _query("timeout", {"type": "integer", "minimum": 0, "maximum": 86400}),
    ]
    summary = (
        "The event journal as server-sent events, after `Last-Event-ID` (or `after`), of "
        "the `types` globs (or each `type`, repeatable); `follow=false` sends what is there and ends"
    )
    return {"/api/v1/events": {"get": _op(summary, stream, 400, parameters=params)}}


_TEXT = {"type": "string", "minLength": 1, "maxLength": 1000, "pattern": "^[^\\x00]*$"}
_PATH = {"type": "string", "minLength": 1, "maxLength": 4096, "pattern": "^[^\\x00]*$"}


def _ui_paths() -> dict:
    """What the web UI reads beyond the rest of /api/v1 (mlvc.server.ui, docs/ui.md)."""
    ref = _path("ref", _RUN_REF, "HEAD")
    session = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "scope": {"type": "string"},
                       "anonymous": {"type": "boolean"}, "version": {"type": "string"}},
    }  # fmt: skip
    return {
        "/api/v1/ui/session": {
            "get": _op(
                "Who this request is (the web UI's session, a token, or anonymous)", _json(session)
            ),  # fmt: skip
            "post": {
                **_op(
                    "Trade a token for an HttpOnly, SameSite=Strict session cookie (needs "
                    "the header X-Requested-With: mlvc-ui)",
                    _json(session),
                    400,
                ),
                "security": [],
                "requestBody": _body(
                    {
                        "type": "object",
                        "required": ["token"],
                        "properties": {"token": {"type": "string", "maxLength": 200}},
                    }  # fmt: skip
                ),
            },
            "delete": {**_op("End the session of the cookie sent", _json(_ANY)), "security": []},
        },
        "/api/v1/ui/table": {
            "get": _op(
                "A page of the runs table (runs_wide): filtered by a SQL WHERE clause, sorted "
                "(sort=COLUMN or -COLUMN, repeated), with the columns asked for (col=, "
                "repeated); group=experiment sorts by experiment and lists the groups; "
                "count=false leaves the runs uncounted (total null)",
                _json(_ANY),
                400,
                parameters=[
                    _query("where", {"type": "string", "maxLength": 10000}),
                    _query("sort", {"type": "array", "items": _TEXT, "maxItems": 20}),
                    _query("col", {"type": "array", "items": _TEXT, "maxItems": 500}),
                    _query("offset", {"type": "integer", "minimum": 0, "maximum": 1 << 40}),
                    _query("limit", {"type": "integer", "minimum": 0, "maximum": 1000}),
                    _query("group", {"type": "string", "enum": ["", "experiment"]}),
                    _query("count", {"type": "boolean"}),
                ],
            )
        },
        "/api/v1/ui/columns": {
            "get": _op("The columns the runs table can show, and experiment names", _json(_ANY))
        },
        "/api/v1/ui/live": {"get": _op("The runs in progress", _json(_ANY))},
        "/api/v1/ui/runs/{ref}/relatives": {
            "parameters": [ref],
            "get": _op("A run's children and reproductions", _json(_ANY), 400, 404),
        },
        "/api/v1/ui/runs/{ref}/preview": {
            "parameters": [ref],
            "get": _op(
                "The head of a run's file: text, JSON, or the first 50 rows of a CSV, TSV or "
                "Parquet table",
                _json(_ANY),
                400,
                404,
                parameters=[_query("path", _PATH, required=True)],
            ),
        },
        "/api/v1/ui/models/{name}/history": {
            "parameters": [_path("name", _NAME, "demo")],
            "get": _op("Every alias move of a model, oldest first", _json(_ANY), 400),
        },
        "/api/v1/ui/runs/{ref}/file": {
            "parameters": [ref],
            "get": _op(
                "A run's file, under Content-Security-Policy: default-src 'none'; sandbox. "
                "Images and text inline, anything else as an attachment",
                {"description": "The file", "content": {"application/octet-stream": {}}},
                400,
                404,
                parameters=[_query("path", _PATH, required=True)],
            ),
        },
    }
