"""MLflow 3 logged models over REST, stored as mlvc model trees.

``mlflow.<flavor>.log_model(name=...)`` creates a logged model (PENDING), uploads the model
folder through the artifact proxy to ``<experiment>/models/<model_id>/artifacts/...`` and
finalizes it (READY). Here each model is two refs:

    refs/mlflow/logged-models/<model_id>       a JSON blob: the model's fields (name,
                                               experiment, run, status, tags, params, ...)
    refs/mlflow/logged-model-files/<model_id>  the tree of its uploaded files

Every upload is stored as an object and the files tree is rebuilt and its ref moved (objects
first, then the ref), so what was uploaded survives a restart and gc (refs are gc roots). On
READY the tree is frozen: it is an ordinary mlvc model tree (MLflow's ``MLmodel`` file is
what mlvc.models.mlflow reads), so it registers, loads and serves like one of mlvc's. This
server is the only writer of these refs; changes are serialized by one lock.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
import uuid
from typing import Any

from ...core.ids import ObjectId
from ...core.names import safe_relpath
from ...core.objects import DIR, FILE, TreeEntry
from ...errors import UnsafePath
from ...store.locks import writing
from ...store.typed import lookup, read_tree, walk
from ...workspace.trees import build_tree
from ..app import ApiError, endpoint

META = "refs/mlflow/logged-models"
FILES = "refs/mlflow/logged-model-files"
_ID = re.compile(r"^m-[0-9a-f]{32}$")
_EXPERIMENT = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
STATUSES = {
    "LOGGED_MODEL_PENDING": "PENDING",
    "LOGGED_MODEL_READY": "READY",
    "LOGGED_MODEL_UPLOAD_FAILED": "FAILED",
    "PENDING": "PENDING",
    "READY": "READY",
    "FAILED": "FAILED",
    "UPLOAD_FAILED": "FAILED",
    "1": "PENDING",
    "2": "READY",
    "3": "FAILED",
}
WIRE_STATUS = {
    "PENDING": "LOGGED_MODEL_PENDING",
    "READY": "LOGGED_MODEL_READY",
    "FAILED": "LOGGED_MODEL_UPLOAD_FAILED",
}
MAX_RESULTS = 1000
BLOCK = 1 << 20


def not_found(what: str) -> ApiError:
    return ApiError(404, "RESOURCE_DOES_NOT_EXIST", what)


def bad(message: str) -> ApiError:
    return ApiError(400, "INVALID_PARAMETER_VALUE", message)


def string_field(body: dict, key: str, required: bool = False, default: str = "") -> str:
    """A string field of a request body (or query), refused with 400 naming it."""
    value = body.get(key) if body else None
    if value is None or value == "":
        if required:
            raise bad(f"missing value for required parameter '{key}'")
        return default
    if not isinstance(value, str):
        raise bad(f"invalid value {value!r} for parameter '{key}': expected a string")
    if "\0" in value:
        raise bad(f"invalid value for parameter '{key}': it contains a NUL byte")
    return value


def key_values(body: dict, key: str) -> dict[str, str]:
    """A list of ``{"key", "value"}`` (tags, params) as a dict; 400 naming a bad one."""
    items = body.get(key) if body else None
    if items is None:
        return {}
    if not isinstance(items, list):
        raise bad(f"invalid value for parameter '{key}': expected a list of {{key, value}}")
    out = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("key"), str) or not item["key"]:
            raise bad(f"invalid entry {item!r} in '{key}': each needs a non-empty string key")
        value = item.get("value", "")
        if not isinstance(value, str):
            value = json.dumps(value) if not isinstance(value, int | float) else str(value)
        if len(item["key"]) > 250 or len(value) > 8000:
            raise bad(f"'{key}' entry {item['key'][:40]!r} is too long (key 250, value 8000)")
        out[item["key"]] = value
    return out


def now_ms() -> int:
    return int(time.time() * 1000)


def page_of(
    items: list, body: dict, default: int = 100, limit: int = MAX_RESULTS
) -> tuple[list, str | None]:
    """One page of ``items`` by ``max_results`` and ``page_token`` (an encoded offset)."""
    raw = body.get("max_results") if body else None
    try:
        size = default if raw in (None, "") else int(raw)
    except (TypeError, ValueError):
        raise bad(
            f"invalid value {raw!r} for parameter 'max_results': expected an integer"
        ) from None
    if size < 1 or size > limit:
        raise bad(f"invalid value {size} for parameter 'max_results': use 1 to {limit}")
    token = body.get("page_token") if body else None
    start = 0
    if token:
        try:
            start = max(0, int(json.loads(base64.b64decode(token))["offset"]))
        except (ValueError, KeyError, TypeError):
            raise bad(
                "invalid value for parameter 'page_token': not a token this server gave"
            ) from None
    page = items[start : start + size]
    more = start + size < len(items)
    nxt = base64.b64encode(json.dumps({"offset": start + size}).encode()).decode()
    return page, nxt if more else None


# -- filter strings (the subset MLflow's clients send for models) ------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")|(?P<num>-?\d+(?:\.\d+)?)"
    r"|(?P<op>!=|<>|<=|>=|=|<|>)|(?P<word>`[^`]+`|[A-Za-z_]\w*(?:\.(?:\w+|`[^`]+`))*))"
)


def parse_filter(text: str | None) -> list[tuple[str, str, Any]]:
    """``a = 'x' AND tags.k LIKE 'v%'`` → [(ident, op, value)]; 400 for anything else."""
    text = (text or "").strip()
    out: list[tuple[str, str, Any]] = []
    pos = 0
    while pos < len(text):
        tokens = []
        for _ in range(3):
            m = _TOKEN.match(text, pos)
            if not m:
                raise bad(f"invalid filter {text!r}: cannot read it at {text[pos : pos + 20]!r}")
            tokens.append(m)
            pos = m.end()
            if len(tokens) == 1 and tokens[0].group("word") is None:
                raise bad(f"invalid filter {text!r}: expected a field name at {m.group(0)!r}")
            if len(tokens) == 2 and m.group("op") is None:
                word = (m.group("word") or "").upper()
                if word not in ("LIKE", "ILIKE"):
                    raise bad(f"invalid filter {text!r}: expected a comparison after a field")
        ident = tokens[0].group("word").replace("`", "")
        op = tokens[1].group("op") or tokens[1].group("word").upper()
        v = tokens[2]
        if v.group("str") is not None:
            value: Any = v.group("str")[1:-1].replace("\\'", "'").replace('\\"', '"')
        elif v.group("num") is not None:
            value = float(v.group("num"))
        else:
            raise bad(f"invalid filter {text!r}: expected a quoted value or a number")
        out.append((ident, "!=" if op == "<>" else op, value))
        rest = text[pos:].lstrip()
        if not rest:
            break
        if rest[:3].upper() != "AND" or (len(rest) > 3 and not rest[3].isspace()):
            raise bad(f"invalid filter {text!r}: join conditions with AND")
        pos = len(text) - len(rest) + 3
        if not text[pos:].strip():
            raise bad(f"invalid filter {text!r}: a condition must follow AND")
    return out


def _like(pattern: str, value: str, fold: bool) -> bool:
    rx = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, value, re.IGNORECASE | re.DOTALL if fold else re.DOTALL) is not None


def compare(value: Any, op: str, want: Any) -> bool:
    """One filter comparison; a missing value matches only ``!=`` (MLflow's clients add
    ``tags.`mlflow.prompt.is_prompt` != 'true'`` to leave prompts out)."""
    if value is None:
        return op == "!="
    if op in ("LIKE", "ILIKE"):
        return _like(str(want), str(value), op == "ILIKE")
    if isinstance(want, float):
        try:
            value = float(value)
        except (TypeError, ValueError):
            return False
    else:
        value = str(value)
    try:
        return {
            "=": value == want,
            "!=": value != want,
            "<": value < want,
            ">": value > want,
            "<=": value <= want,
            ">=": value >= want,
        }[op]
    except TypeError:
        return False


def order_key(field_value):
    """Sort values of mixed kinds: missing last, numbers before strings."""
    if field_value is None:
        return (2, 0, "")
    if isinstance(field_value, int | float):
        return (0, field_value, "")
    return (1, 0, str(field_value))


# -- the store -------------------------------------------------------------------------------


def check_model_id(model_id: str) -> str:
    if not isinstance(model_id, str) or not _ID.match(model_id):
        raise not_found(f"Logged model with ID '{str(model_id)[:80]}' not found")
    return model_id


class LoggedModels:
    """The logged models of one repository (see the module docstring)."""

    def __init__(self, state):
        self.state = state
        self.repo = state.repo
        self.lock = threading.RLock()
        self._cache: dict[str, dict] | None = None

    # reading

    def _load(self, model_id: str) -> dict | None:
        oid = self.repo.refs.read_or_none(f"{META}/{model_id}")
        if oid is None:
            return None
        return json.loads(self.repo.store.read_bytes(oid))

    def all(self) -> dict[str, dict]:
        with self.lock:
            if self._cache is None:
                cache = {}
                for model_id in self.repo.refs.names("mlflow/logged-models"):
                    meta = self._load(model_id) if _ID.match(model_id) else None
                    if meta is not None:
                        cache[model_id] = meta
                self._cache = cache
            return self._cache

    def get(self, model_id: str, allow_deleted: bool = False) -> dict:
        check_model_id(model_id)
        meta = self.all().get(model_id)
        if meta is None or (meta.get("deleted") and not allow_deleted):
            raise not_found(f"Logged model with ID '{model_id}' not found")
        return meta

    def files(self, model_id: str) -> ObjectId | None:
        """The tree of the model's uploaded files (None before the first upload)."""
        return self.repo.refs.read_or_none(f"{FILES}/{model_id}")

    # writing

    def _save(self, meta: dict, who: str, message: str) -> dict:
        data = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
        with writing(self.repo.dir, self.repo.store):
            oid = self.repo.store.add_bytes(data)
            self.repo.store.sync()
            self.repo.refs.write(f"{META}/{meta['model_id']}", oid, message, who)
        self.all()[meta["model_id"]] = meta
        return meta

    def create(self, body: dict, who: str) -> dict:
        experiment_id = string_field(body, "experiment_id", required=True)
        if not _EXPERIMENT.match(experiment_id):
            raise bad(f"invalid value {experiment_id!r} for parameter 'experiment_id'")
        model_id = f"m-{uuid.uuid4().hex}"
        name = string_field(body, "name") or f"model-{secrets.token_hex(4)}"
        if len(name) > 500:
            raise bad("invalid value for parameter 'name': at most 500 characters")
        t = now_ms()
        meta = {
            "model_id": model_id,
            "experiment_id": experiment_id,
            "name": name,
            "model_type": string_field(body, "model_type"),
            "source_run_id": string_field(body, "source_run_id"),
            "creator": who,
            "created_ms": t,
            "updated_ms": t,
            "status": "PENDING",
            "status_message": "",
            "tags": key_values(body, "tags"),
            "params": key_values(body, "params"),
            "deleted": False,
            "tree": None,
        }
        with self.lock:
            return self._save(meta, who, "create")

    def update(self, model_id: str, who: str, message: str, change) -> dict:
        """Apply ``change(meta)`` to a copy of the model's fields and save it."""
        with self.lock:
            meta = json.loads(json.dumps(self.get(model_id)))
            change(meta)
            meta["updated_ms"] = now_ms()
            return self._save(meta, who, message)

    def finalize(self, model_id: str, status: str, who: str) -> dict:
        with self.lock:
            meta = self.get(model_id)
            if meta["status"] == "READY" and status == "READY":
                return meta
            tree = self.files(model_id)
            if status == "READY" and tree is None:
                raise bad(f"logged model {model_id} has no files yet: upload them, then finalize")

            def change(m):
                m["status"] = status
                m["tree"] = tree.hex if status == "READY" and tree else m.get("tree")

            meta = self.update(model_id, who, f"finalize {status}", change)
        if status == "READY":
            self._link_run(meta, tree)
        return meta

    def _link_run(self, meta: dict, tree: ObjectId) -> None:
        """Note the model on its source run while that run is open (``mlvc show`` lists it)."""
        runs = self.state.extras.get("mlflow.runs")
        run_id = meta.get("source_run_id")
        if runs is None or not run_id:
            return
        live = runs.live(run_id)
        if live is None:
            return
        name = meta["name"] if _record_name(meta["name"]) else meta["model_id"]
        flavors = self.flavors(tree)
        live.record_model(
            name,
            {
                "path": f"models/{name}",
                "tree": tree.hex,
                "flavor": "sklearn" if "sklearn" in flavors else "python_function",
                "flavors": sorted(flavors),
                "signature": None,
                "mlflow_model_id": meta["model_id"],
            },
        )

    def flavors(self, tree: ObjectId) -> list[str]:
        entry = lookup(self.repo.store, tree, "MLmodel")
        if entry is None:
            return []
        try:
            import yaml

            doc = yaml.safe_load(self.repo.store.read_bytes(entry.id))
            return sorted(doc.get("flavors") or {}) if isinstance(doc, dict) else []
        except Exception:  # only a hint for `mlvc show`; the model itself is checked on load
            return []

    def add_file(self, model_id: str, relpath: str, oid: ObjectId, size: int, who: str) -> None:
        """Put a stored file at ``relpath`` in the model's files tree (refused once READY)."""
        with self.lock:
            meta = self.get(model_id)
            if meta["status"] == "READY":
                raise ApiError(
                    400,
                    "INVALID_STATE",
                    f"logged model {model_id} is READY: its files are final",
                )
            store = self.repo.store
            entries = dict(walk(store, self.files(model_id)))
            entries[relpath] = TreeEntry(relpath.rsplit("/", 1)[-1], FILE, oid, size)
            for other in list(entries):  # a file replaced by a folder, or the reverse
                if other.startswith(relpath + "/") or relpath.startswith(other + "/"):
                    del entries[other]
            tree = build_tree(store, self.repo.root, [], extra=entries)
            store.sync()
            self.repo.refs.write(f"{FILES}/{model_id}", tree, f"upload {relpath}", who)

    def remove_files(self, model_id: str, relpath: str, who: str) -> None:
        with self.lock:
            meta = self.get(model_id)
            if meta["status"] == "READY":
                raise ApiError(400, "INVALID_STATE", f"logged model {model_id} is READY")
            entries = dict(walk(self.repo.store, self.files(model_id)))
            gone = [
                p for p in entries if not relpath or p == relpath or p.startswith(relpath + "/")
            ]
            if not gone:
                raise not_found(f"no artifact {relpath!r} in logged model {model_id}")
            for p in gone:
                del entries[p]
            with writing(self.repo.dir, self.repo.store):
                tree = build_tree(self.repo.store, self.repo.root, [], extra=entries)
                ref = f"{FILES}/{model_id}"
                if tree is None:
                    self.repo.refs.delete(ref, f"delete {relpath}", who)
                else:
                    self.repo.store.sync()
                    self.repo.refs.write(ref, tree, f"delete {relpath}", who)


