"""The webhook deliverer: a detached process that reads new events from the journal, sends
them, then exits.

A commit (any ``emit``) only makes sure a deliverer runs (mlvc.events.consumers.wake: a
non-blocking flock of ``.mlvc/webhooks/deliver.lock``, which a deliverer holds for its whole
life, handed over as an open descriptor as the index worker's is). The deliverer reads the
event journal from its own durable cursor and puts each new event in the outbox for every
endpoint that wants it (mlvc.events.intake), then POSTs due messages, each connecting to an
address checked just before (mlvc.events.addresses), and logs every attempt. A failure puts
the whole endpoint on hold for a backoff (``BACKOFF``, with ±20% jitter) so a receiver that
is down is not hammered; ``max_failures`` failures in a row (about 27 hours with the
defaults) disable it, with a ``webhook.disabled`` event. While retries are pending the
deliverer sleeps; with nothing left to send it lingers a moment (a burst of events needs one
process) and exits. Killed, it loses nothing: the messages stay in the outbox and unread
events in the journal for the next one, which the next event (or ``mlvc webhook
enable|redeliver``) starts.

Usage (internal): ``python -m mlvc.events.deliver PROJECT_ROOT LOCK_FD``
"""

from __future__ import annotations

import fcntl
import functools
import http.client
import os
import random
import socket
import ssl
import sys
import time
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from ..core.events import Event, iso_utc
from ..core.layout import Layout
from ..errors import UsageError
from . import outbox, payloads, webhooks
from .addresses import check_url
from .consumers import WAKE_MAX, wake_path

# seconds on hold after the 1st, 2nd... straight failure: the Standard Webhooks reference
# schedule (Svix); after the last, the last again
BACKOFF = (5, 300, 1800, 7200, 18000, 36000, 36000)
TIMEOUT = 10.0  # seconds for one attempt
LINGER = 2.0  # seconds with nothing to send before exiting
POLL = 0.05  # seconds between looks at the outbox and journal while lingering or waiting
RESCAN = 1.0  # seconds: the journal is read again this often even without a poke
WORKERS = 4  # endpoints sent to at once (one slow receiver does not hold up the others)


@dataclass(frozen=True)
class Tuning:
    """What tests and benchmarks may change (from the deliverer's environment)."""

    backoff_scale: float = 1.0
    timeout: float = TIMEOUT
    linger: float = LINGER

    @classmethod
    def from_env(cls, environ: Any) -> Tuning:
        def num(name: str, default: float) -> float:
            try:
                return max(0.0, float(environ.get(name, default)))
            except ValueError:
                return default

        return cls(
            num("MLVC_WEBHOOK_BACKOFF_SCALE", 1.0),
            num("MLVC_WEBHOOK_TIMEOUT", TIMEOUT),
            num("MLVC_WEBHOOK_LINGER", LINGER),
        )


def backoff(streak: int, scale: float = 1.0) -> float:
    """Seconds an endpoint waits after its ``streak``-th straight failure (jittered)."""
    base = BACKOFF[min(streak, len(BACKOFF)) - 1]
    return base * scale * random.uniform(0.8, 1.2)


