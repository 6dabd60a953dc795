"""One repository's MLflow API inside this process (no HTTP): a request's path and JSON in,
the proto-JSON answer out, through the handlers of mlvc.server.mlflow."""

from __future__ import annotations

import atexit
import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from ..errors import MlvcError, UsageError

_CACHE: dict[Path, Local] = {}
_LOCK = threading.Lock()


def repo_root(uri: str) -> Path:
    """The repository root that an ``mlvc:`` URI names (``mlvc:`` alone: found from the
    current folder, as ``mlvc`` commands find it)."""
    from ..api.repo import find_root

    parsed = urlparse(uri)
    if parsed.scheme != "mlvc":
        raise UsageError(f"not an mlvc tracking URI: {uri!r}; use mlvc: or mlvc:///path/to/repo")
    if parsed.netloc not in ("", "localhost"):
        raise UsageError(
            f"mlvc tracking URIs name a local repository, not host {parsed.netloc!r}: use "
            "mlvc:///path/to/repo (or http://HOST:PORT for an `mlvc server`)"
        )
    path = unquote(parsed.path)
    return find_root(path or None)


def local_for(uri: str) -> Local:
    """The (one per process and repository) Local of ``uri``."""
    root = repo_root(uri).resolve()
    with _LOCK:
        local = _CACHE.get(root)
        if local is None:
            local = _CACHE[root] = Local(root)
            atexit.register(local.close)
        return local


class Query:
    """A query string as the handlers read it (starlette's QueryParams' get/getlist)."""

    def __init__(self, params: dict | None):
        self._items: dict[str, list[str]] = {}
        for key, value in (params or {}).items():
            values = value if isinstance(value, list) else [value]
            self._items[key] = [_text(v) for v in values if v is not None]

    def get(self, key: str, default: Any = None) -> Any:
        values = self._items.get(key)
        return values[-1] if values else default

    def getlist(self, key: str) -> list[str]:
        return list(self._items.get(key, []))

    def __contains__(self, key: str) -> bool:
        return bool(self._items.get(key))

    def __iter__(self):
        return iter([k for k, v in self._items.items() if v])


def _text(value: Any) -> str:
    return str(value)  # as requests sends a query (True -> "True")


def _pattern(template: str) -> re.Pattern:
    out = ""
    for part in re.split(r"(\{[^}]+\})", template):
        if part.startswith("{"):
            name, _, kind = part[1:-1].partition(":")
            out += f"(?P<{name}>.+)" if kind == "path" else f"(?P<{name}>[^/]+)"
        else:
            out += re.escape(part)
    return re.compile(out + "$")


class Local:
    """The MLflow API of the repository at ``root``, answered in this process."""

    def __init__(self, root: Path):
        from ..server.app import Options, ServerState
        from ..server.auth import Principal
        from ..server.mlflow import PREFIXES, TRACKING, logged_models, registry, tracking
        from ..server.mlflow.store import TrackingStore

        self.root = root
        self.state = ServerState(root, Options())
        self.runs = TrackingStore(self.state, owned=True)
        self.state.extras["mlflow.runs"] = self.runs
        self.state.on_shutdown.append(self.runs.shutdown)
        self.runs.attach = self._attach
        logged_models.install(self.state)
        registry.setup(self.state)
        self.principal = Principal(self.state.ctx.settings.who(), "admin")
        table = [(p, getattr(tracking, n), [m]) for m, p, n, _s in TRACKING]
        table += [(p, h, ms) for p, h, _s, ms in logged_models.TABLE + registry.TABLE]
        self.routes = [
            (method, _pattern(prefix + path), handler)
            for prefix in PREFIXES[:1]
            for path, handler, methods in table
            for method in methods
        ]
        self._closed = False

    def call(self, path: str, method: str, body: dict | None) -> dict:
        """Answer ``method path`` with ``body`` (the query for GET); raises ``ApiError`` or
        ``MlvcError`` as the server would answer them."""
        from ..server.app import ApiError, Call

        handler, found = self._route(method, path)
        if handler is None:
            raise ApiError(404, "ENDPOINT_NOT_FOUND", f"{method} {path} is not served by mlvc")
        query = Query(body if method == "GET" else None)
        call = Call(method, path, found.groupdict(), query,
                    None if method == "GET" else (body or {}), self.principal, self.state,
                    {})  # fmt: skip
        result = handler(call)
        if hasattr(result, "status_code"):  # a Response some handlers build themselves
            import json

            return json.loads(bytes(result.body) or b"{}")
        return result

    def _attach(self, name: str, tags: dict):
        """In a command `mlvc run` started: the run it records, for the first MLflow run."""
        from ..api.fluent import attach_staged

        return attach_staged(self.state.repo, name, None, tags)

    def _route(self, method: str, path: str):
        for m, pattern, handler in self.routes:
            found = pattern.match(path) if m == method else None
            if found is not None:
                return handler, found
        return None, None

    def close(self) -> None:
        """Make the open runs' points durable (the process is ending)."""
        if not self._closed:
            self._closed = True
            self.state.shutdown()


def error_json(e: BaseException) -> dict | None:
    """``{"error_code", "message"}`` for an error the server answers with; None for others."""
    from ..server.app import CODES, ApiError

    if isinstance(e, ApiError):
        return {"error_code": e.code, "message": e.message}
    if isinstance(e, MlvcError):
        return {"error_code": CODES.get(e.http_status, "INTERNAL_ERROR"), "message": e.message}
    return None


def artifact_uri_out(value: Any) -> Any:
    """Answers with ``mlflow-artifacts:`` URIs (the server's artifact proxy) name the same
    files as ``mlvc-artifacts:`` (this process) instead."""
    if isinstance(value, dict):
        return {k: artifact_uri_out(v) for k, v in value.items()}
    if isinstance(value, list):
        return [artifact_uri_out(v) for v in value]
    if isinstance(value, str) and value.startswith("mlflow-artifacts:"):
        return "mlvc-artifacts:" + value[len("mlflow-artifacts:") :]
    return value
