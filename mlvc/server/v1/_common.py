"""What the /api/v1 route modules share: reading arguments (400 naming the field) and
answering JSON the way ``mlvc ... --json`` prints it."""

from __future__ import annotations

import json
import re
from typing import Any

from ...api.views import jsonable
from ...core.ids import ObjectId
from ..app import ApiError

BAD = "INVALID_PARAMETER_VALUE"
ARROW = "application/vnd.apache.arrow.stream"  # query answers, live batches' points
_INT = re.compile(r"-?[0-9]+")


def bad(message: str) -> ApiError:
    return ApiError(400, BAD, message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "RESOURCE_DOES_NOT_EXIST", message)


def _default(v: Any) -> str:
    from datetime import date, datetime

    if isinstance(v, datetime | date):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.hex()
    return str(v)


def answer(body: Any, status: int = 200):
    """JSON as ``mlvc --json`` prints it: NaN/inf as strings, times in ISO 8601."""
    from starlette.responses import Response

    text = json.dumps(jsonable(body), default=_default, allow_nan=False, separators=(",", ":"))
    return Response(text, status_code=status, media_type="application/json")


def object_id(text: Any, field: str) -> ObjectId:
    if not isinstance(text, str):
        raise bad(f"{field}: expected an object id (64 hex digits)")
    try:
        return ObjectId.parse(text)
    except ValueError:
        raise bad(f"{field}: {text[:80]!r} is not an object id (64 hex digits)") from None


def int_arg(query, name: str, default: int, lo: int, hi: int) -> int:
    text = query.get(name)
    if text is None:
        return default
    if not _INT.fullmatch(text):  # not int(): it takes " 1", "1_0" and "+1"
        raise bad(f"{name}: {text[:40]!r} is not an integer")
    value = int(text) if len(text) < 30 else hi + 1
    if not lo <= value <= hi:
        raise bad(f"{name}: {text[:40]} is out of range ({lo} to {hi})")
    return value


def bool_arg(query, name: str, default: bool) -> bool:
    text = query.get(name)
    if text is None:
        return default
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise bad(f"{name}: {text[:40]!r} is not a boolean (true or false)")


def text_arg(
    query, name: str, required: bool = True, limit: int = 1000, empty: bool = False
) -> str | None:
    text = query.get(name)
    if text is None:
        if required:
            raise bad(f"{name}: missing (a query argument)")
        return None
    if text == "" and not empty:
        raise bad(f"{name}: empty")
    if len(text) > limit or "\x00" in text:
        raise bad(f"{name}: too long or holds a NUL character")
    return text


def body(call) -> dict:
    if not isinstance(call.body, dict):
        raise bad("the body must be a JSON object")
    return call.body


def field(data: dict, name: str, kind: type | tuple, required: bool = True, default=None):
    """``data[name]`` checked to be ``kind`` (bool is not an int here)."""
    if name not in data or data[name] is None:
        if required:
            raise bad(f"{name}: missing")
        return default
    value = data[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise bad(f"{name}: expected {_names(kinds)}, got a boolean")
    if not isinstance(value, kinds):
        raise bad(f"{name}: expected {_names(kinds)}, got {type(value).__name__}")
    return value


def _names(kinds: tuple) -> str:
    words = {str: "a string", int: "an integer", float: "a number", dict: "an object",
             list: "an array", bool: "a boolean"}  # fmt: skip
    return " or ".join(words.get(k, k.__name__) for k in kinds)
