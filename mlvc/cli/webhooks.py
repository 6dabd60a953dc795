"""Webhooks: ``mlvc webhook add|list|remove|enable|test|deliveries|redeliver``.

A thin shell over ``mlvc.events.webhooks`` (endpoints), ``mlvc.events.deliver`` (sending) and
``mlvc.events.outbox`` (the delivery log) (docs/events.md).
"""

from __future__ import annotations

import click

from ..render.text import aligned, clean, echo
from ._common import emit, json_option, open_repo


@click.group()
def webhook() -> None:
    """Webhooks: events POSTed to URLs, signed (Standard Webhooks), delivered by a
    detached process from a durable outbox, retried for about 27 hours.

    \b
    Example:
      mlvc webhook add https://hooks.example.com/mlvc --events 'run.*'
      mlvc webhook deliveries
    """


@webhook.command("add")
@click.argument("url")
@click.option(
    "--events",
    "events",
    multiple=True,
    metavar="PATTERN",
    help="Event types to send, globs allowed (run.*); repeatable. Default: every event.",
)
@click.option(
    "--secret-env",
    metavar="VAR",
    help="The environment variable holding the whsec_ secret (its name is stored, never "
    "the secret). Default: mlvc generates a secret, stores it in a 0600 file under "
    ".mlvc/webhooks/secrets/ and prints it once.",
)
@click.option(
    "--allow-private",
    is_flag=True,
    help="Allow http:// and private, loopback or link-local addresses (development, tests).",
)
@click.option(
    "--format",
    "format_",
    type=click.Choice(["standard", "mlflow", "slack"]),
    default="standard",
    show_default=True,
    help="Body: mlvc's event, MLflow's webhook payload and X-MLflow-* headers, or Slack text.",
)
@click.option(
    "--max-failures",
    type=int,
    default=8,
    show_default=True,
    help="Disable the endpoint after this many failed deliveries in a row.",
)
@json_option("the new endpoint")
def webhook_add(
    url: str,
    events: tuple[str, ...],
    secret_env: str | None,
    allow_private: bool,
    format_: str,
    max_failures: int,
) -> None:
    """Send events to URL (https, public addresses only, unless --allow-private).

    Example: mlvc webhook add https://hooks.slack.com/services/T0/B0/XYZ --format slack --events 'run.failed'
    """
    from ..events import webhooks

    added = webhooks.add(
        open_repo().layout, url, events, secret_env, allow_private, format_, max_failures
    )
    emit(added, _echo_added)


def _echo_added(added) -> None:
    e = added.endpoint
    echo(f"webhook {e.id}: {clean(e.url)} ({e.format}; events: {', '.join(e.events) or 'all'})")
    if added.secret:
        echo(f"secret (shown once, kept in {added.secret_file}): {added.secret}")
    else:
        echo(f"secret: from the environment variable {e.secret_env}")


@webhook.command("list")
@json_option("the endpoints")
def webhook_list() -> None:
    """List the webhook endpoints and their state.

    Example: mlvc webhook list
    """
    from ..events import webhooks

    found = [e.to_dict() for e in webhooks.load(open_repo().layout)]
    emit(found, _echo_list)


def _state(e: dict) -> str:
    if e["disabled"]:
        return "disabled"
    return f"failing ({e['streak']})" if e["streak"] else "ok"


def _echo_list(rows: list[dict]) -> None:
    if not rows:
        echo("no webhooks; add one with `mlvc webhook add URL`")
        return
    table = [
        [e["id"], e["url"], ",".join(e["events"]) or "*", e["format"], e["secret"], _state(e)]
        for e in rows
    ]
    echo(aligned(["id", "url", "events", "format", "secret", "state"], table))


@webhook.command("remove")
@click.argument("endpoint_id", metavar="ID")
def webhook_remove(endpoint_id: str) -> None:
    """Remove the endpoint ID, its generated secret and its undelivered messages.

    Example: mlvc webhook remove wh_0123abcd
    """
    from ..events import webhooks

    e = webhooks.remove(open_repo().layout, endpoint_id)
    echo(f"removed webhook {e.id} ({clean(e.url)})")


@webhook.command("enable")
@click.argument("endpoint_id", metavar="ID")
def webhook_enable(endpoint_id: str) -> None:
    """Enable the endpoint ID again after it was disabled; its held messages go out.

    Example: mlvc webhook enable wh_0123abcd
    """
    from ..events import deliver

    e = deliver.enable(open_repo().layout, endpoint_id)
    echo(f"webhook {e.id} enabled ({clean(e.url)})")


@webhook.command("test")
@click.argument("endpoint_id", metavar="ID")
@json_option("the attempt")
def webhook_test(endpoint_id: str) -> None:
    """Send a webhook.test event to the endpoint ID now and show the answer.

    Example: mlvc webhook test wh_0123abcd
    """
    from ..errors import MlvcError
    from ..events import deliver

    entry = deliver.send_test(open_repo().layout, endpoint_id)
    emit(entry, _echo_attempt)
    if entry["error"]:
        raise MlvcError(f"webhook {endpoint_id}: the test was not delivered: {entry['error']}")


def _echo_attempt(entry: dict) -> None:
    status = entry["status"] if entry["status"] is not None else "-"
    echo(
        f"{entry['outcome']}: {entry['message']} -> {entry['endpoint']} status {status} "
        f"in {entry['latency_ms']:.0f} ms"
    )


@webhook.command("deliveries")
@click.option("--id", "endpoint_id", metavar="ID", help="Only the endpoint ID.")
@click.option("-n", "--limit", type=int, default=20, show_default=True, help="The last N.")
@json_option("the attempts")
def webhook_deliveries(endpoint_id: str | None, limit: int) -> None:
    """Show the last delivery attempts: status codes, errors, latency.

    Example: mlvc webhook deliveries --id wh_0123abcd -n 50
    """
    from ..events import deliver

    emit(deliver.deliveries(open_repo().layout, endpoint_id, limit), _echo_deliveries)


def _echo_deliveries(rows: list[dict]) -> None:
    if not rows:
        echo("no deliveries yet")
        return
    table = [
        [
            r["at"][:19],
            r["message"],
            r["endpoint"],
            r["type"],
            r.get("attempt", ""),
            r["status"] if r["status"] is not None else "-",
            f"{r['latency_ms']:.0f}",
            r["outcome"],
            r["error"] or "",
        ]
        for r in rows
    ]
    head = ["at", "message", "endpoint", "type", "try", "status", "ms", "outcome", "error"]
    echo(aligned(head, table))


@webhook.command("redeliver")
@click.argument("message_id", metavar="MESSAGE")
def webhook_redeliver(message_id: str) -> None:
    """Send the message MESSAGE again (same webhook-id), from the delivery log.

    Example: mlvc webhook redeliver msg_0005f1a2b3c4d5e6a1b2c3d4e5f60718
    """
    from ..events import deliver

    m = deliver.redeliver(open_repo().layout, message_id)
    echo(f"queued {m.id} ({m.event.type}) for {m.endpoint}")


COMMANDS = [webhook]
