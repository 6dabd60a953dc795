"""The seam between emitting an event and reacting to it.

``emit`` calls ``wake(ctx, event)`` once the event is durable in the journal. Reacting
belongs here: starting the ``.mlvc/hooks/<event type>`` hook (detached, mlvc.events.hooks),
and making sure the webhook deliverer runs when webhooks are configured
(mlvc.events.deliver). Rules for what goes here: no network I/O and nothing slow in the
caller's process (spawn a detached worker instead), and nothing that raises for a consumer's
own failure (``emit`` logs one as a warning anyway).

The webhook side writes nothing durable: the deliverer reads the event journal from its own
durable cursor and keeps its outbox itself. What a commit pays for a webhook is a stat of
``endpoints.json``, an ``open`` and a non-blocking flock of ``deliver.lock``, and, when a
deliverer holds it, one byte appended (no fsync) to ``.mlvc/webhooks/wake`` to wake it; only
when none does, a read of ``endpoints.json`` (does any endpoint want this event?) and a
process start. This module imports only what that needs (no http, ssl or the
deliverer itself).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from typing import TYPE_CHECKING

from ..core.events import type_matches

if TYPE_CHECKING:
    from ..core.events import Event
    from ..core.layout import Layout
    from ..workspace.context import RepoContext

log = logging.getLogger("mlvc.events")
DELIVERER = "mlvc.events.deliver"


def wake(ctx: RepoContext, event: Event) -> None:
    """React to ``event``, just written to the journal: its hook, then its webhooks."""
    from . import hooks

    layout = ctx.layout
    environ = getattr(getattr(ctx, "settings", None), "environ", None) or None
    try:
        hooks.run_post(layout, event, environ)
    except Exception as e:  # one consumer's failure does not stop the next
        log.warning("the hook of %s (%s) failed to start: %s", event.type, event.id, e)
    if layout.webhook_endpoints.exists():
        ensure_running(layout, event)


def ensure_running(layout: Layout, event: Event | None = None) -> bool:
    """Start a deliverer unless one runs (its lock is held); True if one was started.

    With ``event``: start one only if some enabled endpoint wants that event (a running
    deliverer reads it from the journal anyway). Never blocks: a deliverer about to exit
    looks at the journal once more after letting go of its lock, so either it sees the
    event or this sees the lock free.
    """
    from ..core.spawn import spawn_detached

    try:
        fd = os.open(layout.deliver_lock, os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:
        layout.webhooks.mkdir(parents=True, exist_ok=True)
        fd = os.open(layout.deliver_lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            poke(layout)  # one runs: tell it to read the journal now
            return False
        if event is not None and not wanted(layout, event):
            return False
        return spawn_detached(DELIVERER, [str(layout.root), str(fd)], pass_fds=(fd,))
    finally:
        os.close(fd)  # the child holds the lock through its own copy


WAKE = "wake"  # .mlvc/webhooks/wake: a byte appended per event for a running deliverer
WAKE_MAX = 4096  # bytes; the deliverer empties it past this


def wake_path(layout: Layout):
    return layout.webhooks / WAKE


def poke(layout: Layout) -> None:
    """Tell a running deliverer that an event is durable: one byte appended to the wake file
    (no fsync; the deliverer watches its size). It reads the journal when poked, not when
    an event's file appears, so its I/O does not run during the emitter's own sync."""
    try:
        fd = os.open(wake_path(layout), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError:
        return  # it reads the journal every second anyway
    try:
        os.write(fd, b".")
    except OSError:
        pass
    finally:
        os.close(fd)


def wanted(layout: Layout, event: Event) -> bool:
    """Whether an enabled endpoint created before ``event`` wants it (endpoints.json read
    as plain JSON: importing the endpoint module costs more than this check). UsageError if
    the file is damaged."""
    us = event.time_us
    try:
        return any(
            e.get("disabled") is None
            and us >= float(e.get("created") or 0) * 1e6
            and type_matches(event.type, e.get("events") or None)
            for e in endpoint_dicts(layout)
        )
    except (ValueError, TypeError, AttributeError) as e:
        raise damaged(layout, e) from None


def endpoint_dicts(layout: Layout) -> list[dict]:
    """The raw endpoint records of ``endpoints.json`` (none if it is absent)."""
    try:
        raw = layout.webhook_endpoints.read_bytes()
    except FileNotFoundError:
        return []
    try:
        found = json.loads(raw)["endpoints"]
        if not isinstance(found, list):
            raise TypeError("'endpoints' is not a list")
        return found
    except (ValueError, KeyError, TypeError) as e:
        raise damaged(layout, e) from None


def damaged(layout: Layout, e: Exception):
    from ..errors import UsageError

    return UsageError(
        f"{layout.webhook_endpoints} is damaged ({e}); remove it and add the webhooks again"
    )
