"""Webhook endpoints: where events are POSTed, which ones, in what format, with what secret.

The endpoints live in ``.mlvc/webhooks/endpoints.json`` (Layout), written whole under a flock
(temp file, fsync, rename), together with each endpoint's delivery state (its failure streak,
when it may be tried again, whether it is disabled). Secrets are never written there: an
endpoint either names the environment variable holding its ``whsec_`` secret
(``secret_env``), or mlvc generated one and keeps it in ``.mlvc/webhooks/secrets/<id>``
(mode 0600), shown once when the endpoint is added. A Slack incoming-webhook URL is a secret
itself (whoever has it can post): a ``slack`` endpoint's URL is kept in
``secrets/<id>.url`` (0600) and ``endpoints.json`` (so ``mlvc webhook list``, events and logs)
holds it redacted (``https://hooks.slack.com/services/…``). The file lets the detached deliverer
sign without the secret being in the environment of every process that emits an event;
the variable suits a secret managed elsewhere (a vault, CI).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import secrets
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..core.durable import replace_file
from ..core.events import Event, type_matches
from ..core.layout import Layout
from ..errors import UnknownWebhook, UsageError
from .addresses import check_url

FORMATS = ("standard", "mlflow", "slack")
DEFAULT_MAX_FAILURES = 8  # with BACKOFF's spacing: about 27 hours of straight failures
_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ID = re.compile(r"wh_[0-9a-f]{8}")


@dataclass(frozen=True)
class Endpoint:
    """One webhook endpoint and its delivery state."""

    id: str
    url: str
    events: tuple[str, ...] = ()  # type globs; empty: every event
    format: str = "standard"
    secret_env: str | None = None  # None: the generated secret in secrets/<id>
    allow_private: bool = False
    max_failures: int = DEFAULT_MAX_FAILURES
    created: float = 0.0
    url_file: bool = False  # True: ``url`` is redacted, the URL itself is in secrets/<id>.url
    # delivery state, kept by the deliverer
    streak: int = 0  # attempts failed in a row
    retry_at: float = 0.0  # no attempt before this time (backing off)
    disabled: str | None = None  # why, once disabled

    def wants(self, kind: str) -> bool:
        return self.disabled is None and type_matches(kind, self.events or None)

    def wants_event(self, event: Event) -> bool:
        """Whether to deliver ``event`` here: enabled, of a wanted type, and made after the
        endpoint was added (an endpoint never gets the events from before it existed)."""
        return self.wants(event.type) and event.time_us >= self.created * 1e6

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["events"] = list(self.events)
        d["secret"] = f"env:{self.secret_env}" if self.secret_env else "file"
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Endpoint:
        names = set(cls.__dataclass_fields__)
        d = {k: v for k, v in d.items() if k in names}
        return cls(**{**d, "events": tuple(d.get("events") or ())})


def new_secret() -> str:
    """A fresh Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (its base64 part decoded); UsageError if it is
    not one."""
    body = secret.strip().removeprefix("whsec_")
    try:
        key = base64.b64decode(body, validate=True)
    except ValueError:
        key = b""
    if not secret.startswith("whsec_") or len(key) < 24:
        raise UsageError(
            "a webhook secret is 'whsec_' followed by the base64 of at least 24 random bytes; "
            "make one with `mlvc webhook add URL` (without --secret-env) or "
            "`python -c \"import base64,os;print('whsec_'+base64.b64encode(os.urandom(32)).decode())\"`"
        )
    return key


# -- the file -------------------------------------------------------------------------------


def write_atomic(
    layout: Layout, path: Path, data: bytes, mode: int = 0o644, sync: bool = True
) -> None:
    """Write ``path`` whole or not at all: temp file (``mode``), fsync, rename, folder fsync
    (``sync=False``: no fsyncs, the caller syncs the filesystem next)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    layout.tmp.mkdir(parents=True, exist_ok=True)
    replace_file(path, data, tmp_dir=layout.tmp, tmp_prefix=f"{path.name}-", mode=mode, sync=sync)


@contextmanager
def _locked(layout: Layout):
    layout.webhooks.mkdir(parents=True, exist_ok=True)
    with open(layout.webhooks_lock, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def load(layout: Layout) -> list[Endpoint]:
    """The configured endpoints (none if the file is absent)."""
    from .consumers import damaged, endpoint_dicts

    try:
        return [Endpoint.from_dict(d) for d in endpoint_dicts(layout)]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise damaged(layout, e) from None


def _save(layout: Layout, endpoints: list[Endpoint]) -> None:
    body = {"endpoints": [asdict(e) for e in endpoints]}
    write_atomic(layout, layout.webhook_endpoints, json.dumps(body, indent=1).encode())


def update(layout: Layout, change: Callable[[list[Endpoint]], list[Endpoint]]) -> list[Endpoint]:
    """Apply ``change`` to the endpoints under the lock and save the result."""
    with _locked(layout):
        out = change(load(layout))
        _save(layout, out)
        return out


def get(layout: Layout, endpoint_id: str) -> Endpoint:
    for e in load(layout):
        if e.id == endpoint_id:
            return e
    known = ", ".join(e.id for e in load(layout)) or "none; add one with `mlvc webhook add URL`"
    raise UnknownWebhook(f"no webhook {endpoint_id!r} (webhooks: {known})")


def set_state(layout: Layout, endpoint_id: str, **state: Any) -> Endpoint | None:
    """Change the delivery state of one endpoint; None if it was removed meanwhile."""
    found: list[Endpoint] = []

    def change(eps: list[Endpoint]) -> list[Endpoint]:
        out = []
        for e in eps:
            if e.id == endpoint_id:
                e = replace(e, **state)
                found.append(e)
            out.append(e)
        return out

    update(layout, change)
    return found[0] if found else None


# -- operations -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Added:
    endpoint: Endpoint
    secret: str | None  # the generated secret, shown once; None with --secret-env
    secret_file: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.endpoint.to_dict(),
            "new_secret": self.secret,
            "secret_file": self.secret_file,
        }


