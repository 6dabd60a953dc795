"""``GET /api/v1/events``: the event journal as a server-sent-events stream (read scope).

Each event is one SSE message: ``id:`` the event id (so a browser's ``EventSource``
reconnects with ``Last-Event-ID`` and resumes after it), ``event:`` its type, ``data:`` its
JSON (``{"id", "type", "timestamp", "data"}``, as webhooks send it). A comment line
(``: keep-alive``) goes out every ``keepalive`` seconds so proxies keep the connection open.
Arguments: ``after`` (an event id; ``Last-Event-ID`` wins), ``types`` (comma-separated globs,
``run.*,model_version.*``) or ``type`` (one glob, repeatable), ``follow`` (false: send what is there and end), ``timeout``
(seconds before the server ends the stream; a client reconnects with its last id).

Events renamed into the journal late by a slower writer (their id older than one already
sent, by up to LATE_WINDOW_US) are still sent, each once, within one connection.
"""

from __future__ import annotations

import json
import re
import time

from ...core.events import LATE_WINDOW_US, Event, id_at, read_events
from ...errors import MlvcError
from ..app import ApiError, error_response
from ._common import bad, bool_arg, int_arg, text_arg

_ID = re.compile(r"evt_[0-9a-f]{24}")
_GLOB = re.compile(r"[a-z0-9_.*?\[\]]{1,200}")
POLL = 0.2  # seconds between looks at the journal


def frame(event: Event) -> bytes:
    """One SSE message (the data is one line: compact JSON has no newline)."""
    data = event.to_json()
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n".encode()


class Cursor:
    """Where a stream is in the journal: what it sent, looking back for late writers."""

    def __init__(self, after: str | None, types: list[str] | None):
        self.after, self.types = after, types
        self.look = after
        self.sent: dict[str, int] = {}

    def next_batch(self, layout) -> list[Event]:
        out = [e for e in read_events(layout, self.look, self.types) if e.id not in self.sent]
        for e in out:
            self.sent[e.id] = e.time_us
        if self.sent:
            floor = max(self.sent.values()) - LATE_WINDOW_US
            look = id_at(floor)
            self.look = look if self.after is None or look > self.after else self.after
            self.sent = {k: v for k, v in self.sent.items() if v >= floor}
        return out


def _arguments(request) -> tuple[str | None, list[str] | None, bool, int, int]:
    q = request.query_params
    after = request.headers.get("last-event-id") or text_arg(q, "after", required=False)
    if after is not None and not _ID.fullmatch(after):
        raise bad(f"after: {after[:40]!r} is not an event id (evt_ and 24 hex digits)")
    types_text = text_arg(q, "types", required=False)
    types = None
    # ``type`` (repeatable) as ``mlvc events --type`` has it: once ignored, it streamed all
    texts = [("types", types_text)] if types_text is not None else []
    texts += [("type", t) for t in q.getlist("type")]
    if texts:
        types = []
        for name, text in texts:
            if len(text) > 1000 or not text.strip():
                raise bad(f"{name}: empty or too long")
            types += [t.strip() for t in text.split(",") if t.strip()]
            for t in types:
                if not _GLOB.fullmatch(t):
                    raise bad(f"{name}: {t[:40]!r} is not an event type or glob (run.*)")
    follow = bool_arg(q, "follow", True)
    keepalive = int_arg(q, "keepalive", 15, 1, 3600)
    timeout = int_arg(q, "timeout", 3600, 0, 86400)
    return after, types or None, follow, keepalive, timeout


async def stream(request, principal):
    """The SSE response (a raw endpoint: it streams)."""
    import anyio
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import StreamingResponse

    state = request.app.state.mlvc
    try:
        after, types, follow, keepalive, timeout = _arguments(request)
    except ApiError as e:
        return error_response(e.status, e.code, e.message)
    layout = state.ctx.layout
    cursor = Cursor(after, types)

    async def body():
        start = last = time.monotonic()
        yield f"retry: 1000\n: mlvc events after {after or 'the start'}\n\n".encode()
        while True:
            try:
                batch = await run_in_threadpool(cursor.next_batch, layout)
            except (OSError, MlvcError) as e:
                yield f": error reading the journal: {json.dumps(str(e))}\n\n".encode()
                return
            for event in batch:
                yield frame(event)
                last = time.monotonic()
            now = time.monotonic()
            if not follow or now - start >= timeout or state.closing.is_set():
                return
            if now - last >= keepalive:
                yield b": keep-alive\n\n"
                last = now
            await anyio.sleep(POLL)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


def routes(state) -> list:
    from starlette.routing import Route

    from ..app import endpoint

    return [Route("/api/v1/events", endpoint(state, stream, "read", raw=True), methods=["GET"])]
