"""Remotes by name: ``[remote.<name>]`` tables in ``.mlvc/config``.

``url`` is where the remote lives; an http(s) remote may name the environment variable that
holds its token (``token_env``). Secrets are never written here: a URL carrying credentials is
refused with a message naming the environment variables to use instead.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..core.layout import Layout
from ..core.settings import RepoConfig, _toml
from ..errors import UsageError
from ..refs.store import check_ref_name

DEFAULT = "origin"
SCHEMES = ("file", "s3", "gs", "gcs", "abfs", "abfss", "az", "hdfs", "viewfs", "http", "https")
_TOKEN_ENV = "MLVC_REMOTE_TOKEN"


@dataclass(frozen=True)
class Remote:
    name: str
    url: str
    token_env: str | None = None


def check_url(url: str) -> str:
    """``url`` normalized (a plain path becomes ``file://``), or UsageError."""
    if not url or "\x00" in url or any(c in url for c in "\r\n"):
        raise UsageError(f"invalid remote URL {url!r}")
    parts = urlsplit(url)
    if not parts.scheme or len(parts.scheme) == 1:  # a path (or a Windows drive letter)
        return "file://" + os.path.abspath(os.path.expanduser(url))
    if parts.scheme not in SCHEMES:
        raise UsageError(
            f"remote URL {url!r}: unknown scheme {parts.scheme!r}; use a folder, file://, "
            "s3://, gs://, abfs://, hdfs:// or http(s):// (an mlvc server)"
        )
    if parts.password is not None or (parts.username and parts.scheme != "hdfs"):
        raise UsageError(
            f"remote URL for {parts.hostname or parts.path!r} carries credentials: leave them "
            "out of the URL and set them in the environment (AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_ACCOUNT_KEY, "
            f"or {_TOKEN_ENV}_<NAME> for an mlvc server)"
        )
    return url


def _load(layout: Layout) -> dict:
    RepoConfig.load(layout.config)  # refuses a config this mlvc would misread
    return _toml().loads(layout.config.read_text())


def _save(layout: Layout, data: dict) -> None:
    text = RepoConfig().text()
    for name, table in sorted(data.get("remote", {}).items()):
        text += f"\n[remote.{json.dumps(name)}]\n"
        for key in ("url", "token_env"):
            if table.get(key):
                text += f"{key} = {json.dumps(table[key])}\n"
    tmp = layout.tmp / f"config.{os.getpid()}"
    layout.tmp.mkdir(parents=True, exist_ok=True)
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, layout.config)


def list_remotes(layout: Layout) -> list[Remote]:
    """Every configured remote, by name."""
    out = []
    for name, table in sorted(_load(layout).get("remote", {}).items()):
        if isinstance(table, dict) and isinstance(table.get("url"), str):
            out.append(Remote(name, table["url"], table.get("token_env")))
    return out


def get(layout: Layout, name: str | None = None) -> Remote:
    """The remote ``name`` (default ``origin``), or a UsageError saying how to add one."""
    name = name or DEFAULT
    for remote in list_remotes(layout):
        if remote.name == name:
            return remote
    known = ", ".join(r.name for r in list_remotes(layout)) or "none yet"
    raise UsageError(
        f"no remote named {name!r} (configured: {known}); add one with `mlvc remote add {name} URL`"
    )


def add(layout: Layout, name: str, url: str, token_env: str | None = None) -> Remote:
    """Configure a new remote; refuses a name already taken."""
    check_ref_name(name, "remote name")
    url = check_url(url)
    if token_env is not None and not token_env.replace("_", "").isalnum():
        raise UsageError(f"--token-env {token_env!r}: give the NAME of an environment variable")
    data = _load(layout)
    remotes = data.setdefault("remote", {})
    if name in remotes:
        raise UsageError(
            f"remote {name!r} exists ({remotes[name].get('url')}); remove it first with "
            f"`mlvc remote remove {name}`"
        )
    remotes[name] = {"url": url, "token_env": token_env}
    _save(layout, data)
    return Remote(name, url, token_env)


def remove(layout: Layout, name: str) -> Remote:
    """Forget a remote (its bucket is not touched)."""
    remote = get(layout, name)
    data = _load(layout)
    del data["remote"][name]
    _save(layout, data)
    return remote


def token_for(remote: Remote, environ: dict | os._Environ = os.environ) -> str | None:
    """The token of an http(s) remote, from its ``token_env``, else ``MLVC_REMOTE_TOKEN_<NAME>``,
    else ``MLVC_TRACKING_TOKEN``."""
    keys = [remote.token_env] if remote.token_env else []
    keys += [f"{_TOKEN_ENV}_{remote.name.upper().replace('-', '_')}", "MLVC_TRACKING_TOKEN"]
    for key in keys:
        if environ.get(key):
            return environ[key]
    return None
