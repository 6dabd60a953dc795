"""The web UI of ``mlvc server`` and ``mlvc ui`` (docs/ui.md).

A single-page app of hand-written ES modules in ``static/`` (no build step): the server
answers its ``index.html`` for every page path (``/``, ``/runs/<id>``, ``/compare``,
``/models``, ``/models/<name>``, ``/events``, ``/login``), its files under
``/ui/static/``, and the JSON it needs under ``/api/v1/ui/`` (data.py); everything else
comes from ``/api/v1``.

pages.py   the page paths, the static files (long-cached under a content hash), and the
           browser session: ``?token=`` or the login form trade a token for an HttpOnly,
           SameSite=Strict cookie (mlvc.server.auth.Sessions)
data.py    the runs table page by page, a run's artifacts (bytes with a sandboxing CSP,
           and server-side previews of tables)
"""

from __future__ import annotations


def routes(state) -> list:
    from . import data, pages

    _warm_up()
    return [*data.routes(state), *pages.routes(state)]


def _warm_up() -> None:
    """Import what the UI's data endpoints need (DuckDB, pyarrow, numpy) in a background
    thread as the server starts, and make DuckDB's first call (it sets itself up, ~0.2 s),
    so its first viewer does not wait for them (~0.5 s, over 1 s on a loaded machine).

    Not a daemon thread: one still inside DuckDB when the interpreter exits is unwound
    through C++ and aborts the process ("FATAL: exception not rethrown"); this one ends in
    a second or so. It reads no index (that could take as long as an ingest)."""
    import threading

    def load() -> None:
        import duckdb
        import numpy  # noqa: F401
        import pyarrow  # noqa: F401

        duckdb.extract_statements("SELECT 1")

    threading.Thread(target=load, name="mlvc-ui-warm").start()
