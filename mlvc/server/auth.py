"""Tokens and the audit log of ``mlvc server``: who may read, write or administer.

A token is ``mlvc_`` + 43 url-safe characters (256 random bits). It is shown once, when
created; the repository keeps only its BLAKE3 hash, in ``.mlvc/tokens.json``, rewritten whole
(temp file + rename) under ``.mlvc/tokens.lock``. Checking one hashes what the client sent and
compares with every stored hash in constant time (``hmac.compare_digest``), so a timing
attack learns nothing about which prefix matched.

Scopes are ordered: ``read`` < ``write`` < ``admin``. GET and HEAD need ``read``, anything
that changes the repository ``write``, token management ``admin``. Credentials come as
``Authorization: Bearer <token>`` (what ``MLFLOW_TRACKING_TOKEN`` makes the MLflow client
send) or Basic auth with the token as the password (``MLFLOW_TRACKING_USERNAME/PASSWORD``;
the user name is only noted). Every write is appended to ``.mlvc/logs/audit.log`` as one
JSON line: when, who (the token's name), what (method, path, status).
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from blake3 import blake3

from ..core.layout import Layout
from ..errors import UsageError

SCOPES = ("read", "write", "admin")
PREFIX = "mlvc_"


def scope_rank(scope: str) -> int:
    return SCOPES.index(scope)


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise UsageError(f"unknown scope {scope!r}: use one of {', '.join(SCOPES)}")
    return scope


def _hash(secret: str) -> str:
    return blake3(secret.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Token:
    """A stored token (never its secret): ``id`` is the first 12 hex digits of its hash."""

    id: str
    name: str
    scope: str
    created: float
    hash: str = ""
    revoked: float | None = None

    def public(self) -> dict:
        out = asdict(self)
        del out["hash"]
        return out


@dataclass(frozen=True)
class Principal:
    """Who made a request: a token's name and scope (``anonymous`` without one)."""

    name: str
    scope: str
    token_id: str = ""

    def may(self, scope: str) -> bool:
        return scope_rank(self.scope) >= scope_rank(scope)


ANONYMOUS_READ = Principal("anonymous", "read")


class TokenStore:
    """The tokens of one repository (``.mlvc/tokens.json``)."""

    def __init__(self, layout: Layout):
        self.path = layout.dir / "tokens.json"
        self.lock_path = layout.dir / "tokens.lock"
        self._cache: tuple[float, int, list[Token]] | None = None
        self._mutex = threading.Lock()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def list(self) -> list[Token]:
        """Every token, revoked ones included (re-read when the file changed)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return []
        with self._mutex:
            if self._cache and self._cache[:2] == (st.st_mtime, st.st_size):
                return self._cache[2]
            try:
                rows = json.loads(self.path.read_text("utf-8"))
                tokens = [Token(**row) for row in rows]
            except (ValueError, TypeError) as e:
                raise UsageError(
                    f"{self.path} is damaged ({e}); move it away and create tokens again"
                ) from None
            self._cache = (st.st_mtime, st.st_size, tokens)
            return tokens

    def _write(self, tokens: list[Token]) -> None:
        tmp = self.path.with_name(f".tokens.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump([asdict(t) for t in tokens], f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def create(self, scope: str, name: str = "") -> tuple[Token, str]:
        """A new token: its record and its secret (shown once, never stored)."""
        check_scope(scope)
        name = name.strip() or f"{scope}-token"
        if len(name) > 200 or any(ord(c) < 32 for c in name):
            raise UsageError(f"invalid token name {name[:40]!r}: one line, at most 200 characters")
        secret = PREFIX + secrets.token_urlsafe(32)
        digest = _hash(secret)
        token = Token(id=digest[:12], name=name, scope=scope, created=time.time(), hash=digest)
        with self._locked():
            self._write([*self.list(), token])
        return token, secret

    def revoke(self, ident: str) -> Token:
        """Revoke the token whose id (or unique name) is ``ident``."""
        with self._locked():
            tokens = self.list()
            found = [t for t in tokens if t.revoked is None and ident in (t.id, t.name)]
            if not found:
                raise UsageError(f"no active token {ident!r}; see `mlvc token list`")
            if len(found) > 1:
                raise UsageError(f"{len(found)} tokens are named {ident!r}; revoke one by its id")
            now = time.time()
            out = [
                Token(**{**asdict(t), "revoked": now}) if t.id == found[0].id else t for t in tokens
            ]
            self._write(out)
            return next(t for t in out if t.id == found[0].id)

    def verify(self, secret: str) -> Token | None:
        """The active token whose secret this is, or None (constant time per token)."""
        digest = _hash(secret)
        match = None
        for token in self.list():
            if hmac.compare_digest(token.hash, digest) and token.revoked is None:
                match = token
        return match


def credentials(header: str | None) -> str | None:
    """The token in an Authorization header (Bearer, or Basic with it as the password)."""
    if not header:
        return None
    kind, _, value = header.strip().partition(" ")
    kind = kind.lower()
    value = value.strip()
    if kind == "bearer":
        return value or None
    if kind == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


class AuditLog:
    """One JSON line per write: ``{"at", "who", "token", "method", "path", "status"}``."""

    def __init__(self, layout: Layout):
        self.path: Path = layout.logs / "audit.log"
        self._lock = threading.Lock()

    def write(self, who: Principal, method: str, path: str, status: int) -> None:
        line = json.dumps(
            {
                "at": round(time.time(), 3),
                "who": who.name,
                "token": who.token_id,
                "method": method,
                "path": path[:2000],
                "status": status,
            }
        )
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)


SESSION_COOKIE = "mlvc_session"
SESSION_SECONDS = 12 * 3600
CSRF_HEADER = "x-requested-with"  # the web UI sends `X-Requested-With: mlvc-ui` on writes


class Sessions:
    """Browser sessions of the web UI: a random cookie value standing for a token.

    A page opened with ``?token=`` (or the login form) trades the token for a session; the
    browser then sends only the HttpOnly, SameSite=Strict cookie. Sessions live in the
    server's memory (a restart asks to log in again) for at most ``SESSION_SECONDS``, and
    end when their token is revoked."""

    def __init__(self, tokens: TokenStore):
        self.tokens = tokens
        self._live: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def open(self, principal: Principal) -> str:
        sid = secrets.token_urlsafe(32)
        now = time.time()
        with self._lock:
            self._live = {k: v for k, v in self._live.items() if v[1] > now}  # drop expired
            self._live[sid] = (principal, now + SESSION_SECONDS)
        return sid

    def close(self, sid: str | None) -> None:
        with self._lock:
            self._live.pop(sid or "", None)

    def principal(self, sid: str | None) -> Principal | None:
        """Who holds session ``sid``, or None (unknown, expired, or its token revoked)."""
        if not sid:
            return None
        with self._lock:
            held = self._live.get(sid)
        if held is None or held[1] < time.time():
            return None
        principal = held[0]
        if principal.token_id and not any(
            t.id == principal.token_id and t.revoked is None for t in self.tokens.list()
        ):
            self.close(sid)
            return None
        return principal
