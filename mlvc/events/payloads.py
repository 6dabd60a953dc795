"""What a webhook request carries: the body in the endpoint's format, and its signature.

Every request is signed per the Standard Webhooks spec (standardwebhooks.com):
``webhook-id`` (the same on every retry of one message), ``webhook-timestamp`` (Unix seconds
of the attempt) and ``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">``
keyed by the base64 part of the ``whsec_`` secret.

Formats:

- ``standard``: the event as mlvc writes it, ``{"id", "type", "timestamp", "data"}``.
- ``mlflow``: registry events as MLflow's webhooks send them (mlflow/webhooks/delivery.py,
  ``_send_webhook_request``; payloads in mlflow/webhooks/types.py): a body ``{"entity",
  "action", "timestamp", "data"}`` and the headers ``X-MLflow-Delivery-Id``,
  ``X-MLflow-Timestamp`` and ``X-MLflow-Signature: v1,<base64 HMAC-SHA256 of
  "id.timestamp.body">`` keyed, as MLflow does, by the secret string's UTF-8 bytes. Other
  events keep the same envelope with the type split at its last dot.
- ``slack``: ``{"text": "..."}``, which Slack's incoming webhooks (and Mattermost, Discord's
  ``/slack`` endpoints) post as a message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from ..core.events import Event
from .webhooks import secret_key

_MLFLOW_FIELDS = {
    "registered_model.created": ("name", "tags", "description"),
    "model_version.created": ("name", "version", "source", "run_id", "tags", "description"),
    "model_version_alias.created": ("name", "alias", "version"),
    "model_version_alias.deleted": ("name", "alias"),
}


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one request."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    mac = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def _mlflow_sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    content = f"{msg_id}.{timestamp}.".encode() + body
    mac = hmac.new(secret.encode(), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def _compact(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def mlflow_data(event: Event) -> dict[str, Any]:
    """The MLflow payload of a registry event (MLflow's field names; versions as strings)."""
    d = event.data
    fields = _MLFLOW_FIELDS.get(event.type)
    if fields is None:
        return dict(d)
    out: dict[str, Any] = {}
    for name in fields:
        value = d.get(name)
        if name == "name":
            value = d.get("name", d.get("model"))
        elif name == "version" and value is not None:
            value = str(value)
        elif name == "tags":
            value = dict(value or {})
        elif name == "source":
            value = d.get("source") or d.get("uri") or ""
        out[name] = value
    return out


def _run_name(d: dict[str, Any]) -> str:
    name = d.get("name") or ""
    run = str(d.get("run_id") or d.get("live_key") or "")
    short = run[:12] if d.get("run_id") else run
    return f"{name} ({short})" if name and short else name or short or "?"


def slack_text(event: Event) -> str:
    """One line for people: a headline for alerts and runs, else the type and the event's
    short facts (empty ones left out)."""
    d = event.data
    kind, _, action = event.type.rpartition(".")
    if kind == "alert":
        at = f" at step {d['step']}" if d.get("step") is not None else ""
        return (
            f"mlvc alert {d.get('rule', '?')} {action}: {d.get('metric', '?')} = "
            f"{d.get('value', '?')}{at} in run {_run_name(d)}"
        )
    if kind == "run":
        return f"mlvc run {_run_name(d)} {action}"
    headline = _HEADLINES.get(event.type)
    if headline is not None:
        return headline(d)
    facts = [
        f"{key}={_short(value)}"
        for key, value in d.items()
        if isinstance(value, (str, int, float, bool)) and value != "" and len(str(value)) <= 80
    ]
    return f"mlvc {event.type}" + (": " + ", ".join(facts[:8]) if facts else "")


def _short(value: Any) -> Any:
    """A run or object id (64 hex digits) as its 12-digit short form; anything else as is."""
    text = str(value)
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        return text[:12]
    return value


def _commit(d: dict[str, Any]) -> str:
    by = f" by {d['author']}" if d.get("author") else ""
    said = f": {d['message']}" if d.get("message") else ""
    return f"mlvc commit {_run_name(d)}{by} ({d.get('status', '?')}){said}"


def _verdict(d: dict[str, Any]) -> str:
    again = f" as {_short(d['reproduction'])}" if d.get("reproduction") else ""
    return f"mlvc reproduce of {_short(d.get('original', '?'))}: {d.get('verdict', '?')}{again}"


def _version(d: dict[str, Any]) -> str:
    run = f" from run {_short(d['run_id'])}" if d.get("run_id") else ""
    return f"mlvc model {d.get('name', '?')} version {d.get('version', '?')} created{run}"


def _alias(action: str):
    def line(d: dict[str, Any]) -> str:
        to = "now points at" if action == "created" else "removed from"
        return f"mlvc model alias {d.get('name', '?')}@{d.get('alias', '?')} {to} version {d.get('version', '?')}"

    return line


_HEADLINES = {
    "commit.created": _commit,
    "reproduce.verdict": _verdict,
    "model_version.created": _version,
    "model_version_alias.created": _alias("created"),
    "model_version_alias.deleted": _alias("deleted"),
}


def body(event: Event, format: str) -> bytes:
    """The request body of ``event`` in ``format``."""
    if format == "slack":
        return _compact({"text": slack_text(event)})
    if format == "mlflow":
        entity, _, action = event.type.rpartition(".")
        return _compact(
            {
                "entity": entity,
                "action": action,
                "timestamp": event.timestamp,
                "data": mlflow_data(event),
            }
        )
    return event.to_json().encode()


def headers(secret: str, msg_id: str, timestamp: int, payload: bytes, format: str) -> dict:
    """The request headers: content type, the Standard Webhooks trio, and MLflow's for
    ``format == "mlflow"``."""
    out = {
        "Content-Type": "application/json",
        "User-Agent": "mlvc-webhooks",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, payload),
    }
    if format == "mlflow":
        out["X-MLflow-Delivery-Id"] = msg_id
        out["X-MLflow-Timestamp"] = str(timestamp)
        out["X-MLflow-Signature"] = _mlflow_sign(secret, msg_id, timestamp, payload)
    return out
