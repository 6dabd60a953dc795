"""The durable outbox of webhook messages, and the log of delivery attempts.

A *message* is one event for one endpoint: ``.mlvc/webhooks/outbox/<message id>.json``
holding the event itself, the endpoint's id and the attempts made so far. The deliverer
writes it (temp file, rename, then one filesystem sync with its journal cursor) when it reads
the event from the journal (mlvc.events.deliver), before its first attempt, and removes it
only once a receiver answered 2xx (or the endpoint was removed), so a deliverer killed
at any instant loses nothing: the next one sends it again under the same ``webhook-id``
(at-least-once). The message id is derived from the event and endpoint ids, so enqueueing
twice is harmless.

Each attempt appends one JSON line to ``.mlvc/webhooks/deliveries.jsonl`` (one ``write`` on
an ``O_APPEND`` descriptor: lines never interleave): when, which message, event and endpoint,
the attempt number, the status code or error, the latency, and the outcome (``delivered``,
``retrying``, ``held``: waiting for a disabled endpoint).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..core.events import Event
from ..core.layout import Layout
from ..errors import UnknownMessage
from .webhooks import Endpoint, write_atomic

log = logging.getLogger("mlvc.events")
SUFFIX = ".json"


def message_id(event_id: str, endpoint_id: str) -> str:
    """``msg_<event id's hex><endpoint id's hex>``: one per (event, endpoint), stable."""
    return f"msg_{event_id.removeprefix('evt_')}{endpoint_id.removeprefix('wh_')}"


@dataclass(frozen=True)
class Message:
    id: str
    endpoint: str
    event: Event
    attempts: int = 0
    created: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "endpoint": self.endpoint,
            "event": self.event.to_dict(),
            "attempts": self.attempts,
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Message:
        return cls(
            d["id"], d["endpoint"], Event.from_dict(d["event"]), int(d["attempts"]), d["created"]
        )


def path_of(layout: Layout, msg_id: str):
    return layout.outbox / f"{msg_id}{SUFFIX}"


def save(layout: Layout, message: Message, sync: bool = True) -> None:
    """Write ``message`` whole (``sync=False``: the caller syncs the filesystem next)."""
    data = json.dumps(message.to_dict()).encode()
    write_atomic(layout, path_of(layout, message.id), data, sync=sync)


def enqueue(
    layout: Layout, endpoint: Endpoint, event: Event, now: float, sync: bool = True
) -> Message:
    """Put ``event`` in the outbox for ``endpoint`` (durably, unless ``sync=False``)."""
    message = Message(message_id(event.id, endpoint.id), endpoint.id, event, 0, now)
    save(layout, message, sync)
    return message


def pending(layout: Layout) -> Iterator[Message]:
    """The messages waiting in the outbox, oldest event first; a damaged file is skipped
    with a warning."""
    try:
        names = sorted(os.listdir(layout.outbox))
    except FileNotFoundError:
        return
    for name in names:
        if not name.endswith(SUFFIX):
            continue
        try:
            yield Message.from_dict(json.loads(path_of(layout, name[: -len(SUFFIX)]).read_bytes()))
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("skipping the damaged outbox file %s: %s", layout.outbox / name, e)


def has_pending(layout: Layout) -> bool:
    try:
        return any(n.endswith(SUFFIX) for n in os.listdir(layout.outbox))
    except FileNotFoundError:
        return False


def done(layout: Layout, msg_id: str) -> None:
    """Remove a delivered message."""
    path_of(layout, msg_id).unlink(missing_ok=True)


def failed(layout: Layout, message: Message) -> None:
    """Keep the attempt count of a message that failed (a message being sent is not
    rewritten first: a deliverer killed mid-attempt only undercounts by one)."""
    if path_of(layout, message.id).exists():  # not removed meanwhile
        save(layout, message)


def drop_endpoint(layout: Layout, endpoint_id: str) -> int:
    """Remove the pending messages of a removed endpoint; how many."""
    n = 0
    for m in pending(layout):
        if m.endpoint == endpoint_id:
            done(layout, m.id)
            n += 1
    return n


# -- the delivery log -----------------------------------------------------------------------


MAX_LOG_BYTES = 16 << 20  # then deliveries.jsonl becomes deliveries.jsonl.1 (one kept)


def record(layout: Layout, entry: dict[str, Any]) -> None:
    """Append one attempt to the delivery log (rotated past MAX_LOG_BYTES)."""
    layout.webhooks.mkdir(parents=True, exist_ok=True)
    try:
        if layout.deliveries.stat().st_size > MAX_LOG_BYTES:
            os.replace(layout.deliveries, layout.deliveries.with_name("deliveries.jsonl.1"))
    except FileNotFoundError:
        pass
    line = (json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n").encode()
    fd = os.open(layout.deliveries, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def attempts(
    layout: Layout,
    endpoint: str | None = None,
    message: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Logged attempts, oldest first (the last ``limit``), of one endpoint or message."""
    try:
        lines = layout.deliveries.read_bytes().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash mid-write
        if endpoint is not None and entry.get("endpoint") != endpoint:
            continue
        if message is not None and entry.get("message") != message:
            continue
        out.append(entry)
    return out[-limit:] if limit else out


def requeue(layout: Layout, msg_id: str, now: float) -> Message:
    """Put a logged message back in the outbox to be sent again (same ``webhook-id``)."""
    from ..core.events import load

    found = attempts(layout, message=msg_id)
    if not found:
        raise UnknownMessage(
            f"no delivery {msg_id!r} in the log; `mlvc webhook deliveries` lists them"
        )
    last = found[-1]
    if last.get("test"):
        raise UnknownMessage(f"{msg_id} was a test message; send another with `mlvc webhook test`")
    try:
        event = load(layout, last["event"])
    except (OSError, ValueError) as e:
        raise UnknownMessage(f"the event {last['event']} of {msg_id} cannot be read: {e}") from None
    message = Message(msg_id, last["endpoint"], event, 0, now)
    save(layout, message)
    return message
