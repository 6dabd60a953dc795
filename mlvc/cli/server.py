"""``mlvc server`` and ``mlvc token``: the team server and who may use it."""

from __future__ import annotations

import click

from ..render.text import echo
from ._common import emit, json_option, open_repo


@click.command("server")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--workers",
    default=8,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Request threads (one process: it is the single writer of the index).",
)
@click.option(
    "--allow-anonymous-read",
    is_flag=True,
    help="Let requests without a token read (never write).",
)
@click.option(
    "--lease",
    "lease_seconds",
    default=300.0,
    show_default=True,
    type=click.FloatRange(1, 86400 * 7),
    help="Seconds a run logged over REST stays alive without a request; then it is killed.",
)
@click.option("--access-log", is_flag=True, help="Log every request to stderr.")
def server(
    host: str,
    port: int,
    workers: int,
    allow_anonymous_read: bool,
    lease_seconds: float,
    access_log: bool,
) -> None:
    """Serve this repository to a team: mlvc's API under /api/v1 and MLflow's tracking API
    under /api/2.0/mlflow, so the MLflow client logs here with one changed URL.

    Every request needs a token (mlvc token create) unless --allow-anonymous-read lets
    reads through; GET /health answers without one. Needs the server extra:
    pip install 'mlvc[server]'.

    \b
    Example:
      mlvc token create --scope write --name ci
      mlvc server --port 5000
      MLFLOW_TRACKING_URI=http://127.0.0.1:5000 MLFLOW_TRACKING_TOKEN=mlvc_... python train.py
    """
    from ..server.app import Options, require_extra, serve
    from ..server.limits import Limits

    require_extra()
    repo = open_repo()
    options = Options(
        allow_anonymous_read=allow_anonymous_read,
        lease_seconds=lease_seconds,
        limits=Limits.from_env(),
    )
    serve(repo.root, host=host, port=port, workers=workers, options=options,
          access_log=access_log)  # fmt: skip


@click.group("token")
def token() -> None:
    """Tokens for `mlvc server`: create (shown once), list, revoke.

    \b
    Scopes: read (GET), write (log runs, register models), admin (everything).
    Clients send `Authorization: Bearer <token>`; the MLflow client does so from
    MLFLOW_TRACKING_TOKEN, or Basic auth with the token as MLFLOW_TRACKING_PASSWORD.
    Example: mlvc token create --scope write --name ci
    """


def _tokens():
    from ..server.auth import TokenStore

    return TokenStore(open_repo().ctx.layout)


@token.command("create")
@click.option(
    "--scope", type=click.Choice(["read", "write", "admin"]), default="read", show_default=True
)
@click.option("--name", default="", help="Who or what uses it (shown in the audit log).")
@json_option("the token")
def token_create(scope: str, name: str) -> None:
    """Create a token and print it as the last line (it is shown only this once).

    Example: export MLFLOW_TRACKING_TOKEN=$(mlvc token create --scope write | tail -1)
    """
    record, secret = _tokens().create(scope, name)

    def text(_):
        echo(f"created {record.scope} token {record.name!r} (id {record.id}); it is shown once:")
        echo(secret)

    emit({**record.public(), "token": secret}, text)


@token.command("list")
@json_option("the tokens")
def token_list() -> None:
    """List tokens (never their secrets).

    Example: mlvc token list --json
    """
    import time

    rows = [t.public() for t in _tokens().list()]

    def text(rows):
        if not rows:
            echo("no tokens; create one: mlvc token create --scope write --name NAME")
        for r in rows:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"]))
            state = "revoked" if r["revoked"] else "active"
            echo(f"{r['id']}  {r['scope']:<5}  {state:<7}  {when}  {r['name']}")

    emit(rows, text)


@token.command("revoke")
@click.argument("token_id")
def token_revoke(token_id: str) -> None:
    """Revoke a token by its id (or its name, when only one token has it).

    Example: mlvc token revoke f0ab20876902
    """
    record = _tokens().revoke(token_id)
    echo(f"revoked token {record.id} ({record.name})")


@click.command("ui")
@click.option(
    "--port", default=0, type=click.IntRange(0, 65535), help="Port (default: a free one)."
)
@click.option("--no-browser", is_flag=True, help="Print the address; do not open a browser.")
def ui(port: int, no_browser: bool) -> None:
    """Open the web UI of this repository: runs, run pages, models (docs/ui.md).

    Serves on 127.0.0.1 with a token made for this process only (it stops working when
    the process ends) and prints the address that logs you in. If `mlvc server` already
    serves the repository, use that server's web UI instead. Needs the server extra.

    \b
    Example:
      mlvc ui --port 8080 --no-browser
    """
    from ..server.app import require_extra
    from ..server.ui.launch import serve_ui

    require_extra()
    serve_ui(open_repo().root, port=port, browser=not no_browser, echo=echo)


COMMANDS = (server, token, ui)
