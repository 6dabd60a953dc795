"""MLflow's model registry over REST, mapped onto mlvc's registry (mlvc.refs.registry).

A version registered over MLflow's API is an mlvc model version (``refs/models/<name>/
versions/<n>`` → the model tree), and an alias is an mlvc alias, so ``mlvc models list``,
``mlvc models show NAME@ALIAS`` and ``mlvc.models.load("models:/NAME@ALIAS")`` see them.
What MLflow keeps and mlvc does not (a registered model without versions, descriptions,
tags, stages, the MLflow run id and logged model id of a version, timestamps in ms) is a
small overlay: ``refs/mlflow/registered-models/<name>`` → a JSON blob, rewritten under one
lock (this server is its only writer).

Sources a version can be created from: ``models:/<logged model id>`` (what MLflow 3's
``log_model``/``register_model`` send), the logged model's ``mlflow-artifacts:/.../models/
<id>/artifacts`` location, ``runs:/<run id>/<path>``, ``run:RUN/PATH`` and
``models:/NAME/VERSION`` or ``models:/NAME@ALIAS`` of this registry. Versions made from a
logged model download through the artifact proxy (``get-download-uri`` answers the logged
model's location). mlvc's name rules apply to model names and aliases (400 otherwise).
"""

from __future__ import annotations

import json
import re
import threading

from ...core.ids import ObjectId
from ...errors import MlvcError, UnknownModel, UsageError
from ...events import pre
from ...events import registry as model_events
from ...refs import registry
from ...store.locks import writing
from ...store.typed import read_tree
from ..app import ApiError, endpoint
from .logged_models import (
    _ID,
    bad,
    check_model_id,
    compare,
    install,
    not_found,
    now_ms,
    order_key,
    page_of,
    parse_filter,
    string_field,
)

OVERLAY = "refs/mlflow/registered-models"
STAGES = {"none": "None", "staging": "Staging", "production": "Production", "archived": "Archived"}
_ARTIFACTS = re.compile(r"^mlflow-artifacts:/+[^/]+/models/(m-[0-9a-f]{32})/artifacts/?$")


def args(call) -> dict:
    """The request's arguments: the JSON body, or the query string for GET (lists for the
    repeated ``order_by``)."""
    if isinstance(call.body, dict):
        return call.body
    out: dict = {}
    for key in call.query:
        values = call.query.getlist(key)
        out[key] = values if key in ("order_by", "stages") else values[-1]
    return out


def _name(body: dict, key: str = "name") -> str:
    name = string_field(body, key, required=True)
    try:
        return registry.check_name(name)
    except UsageError as e:
        raise bad(f"invalid value for parameter '{key}': {e}") from None


def _version(body: dict) -> int:
    raw = body.get("version")
    text = str(raw) if isinstance(raw, str | int) and not isinstance(raw, bool) else ""
    if not text.isdigit() or int(text) < 1:
        raise bad(f"invalid value {raw!r} for parameter 'version': versions are 1, 2, ...")
    return int(text)


