"""``mlvc server``: the team server (Starlette on uvicorn: ``pip install 'mlvc[server]'``).

One process serves the repository it was started in, and is the single writer of its index
(it ingests in-process, so a request never waits on a detached worker). Route modules each
export ``routes(state) -> list[Route]``, built with ``endpoint``:

    mlvc.server.mlflow      MLflow's tracking REST API under /api/2.0/mlflow and /ajax-api/
    mlvc.server.v1          mlvc's own API under /api/v1 (OpenAPI at /api/v1/openapi.json)
    mlvc.server.ui          the web UI: its pages, /ui/static/ and /api/v1/ui (docs/ui.md)

``endpoint(handler, scope)`` is where every request is authenticated (mlvc.server.auth),
checked against the scope its route needs, read (JSON bodies up to ``max_json_body``, 413
above), handed to ``handler`` in a worker thread, and audited when it writes. A handler gets
a ``Call`` and returns a JSON-able dict or a Starlette Response; it raises ``ApiError`` (or
any ``MlvcError``, answered with the class's ``http_status``) for a failure. ``GET /health``
answers 200 without credentials.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import MissingExtra, MlvcError
from .auth import (
    ANONYMOUS_READ,
    CSRF_HEADER,
    SESSION_COOKIE,
    AuditLog,
    Principal,
    Sessions,
    TokenStore,
    credentials,
)
from .limits import Limits

log = logging.getLogger("mlvc.server")
KEPT_IDLE = 0.25  # seconds without a read after which the kept index connection is closed


def require_extra() -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise MissingExtra(
            "`mlvc server` needs the server extra: pip install 'mlvc[server]'"
        ) from None


class ApiError(Exception):
    """A failure answered as ``{"error_code": code, "message": message}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


# the MLflow error code an MlvcError's HTTP status maps to (MLflow clients read these)
CODES = {
    400: "INVALID_PARAMETER_VALUE",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    409: "RESOURCE_ALREADY_EXISTS",
    413: "REQUEST_LIMIT_EXCEEDED",
    422: "INVALID_STATE",
    429: "REQUEST_LIMIT_EXCEEDED",
    503: "TEMPORARILY_UNAVAILABLE",
}


@dataclass
class Options:
    """How the server runs (from `mlvc server`'s options and the environment)."""

    allow_anonymous_read: bool = False
    lease_seconds: float = 300.0  # a REST run with no request for this long becomes killed
    limits: Limits = field(default_factory=Limits)
    # `mlvc ui`: a token made for this process only (never stored), with write scope
    session_token: str | None = None


class ServerState:
    """What every handler shares: the repository, tokens, the audit log, the options, and a
    place for each route module's own state (``extras``)."""

    def __init__(self, root: str | Path, options: Options | None = None):
        from ..api.repo import Repo

        self.repo = Repo(root)
        self.ctx = self.repo.ctx
        self.options = options or Options()
        self.tokens = TokenStore(self.ctx.layout)
        self.audit = AuditLog(self.ctx.layout)
        self.sessions = Sessions(self.tokens)
        self.extras: dict[str, Any] = {}
        self.lock = threading.RLock()
        self.on_shutdown: list[Callable[[], None]] = []
        self.closing = threading.Event()  # set on SIGTERM/SIGINT: streams end, then drain
        # reads use cursors of one kept DuckDB connection instead of opening the index each
        # time; it is let go after KEPT_IDLE s without a read, so another process's write
        # (a `mlvc commit` here) waits for it at most that long
        self.ctx.index.keep_readers()
        self._stop = threading.Event()
        threading.Thread(target=self._release_idle, daemon=True, name="mlvc-index").start()
        self.on_shutdown.append(self._stop_reads)

    def _release_idle(self) -> None:
        while not self._stop.wait(KEPT_IDLE / 2):
            try:
                self.ctx.index.release_idle(KEPT_IDLE)
            except Exception:  # the next round tries again
                log.exception("could not close the kept index connection")

    def _stop_reads(self) -> None:
        self._stop.set()
        self.ctx.index.release_idle(0.0)

    def authenticate(self, header: str | None) -> Principal | None:
        secret = credentials(header)
        if secret is None:
            return ANONYMOUS_READ if self.options.allow_anonymous_read else None
        return self.verify(secret)

    def verify(self, secret: str) -> Principal | None:
        """Who a token's secret stands for, or None."""
        own = self.options.session_token
        if own and hmac.compare_digest(own.encode(), secret.encode("utf-8", "surrogatepass")):
            return Principal("mlvc ui", "write")
        token = self.tokens.verify(secret)
        if token is None:
            return None
        return Principal(token.name, token.scope, token.id)

    def identify(self, request) -> tuple[Principal | None, bool]:
        """Who sent ``request``, and whether by the web UI's session cookie: a token in the
        Authorization header comes first; without one, the cookie; without that, anonymous
        when reads are open."""
        header = request.headers.get("authorization")
        if header is None:
            principal = self.sessions.principal(request.cookies.get(SESSION_COOKIE))
            if principal is not None:
                return principal, True
        return self.authenticate(header), False

    def shutdown(self) -> None:
        for hook in reversed(self.on_shutdown):
            try:
                hook()
            except Exception:  # one failing hook must not stop the others saving
                log.exception("shutdown hook failed")


