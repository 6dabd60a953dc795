"""The seam between emitting an event and reacting to it.

``emit`` calls ``wake(ctx, event)`` once the event is durable in the journal. Reacting
belongs here: starting the ``.mlvc/hooks/<event type>`` hook (detached, mlvc.events.hooks),
and putting the event in the webhook outbox for every endpoint that wants it, then starting
the detached deliverer unless one runs (mlvc.events.deliver). Rules for what goes here: no
network I/O and nothing slow in the caller's process (spawn a detached worker instead), and
nothing that raises for a consumer's own failure (``emit`` logs one as a warning anyway).

The cost in the emitting process: a stat of the hook, a read of ``endpoints.json`` when it
exists, and per matching endpoint one small fsynced file and a non-blocking flock (plus a
process start when no deliverer runs).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.events import Event
    from ..workspace.context import RepoContext

log = logging.getLogger("mlvc.events")


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
        enqueue(ctx, event)


def enqueue(ctx: RepoContext, event: Event) -> int:
    """Put ``event`` in the outbox for each endpoint that wants it and make sure a deliverer
    runs; how many endpoints want it."""
    from . import deliver, outbox, webhooks

    layout = ctx.layout
    wanted = [e for e in webhooks.load(layout) if e.wants(event.type)]
    now = time.time()
    for endpoint in wanted:
        outbox.enqueue(layout, endpoint, event, now)
    if wanted:
        deliver.ensure_running(layout)
    return len(wanted)
