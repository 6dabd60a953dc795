"""The OpenAPI 3 document of /api/v1 (written by hand; tests check every route is in it)."""

from __future__ import annotations

from ..._version import __version__

_ID = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_ERROR = {
    "type": "object",
    "properties": {"error_code": {"type": "string"}, "message": {"type": "string"}},
    "required": ["error_code", "message"],
}
_ANY = {"type": "object", "additionalProperties": True}


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    words = {400: "Bad request", 401: "No or bad token", 403: "Too little scope",
             404: "Not found", 405: "Refused", 409: "Conflict", 413: "Body too large",
             412: "Precondition failed", 416: "Range not satisfiable",
             428: "Precondition required", 503: "Busy"}  # fmt: skip
    return {str(c): _json({"$ref": "#/components/schemas/Error"}, words[c]) for c in codes}


def _body(schema: dict, required: bool = True) -> dict:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _path(name: str, schema: dict | None = None) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


def _query(name: str, schema: dict, required: bool = False) -> dict:
    return {"name": name, "in": "query", "required": required, "schema": schema}


def _op(summary: str, ok: dict, *codes: int, extra: dict | None = None, **more) -> dict:
    responses = {"200": ok, **(extra or {}), **_errors(401, 403, *codes)}
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
        {"oneOf": [{"type": "number"}, {"type": "string", "enum": ["nan", "inf", "-inf"]}]},
        {"type": "integer"},
        {"type": "integer"},
    ],
    "description": "[key, value, step, timestamp in ns since the epoch]",
}


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
                    _query("offset", {"type": "integer", "minimum": 0}),
                ],
            )
        },
        "/api/v1/runs/{ref}": {
            "get": _op(
                "A run as `mlvc show --json REF` prints it (id, prefix, name, tag, HEAD~N)",
                _json(_ANY),
                400,
                404,
                parameters=[_path("ref"), _query("files", {"type": "boolean"})],
            )
        },
        "/api/v1/diff": {
            "get": _op(
                "What differs between runs a and b (`mlvc diff --json A B`)",
                _json(_ANY),
                400,
                404,
                parameters=[
                    _query("a", {"type": "string"}, required=True),
                    _query("b", {"type": "string"}),
                    _query("patch", {"type": "boolean"}),
                ],
            )
        },
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
                parameters=[_query("prefix", {"type": "string"})],
            )
        },
        "/api/v1/refs/{name}": {
            "parameters": [_path("name")],
            "get": _op("One ref (HEAD or refs/...)", _json(_REF), 400, 404),
            "put": {
                **_op(
                    "Compare-and-swap: move the ref to new if it is at old (null: absent)",
                    _json(_REF),
                    400,
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
                "A model's versions and aliases", _json(_ANY), 400, 404, parameters=[_path("name")]
            ),  # fmt: skip
        },
        "/api/v1/models/{name}/aliases/{alias}": {
            "parameters": [_path("name"), _path("alias")],
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
                    "Start a live run held by the server; returns its key", _json(_ANY), 400, 413
                ),  # fmt: skip
                "requestBody": _body(
                    {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "message": {"type": "string"},
                            "params": _ANY,
                            "tags": _ANY,
                            "client_id": {"type": "string"},
                            "argv": {"type": "array", "items": {"type": "string"}},
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
                    _json(_ANY),
                    400,
                    404,
                    413,
                    parameters=[key],
                ),  # fmt: skip
                "requestBody": _body(
                    {
                        "type": "object",
                        "required": ["batch_id"],
                        "properties": {
                            "batch_id": {"type": "string"},
                            "params": _ANY,
                            "tags": _ANY,
                            "metrics": {"type": "array", "items": _METRIC},
                        },
                    }
                ),  # fmt: skip
            }
        },
        "/api/v1/runs/live/{key}/end": {
            "post": {
                **_op(
                    "Record the run; returns its run id", _json(_ANY), 400, 404, parameters=[key]
                ),  # fmt: skip
                "requestBody": _body(
                    {
                        "type": "object",
                        "properties": {
                            "status": {"type": "string", "enum": ["finished", "failed", "killed"]}
                        },
                    },
                    required=False,
                ),  # fmt: skip
            }
        },
    }
    paths.update(_remote_paths())
    return {
        "openapi": "3.1.0",
        "info": {"title": "mlvc server API", "version": __version__},
        "components": {
            "schemas": {"Error": _ERROR},
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
                parameters=[_query("prefix", {"type": "string"})],
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
                    409,
                    412,
                    413,
                    428,
                ),  # fmt: skip
                "requestBody": {"required": True, "content": octets},
            },
            "delete": _op("Refused: the server keeps its own packs and refs", _json(_ANY), 405),
        },
    }
