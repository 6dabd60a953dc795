"""uvicorn's HTTP protocol (httptools) with the limits a server facing the network needs and
uvicorn lacks: a request's head (request line and headers) must arrive within
``header_timeout`` seconds and ``max_header_bytes`` bytes, or the connection is answered 408
or 431 and closed. Without it, a client that sends half a header holds its connection open
forever (slow loris). Limits come from the environment (``Limits.from_env``), read once per
process, since uvicorn builds protocols itself, in each worker process.
"""

from __future__ import annotations

import asyncio
import functools

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .limits import Limits

# answered in the API's error shape, so a client (or a fuzzer) reads it like any other refusal
_CLOSING = (
    b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
    b"connection: close\r\n\r\n%s"
)
_CODES = {408: b"TEMPORARILY_UNAVAILABLE", 431: b"REQUEST_LIMIT_EXCEEDED"}


@functools.cache
def _limits() -> Limits:
    return Limits.from_env()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Arms a timer when a connection opens and when a new request begins; the request's
    headers completing disarms it."""

    _head_timer: asyncio.TimerHandle | None = None
    _head_bytes = 0

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        idle = self.cycle is None or self.cycle.response_complete
        if self._head_timer is None and idle and not self.transport.is_closing():
            self._arm()  # bytes of a request whose head is still to come (keep-alive's next)
        waiting = self._head_timer is not None
        if waiting:  # counted before httptools parses it: a head over the limit never reaches it
            end = data.find(b"\r\n\r\n")
            if self._head_bytes + (len(data) if end < 0 else end + 4) > _limits().max_header_bytes:
                self._refuse(431, b"Request Header Fields Too Large")
                return
        super().data_received(data)
        if waiting and self._head_timer is not None:  # the head is not complete yet
            self._head_bytes += len(data)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def _arm(self) -> None:
        self._disarm()
        self._head_bytes = 0
        self._head_timer = self.loop.call_later(
            _limits().header_timeout, self._refuse, 408, b"Request Timeout"
        )

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(self, status: int, reason: bytes) -> None:
        self._disarm()
        if not self.transport.is_closing():
            body = b'{"error_code": "%s", "message": "%s"}' % (_CODES[status], reason)
            self.transport.write(_CLOSING % (status, reason, len(body), body))
            self.transport.close()