def _record_name(name: str) -> bool:
    from ...refs.registry import check_name

    try:
        check_name(name)
        return True
    except Exception:
        return False


def artifact_location(meta: dict) -> str:
    return f"mlflow-artifacts:/{meta['experiment_id']}/models/{meta['model_id']}/artifacts"


def to_wire(meta: dict) -> dict:
    """A logged model as MLflow's ``LoggedModel`` proto-JSON."""
    info = {
        "model_id": meta["model_id"],
        "experiment_id": meta["experiment_id"],
        "name": meta["name"],
        "creation_timestamp_ms": meta["created_ms"],
        "last_updated_timestamp_ms": meta["updated_ms"],
        "artifact_uri": artifact_location(meta),
        "status": WIRE_STATUS[meta["status"]],
        "tags": [{"key": k, "value": v} for k, v in sorted(meta["tags"].items())],
        "registrations": [],
    }
    for key in ("model_type", "source_run_id", "status_message"):
        if meta.get(key):
            info[key] = meta[key]
    params = [{"key": k, "value": v} for k, v in sorted(meta["params"].items())]
    return {"info": info, "data": {"params": params, "metrics": []}}


# -- the files, for the artifact proxy --------------------------------------------------------


def check_relpath(relpath: str) -> str:
    """A path inside a model's files; 400 for ``..``, absolute paths and NUL."""
    if relpath in ("", "."):
        return ""
    try:
        return safe_relpath(relpath if relpath.startswith("/") else relpath.rstrip("/"))
    except UnsafePath as e:
        raise ApiError(400, "INVALID_PARAMETER_VALUE", f"invalid artifact path: {e}") from None