# -- one request ----------------------------------------------------------------------------


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per deliverer (loading the CA store takes tens of ms)."""
    return ssl.create_default_context()


class _Pinned(http.client.HTTPConnection):
    """An HTTP(S) connection to ``host`` that connects to the checked ``addresses`` only
    (TLS still verifies the certificate for ``host``)."""

    def __init__(self, host: str, port: int, addresses: list, tls: bool, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._addresses, self._tls = addresses, tls

    def connect(self) -> None:
        error: OSError | None = None
        for address in self._addresses:  # each one checked; never re-resolved
            try:
                sock = socket.create_connection((address, self.port), self.timeout)
                break
            except OSError as e:
                error = e
        else:
            raise error or OSError("no address to connect to")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls:
            sock = _tls_context().wrap_socket(sock, server_hostname=self.host)
        self.sock = sock


def post(
    url: str, body: bytes, headers: dict, allow_private: bool, timeout: float
) -> tuple[int | None, str | None]:
    """POST ``body`` to ``url`` after checking where it resolves to; (status, error)."""
    try:
        addresses = check_url(url, allow_private)
    except UsageError as e:
        return None, str(e)
    parts = urlsplit(url)
    scheme, host, port = parts.scheme, parts.hostname or "", parts.port
    port = port or (443 if scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn = _Pinned(host, port, addresses, scheme == "https", timeout)
    try:
        conn.request("POST", target, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read(1 << 16)
        if 200 <= resp.status < 300:
            return resp.status, None
        return resp.status, f"HTTP {resp.status} {resp.reason}".strip()
    except (OSError, http.client.HTTPException) as e:
        return None, f"{type(e).__name__}: {e}".strip()
    finally:
        conn.close()


def attempt(
    layout: Layout, endpoint: webhooks.Endpoint, msg_id: str, event: Event, timeout: float
) -> dict[str, Any]:
    """Send one message once; the delivery-log entry (without the outcome)."""
    start = time.time()
    try:
        secret = webhooks.secret_of(layout, endpoint)
        url = webhooks.url_of(layout, endpoint)
    except UsageError as e:
        status, error = None, str(e)
    else:
        body = payloads.body(event, endpoint.format)
        heads = payloads.headers(secret, msg_id, int(start), body, endpoint.format)
        status, error = post(url, body, heads, endpoint.allow_private, timeout)
    return {
        "at": iso_utc(int(start * 1e6)),
        "message": msg_id,
        "endpoint": endpoint.id,
        "event": event.id,
        "type": event.type,
        "status": status,
        "error": error,
        "latency_ms": round((time.time() - start) * 1000, 1),
    }


def send_test(layout: Layout, endpoint_id: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    """Send a ``webhook.test`` event to one endpoint now (even a disabled one) and log it."""
    endpoint = webhooks.get(layout, endpoint_id)
    event = Event.new("webhook.test", {"endpoint": endpoint.id, "url": endpoint.url})
    msg_id = outbox.message_id(event.id, endpoint.id)
    entry = attempt(layout, endpoint, msg_id, event, timeout)
    entry.update(attempt=1, test=True, outcome="delivered" if entry["error"] is None else "failed")
    outbox.record(layout, entry)
    return entry


# -- the loop -------------------------------------------------------------------------------


def _failed(layout: Layout, ep: webhooks.Endpoint, tuning: Tuning, error: str):
    """Count a failed attempt: put the endpoint on hold for its backoff (from now, after
    the attempt), or disable it after ``max_failures`` in a row."""
    streak = ep.streak + 1
    if streak >= ep.max_failures:
        why = f"{streak} deliveries failed in a row, the last: {error}"
        new = webhooks.set_state(layout, ep.id, streak=streak, disabled=why)
        _emit_disabled(layout, ep, why)
        return new, "disabled"
    wait = backoff(streak, tuning.backoff_scale)
    retry_at = time.time() + wait
    return webhooks.set_state(layout, ep.id, streak=streak, retry_at=retry_at), "retrying"


def _emit_disabled(layout: Layout, ep: webhooks.Endpoint, why: str) -> None:
    from types import SimpleNamespace

    from ..core.settings import Settings
    from . import emit

    ctx = SimpleNamespace(layout=layout, settings=Settings.from_env())
    emit(ctx, "webhook.disabled", {"endpoint": ep.id, "url": ep.url, "reason": why})


def deliver_due(layout: Layout, tuning: Tuning, pool=None) -> float | None:
    """Attempt the messages of every endpoint not on hold (endpoints in parallel on
    ``pool``, each one's messages in order); when the next is due (None: none waits)."""
    endpoints = {e.id: e for e in webhooks.load(layout)}
    queues: dict[str, list[outbox.Message]] = {}
    waits: list[float] = []
    now = time.time()
    for message in outbox.pending(layout):
        ep = endpoints.get(message.endpoint)
        if ep is None:
            outbox.done(layout, message.id)  # its endpoint was removed
        elif ep.disabled is not None:
            continue  # held until `mlvc webhook enable`
        elif ep.retry_at > now:
            waits.append(ep.retry_at)
        else:
            queues.setdefault(ep.id, []).append(message)

    def drain(key: str) -> float | None:
        return _drain(layout, endpoints[key], queues[key], tuning)

    keys = sorted(queues)
    results = pool.map(drain, keys) if pool is not None and len(keys) > 1 else map(drain, keys)
    waits += [due for due in results if due is not None]
    return min(waits, default=None)


def _drain(
    layout: Layout, ep: webhooks.Endpoint, messages: list[outbox.Message], tuning: Tuning
) -> float | None:
    """Send one endpoint's due messages in order until one fails; when to try again (None:
    all were sent, or the endpoint is now disabled)."""
    for message in messages:
        message = replace(message, attempts=message.attempts + 1)
        entry = attempt(layout, ep, message.id, message.event, tuning.timeout)
        entry["attempt"] = message.attempts
        if entry["error"] is None:
            outbox.done(layout, message.id)
            entry["outcome"] = "delivered"
            outbox.record(layout, entry)
            if ep.streak or ep.retry_at:
                ep = webhooks.set_state(layout, ep.id, streak=0, retry_at=0.0) or ep
            continue
        outbox.failed(layout, message)
        changed, entry["outcome"] = _failed(layout, ep, tuning, entry["error"])
        outbox.record(layout, entry)
        ep = changed or ep
        return None if ep.disabled is not None else ep.retry_at
    return None


def _stamp(layout: Layout) -> tuple:
    """What changes when a message, an endpoint or the journal does: the outbox's names
    (message files' mtimes are not compared: a rewrite within one clock tick would hide),
    the endpoints file's size and mtime, and the wake file's size (an emitter appends a byte
    once its event is durable: mlvc.events.consumers.poke). Not the journal folder: an
    event's file appears before its emitter's sync, which reading then would slow down;
    ``run`` reads the journal every RESCAN seconds anyway."""
    try:
        names = tuple(sorted(os.listdir(layout.outbox)))
    except FileNotFoundError:
        names = ()
    wake = _stat(wake_path(layout))
    if wake is not None and wake[1] > WAKE_MAX:
        os.truncate(wake_path(layout), 0)  # a poke meanwhile still changes the size
    return names, _stat(layout.webhook_endpoints), wake


def _stat(path) -> tuple | None:
    try:
        st = path.stat()
        return st.st_mtime_ns, st.st_size, st.st_ino
    except FileNotFoundError:
        return None


def run(layout: Layout, fd: int, tuning: Tuning) -> None:
    """Deliver until nothing is left to send for ``tuning.linger`` seconds. The journal and
    the outbox are read again only when they or the endpoints changed, a backoff ended, or
    RESCAN seconds passed."""
    from concurrent.futures import ThreadPoolExecutor

    from .intake import Intake

    intake = Intake.open(layout)
    seen: tuple | None = None
    next_due: float | None = None
    idle_since: float | None = None
    read_at = 0.0
    with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="deliver") as pool:
        while True:
            stamp = _stamp(layout)
            now = time.time()
            due = next_due is not None and now >= next_due
            if stamp != seen or due or now - read_at >= RESCAN:
                seen, read_at = stamp, now
                taken = intake.take()
                next_due = deliver_due(layout, tuning, pool)
                if taken or stamp != _stamp(layout):
                    idle_since = None
                    continue  # until a look finds nothing new
            if next_due is not None:  # a backoff runs: wait for it (or for news)
                idle_since = None
                time.sleep(POLL)
                continue
            idle_since = idle_since or now
            if now - idle_since < tuning.linger:
                time.sleep(POLL)
                continue
            # exit; but an event emitted while we held the lock saw it held and started none
            fcntl.flock(fd, fcntl.LOCK_UN)
            if not intake.pending() and (not outbox.has_pending(layout) or _all_held(layout)):
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # a new deliverer took over
            idle_since, seen = None, None