class Registry:
    """The registry of one repository seen as MLflow's (see the module docstring)."""

    def __init__(self, state):
        self.state = state
        self.repo = state.repo
        self.refs = state.repo.refs
        self.lock = threading.RLock()

    # -- overlay ----------------------------------------------------------------------------

    def overlay(self, name: str) -> dict | None:
        oid = self.refs.read_or_none(f"{OVERLAY}/{name}")
        return json.loads(self.repo.store.read_bytes(oid)) if oid else None

    def _save(self, name: str, doc: dict | None, who: str, message: str) -> None:
        ref = f"{OVERLAY}/{name}"
        if doc is None:
            self.refs.delete(ref, message, who)
            return
        data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        with writing(self.repo.dir, self.repo.store):
            oid = self.repo.store.add_bytes(data)
            self.repo.store.sync()
            self.refs.write(ref, oid, message, who)

    def _doc(self, name: str) -> dict:
        """The overlay of a model that exists (404 otherwise), made empty when missing."""
        doc = self.overlay(name)
        if doc is None:
            versions = registry.versions(self.refs, name)
            if not versions:
                raise not_found(f"Registered Model with name={name} not found")
            first = registry.version_info(
                self.refs, name, min(versions), versions[min(versions)], {}
            )
            t = int((first.registered_at or 0) * 1000)
            doc = {"name": name, "created_ms": t, "updated_ms": t, "description": "", "tags": {}}
        doc.setdefault("versions", {})
        return doc

    def change(self, name: str, who: str, message: str, fn) -> dict:
        with self.lock:
            doc = self._doc(name)
            fn(doc)
            doc["updated_ms"] = now_ms()
            self._save(name, doc, who, message)
            return doc

    def exists(self, name: str) -> bool:
        return self.overlay(name) is not None or bool(registry.versions(self.refs, name))

    def names(self) -> list[str]:
        found = set(registry.names(self.refs))
        found.update(n for n in self.refs.names("mlflow/registered-models"))
        return sorted(n for n in found if self.exists(n))

    # -- versions ---------------------------------------------------------------------------

    def version(self, name: str, number: int, doc: dict | None = None) -> dict:
        """Version ``number`` of ``name`` as MLflow's ModelVersion (404 if absent)."""
        found = registry.versions(self.refs, name)
        if number not in found:
            raise not_found(f"Model Version (name={name}, version={number}) not found")
        alias_map = registry.aliases(self.refs, name)
        info = registry.version_info(self.refs, name, number, found[number], alias_map)
        doc = doc if doc is not None else (self.overlay(name) or {})
        extra = (doc.get("versions") or {}).get(str(number), {})
        t = int((info.registered_at or 0) * 1000)
        out = {
            "name": name,
            "version": str(number),
            "creation_timestamp": extra.get("created_ms", t),
            "last_updated_timestamp": extra.get("updated_ms", t),
            "user_id": extra.get("user_id", info.registered_by),
            "current_stage": extra.get("stage", "None"),
            "description": extra.get("description", ""),
            "source": extra.get("source", info.source),
            "run_id": extra.get("run_id", info.run_id or ""),
            "status": "READY",
            "tags": [{"key": k, "value": v} for k, v in sorted(extra.get("tags", {}).items())],
            "aliases": list(info.aliases),
        }
        if extra.get("model_id"):
            out["model_id"] = extra["model_id"]
        if extra.get("run_link"):
            out["run_link"] = extra["run_link"]
        return out

    def versions(self, name: str) -> list[dict]:
        doc = self.overlay(name) or {}
        return [self.version(name, n, doc) for n in registry.versions(self.refs, name)]

    def model(self, name: str) -> dict:
        """``name`` as MLflow's RegisteredModel (404 if absent)."""
        doc = self._doc(name)
        versions = self.versions(name)
        latest: dict[str, dict] = {}
        for v in versions:
            latest[v["current_stage"]] = v
        out = {
            "name": name,
            "creation_timestamp": doc["created_ms"],
            "last_updated_timestamp": doc["updated_ms"],
            "description": doc.get("description", ""),
            "latest_versions": sorted(latest.values(), key=lambda v: int(v["version"])),
            "tags": [{"key": k, "value": v} for k, v in sorted(doc.get("tags", {}).items())],
            "aliases": [
                {"alias": a, "version": str(n)}
                for a, n in sorted(registry.aliases(self.refs, name).items())
            ],
        }
        if doc.get("user_id"):
            out["user_id"] = doc["user_id"]
        return out

    def resolve_source(self, source: str, model_id: str) -> tuple[ObjectId, dict | None]:
        """The model tree a version's source names, and the logged model it came from."""
        models = install(self.state)
        m = _ARTIFACTS.match(source)
        if model_id or m or re.match(r"^models:/+m-[0-9a-f]{32}/?$", source):
            mid = model_id or (m.group(1) if m else source.split(":/", 1)[1].strip("/"))
            meta = models.get(check_model_id(mid))
            tree = meta.get("tree") or (models.files(mid).hex if models.files(mid) else None)
            if tree is None:
                raise bad(f"logged model {mid} has no files; upload them before registering")
            return ObjectId.parse(tree), meta
        if source.startswith("runs:/"):
            run_id, _, path = source[len("runs:/") :].strip("/").partition("/")
            meta = self._logged_model_of_run(run_id, path)
            if meta is not None:
                return self.resolve_source("", meta["model_id"])
            source = f"run:{run_id}/{path}"
        if source.startswith(("run:", "models:/")):
            from ...models.loading import locate

            try:
                loc = locate(source, self.repo, materialize=False)
            except MlvcError as e:
                raise ApiError(e.http_status, _code(e.http_status), str(e)) from None
            return loc.model_id, None
        raise bad(
            f"invalid value {source[:200]!r} for parameter 'source': use models:/<model_id>, "
            "runs:/<run_id>/<path> or the logged model's mlflow-artifacts: location"
        )

    def _logged_model_of_run(self, run_id: str, path: str) -> dict | None:
        models = install(self.state).all().values()
        found = [
            m
            for m in models
            if m.get("source_run_id") == run_id and m["name"] == path and not m.get("deleted")
        ]
        return max(found, key=lambda m: m["created_ms"]) if found else None

    def _mlvc_run(self, run_id: str) -> str | None:
        """The recorded mlvc run of an MLflow run id, when it has ended."""
        runs = self.state.extras.get("mlflow.runs")
        if runs is None or not run_id:
            return None
        try:
            found = runs.run_record(run_id)
        except MlvcError:
            return None
        return found[0].hex if found else None

    def create_version(self, body: dict, who: str) -> dict:
        name = _name(body)
        source = string_field(body, "source", required=True)
        model_id = string_field(body, "model_id")
        if model_id and not _ID.match(model_id):
            raise bad(f"invalid value {model_id!r} for parameter 'model_id'")
        with self.lock:
            if not self.exists(name):
                raise not_found(f"Registered Model with name={name} not found")
            tree, meta = self.resolve_source(source, model_id)
            _check_model_tree(self.repo, tree, source)
            run_id = string_field(body, "run_id") or (meta or {}).get("source_run_id", "")
            with writing(self.repo.dir, self.repo.store):
                number = model_events.create_version(
                    self.repo.ctx, name, tree, source, self._mlvc_run(run_id), who,
                    trusted=True, announce_model=False,
                )  # fmt: skip
            self._note_run_at_end(name, number, run_id, who)
            t = now_ms()
            extra = {
                "created_ms": t,
                "updated_ms": t,
                "user_id": who,
                "description": string_field(body, "description"),
                "source": source,
                "run_id": run_id,
                "run_link": string_field(body, "run_link"),
                "model_id": (meta or {}).get("model_id", ""),
                "stage": "None",
                "tags": _tags(body),
            }
            self.change(
                name, who, f"version {number}", lambda d: d["versions"].update({str(number): extra})
            )
        self.repo.index.try_ingest()
        return self.version(name, number)

    def _note_run_at_end(self, name: str, number: int, run_id: str, who: str) -> None:
        """A version registered while its run is open learns the run's mlvc id at its end
        (as mlvc.models.register does for a live run)."""
        runs = self.state.extras.get("mlflow.runs")
        live = runs.live(run_id) if runs is not None and run_id else None
        if live is not None:
            live.on_end.append(lambda rid: registry.note_run(self.refs, name, number, rid.hex, who))

    def delete_version(self, name: str, number: int, who: str) -> None:
        with self.lock:
            self.version(name, number)
            for alias, n in registry.aliases(self.refs, name).items():
                if n == number:
                    model_events.delete_alias(self.repo.ctx, name, alias, who)
            self.refs.delete(registry.version_ref(name, number), "delete-version", who)
            if self.overlay(name) is not None or registry.versions(self.refs, name):
                self.change(
                    name, who, f"delete {number}", lambda d: d["versions"].pop(str(number), None)
                )
        self.repo.index.try_ingest()

    def delete_model(self, name: str, who: str) -> None:
        with self.lock:
            self._doc(name)
            doc = self.overlay(name)
            for alias in registry.aliases(self.refs, name):
                model_events.delete_alias(self.repo.ctx, name, alias, who)
            for number in registry.versions(self.refs, name):
                self.refs.delete(registry.version_ref(name, number), "delete-model", who)
            if doc is not None:
                self._save(name, None, who, "delete-model")
        self.repo.index.try_ingest()

    def rename(self, name: str, new: str, who: str) -> None:
        with self.lock:
            doc = self._doc(name)
            if self.exists(new):
                raise ApiError(
                    409, "RESOURCE_ALREADY_EXISTS", f"Registered Model (name={new}) already exists."
                )
            versions = registry.versions(self.refs, name)
            aliases = registry.aliases(self.refs, name)
            for number, tree in versions.items():
                log = self.refs.reflog(registry.version_ref(name, number))
                message = log[0]["message"] if log else "register {}"
                ref = registry.version_ref(new, number)
                self.refs.write(ref, tree, message, who, create_only=True)
            for alias, number in aliases.items():
                model_events.set_alias(self.repo.ctx, new, alias, number, who)
            doc["name"] = new
            doc["updated_ms"] = now_ms()
            self._save(new, doc, who, f"rename from {name}")
            for alias in aliases:
                model_events.delete_alias(self.repo.ctx, name, alias, who)
            for number in versions:
                self.refs.delete(registry.version_ref(name, number), f"rename to {new}", who)
            if self.overlay(name) is not None:
                self._save(name, None, who, f"rename to {new}")
        self.repo.index.try_ingest()