class ModelArtifacts:
    """What the artifact proxy calls for ``<experiment>/models/<model_id>/artifacts/<path>``
    (``state.extras["mlflow.model_artifacts"]``)."""

    def __init__(self, models: LoggedModels):
        self.models = models
        self.repo = models.repo

    async def put(self, model_id: str, relpath: str, request, who: str = "mlflow"):
        """Stream the body to a temp file, store it as an object, add it to the model;
        answers the Response of the upload (``{}``)."""
        from starlette.concurrency import run_in_threadpool

        from ..app import json_response

        relpath = check_relpath(relpath)
        if not relpath:
            raise bad("an artifact upload needs a file path")
        await run_in_threadpool(self.models.get, model_id)
        tmp_dir = self.repo.dir / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        tmp = tmp_dir / f"mlflow-upload-{secrets.token_hex(8)}"
        try:
            size = 0
            with open(tmp, "wb") as f:
                async for chunk in request.stream():
                    if chunk:
                        f.write(chunk)
                        size += len(chunk)
            await run_in_threadpool(self.store_file, model_id, relpath, tmp, size, who)
        finally:
            tmp.unlink(missing_ok=True)
        return json_response(200, {})

    def store_file(self, model_id: str, relpath: str, tmp, size: int, who: str) -> None:
        with writing(self.repo.dir, self.repo.store):  # gc waits until the files ref names it
            oid = self.repo.store.add_file(tmp)
            self.models.add_file(model_id, relpath, oid, size, who)

    def get(self, model_id: str, relpath: str):
        """The file's bytes, streamed from the store."""
        from starlette.responses import StreamingResponse

        size, chunks = self.content(model_id, relpath)
        return StreamingResponse(
            chunks,
            media_type="application/octet-stream",
            headers={"Content-Length": str(size)},
        )

    def content(self, model_id: str, relpath: str):
        """(size, an iterator of the bytes) of a file of the model; 404 when it has none."""
        relpath = check_relpath(relpath)
        self.models.get(model_id)
        entry = lookup(self.repo.store, self.models.files(model_id), relpath) if relpath else None
        if entry is None or entry.kind == DIR:
            raise not_found(f"no artifact file {relpath!r} in logged model {model_id}")
        return entry.size, self.repo.store.iter_content(entry.id)

    def list(self, model_id: str, relpath: str) -> list[dict]:
        """MLflow's ``files`` for the folder ``relpath`` (names relative to it); [] for a
        file or a missing path, as MLflow's server answers."""
        relpath = check_relpath(relpath)
        self.models.get(model_id)
        tree = self.models.files(model_id)
        if tree is None:
            return []
        if relpath:
            entry = lookup(self.repo.store, tree, relpath)
            if entry is None or entry.kind != DIR:
                return []
            tree = entry.id
        out = []
        for e in read_tree(self.repo.store, tree).entries:
            if e.kind == DIR:
                out.append({"path": e.name, "is_dir": True})
            else:
                out.append({"path": e.name, "is_dir": False, "file_size": e.size})
        return out

    def delete(self, model_id: str, relpath: str, who: str = "") -> dict:
        self.models.remove_files(model_id, check_relpath(relpath), who)
        return {}


