"""The JSON the web UI reads beyond /api/v1: the runs table page by page, and a run's
artifacts (their bytes under a sandboxing CSP, and heads of tables)."""

from __future__ import annotations


def routes(state) -> list:
    return []