def _code(status: int) -> str:
    from ..app import CODES

    return CODES.get(status, "INTERNAL_ERROR")


def _tags(body: dict, key: str = "tags") -> dict:
    from .logged_models import key_values

    return key_values(body, key)


def _check_model_tree(repo, tree: ObjectId, source: str) -> None:
    names = {e.name for e in read_tree(repo.store, tree).entries}
    if "MLmodel" not in names and "mlvc-model.json" not in names:
        raise bad(f"the source {source[:200]} is not a model folder: it has no MLmodel file")


# -- handlers ------------------------------------------------------------------------------


def setup(state) -> Registry:
    """The registry of ``state`` and the logged models it links to (made once)."""
    install(state)
    return _reg(state)


def _reg(state) -> Registry:
    if "mlflow.registry" not in state.extras:
        state.extras["mlflow.registry"] = Registry(state)
    return state.extras["mlflow.registry"]


def create_model(call):
    body = call.body or {}
    name = _name(body)
    reg = _reg(call.state)
    with reg.lock:
        if reg.exists(name):
            raise ApiError(
                409, "RESOURCE_ALREADY_EXISTS", f"Registered Model (name={name}) already exists."
            )
        t = now_ms()
        doc = {
            "name": name,
            "created_ms": t,
            "updated_ms": t,
            "description": string_field(body, "description"),
            "tags": _tags(body),
            "user_id": call.principal.name,
            "versions": {},
        }
        reg._save(name, doc, call.principal.name, "create")
    model_events.model_created(call.state.repo.ctx, name, call.principal.name)
    return {"registered_model": reg.model(name)}