# -- REST handlers -----------------------------------------------------------------------------


def _models(state) -> LoggedModels:
    return state.extras["mlflow.logged_models"]


def create(call):
    meta = _models(call.state).create(call.body or {}, call.principal.name)
    return {"model": to_wire(meta)}


def get(call):
    allow = str(call.query.get("allow_deleted", "")).lower() == "true"
    meta = _models(call.state).get(call.path_params["model_id"], allow)
    return {"model": to_wire(meta)}


def finalize(call):
    body = call.body or {}
    raw = body.get("status")
    status = STATUSES.get(str(raw)) if raw is not None else None
    if status is None:
        raise bad(
            f"invalid value {raw!r} for parameter 'status': use LOGGED_MODEL_READY or "
            "LOGGED_MODEL_UPLOAD_FAILED"
        )
    meta = _models(call.state).finalize(call.path_params["model_id"], status, call.principal.name)
    return {"model": to_wire(meta)}


def delete(call):
    model_id = call.path_params["model_id"]
    _models(call.state).update(model_id, call.principal.name, "delete", _mark_deleted)
    return {}


def _mark_deleted(meta):
    meta["deleted"] = True


def set_tags(call):
    tags = key_values(call.body or {}, "tags")
    meta = _models(call.state).update(
        call.path_params["model_id"],
        call.principal.name,
        "set-tags",
        lambda m: m["tags"].update(tags),
    )
    return {"model": to_wire(meta)}


