"""``mlvc ui``: the team server's app on 127.0.0.1 for one user, logged in by a token made
for this process alone (kept in its memory, never in the token store: it ends with it)."""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable
from pathlib import Path

from ...errors import ServerAlreadyRunning
from ..auth import PREFIX


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_ui(
    root: str | Path,
    port: int = 0,
    browser: bool = True,
    echo: Callable[[str], None] = print,
    workers: int = 4,
) -> None:
    """Serve the repository at ``root`` to this machine's browser until Ctrl-C.

    Prints ``http://127.0.0.1:PORT/?token=...`` (the page trades the token for a session
    cookie) and opens it with ``webbrowser`` unless ``browser`` is false. Refuses to start
    when an ``mlvc server`` already serves the repository (it holds ``.mlvc/server.lock``):
    that server's own web UI is the one to use."""
    from ..app import Options, serve
    from ..limits import Limits

    secret = PREFIX + secrets.token_urlsafe(32)
    port = port or free_port()
    url = f"http://127.0.0.1:{port}/?token={secret}"

    def ready() -> None:
        echo(f"mlvc ui: open {url}")
        echo("(the token in it works until this process stops; Ctrl-C stops it)")
        if browser:
            import webbrowser

            webbrowser.open(url)

    options = Options(limits=Limits.from_env(), session_token=secret)
    try:
        serve(root, "127.0.0.1", port, workers=workers, options=options, ready=ready)
    except ServerAlreadyRunning as e:
        raise ServerAlreadyRunning(
            f"{e.message}. Its web UI is at its address: open it and log in with a token "
            "(mlvc token create --scope write)"
        ) from None
