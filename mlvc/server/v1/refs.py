"""Refs with compare-and-swap, and the model registry (aliases) over them."""

from __future__ import annotations

import os
import re

from ...errors import MlvcError
from ...events import pre
from ...events import registry as model_events
from ...refs import registry
from ...store.typed import read_run
from ..app import ApiError, endpoint
from ._common import bad, body, field, not_found, object_id, text_arg

_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+=-]{0,199}$")
MAX_DEPTH = 8


def check_ref(name: str) -> str:
    """A full ref name (``HEAD`` or ``refs/...``) that stays inside ``refs/``."""
    if name == "HEAD":
        return name
    parts = name.split("/")
    ok = (
        len(parts) >= 2
        and len(parts) <= MAX_DEPTH
        and parts[0] == "refs"
        and all(_PART.fullmatch(p) and not p.endswith(".lock") for p in parts[1:])
    )
    if not ok:
        raise bad(
            f"ref: {name[:200]!r} is not a ref name (HEAD, or refs/ then parts of letters, "
            "digits and . _ - + =)"
        )
    return name


def _entry(refs, name: str) -> dict | None:
    oid = refs.read_or_none(name)
    if oid is None:
        return None
    return {"name": name, "id": oid.hex, "symbolic": refs.read_symbolic(name)}


def list_refs(call):
    """``GET /api/v1/refs?prefix=``: every ref whose full name starts with ``prefix``."""
    prefix = text_arg(call.query, "prefix", required=False, empty=True) or ""
    refs = call.state.ctx.refs
    names = ["HEAD"]
    base = refs.dir / "refs"
    for folder, dirs, files in os.walk(base):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = os.path.relpath(folder, refs.dir).replace(os.sep, "/")
        names += [f"{rel}/{f}" for f in files if not f.startswith(".") and not f.endswith(".lock")]
    out = [e for n in sorted(names) if n.startswith(prefix) for e in [_entry(refs, n)] if e]
    return {"refs": out}


def get_ref(call):
    name = check_ref(call.path_params["name"])
    entry = _entry(call.state.ctx.refs, name)
    if entry is None:
        raise not_found(f"no ref {name}")
    return entry


def put_ref(call):
    """``PUT /api/v1/refs/{name} {"new", "old"}``: move the ref to ``new`` if it is at
    ``old`` now (null: if it does not exist), else 409. ``new`` must be stored here."""
    name = check_ref(call.path_params["name"])
    data = body(call)
    new = object_id(field(data, "new", str), "new")
    if "old" not in data:
        raise bad('old: missing (the id the ref is expected at, or null for "must not exist")')
    old = None if data["old"] is None else object_id(data["old"], "old")
    ctx = call.state.ctx
    if not ctx.store.has(new):
        raise bad(f"new: object {new.hex} is not stored on this server; PUT it first")
    is_run = name.startswith("refs/runs/")
    if is_run and name != f"refs/runs/{new.hex}":
        raise bad(f"new: refs/runs/<id> names its own run ({name} cannot be {new.short})")
    if is_run or name in ("HEAD",) or name.startswith(("refs/names/", "refs/tags/")):
        try:
            read_run(ctx.store, new)
        except MlvcError:
            raise bad(f"new: object {new.hex} is not a run") from None
    ctx.store.sync()  # the objects a ref names are durable before it moves
    if is_run and old is None:
        ctx.index.journal(new)
    try:
        ctx.refs.write(name, new, "api: put ref", call.principal.name, expected=old)
    except MlvcError as e:
        if e.http_status == 409:
            now = ctx.refs.read_or_none(name)
            raise ApiError(
                409,
                "RESOURCE_CONFLICT",
                f"ref {name} is at {now.hex if now else 'nothing'}, not "
                f"{old.hex if old else 'nothing'}: read it again and retry",
            ) from None
        raise
    ctx.index.try_ingest()
    return _entry(ctx.refs, name)


# -- the model registry ---------------------------------------------------------------------


def list_models(call):
    return {"models": registry.list_models(call.state.ctx.refs)}


def get_model(call):
    name = registry.check_name(call.path_params["name"])
    refs = call.state.ctx.refs
    found = registry.versions(refs, name)
    if not found:
        raise not_found(f"no registered model {name!r}")
    alias_map = registry.aliases(refs, name)
    versions = [
        registry.version_info(refs, name, v, oid, alias_map).to_dict()
        for v, oid in sorted(found.items())
    ]
    return {"name": name, "versions": versions, "aliases": alias_map}


def put_alias(call):
    """``PUT /api/v1/models/{name}/aliases/{alias} {"version"}``: point (or move) it."""
    name = registry.check_name(call.path_params["name"])
    alias = registry.check_alias(call.path_params["alias"])
    version = field(body(call), "version", (int, str))
    pre.alias(call.state.ctx, name, alias, version, call.principal.name)
    info = model_events.set_alias(call.state.ctx, name, alias, version, call.principal.name)
    call.state.ctx.index.try_ingest()
    return info.to_dict()


def delete_alias(call):
    name = registry.check_name(call.path_params["name"])
    alias = registry.check_alias(call.path_params["alias"])
    pre.alias(call.state.ctx, name, alias, None, call.principal.name)
    previous = model_events.delete_alias(call.state.ctx, name, alias, call.principal.name)
    call.state.ctx.index.try_ingest()
    return {"name": name, "alias": alias, "previous": previous}


def routes(state) -> list:
    from starlette.routing import Route

    alias = "/api/v1/models/{name}/aliases/{alias}"
    return [
        Route("/api/v1/refs", endpoint(state, list_refs, "read"), methods=["GET"]),
        Route("/api/v1/refs/{name:path}", endpoint(state, get_ref, "read"), methods=["GET"]),
        Route("/api/v1/refs/{name:path}", endpoint(state, put_ref, "write"), methods=["PUT"]),
        Route("/api/v1/models", endpoint(state, list_models, "read"), methods=["GET"]),
        Route("/api/v1/models/{name}", endpoint(state, get_model, "read"), methods=["GET"]),
        Route(alias, endpoint(state, put_alias, "write"), methods=["PUT"]),
        Route(alias, endpoint(state, delete_alias, "write"), methods=["DELETE"]),
    ]