def delete_tag(call):
    key = call.path_params["tag_key"]
    models = _models(call.state)
    if key not in models.get(call.path_params["model_id"])["tags"]:
        raise not_found(f"logged model has no tag {key!r}")
    models.update(
        call.path_params["model_id"],
        call.principal.name,
        "delete-tag",
        lambda m: m["tags"].pop(key),
    )
    return {}


def log_params(call):
    params = key_values(call.body or {}, "params")
    _models(call.state).update(
        call.path_params["model_id"],
        call.principal.name,
        "log-params",
        lambda m: m["params"].update(params),
    )
    return {}


def _field(meta: dict, ident: str):
    low = ident.lower()
    if low.startswith(("tags.", "tag.")):
        return meta["tags"].get(ident.split(".", 1)[1])
    if low.startswith(("params.", "param.")):
        return meta["params"].get(ident.split(".", 1)[1])
    if low.startswith(("metrics.", "metric.")):
        return None  # metrics of logged models are not kept
    simple = {
        "name": meta["name"],
        "model_id": meta["model_id"],
        "model_type": meta.get("model_type") or None,
        "source_run_id": meta.get("source_run_id") or None,
        "status": WIRE_STATUS[meta["status"]][len("LOGGED_MODEL_") :],
        "creation_timestamp": meta["created_ms"],
        "creation_time": meta["created_ms"],
        "last_updated_timestamp": meta["updated_ms"],
        "experiment_id": meta["experiment_id"],
    }
    if low not in simple:
        raise bad(f"invalid filter or order field {ident!r} for logged models")
    return simple[low]


