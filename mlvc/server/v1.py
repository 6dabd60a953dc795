"""mlvc's own REST API under ``/api/v1`` (OpenAPI document at ``/api/v1/openapi.json``)."""

from __future__ import annotations


def routes(state) -> list:
    return []
