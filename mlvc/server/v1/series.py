"""Metric series for charts (``Repo.series``): columnar, sampled server-side."""

from __future__ import annotations

import json
import math

from ...index.series import DEFAULT_LIMIT, MAX_KEYS, MAX_LIMIT, MAX_RUNS, MIN_LIMIT
from ..app import endpoint
from ._common import bad, int_arg, text_arg


def series(call):
    """``GET /api/v1/series?run=A&run=B&key=loss&x=step&x_min=&x_max=&limit=2500``: each
    run's series of each key as ``{"run", "key", "total", "sampled", "step", "time",
    "value"}`` (columns; NaN and infinities as "nan", "inf", "-inf"), at most ``limit``
    points each; ``keys`` lists every metric key the runs have."""
    runs = _names(call.query, "run", MAX_RUNS, required=True)
    keys = _names(call.query, "key", MAX_KEYS, required=False)
    x = text_arg(call.query, "x", required=False) or "step"
    limit = int_arg(call.query, "limit", DEFAULT_LIMIT, MIN_LIMIT, MAX_LIMIT)
    lo, hi = _number(call.query, "x_min"), _number(call.query, "x_max")
    window = None
    if lo is not None or hi is not None:  # open at an end left out
        window = (-math.inf if lo is None else lo, math.inf if hi is None else hi)
    result = call.state.repo.series(runs, keys, x=x, window=window, limit=limit)
    return _compact(result.to_dict())


def _names(query, name: str, most: int, required: bool) -> list[str]:
    values = query.getlist(name)
    if not values and required:
        raise bad(f"{name}: missing (repeat the query argument: {name}=A&{name}=B)")
    if len(values) > most:
        raise bad(f"{name}: at most {most} in one request")
    for v in values:
        if v == "" or len(v) > 1000 or "\x00" in v:
            raise bad(f"{name}: empty, too long or holds a NUL character")
    return values


def _number(query, name: str) -> float | None:
    text = text_arg(query, name, required=False, limit=40)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value):
        raise bad(f"{name}: {text!r} is not a number")
    return value


def _compact(body: dict):
    """The body as JSON without per-value walking: the series are JSON-ready already."""
    from starlette.responses import Response

    return Response(
        json.dumps(body, separators=(",", ":"), allow_nan=False),
        media_type="application/json",
    )


def routes(state) -> list:
    from starlette.routing import Route

    return [Route("/api/v1/series", endpoint(state, series, "read"), methods=["GET"])]
