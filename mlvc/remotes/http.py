"""``ServerTransport``: an ``mlvc server`` as a remote (``http(s)://host:port[/prefix]``).

The server exposes the bucket layout every remote has under ``/api/v1/remote/``
(mlvc.server.v1.remote): one listing, files read whole or by range, writes by PUT, and
``refs.json`` by compare-and-swap on its ETag. So push, fetch and clone take the same code
path as for a folder or S3; only this class knows it speaks HTTP. The token (from
``mlvc.remotes.config.token_for``) goes as ``Authorization: Bearer``. One keep-alive
connection is reused; standard library only (http.client), so the CLI starts fast.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import threading
from urllib.parse import quote, urlencode, urlsplit

from ..errors import MissingOnRemote, RemoteError, UsageError

API = "/api/v1/remote"
TIMEOUT = 300.0  # seconds without a byte before a request is given up
BLOCK = 1 << 20


class ServerTransport:
    """The Transport protocol (remotes/transport.py) over an mlvc server's remote API."""

    def __init__(self, url: str, token: str | None = None, name: str | None = None,
                 timeout: float = TIMEOUT):  # fmt: skip
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"{url!r} is not an http(s)://host[:port] URL of an mlvc server")
        self.url = url.rstrip("/")
        self.token = token
        self.name = name
        self.timeout = timeout
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._base = parts.path.rstrip("/") + API
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()  # one connection: one request at a time
        self.last_token: str | None = None  # the version token a successful put_if made
        self.requests = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.parallel_reads = 1  # one keep-alive connection: reads go one at a time

    # -- the protocol ---------------------------------------------------------------------

    def listing(self, prefix: str = "") -> dict[str, int]:
        status, body, _h = self._request("GET", "", query={"prefix": prefix} if prefix else None)
        self._check(status, body, "list the remote")
        try:
            files = json.loads(body)["files"]
            return {str(k): int(v) for k, v in files.items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            raise RemoteError(f"{self.url} answered the listing with something that is not one; "
                              "is it an mlvc server?") from None  # fmt: skip

    def get(self, path: str) -> bytes:
        status, body, _h = self._request("GET", path)
        self._check(status, body, f"read {path}", path)
        return body

    def get_range(self, path: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        headers = {"Range": f"bytes={offset}-{offset + length - 1}"}
        status, body, _h = self._request("GET", path, headers=headers)
        self._check(status, body, f"read {path}", path)
        if status == 200:  # the whole file (a server or proxy that ignores ranges)
            body = body[offset : offset + length]
        if len(body) != length:
            raise RemoteError(f"{self.url}: {path} gave {len(body)} bytes at {offset}, not "
                              f"{length} (cut short; try again)")  # fmt: skip
        return body

    def put(self, path: str, source: str | os.PathLike | bytes) -> None:
        if isinstance(source, bytes | bytearray | memoryview):
            status, body, _h = self._request("PUT", path, body=bytes(source))
        else:
            with open(source, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                status, body, _h = self._request("PUT", path, body=f, size=size)
        self._check(status, body, f"write {path}", path)

    def read_versioned(self, path: str) -> tuple[bytes | None, str | None]:
        status, body, headers = self._request("GET", path)
        if status == 404 and _code(body) == "RESOURCE_DOES_NOT_EXIST":
            return None, None
        self._check(status, body, f"read {path}", path)
        etag = headers.get("etag")
        return body, _unquote(etag) if etag else None

    def put_if(self, path: str, data: bytes, token: str | None) -> bool:
        cas = {"If-None-Match": "*"} if token is None else {"If-Match": f'"{token}"'}
        status, body, headers = self._request("PUT", path, body=bytes(data), headers=cas)
        if status == 412:
            return False
        self._check(status, body, f"write {path}", path)
        etag = headers.get("etag")
        self.last_token = _unquote(etag) if etag else None
        return True

    def delete(self, path: str) -> None:
        """Index files: nothing to do (the server indexes and merges its own packs, and
        keeps no uploaded index). Anything else is refused: the server deletes nothing
        through its remote API (gc runs there)."""
        if path.endswith(".idx"):
            return
        raise RemoteError(f"{self.url} does not delete remote files ({path}): the server "
                          "keeps its own packs and refs; run `mlvc gc` there")  # fmt: skip

    # -- HTTP -----------------------------------------------------------------------------

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self.timeout, blocksize=BLOCK,
                    context=ssl.create_default_context(),
                )  # fmt: skip
            else:
                self._conn = http.client.HTTPConnection(
                    self._host, self._port, timeout=self.timeout, blocksize=BLOCK
                )
        return self._conn

    def _request(self, method: str, path: str, body=None, size: int | None = None,
                 headers: dict | None = None, query: dict | None = None):  # fmt: skip
        """(status, body, lower-cased headers) of one request; a keep-alive connection the
        server closed meanwhile is opened again once."""
        target = self._base + ("/" + quote(path, safe="/") if path else "")
        if query:
            target += "?" + urlencode(query)
        sent = {"Accept": "application/json, application/octet-stream"}
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        if body is not None:
            n = size if size is not None else len(body)
            sent["Content-Length"] = str(n)
            sent["Content-Type"] = "application/octet-stream"
        sent.update(headers or {})
        with self._lock:
            return self._send(method, target, body, sent)

    def _send(self, method: str, target: str, body, sent: dict):
        for attempt in (0, 1):
            reused = self._conn is not None
            conn = self._connect()
            start = body.tell() if hasattr(body, "tell") else None
            try:
                self.requests += 1
                conn.request(method, target, body=body, headers=sent)
                response = conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                self.close()
                if reused and attempt == 0:  # the server dropped an idle connection
                    if start is not None:
                        body.seek(start)
                    continue
                raise self._unreachable(e) from None
            except (OSError, http.client.HTTPException) as e:
                self.close()
                raise self._unreachable(e) from None
            if body is not None:
                self.bytes_out += int(sent["Content-Length"])
            self.bytes_in += len(data)
            if response.getheader("connection", "").lower() == "close":
                self.close()
            return response.status, data, {k.lower(): v for k, v in response.getheaders()}
        raise AssertionError("unreachable")  # pragma: no cover

    def _unreachable(self, e: BaseException) -> RemoteError:
        why = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        if isinstance(e, socket.timeout | TimeoutError):
            why = f"no answer in {self.timeout:g} s"
        if isinstance(e, ssl.SSLError):
            why = f"TLS failed: {e.reason or e}"
        return RemoteError(f"cannot reach the mlvc server at {self.url} ({why}); is `mlvc "
                           "server` running there, and is the URL right?")  # fmt: skip

    def _env_hint(self) -> str:
        var = (self.name or "<name>").upper().replace("-", "_")
        return f"set MLVC_REMOTE_TOKEN_{var} (or MLVC_TRACKING_TOKEN)"

    def _check(self, status: int, body: bytes, what: str, path: str = "") -> None:
        """Nothing for a 2xx; else the RemoteError that says what to do."""
        if 200 <= status < 300:
            return
        message = _message(body)
        where = f"{self.url}"
        if status == 401:
            raise RemoteError(
                f"{where} refused to {what}: no token or a bad one (401); {self._env_hint()} "
                "to a token made by `mlvc token create` on the server"
            )
        if status == 403:
            raise RemoteError(
                f"{where} refused to {what}: the token's scope is too small (403: {message}); "
                "pushing needs a write token (`mlvc token create --scope write` there)"
            )
        if status == 404:
            if _code(body) == "ENDPOINT_NOT_FOUND":
                raise RemoteError(
                    f"{where} has no remote API ({self._base}): is it an mlvc server, and a "
                    "recent one?"
                )
            raise MissingOnRemote(f"{where}: no {path or 'such file'} on the remote ({message})")
        if status == 413:
            raise RemoteError(f"{where} refused to {what}: too big for the server ({message})")
        if status >= 500:
            hint = "it is busy; try again" if status == 503 else "see the server's log"
            raise RemoteError(f"{where} failed to {what} ({status}: {message}); {hint}")
        raise RemoteError(f"{where} refused to {what} ({status}): {message}")


def _code(body: bytes) -> str | None:
    try:
        return json.loads(body).get("error_code")
    except (ValueError, AttributeError):
        return None


def _message(body: bytes) -> str:
    try:
        text = json.loads(body).get("message") or ""
    except (ValueError, AttributeError):
        text = body[:300].decode("utf-8", "replace")
    text = " ".join(str(text).split())
    return text[:500] or "no message"


def _unquote(tag: str) -> str:
    tag = tag.strip()
    if tag.startswith("W/"):
        tag = tag[2:]
    return tag.strip('"')
