"""Events: the lifecycle tells people when it changes (issue 14).

Terms: an *event* (``run.finished``, ``model_version.created``...) is written with the change
that caused it, journal style, as ``.mlvc/events/<id>.json`` (the format: mlvc.core.events);
*consumers* are what reacts to a new event (hooks, the webhook deliverer:
mlvc.events.consumers); *alerts* are rules over metrics evaluated after points are flushed,
off the training process (mlvc.events.alerts). This layer sits beside the workspace:
recorders above it emit, nothing below imports it (the index reads the journal through
mlvc.core.events).

    emit(ctx, "run.finished", {"run_id": ...})   # after the change is durable
    for event in read_events(ctx, after=cursor, types=["run.*"]): ...
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..core.durable import replace_file
from ..core.events import Event, event_path, follow, is_event_type, type_matches
from ..core.events import read_events as _read_events
from ..core.layout import Layout

if TYPE_CHECKING:
    from ..workspace.context import RepoContext

__all__ = [
    "Event",
    "emit",
    "events",
    "follow_events",
    "publish",
    "read_events",
    "type_matches",
    "write_event",
]

log = logging.getLogger("mlvc.events")


def emit(ctx: RepoContext, type: str, data: dict[str, Any] | None = None) -> Event:
    """Record the event ``type`` with ``data``, after the change it reports is durable.

    Writes ``.mlvc/events/<id>.json`` durably (temp file, fsync, rename, folder fsync), then
    wakes the consumers (mlvc.events.consumers.wake). Inside a refs batch (the refs of a
    commit) the event is written without its own fsyncs and the consumers are woken once the
    batch's one filesystem sync has made refs and event durable together. Never raises for an I/O problem: the
    change already happened, so a failure to record it is a warning, not the caller's error.
    No network I/O happens here. With events off (``MLVC_EVENTS=0``) nothing is written.
    """
    if not is_event_type(type):
        raise ValueError(f"bad event type {type!r}")  # a programming error, not I/O
    return publish(ctx, Event.new(type, data))


def publish(ctx: RepoContext, event: Event) -> Event:
    """``emit`` for an event made beforehand (its id fixed: writing it again is harmless,
    which is how alert state makes a restart neither lose nor repeat an event)."""
    type = event.type
    if not events_enabled(ctx):
        return event
    refs = getattr(ctx, "refs", None)
    batched = bool(getattr(refs, "batching", False))
    try:  # inside a refs batch, the batch's one filesystem sync makes the event durable
        write_event(ctx.layout, event, sync=not batched)
    except (OSError, TypeError, ValueError) as e:  # full disk, or data JSON cannot hold
        log.warning("could not record the event %s (%s): %s", type, event.id, e)
        return event
    if batched:
        refs.after_batch(lambda: _wake(ctx, event))
    else:
        _wake(ctx, event)
    return event


def _wake(ctx: RepoContext, event: Event) -> None:
    try:
        from . import consumers

        consumers.wake(ctx, event)
    except Exception as e:  # a consumer's failure is never the emitter's
        log.warning("an event consumer failed on %s (%s): %s", event.type, event.id, e)


def events_enabled(ctx: Any) -> bool:
    """Events are on unless the settings' environment says ``MLVC_EVENTS=0``/``off``."""
    environ = getattr(getattr(ctx, "settings", None), "environ", None) or {}
    return str(environ.get("MLVC_EVENTS", "1")).lower() not in ("0", "off", "false", "no")


def write_event(layout: Layout, event: Event, sync: bool = True) -> None:
    """Write ``event`` into the journal durably; a reader sees all of it or nothing.
    ``sync=False``: the caller syncs the filesystem next (a refs batch)."""
    layout.events.mkdir(parents=True, exist_ok=True)
    layout.tmp.mkdir(parents=True, exist_ok=True)
    path = event_path(layout, event.id)
    data = event.to_json().encode()
    replace_file(path, data, tmp_dir=layout.tmp, tmp_prefix="event-", sync=sync)


def read_events(
    ctx: RepoContext | Layout, after: str | None = None, types: Iterable[str] | None = None
) -> Iterator[Event]:
    """Events in id order after the cursor ``after``, of the type globs ``types``
    (``["run.*"]``). A damaged event file is skipped with a warning (fsck reports it)."""
    layout = ctx if isinstance(ctx, Layout) else ctx.layout
    return _read_events(layout, after, types)


def follow_events(
    ctx: RepoContext | Layout,
    after: str | None = None,
    types: Iterable[str] | None = None,
    poll: float = 0.2,
    stop=None,
) -> Iterator[Event]:
    """``read_events``, then every new event as it lands (polling), until ``stop()``;
    events renamed in late by a slower writer are delivered too, each once."""
    layout = ctx if isinstance(ctx, Layout) else ctx.layout
    return follow(layout, after, types, poll, stop)


def events(
    ctx: RepoContext | Layout,
    since: str | None = None,
    types: Iterable[str] | None = None,
    follow: bool = False,
    after: str | None = None,
    poll: float = 0.2,
    stop=None,
) -> Iterator[Event]:
    """What ``mlvc events`` and ``Repo.events`` list: events since ``since`` (an ISO time or
    ``10m``/``2h``/``1d`` back from now) or after the id ``after``, of the type globs
    ``types``; with ``follow``, then each new one as it lands until ``stop()``."""
    from ..core.events import id_at, parse_since
    from ..errors import UsageError

    patterns = [t for t in types or () if t] or None
    for p in patterns or ():
        if not re.fullmatch(r"[a-z0-9_.*?\[\]!-]+", p):
            raise UsageError(f"--type {p!r}: a type pattern is a glob such as run.* or alert.fired")
    cursor = after
    if since is not None:
        try:
            start = id_at(parse_since(since))
        except ValueError as e:
            raise UsageError(f"--since {e}") from None
        # the first id of that µs is itself an event's smallest possible id: step back one
        start = start[:-1] + "/"  # '/' sorts before every hex digit
        cursor = max(cursor, start) if cursor else start
    if follow:
        return follow_events(ctx, cursor, patterns, poll, stop)
    return read_events(ctx, cursor, patterns)