def add(
    layout: Layout,
    url: str,
    events: Iterable[str] = (),
    secret_env: str | None = None,
    allow_private: bool = False,
    format: str = "standard",
    max_failures: int = DEFAULT_MAX_FAILURES,
    environ: dict | None = None,
    resolve: Callable | None = None,
) -> Added:
    """Add an endpoint; refuses a URL that is not https or names a private address unless
    ``allow_private``, an unknown format, a bad event pattern, and a ``secret_env`` whose
    variable is unset or not a ``whsec_`` secret."""
    import time

    check_url(url, allow_private, resolve)
    if format not in FORMATS:
        raise UsageError(f"unknown webhook format {format!r}; use one of {', '.join(FORMATS)}")
    patterns = tuple(events)
    for p in patterns:
        if not p or not re.fullmatch(r"[a-z0-9_.*?\[\]]+", p):
            raise UsageError(f"invalid event pattern {p!r}; use a type or a glob such as run.*")
    if max_failures < 1:
        raise UsageError("--max-failures must be at least 1")
    if secret_env is not None:
        if not _ENV.fullmatch(secret_env):
            raise UsageError(f"invalid environment variable name {secret_env!r}")
        value = (os.environ if environ is None else environ).get(secret_env)
        if value is None:
            raise UsageError(
                f"the environment variable {secret_env} is not set; set it to a whsec_ secret "
                "(or leave out --secret-env and mlvc generates one)"
            )
        secret_key(value)
    endpoint = Endpoint(
        id="wh_" + secrets.token_hex(4),
        url=url,
        events=patterns,
        format=format,
        secret_env=secret_env,
        allow_private=allow_private,
        max_failures=max_failures,
        created=time.time(),
    )
    if format == "slack":  # the URL is the credential: kept like a secret, shown redacted
        write_atomic(layout, url_path(layout, endpoint.id), url.encode(), mode=0o600)
        endpoint = replace(endpoint, url=redact(url), url_file=True)
    secret = None
    if secret_env is None:
        secret = new_secret()
        write_atomic(layout, secret_path(layout, endpoint.id), secret.encode(), mode=0o600)
    update(layout, lambda eps: [*eps, endpoint])
    path = None if secret is None else str(secret_path(layout, endpoint.id))
    return Added(endpoint, secret, path)


def remove(layout: Layout, endpoint_id: str) -> Endpoint:
    """Remove an endpoint, its generated secret and its pending deliveries."""
    from .outbox import drop_endpoint

    gone = get(layout, endpoint_id)
    update(layout, lambda eps: [e for e in eps if e.id != endpoint_id])
    secret_path(layout, endpoint_id).unlink(missing_ok=True)
    url_path(layout, endpoint_id).unlink(missing_ok=True)
    drop_endpoint(layout, endpoint_id)
    return gone


def enable(layout: Layout, endpoint_id: str) -> Endpoint:
    """Enable a disabled endpoint again, with a fresh failure streak."""
    get(layout, endpoint_id)
    found = set_state(layout, endpoint_id, disabled=None, streak=0, retry_at=0.0)
    if found is None:
        raise UnknownWebhook(f"no webhook {endpoint_id!r}")
    return found


def secret_path(layout: Layout, endpoint_id: str) -> Path:
    if not _ID.fullmatch(endpoint_id):
        raise UnknownWebhook(f"invalid webhook id {endpoint_id!r} (ids look like wh_0123abcd)")
    return layout.webhook_secrets / endpoint_id


def url_path(layout: Layout, endpoint_id: str) -> Path:
    return secret_path(layout, endpoint_id).with_name(f"{endpoint_id}.url")


def redact(url: str) -> str:
    """``url`` with its path past the first segment and its query hidden:
    ``https://hooks.slack.com/services/…``."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    first = parts.path.lstrip("/").split("/", 1)[0]
    return (
        f"{parts.scheme}://{parts.netloc}/{first}/…"
        if first
        else f"{parts.scheme}://{parts.netloc}/…"
    )


def url_of(layout: Layout, endpoint: Endpoint) -> str:
    """Where to POST: the URL itself (read from its 0600 file for a ``url_file`` endpoint);
    UsageError if that file is gone."""
    if not endpoint.url_file:
        return endpoint.url
    return _private(url_path(layout, endpoint.id), endpoint, "the file {} holding its URL")


def secret_of(layout: Layout, endpoint: Endpoint, environ: dict | None = None) -> str:
    """The endpoint's ``whsec_`` secret; UsageError naming what is missing."""
    if endpoint.secret_env:
        value = (os.environ if environ is None else environ).get(endpoint.secret_env)
        if value is None:
            raise UsageError(
                f"webhook {endpoint.id}: the environment variable {endpoint.secret_env} holding "
                "its secret is not set in the delivering process"
            )
        secret_key(value)
        return value.strip()
    return _private(secret_path(layout, endpoint.id), endpoint, "its secret file {}")


def _private(path: Path, endpoint: Endpoint, what: str) -> str:
    """The content of one of an endpoint's 0600 files; UsageError naming it if it is gone."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise UsageError(
            f"webhook {endpoint.id}: {what.format(path)} is gone; remove the webhook and add "
            "it again"
        ) from None