def _all_held(layout: Layout) -> bool:
    live = {e.id for e in webhooks.load(layout) if e.disabled is None}
    return not any(m.endpoint in live for m in outbox.pending(layout))


def enable(layout: Layout, endpoint_id: str) -> webhooks.Endpoint:
    """Enable a disabled endpoint, and start a deliverer for its held messages."""
    endpoint = webhooks.enable(layout, endpoint_id)
    ensure_running(layout)
    return endpoint


def redeliver(layout: Layout, msg_id: str) -> outbox.Message:
    """Put a logged message back in the outbox (same ``webhook-id``) and start a deliverer."""
    webhooks_known = {e.id for e in webhooks.load(layout)}
    message = outbox.requeue(layout, msg_id, time.time())
    if message.endpoint not in webhooks_known:
        outbox.done(layout, message.id)
        raise UsageError(f"the webhook {message.endpoint} of {msg_id} was removed")
    ensure_running(layout)
    return message


def deliveries(
    layout: Layout, endpoint_id: str | None = None, limit: int = 20
) -> list[dict[str, Any]]:
    """The last ``limit`` logged attempts (of one endpoint), oldest first. UsageError for a
    limit below 1, and for an endpoint that neither exists nor ever had an attempt (a
    removed one's attempts are still shown): a typo is not "no deliveries yet"."""
    if limit < 1:
        raise UsageError(f"--limit {limit}: show at least 1 delivery")
    found = outbox.attempts(layout, endpoint_id, limit=limit)
    if endpoint_id is not None and not found:
        webhooks.get(layout, endpoint_id)  # UnknownWebhook names the ones there are
    return found


def ensure_running(layout: Layout) -> bool:
    """Start a deliverer unless one runs (its lock is held); True if one was started."""
    from .consumers import ensure_running as ensure

    return ensure(layout)


def main(root: str, fd: int) -> int:
    layout = Layout.of(root)
    try:
        os.ftruncate(fd, 0)  # who holds the lock, for people (and tests) to see
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        run(layout, fd, Tuning.from_env(os.environ))
        return 0
    except Exception:
        from ..core.crashlog import append_log

        append_log(layout.deliver_log)
        return 1
    finally:
        os.close(fd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
