"""The deliverer's intake: new events read from the journal, matched to the endpoints, and
put in the outbox (mlvc.events.outbox), on the deliverer's side, never the committer's.

The event is already durable in the journal when its change is (a commit writes it inside
its refs batch, one filesystem sync). The deliverer keeps its own durable cursor in
``.mlvc/webhooks/deliver.cursor``: ``{"cursor": <id>, "seen": [<ids>]}``, every event id
after ``cursor`` that it has already matched. Writers take an event's id a little before
they rename its file in, so another process's event may land with an id older than one
already read: the cursor trails the newest event read by ``LATE_WINDOW_US`` (5 s, as
``mlvc events --follow``) and ``seen`` holds the ids read inside that window, each matched
once.

One ``take`` fsyncs the journal entries it read (their emitter's own sync may still be
running: a receiver never hears of a change a power loss could undo), writes the new
messages and fsyncs them, then writes the cursor durably, before any message is sent. A
deliverer killed before the cursor is written matches the same events again (same message
ids, nothing was sent yet); killed after, it never matches them again: an event is sent twice
only when a send was not acknowledged (at-least-once).

Which endpoints get an event: the enabled ones whose type patterns match it, added before
the event was made (``Endpoint.wants_event``). An endpoint never gets the events from before
it existed, and a disabled endpoint keeps only what it held when it was disabled.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field

from ..core.durable import fsync_dir
from ..core.events import LATE_WINDOW_US, event_ids, event_path, id_at, id_time_us, load
from ..core.layout import Layout
from . import outbox, webhooks

log = logging.getLogger("mlvc.events")
CURSOR = "deliver.cursor"


def cursor_path(layout: Layout):
    return layout.webhooks / CURSOR


@dataclass
class Intake:
    """The journal read from a durable cursor (one per running deliverer)."""

    layout: Layout
    cursor: str | None = None
    seen: set[str] = field(default_factory=set)

    @classmethod
    def open(cls, layout: Layout) -> Intake:
        """The cursor as the last deliverer left it. Without one (a first deliverer, a
        damaged file, or a repository whose emitters filled the outbox themselves, before
        this intake existed), reading starts after the newest event already in the outbox
        or the delivery log, else from the oldest endpoint's creation (nothing older is
        wanted anyway): nothing delivered is sent again."""
        intake = cls(layout)
        try:
            saved = json.loads(cursor_path(layout).read_bytes())
            cursor, seen = saved["cursor"], saved["seen"]
            if not (isinstance(cursor, str) and cursor.startswith("evt_")):
                raise ValueError(f"bad cursor {cursor!r}")
            intake.cursor, intake.seen = cursor, {s for s in seen if isinstance(s, str)}
            return intake
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("the webhook cursor %s is damaged (%s); reading after the last event "
                        "delivered", cursor_path(layout), e)  # fmt: skip
        intake.cursor = _last_handled(layout)
        return intake

    def _floor(self, endpoints: list[webhooks.Endpoint]) -> str:
        """Where reading starts: the cursor, but never before the oldest endpoint's creation
        (less the late window: an event made just before may land after)."""
        oldest = min((e.created for e in endpoints), default=time.time())
        start = id_at(max(0, int(oldest * 1e6) - LATE_WINDOW_US))
        return max(self.cursor, start) if self.cursor else start

    def unread(self, endpoints: list[webhooks.Endpoint] | None = None) -> list[str]:
        """Ids of the journal's events not matched yet (read-only)."""
        endpoints = webhooks.load(self.layout) if endpoints is None else endpoints
        return [i for i in event_ids(self.layout, self._floor(endpoints)) if i not in self.seen]

    def pending(self) -> bool:
        """Whether an unread event is wanted by an endpoint (read-only: a deliverer about
        to exit asks this after letting go of its lock)."""
        endpoints = webhooks.load(self.layout)
        for event in self._events(self.unread(endpoints)):
            if any(e.wants_event(event) for e in endpoints):
                return True
        return False

    def take(self) -> int:
        """Match every unread event to the endpoints, put the messages in the outbox and
        advance the cursor, durably (one filesystem sync); how many messages."""
        endpoints = webhooks.load(self.layout)
        ids = self.unread(endpoints)
        if not ids:
            return 0
        now = time.time()
        written = []
        for event in self._events(ids):
            for endpoint in endpoints:
                if endpoint.wants_event(event):
                    message = outbox.enqueue(self.layout, endpoint, event, now, sync=False)
                    written.append(outbox.path_of(self.layout, message.id))
        # durable before any is sent: the events read (their emitter's sync may still be
        # running), the messages, then the cursor that says they exist
        _fsync_all([event_path(self.layout, i) for i in ids], self.layout.events)
        _fsync_all(written, self.layout.outbox)
        self._advance(ids)
        return len(written)

    def _events(self, ids: list[str]):
        for eid in ids:
            try:
                yield load(self.layout, eid)
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as e:  # fsck reports it; never retried
                log.warning("skipping the damaged event %s: %s", eid, e)

    def _advance(self, ids: list[str]) -> None:
        """Mark ``ids`` read; the cursor trails the newest read by the late window."""
        self.seen.update(ids)
        newest = max(id_time_us(i) for i in self.seen)
        floor = id_at(max(0, newest - LATE_WINDOW_US))
        self.cursor = max(self.cursor, floor) if self.cursor else floor
        self.seen = {i for i in self.seen if i > self.cursor}
        body = json.dumps({"cursor": self.cursor, "seen": sorted(self.seen)}).encode()
        webhooks.write_atomic(self.layout, cursor_path(self.layout), body)


def _last_handled(layout: Layout) -> str | None:
    """The newest event id in the outbox or the delivery log (test messages aside): every
    event up to it was matched by whoever put it there."""
    ids = [m.event.id for m in outbox.pending(layout)]
    ids += [a["event"] for a in outbox.attempts(layout) if not a.get("test")]
    return max((i for i in ids if isinstance(i, str) and i.startswith("evt_")), default=None)


def _fsync_all(paths: list, folder) -> None:
    """fsync each file of ``paths`` (one already on disk costs little) and ``folder``.
    Files and folder only, not ``syncfs``: on a shared disk that would also flush every other
    process's writes, and slow the commits running meanwhile."""
    if not paths:
        return
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fsync_dir(folder)