def get_model(call):
    return {"registered_model": _reg(call.state).model(_name(args(call)))}


def update_model(call):
    body = call.body or {}
    name = _name(body)
    desc = string_field(body, "description")
    reg = _reg(call.state)
    reg.change(name, call.principal.name, "update", lambda d: d.update(description=desc))
    return {"registered_model": reg.model(name)}


def rename_model(call):
    body = call.body or {}
    name, new = _name(body), _name(body, "new_name")
    reg = _reg(call.state)
    reg.rename(name, new, call.principal.name)
    return {"registered_model": reg.model(new)}


def delete_model(call):
    _reg(call.state).delete_model(_name(args(call)), call.principal.name)
    return {}


def _search_order(items: list[dict], orders, fields) -> list[dict]:
    if isinstance(orders, str):
        orders = [orders]
    for spec in reversed(orders or []):
        if not isinstance(spec, str) or not spec.strip():
            raise bad(f"invalid value {spec!r} for parameter 'order_by'")
        parts = spec.split()
        key = parts[0].lower()
        if (
            key not in fields
            or len(parts) > 2
            or (len(parts) == 2 and parts[1].upper() not in ("ASC", "DESC"))
        ):
            raise bad(f"invalid value {spec!r} for parameter 'order_by'")
        desc = len(parts) == 2 and parts[1].upper() == "DESC"
        items.sort(key=lambda x, f=fields[key]: order_key(f(x)), reverse=desc)
    return items


def _tag_of(item: dict, key: str):
    return next((t["value"] for t in item.get("tags", []) if t["key"] == key), None)


def _matches(item: dict, conditions, simple: dict) -> bool:
    for ident, op, value in conditions:
        low = ident.lower()
        if low.startswith(("tags.", "tag.")):
            got = _tag_of(item, ident.split(".", 1)[1])
        elif low in simple:
            got = simple[low](item)
        else:
            raise bad(
                f"invalid filter field {ident!r}: use {', '.join(sorted(simple))} or tags.KEY"
            )
        if not compare(got, op, value):
            return False
    return True


MODEL_FIELDS = {
    "name": lambda m: m["name"],
    "creation_timestamp": lambda m: m["creation_timestamp"],
    "last_updated_timestamp": lambda m: m["last_updated_timestamp"],
    "timestamp": lambda m: m["last_updated_timestamp"],
}
VERSION_FIELDS = {
    "name": lambda v: v["name"],
    "version_number": lambda v: int(v["version"]),
    "run_id": lambda v: v.get("run_id") or None,
    "source": lambda v: v.get("source"),
    "source_path": lambda v: v.get("source"),
    "current_stage": lambda v: v.get("current_stage"),
    "model_id": lambda v: v.get("model_id"),
    "creation_timestamp": lambda v: v["creation_timestamp"],
    "last_updated_timestamp": lambda v: v["last_updated_timestamp"],
}


