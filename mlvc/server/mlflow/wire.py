"""MLflow's wire format: request arguments in, proto-JSON out.

The MLflow client sends GET arguments as a query string (numbers as strings, lists as
repeated keys) and POST arguments as a JSON body; ``Args`` reads both the same way, and its
typed getters refuse a wrong value with 400 INVALID_PARAMETER_VALUE naming the field.
Output follows protobuf's JSON mapping: int64 as numbers, enum names, and NaN/±inf metric
values as the strings "NaN", "Infinity", "-Infinity" (what protobuf's parser reads back).
"""

from __future__ import annotations

import math
from typing import Any

from ..app import ApiError

INVALID = "INVALID_PARAMETER_VALUE"
MISSING = "RESOURCE_DOES_NOT_EXIST"
INT64 = (-(2**63), 2**63 - 1)
_SPECIAL = {"nan": math.nan, "infinity": math.inf, "-infinity": -math.inf, "inf": math.inf,
            "-inf": -math.inf}  # fmt: skip


def bad(message: str) -> ApiError:
    return ApiError(400, INVALID, message)


def not_found(message: str) -> ApiError:
    return ApiError(404, MISSING, message)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Args:
    """The arguments of one request: the JSON body for POST/PATCH/DELETE with a body, else
    the query string."""

    def __init__(self, call):
        self.body = call.body if isinstance(call.body, dict) else None
        self.query = call.query

    def has(self, name: str) -> bool:
        if self.body is not None:
            return self.body.get(name) is not None
        return name in self.query

    def raw(self, name: str) -> Any:
        if self.body is not None:
            return self.body.get(name)
        return self.query.get(name)

    def string(self, name: str, required: bool = False, default: str | None = None) -> str | None:
        value = self.raw(name)
        if value is None or value == "":
            if required:
                raise bad(f"missing value for required parameter '{name}'")
            return default
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise bad(f"parameter '{name}' must be a string, not {_short(value)}")
        return str(value)

    def integer(self, name: str, required: bool = False, default: int | None = None) -> int | None:
        value = self.raw(name)
        if value is None or value == "":
            if required:
                raise bad(f"missing value for required parameter '{name}'")
            return default
        if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
            raise bad(f"parameter '{name}' must be an integer, not {_short(value)}")
        try:
            out = int(value)
        except (TypeError, ValueError, OverflowError):
            raise bad(f"parameter '{name}' must be an integer, not {_short(value)}") from None
        if not INT64[0] <= out <= INT64[1]:
            raise bad(f"parameter '{name}' is out of the 64-bit range: {_short(value)}")
        return out

    def number(self, name: str, required: bool = False) -> float | None:
        value = self.raw(name)
        if value is None:
            if required:
                raise bad(f"missing value for required parameter '{name}'")
            return None
        return to_number(value, name)

    def strings(self, name: str) -> list[str]:
        if self.body is not None:
            value = self.body.get(name)
            if value is None:
                return []
            if isinstance(value, str):
                return [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise bad(f"parameter '{name}' must be a list of strings")
            return value
        return list(self.query.getlist(name))

    def objects(self, name: str) -> list[dict]:
        value = self.raw(name) if self.body is not None else None
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise bad(f"parameter '{name}' must be a list of objects")
        return value


def to_number(value: Any, name: str) -> float:
    """A metric value as proto-JSON gives it: a number or "NaN"/"Infinity"/"-Infinity"."""
    if isinstance(value, bool):
        raise bad(f"parameter '{name}' must be a number, not {_short(value)}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        special = _SPECIAL.get(value.strip().lower())
        if special is not None:
            return special
        try:
            return float(value)
        except ValueError:
            pass
    raise bad(f"parameter '{name}' must be a number, not {_short(value)}")


def number_out(value: float) -> float | str:
    """A float as proto-JSON writes it."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def metric_out(key: str, value: float, timestamp_ms: int, step: int) -> dict:
    return {"key": key, "value": number_out(value), "timestamp": timestamp_ms, "step": step}


def key_values(items: dict) -> list[dict]:
    return [{"key": k, "value": str(v)} for k, v in items.items()]