@dataclass
class Call:
    """One request as a handler sees it."""

    method: str
    path: str
    path_params: dict[str, str]
    query: Any  # starlette's multi-valued QueryParams
    body: Any  # parsed JSON (a dict) or None; bytes for an endpoint's ``binary`` type
    principal: Principal
    state: ServerState
    headers: Any


def json_response(status: int, body: Any, headers: dict | None = None):
    from starlette.responses import Response

    return Response(
        json.dumps(body, separators=(",", ":"), allow_nan=True),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def error_response(status: int, code: str, message: str, headers: dict | None = None):
    return json_response(status, {"error_code": code, "message": message}, headers)


def _from_error(e: BaseException):
    if isinstance(e, ApiError):
        return error_response(e.status, e.code, e.message, e.headers)
    if isinstance(e, MlvcError):
        status = e.http_status
        headers = {"Retry-After": "1"} if status == 503 else None
        return error_response(status, CODES.get(status, "INTERNAL_ERROR"), e.message, headers)
    raise e


def endpoint(
    state: ServerState,
    handler: Callable[[Call], Any],
    scope: str,
    raw: bool = False,
    binary: str | None = None,
) -> Callable[[Any], Awaitable[Any]]:
    """A Starlette endpoint around ``handler`` that needs ``scope``.

    ``raw`` handlers are ``async def handler(request, principal)`` and read the body
    themselves (streams: artifacts, objects); the others get a ``Call`` in a worker thread,
    its body parsed JSON, or the body's bytes (up to ``max_body``) when the request's
    Content-Type is the media type ``binary`` (an Arrow stream of metric points).
    """
    from starlette.concurrency import run_in_threadpool

    limit = state.options.limits.max_json_body
    binary_limit = state.options.limits.max_body

    async def run(request):
        principal, by_cookie = state.identify(request)
        if by_cookie and request.method not in ("GET", "HEAD") and not _from_ui(request):
            # a cookie rides along with any request the browser makes, even one another site
            # triggers; a custom header cannot be sent cross-site without CORS, which is off
            return error_response(
                403,
                "PERMISSION_DENIED",
                "a write with the web UI's session cookie needs the header "
                "`X-Requested-With: mlvc-ui` (or send `Authorization: Bearer <token>`)",
            )
        if principal is None:
            return error_response(
                401,
                "UNAUTHENTICATED",
                "missing or bad credentials: send `Authorization: Bearer <token>` "
                "(mlvc token create; MLFLOW_TRACKING_TOKEN for the MLflow client)",
                {"WWW-Authenticate": 'Bearer realm="mlvc"'},
            )
        if not principal.may(scope):
            return error_response(
                403,
                "PERMISSION_DENIED",
                f"this needs a {scope} token; {principal.name!r} has scope {principal.scope}",
            )
        try:
            if raw:
                response = await handler(request, principal)
            else:
                if binary and _media_type(request) == binary:
                    body = bytes(await _read_body(request, binary_limit))
                else:
                    body = await _json_body(request, limit)
                call = Call(
                    request.method,
                    request.url.path,
                    dict(request.path_params),
                    request.query_params,
                    body,
                    principal,
                    state,
                    request.headers,
                )
                result = await run_in_threadpool(handler, call)
                response = result if hasattr(result, "status_code") else json_response(200, result)
        except (ApiError, MlvcError) as e:
            response = _from_error(e)
        if scope != "read":
            state.audit.write(principal, request.method, request.url.path, response.status_code)
        return response

    return run


def _from_ui(request) -> bool:
    return request.headers.get(CSRF_HEADER, "").lower() == "mlvc-ui"


def _media_type(request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def _read_body(request, limit: int) -> bytearray:
    """The request's body; 413 past ``limit`` bytes (declared or read)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "REQUEST_LIMIT_EXCEEDED", f"the body is over {limit} bytes")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise ApiError(413, "REQUEST_LIMIT_EXCEEDED", f"the body is over {limit} bytes")
    return data


async def _json_body(request, limit: int) -> Any:
    if request.method in ("GET", "HEAD", "DELETE") and "content-length" not in request.headers:
        return None
    data = await _read_body(request, limit)
    if not data.strip(b" \t\n\r"):  # JSON's whitespace only: a form feed is no JSON
        return None
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, "MALFORMED_REQUEST", f"the body is not valid JSON: {e}") from None
    except RecursionError:  # json's C parser recurses per level of nesting
        raise ApiError(400, "MALFORMED_REQUEST", "the body is nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiError(400, "MALFORMED_REQUEST", "the body must be a JSON object")
    if _SURROGATE.search(data):  # only then: is one unpaired (no text can hold it)?
        try:
            json.dumps(body, ensure_ascii=False).encode()
        except (UnicodeEncodeError, RecursionError):
            raise ApiError(
                400,
                "MALFORMED_REQUEST",
                "the body holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff alone), "
                "which is not text",
            ) from None
    return body


# a \uD800-\uDFFF escape: a string holding one alone cannot be stored, indexed or encoded
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _allowed(request) -> str:
    """The methods some route serves at the request's path (several routes may share it)."""
    from starlette.routing import Match

    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE and getattr(route, "methods", None):
            methods |= route.methods
    return ", ".join(sorted(methods))


def create_app(root: str | Path, options: Options | None = None):
    """The ASGI app serving the repository at ``root``."""
    require_extra()
    from starlette.applications import Starlette
    from starlette.routing import Route

    from . import mlflow as mlflow_api
    from . import ui, v1
    from .ui.pages import not_found_page

    state = ServerState(root, options)

    async def health(request):
        return json_response(200, {"status": "ok", "version": __version__})

    async def not_found(request, exc):
        page = not_found_page(request, state)  # a browser's page: HTML
        if page is not None:
            return page
        return error_response(
            404, "ENDPOINT_NOT_FOUND", f"no endpoint {request.method} {request.url.path}"
        )

    async def method_not_allowed(request, exc):
        return error_response(
            405,
            "ENDPOINT_NOT_FOUND",
            f"{request.method} is not allowed on {request.url.path}",
            {"Allow": _allowed(request)},  # RFC 9110: a 405 lists the methods served
        )

    async def server_error(request, exc):
        log.error("request %s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(500, "INTERNAL_ERROR", f"the server failed: {type(exc).__name__}")

    routes = [Route("/health", health, methods=["GET"])]
    routes += mlflow_api.routes(state)
    routes += v1.routes(state)
    routes += ui.routes(state)  # last: the web UI's pages never shadow an API path

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        state.shutdown()  # SIGTERM/SIGINT: uvicorn drains requests, then this saves runs

    app = Starlette(
        routes=routes,
        exception_handlers={404: not_found, 405: method_not_allowed, 500: server_error},
        lifespan=lifespan,
    )
    app.state.mlvc = state
    return app


def serve(
    root: str | Path,
    host: str = "127.0.0.1",
    port: int = 5000,
    workers: int = 8,
    options: Options | None = None,
    access_log: bool = False,
    ready: Callable[[], None] | None = None,
) -> None:
    """Serve the repository at ``root`` until SIGTERM or SIGINT; then in-flight requests
    finish and every open run is saved (its lease lets it go on after a restart).

    ``workers`` is the number of request threads: one process is the single writer of the
    index and holds the runs logged over REST in memory, so it scales with threads (the
    work is in DuckDB, Arrow and hashing, which release the GIL), not processes.
    ``ready`` is called once the server accepts connections."""
    require_extra()
    import anyio.to_thread
    import uvicorn

    from .http_guard import GuardedHttpToolsProtocol

    options = options or Options()
    limits = options.limits
    os.environ.update(limits.to_env())  # the header guard reads its limits from here
    app = create_app(root, options)
    _claim(Path(root), f"pid {os.getpid()}, http://{host}:{port}")

    async def _threads() -> None:
        anyio.to_thread.current_default_thread_limiter().total_tokens = workers

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=access_log,
        log_level="warning",
        http=GuardedHttpToolsProtocol,
        timeout_keep_alive=limits.keep_alive,
        timeout_graceful_shutdown=30,
    )
    server = uvicorn.Server(config)
    exit_on_signal = server.handle_exit

    def handle_exit(sig, frame) -> None:
        app.state.mlvc.closing.set()  # open event streams end so the drain is quick
        exit_on_signal(sig, frame)

    server.handle_exit = handle_exit
    print(
        f"mlvc: serving {Path(root).resolve()} on http://{host}:{port} "
        f"({workers} request threads; GET /health)",
        file=sys.stderr,
        flush=True,
    )

    async def main() -> None:
        await _threads()
        if ready is None:
            await server.serve()
            return
        task = asyncio.ensure_future(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        if server.started:
            ready()
        await task

    import asyncio

    asyncio.run(main())


def _claim(root: Path, who: str) -> None:
    """Hold the repository's server lock until this process exits, or refuse to start: two
    servers on one repository would each believe they are its index's single writer."""
    from ..core.layout import Layout
    from ..errors import ServerAlreadyRunning
    from ..store.locks import hold_exclusive

    path = Layout.of(root).server_lock
    if hold_exclusive(path, who) is None:
        try:
            holder = path.read_text().strip() or "another process"
        except OSError:
            holder = "another process"
        raise ServerAlreadyRunning(
            f"another mlvc server ({holder}) already serves {root.resolve()}; stop it first, "
            "or serve a clone of the repository"
        )
