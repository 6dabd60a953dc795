"""``mlvc events``: the event journal, listed or followed."""

from __future__ import annotations

import click

from ..render.text import clean, echo
from ._common import json_option, open_repo, wants_json


@click.command()
@click.option(
    "--since",
    metavar="T",
    help="Only events at or after T: an ISO time (2026-12-01T09:00:00Z) or 10m, 2h, 1d ago.",
)
@click.option(
    "-t",
    "--type",
    "types",
    multiple=True,
    metavar="PATTERN",
    help="Only event types matching this glob (run.*, alert.fired); repeatable.",
)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events as they come.")
@json_option("each event (one per line)")
def events(since: str | None, types: tuple[str, ...], follow: bool) -> None:
    """List the repository's events in time order (runs started and ended, commits, models,
    alerts...); with --follow, wait for new ones (Ctrl-C stops).

    Example: mlvc events --since 1h --type 'run.*' --type 'alert.*' --follow
    """
    repo = open_repo()
    as_json = wants_json()
    try:
        for event in repo.events(since=since, types=list(types), follow=follow):
            if as_json:
                click.echo(event.to_json())
            else:
                echo(_line(event))
    except KeyboardInterrupt:
        raise click.exceptions.Exit(0 if follow else 130) from None  # following ends so


def _line(event) -> str:
    data = event.data
    about = data.get("name") or data.get("ref") or ""
    # the run it is about: recorded (a verdict's is the original), else live (its key)
    rid = data.get("run_id") or data.get("original")
    bits = [event.timestamp, f"{event.type:<28}"]
    if rid:
        bits.append(str(rid)[:12])
    elif data.get("live_key"):
        bits.append(clean(str(data["live_key"])))
    if about:
        bits.append(clean(str(about)))
    rest = {k: v for k, v in data.items() if k in _SHOWN}
    bits += [f"{k}={clean(str(v))}" for k, v in rest.items()]
    return "  ".join(bits).rstrip()


_SHOWN = ("status", "version", "alias", "verdict", "rule", "metric", "value", "step", "new")

COMMANDS = [events]