def search_models(call):
    a = args(call)
    conditions = parse_filter(string_field(a, "filter"))
    reg = _reg(call.state)
    found = [reg.model(n) for n in reg.names()]
    found = [m for m in found if _matches(m, conditions, MODEL_FIELDS)]
    found = _search_order(found, a.get("order_by") or [], MODEL_FIELDS)
    page, token = page_of(found, a, default=100)
    out: dict = {"registered_models": page}
    if token:
        out["next_page_token"] = token
    return out


def search_versions(call):
    a = args(call)
    conditions = parse_filter(string_field(a, "filter"))
    reg = _reg(call.state)
    names = reg.names()
    wanted = [v for i, op, v in conditions if i.lower() == "name" and op == "="]
    if wanted:
        names = [n for n in names if n in wanted]
    found = [v for n in names for v in reg.versions(n)]
    found = [v for v in found if _matches(v, conditions, VERSION_FIELDS)]
    found.sort(key=lambda v: (v["name"], -int(v["version"])))
    found = _search_order(found, a.get("order_by") or [], VERSION_FIELDS)
    page, token = page_of(found, a, default=10_000, limit=200_000)  # the client asks 10,000
    out: dict = {"model_versions": page}
    if token:
        out["next_page_token"] = token
    return out


def latest_versions(call):
    a = args(call)
    name = _name(a)
    stages = a.get("stages") or []
    if isinstance(stages, str):
        stages = [stages]
    reg = _reg(call.state)
    reg._doc(name)
    latest: dict[str, dict] = {}
    for v in reg.versions(name):
        latest[v["current_stage"]] = v
    wanted = {STAGES.get(str(s).lower(), str(s)) for s in stages}
    chosen = [v for s, v in latest.items() if not wanted or s in wanted]
    return {"model_versions": sorted(chosen, key=lambda v: int(v["version"]))}


def set_model_tag(call):
    body = call.body or {}
    name, key = _name(body), string_field(body, "key", required=True)
    value = string_field(body, "value")
    _reg(call.state).change(
        name, call.principal.name, "set-tag", lambda d: d["tags"].update({key: value})
    )
    return {}


def delete_model_tag(call):
    a = args(call)
    name, key = _name(a), string_field(a, "key", required=True)
    reg = _reg(call.state)
    if key not in reg._doc(name).get("tags", {}):
        raise not_found(f"Registered model {name} has no tag with key={key}")
    reg.change(name, call.principal.name, "delete-tag", lambda d: d["tags"].pop(key))
    return {}


def set_alias(call):
    body = call.body or {}
    name = _name(body)
    alias = string_field(body, "alias", required=True)
    number = _version(body)
    reg = _reg(call.state)
    with reg.lock:
        reg.version(name, number)
        pre.alias(call.state.repo.ctx, name, alias, number, call.principal.name)
        try:
            model_events.set_alias(call.state.repo.ctx, name, alias, number, call.principal.name)
        except UsageError as e:
            raise bad(f"invalid value for parameter 'alias': {e}") from None
    call.state.repo.index.try_ingest()
    return {}


def delete_alias(call):
    a = args(call)
    name = _name(a)
    alias = string_field(a, "alias", required=True)
    reg = _reg(call.state)
    with reg.lock:
        reg._doc(name)
        pre.alias(call.state.repo.ctx, name, alias, None, call.principal.name)
        try:
            model_events.delete_alias(call.state.repo.ctx, name, alias, call.principal.name)
        except UsageError as e:
            raise bad(f"invalid value for parameter 'alias': {e}") from None
        except UnknownModel as e:
            raise not_found(str(e)) from None
    call.state.repo.index.try_ingest()
    return {}


def get_by_alias(call):
    a = args(call)
    name = _name(a)
    alias = string_field(a, "alias", required=True)
    reg = _reg(call.state)
    reg._doc(name)
    number = registry.aliases(reg.refs, name).get(alias)
    if number is None:
        raise not_found(f"Registered model alias {alias} not found.")
    return {"model_version": reg.version(name, number)}


def create_version(call):
    return {"model_version": _reg(call.state).create_version(call.body or {}, call.principal.name)}


def get_version(call):
    a = args(call)
    return {"model_version": _reg(call.state).version(_name(a), _version(a))}


