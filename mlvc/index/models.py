"""The model registry's tables: ``model_versions``, ``model_aliases``, ``model_alias_log`` and
``model_files`` (every file of each registered model tree, for the ``provenance`` view).

The registry is refs (mlvc.refs.registry); these rows derive from them, and from each model
tree's manifest (its flavor and readable signature). They are rewritten whole whenever the
refs fingerprint changes: a few rows per model.
"""

from __future__ import annotations

import json

from ..core.ids import ObjectId
from ..errors import MlvcError
from ..refs import registry
from ..store.typed import lookup, walk
from .schema import arrow_schema, insert


def refresh(con, refs, store) -> None:
    """Rewrite the model registry tables from refs/models."""
    import pyarrow as pa

    for table, found in rows(refs, store).items():
        con.execute(f"DELETE FROM {table}")
        if found:
            schema = arrow_schema(con, table)
            cols = list(zip(*found, strict=True))
            arrays = [pa.array(c, f.type) for c, f in zip(cols, schema, strict=True)]
            insert(con, table, pa.Table.from_arrays(arrays, schema=schema))


def rows(refs, store) -> dict[str, list[tuple]]:
    """``model_versions``, ``model_aliases`` and ``model_alias_log`` rows (times in µs)."""
    out: dict[str, list[tuple]] = {
        "model_versions": [],
        "model_aliases": [],
        "model_alias_log": [],
        "model_files": [],
    }
    manifests: dict[ObjectId, tuple] = {}
    for name in registry.names(refs):
        found = registry.versions(refs, name)
        alias_map = registry.aliases(refs, name)
        for number, oid in found.items():
            info = registry.version_info(refs, name, number, oid, alias_map)
            if oid not in manifests:
                manifests[oid] = _summary(store, oid)
                out["model_files"] += _files(store, oid)
            flavor, flavor_names, signature = manifests[oid]
            out["model_versions"].append((
                name, number, oid.hex, info.run_id, info.source, flavor, flavor_names,
                signature, info.registered_by, _us(info.registered_at),
            ))  # fmt: skip
        for alias, number in sorted(alias_map.items()):
            log = refs.reflog(registry.alias_ref(name, alias))
            last = log[-1] if log else {}
            oid = found.get(number)
            out["model_aliases"].append((
                name, alias, number, oid.hex if oid else None, last.get("author"),
                _us(last.get("time")),
            ))  # fmt: skip
        for e in registry.alias_history(refs, name):
            out["model_alias_log"].append(
                (name, e["alias"], e["action"], e["version"], e["previous"], e["by"], _us(e["at"]))
            )
    return out


def _files(store, tree: ObjectId) -> list[tuple]:
    """(model id, path, file id, size, kind) of every file in a model tree; none if unreadable
    (the version's row still says where it points)."""
    try:
        return [(tree.hex, p, e.id.hex, e.size, e.kind) for p, e in walk(store, tree)]
    except MlvcError:
        return []


def _us(seconds) -> int | None:
    return None if seconds is None else int(round(seconds * 1e6))


def _summary(store, tree: ObjectId) -> tuple[str | None, list[str] | None, str | None]:
    """(loader flavor, flavor names, readable signature JSON) from a stored model tree."""
    try:
        entry = lookup(store, tree, "mlvc-model.json")
        if entry is not None:
            manifest = json.loads(store.read_bytes(entry.id))
            sig = manifest.get("signature") or {}
            readable = {
                k: {x: y for x, y in (v or {}).items() if x != "arrow"} if v else None
                for k, v in sig.items()
            }
            return (
                manifest.get("flavor"),
                sorted(manifest.get("flavors", {})),
                (json.dumps(readable, sort_keys=True) if sig else None),
            )
        entry = lookup(store, tree, "MLmodel")
        if entry is not None:
            import yaml

            doc = yaml.safe_load(store.read_bytes(entry.id)) or {}
            kinds = sorted(doc.get("flavors") or {})
            return "mlflow", kinds, None
    except (MlvcError, ValueError, ImportError, AttributeError):
        pass
    return None, None, None