def search(call):
    body = call.body or {}
    ids = body.get("experiment_ids") or []
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise bad("invalid value for parameter 'experiment_ids': expected a list of strings")
    conditions = parse_filter(string_field(body, "filter"))
    orders = body.get("order_by") or []
    if not isinstance(orders, list) or not all(
        isinstance(o, dict) and isinstance(o.get("field_name"), str) for o in orders
    ):
        raise bad("invalid value for parameter 'order_by': expected [{field_name, ascending}]")
    found = []
    for meta in _models(call.state).all().values():
        if meta.get("deleted") or (ids and meta["experiment_id"] not in ids):
            continue
        if all(compare(_field(meta, i), op, v) for i, op, v in conditions):
            found.append(meta)
    found.sort(key=lambda m: (-m["created_ms"], m["model_id"]))
    for o in reversed(orders):
        found.sort(
            key=lambda m, f=o["field_name"]: order_key(_field(m, f)),
            reverse=not o.get("ascending", True),
        )
    page, token = page_of(found, body, default=100)
    out: dict = {"models": [to_wire(m) for m in page]}
    if token:
        out["next_page_token"] = token
    return out


def install(state) -> LoggedModels:
    """The logged models and the artifact-proxy hook of ``state`` (made once)."""
    if "mlflow.logged_models" not in state.extras:
        models = LoggedModels(state)
        state.extras["mlflow.logged_models"] = models
        state.extras["mlflow.model_artifacts"] = ModelArtifacts(models)
    return state.extras["mlflow.logged_models"]


# (path under a prefix, handler, scope, methods)
TABLE = [
    ("/logged-models", create, "write", ["POST"]),
    ("/logged-models/search", search, "read", ["POST"]),
    ("/logged-models/{model_id}", get, "read", ["GET"]),
    ("/logged-models/{model_id}", finalize, "write", ["PATCH"]),
    ("/logged-models/{model_id}", delete, "write", ["DELETE"]),
    ("/logged-models/{model_id}/tags", set_tags, "write", ["PATCH"]),
    ("/logged-models/{model_id}/tags/{tag_key:path}", delete_tag, "write", ["DELETE"]),
    ("/logged-models/{model_id}/params", log_params, "write", ["POST"]),
]


def routes(state) -> list:
    """The logged-model routes under both MLflow prefixes."""
    from starlette.routing import Route

    from . import PREFIXES

    install(state)
    out = []
    for prefix in PREFIXES:
        for path, handler, scope, methods in TABLE:
            out.append(Route(prefix + path, endpoint(state, handler, scope), methods=methods))
    return out


__all__ = ["LoggedModels", "ModelArtifacts", "install", "routes"]
