"""The web UI's page paths, its static files and its browser sessions."""

from __future__ import annotations

import gzip
import hashlib
import html
import json
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from ..app import endpoint, error_response, json_response
from ..auth import SESSION_COOKIE, SESSION_SECONDS

STATIC = Path(__file__).parent / "static"
PAGES = ("/", "/runs/{id}", "/compare", "/models", "/models/{name}", "/events", "/login")
# the app's own pages: only its files run; data: and blob: images for previews and charts
APP_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": APP_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}
LONG_CACHE = "public, max-age=31536000, immutable"
LOGIN_BODY = 4096  # bytes: {"token": "mlvc_..."} is under 100
# paths whose clients read JSON (and never get the HTML "not found" page)
API_PREFIXES = ("/api/", "/ajax-api/", "/health", "/ui/static/")
NOT_FOUND = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Not found · mlvc</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{static}/app.css">
</head>
<body>
<header id="top"><a class="brand" href="/">mlvc</a></header>
<main id="app">
<h1>Not found</h1>
<p>There is no page at <code>{path}</code>.</p>
<p><a href="/">Go to the runs table</a> · <a href="/models">models</a> · \
<a href="/events">events</a></p>
</main>
</body>
</html>
"""


@dataclass(frozen=True)
class Asset:
    body: bytes
    gz: bytes
    media_type: str
    etag: str


def load_assets(root: Path = STATIC) -> tuple[str, dict[str, Asset]]:
    """Every file under ``static/`` by its relative path, and a hash of them all (the
    version in their long-cached URLs, so a changed file is a new URL)."""
    assets: dict[str, Asset] = {}
    whole = hashlib.blake2b(digest_size=8)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        media = TYPES.get(path.suffix)
        if media is None or rel.startswith("."):
            continue
        body = path.read_bytes()
        digest = hashlib.blake2b(body, digest_size=8).hexdigest()
        whole.update(rel.encode() + b"\0" + digest.encode())
        assets[rel] = Asset(body, gzip.compress(body, 9, mtime=0), media, f'"{digest}"')
    return whole.hexdigest(), assets


def _asset_response(request, asset: Asset, cache: str):
    from starlette.responses import Response

    headers = {**SECURITY_HEADERS, "Cache-Control": cache, "ETag": asset.etag,
               "Vary": "Accept-Encoding"}  # fmt: skip
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    body = asset.body
    if "gzip" in request.headers.get("accept-encoding", ""):
        body, headers["Content-Encoding"] = asset.gz, "gzip"
    return Response(body, media_type=asset.media_type, headers=headers)


def _without_token(request) -> str:
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
    path = request.url.path
    return path + ("?" + urllib.parse.urlencode(query) if query else "")


def _cookie(response, request, value: str, max_age: int) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def not_found_page(request, state):
    """The UI's HTML "not found" page for a browser asking for a page path that does not
    exist (a GET accepting text/html outside the API's paths), else None: API clients,
    and anything not a browser's page load, get JSON."""
    from starlette.responses import Response

    prefix = state.extras.get("ui_static")
    path = request.url.path
    if (
        prefix is None
        or request.method not in ("GET", "HEAD")
        or path.startswith(API_PREFIXES)
        or "text/html" not in request.headers.get("accept", "")
    ):
        return None
    body = NOT_FOUND.format(static=prefix, path=html.escape(path[:500]))
    return Response(
        body,
        status_code=404,
        media_type="text/html; charset=utf-8",
        headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"},
    )


def routes(state) -> list:
    from starlette.responses import RedirectResponse, Response
    from starlette.routing import Route

    version, assets = load_assets()
    prefix = f"/ui/static/{version}"
    state.extras["ui_static"] = prefix  # for not_found_page
    index = assets["index.html"].body.replace(b"{{static}}", prefix.encode())

    async def page(request):
        secret = request.query_params.get("token")
        if secret is not None:  # trade it for a session, and take it out of the address
            principal = state.verify(secret)
            if principal is None:
                target = "/login?" + urllib.parse.urlencode(
                    {"next": _without_token(request), "error": "that token is not valid"}
                )
                return RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)
            response = RedirectResponse(
                _without_token(request), status_code=303, headers=SECURITY_HEADERS
            )
            _cookie(response, request, state.sessions.open(principal), SESSION_SECONDS)
            return response
        return Response(
            index,
            media_type="text/html; charset=utf-8",
            headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"},
        )

    async def static(request):
        rel = request.path_params["path"]
        cache = "no-cache"
        if rel.startswith(version + "/"):
            rel, cache = rel[len(version) + 1 :], LONG_CACHE
        asset = assets.get(rel)
        if asset is None or rel == "index.html":
            return error_response(404, "ENDPOINT_NOT_FOUND", f"no file {rel[:200]!r} in the UI")
        return _asset_response(request, asset, cache)

    def whoami(call):
        p = call.principal
        return {"name": p.name, "scope": p.scope, "anonymous": p.name == "anonymous",
                "version": version}  # fmt: skip

    async def login(request):
        from ..app import _from_ui

        if not _from_ui(request):
            return error_response(403, "PERMISSION_DENIED", "log in from the web UI's form")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > LOGIN_BODY:
                return error_response(413, "REQUEST_LIMIT_EXCEEDED", "the body is too large")
        try:
            secret = json.loads(data).get("token")
        except (ValueError, AttributeError, UnicodeDecodeError, RecursionError):
            secret = None
        if not isinstance(secret, str) or len(secret) > 200:
            return error_response(400, "INVALID_PARAMETER_VALUE", "token: missing")
        principal = state.verify(secret.strip())
        if principal is None:
            return error_response(401, "UNAUTHENTICATED", "that token is not valid")
        response = json_response(200, {"name": principal.name, "scope": principal.scope})
        _cookie(response, request, state.sessions.open(principal), SESSION_SECONDS)
        return response

    async def logout(request):
        state.sessions.close(request.cookies.get(SESSION_COOKIE))
        response = json_response(200, {"status": "logged out"})
        _cookie(response, request, "", 0)
        return response

    return [
        Route("/api/v1/ui/session", endpoint(state, whoami, "read"), methods=["GET"]),
        Route("/api/v1/ui/session", login, methods=["POST"]),
        Route("/api/v1/ui/session", logout, methods=["DELETE"]),
        Route("/ui/static/{path:path}", static, methods=["GET"]),
        *(Route(p, page, methods=["GET"]) for p in PAGES),
    ]