def _change_version(call, message: str, fn) -> dict:
    a = args(call)
    name, number = _name(a), _version(a)
    reg = _reg(call.state)
    with reg.lock:
        reg.version(name, number)

        def apply(doc):
            extra = doc["versions"].setdefault(str(number), {})
            fn(extra, doc)
            extra["updated_ms"] = now_ms()

        reg.change(name, call.principal.name, message, apply)
    return reg.version(name, number)


def update_version(call):
    desc = string_field(call.body or {}, "description")
    return {
        "model_version": _change_version(
            call, "update-version", lambda e, d: e.update(description=desc)
        )
    }


def set_version_tag(call):
    body = call.body or {}
    key, value = string_field(body, "key", required=True), string_field(body, "value")
    _change_version(
        call, "set-version-tag", lambda e, d: e.setdefault("tags", {}).update({key: value})
    )
    return {}


def delete_version_tag(call):
    a = args(call)
    key = string_field(a, "key", required=True)
    version = _reg(call.state).version(_name(a), _version(a))
    if _tag_of(version, key) is None:
        raise not_found(f"Model version has no tag with key={key}")
    _change_version(call, "delete-version-tag", lambda e, d: e.get("tags", {}).pop(key, None))
    return {}


def transition_stage(call):
    body = call.body or {}
    raw = string_field(body, "stage", required=True)
    stage = STAGES.get(raw.lower())
    if stage is None:
        raise bad(f"invalid value {raw!r} for parameter 'stage': use {', '.join(STAGES.values())}")
    archive = body.get("archive_existing_versions") in (True, "true", "True")
    number = _version(body)

    def apply(extra, doc):
        if archive and stage in ("Staging", "Production"):
            for n, other in doc["versions"].items():
                if n != str(number) and other.get("stage") == stage:
                    other["stage"] = "Archived"
        extra["stage"] = stage

    return {"model_version": _change_version(call, f"stage {stage}", apply)}


def delete_version(call):
    a = args(call)
    _reg(call.state).delete_version(_name(a), _version(a), call.principal.name)
    return {}


def download_uri(call):
    a = args(call)
    version = _reg(call.state).version(_name(a), _version(a))
    if version.get("model_id"):
        meta = install(call.state).get(version["model_id"], allow_deleted=True)
        from .logged_models import artifact_location

        return {"artifact_uri": artifact_location(meta)}
    raise bad(
        f"version {version['version']} of {version['name']} was registered with mlvc, not "
        "from an MLflow logged model: load it with mlvc (models:/NAME/VERSION)"
    )


_RM, _MV = "/registered-models", "/model-versions"
# (path under a prefix, handler, scope, methods)
TABLE = [
    (_RM + "/create", create_model, "write", ["POST"]),
    (_RM + "/get", get_model, "read", ["GET"]),
    (_RM + "/rename", rename_model, "write", ["POST"]),
    (_RM + "/update", update_model, "write", ["PATCH"]),
    (_RM + "/delete", delete_model, "write", ["DELETE"]),
    (_RM + "/search", search_models, "read", ["GET"]),
    (_RM + "/get-latest-versions", latest_versions, "read", ["GET", "POST"]),
    (_RM + "/set-tag", set_model_tag, "write", ["POST"]),
    (_RM + "/delete-tag", delete_model_tag, "write", ["DELETE"]),
    (_RM + "/alias", set_alias, "write", ["POST"]),
    (_RM + "/alias", delete_alias, "write", ["DELETE"]),
    (_RM + "/alias", get_by_alias, "read", ["GET"]),
    (_MV + "/create", create_version, "write", ["POST"]),
    (_MV + "/get", get_version, "read", ["GET"]),
    (_MV + "/update", update_version, "write", ["PATCH"]),
    (_MV + "/delete", delete_version, "write", ["DELETE"]),
    (_MV + "/search", search_versions, "read", ["GET"]),
    (_MV + "/get-download-uri", download_uri, "read", ["GET"]),
    (_MV + "/set-tag", set_version_tag, "write", ["POST"]),
    (_MV + "/delete-tag", delete_version_tag, "write", ["DELETE"]),
    (_MV + "/transition-stage", transition_stage, "write", ["POST"]),
]


def routes(state) -> list:
    """The registry routes under both MLflow prefixes."""
    from starlette.routing import Route

    from . import PREFIXES

    setup(state)
    out = []
    for prefix in PREFIXES:
        for path, handler, scope, methods in TABLE:
            out.append(Route(prefix + path, endpoint(state, handler, scope), methods=methods))
    return out


__all__ = ["Registry", "routes"]
