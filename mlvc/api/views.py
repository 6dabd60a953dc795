"""A run as plain data: what ``mlvc show`` prints and ``Repo.show`` returns."""

from __future__ import annotations

import math
from datetime import datetime, timezone

from ..core.ids import ObjectId
from ..core.objects import Run
from ..store.odb import ObjectStore
from ..store.typed import read_env, totals, walk


def iso(us: int) -> str:
    if not us:
        return ""
    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).isoformat(timespec="seconds")


def jsonable(value):
    """NaN and infinities as the strings 'nan', 'inf', '-inf' (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, ObjectId):
        return value.hex
    return value


def env_summary(facts: dict) -> dict:
    py = facts.get("python", {})
    plat = facts.get("platform", {})
    return {
        "python": f"{py.get('implementation', '')} {py.get('version', '')}".strip(),
        "platform": " ".join(
            str(plat.get(k, "")) for k in ("system", "release", "machine")
        ).strip(),
        "packages": len(facts.get("packages", {})),
        "variables": facts.get("variables", {}),
    }


def describe_run(
    store: ObjectStore, oid: ObjectId, run: Run, files: bool = True, head: ObjectId | None = None
) -> dict:
    git = dict(run.git)
    out = {
        "id": oid.hex,
        "short_id": oid.short,
        "head": head == oid,
        "name": run.name,
        "message": run.message,
        "author": run.author,
        "status": run.status,
        "started": iso(run.started),
        "ended": iso(run.ended),
        "duration_s": round((run.ended - run.started) / 1e6, 3) if run.ended else None,
        "parents": [p.hex for p in run.parents],
        "command": list(run.command),
        "cwd": run.cwd,
        "exit_code": run.exit_code,
        "reproduces": run.reproduces.hex if run.reproduces else None,
        "tags": dict(run.tags),
        "params": jsonable(dict(run.params)),
        "metrics": jsonable(dict(run.metrics)),
        "git": git,
        "env": None,
        "series": run.series.hex if run.series else None,
        "models": jsonable(dict(run.models)),
    }
    if run.env is not None:
        out["env"] = {"id": run.env.hex, **env_summary(read_env(store, run.env).facts)}
    for section, tree in run.sections.items():
        if not files:
            count, size = totals(store, tree)
            out[section] = {"tree": tree.hex if tree else None, "files": count, "size": size}
            continue
        entries = list(walk(store, tree)) if tree is not None else []
        out[section] = {
            "tree": tree.hex if tree else None,
            "files": len(entries),
            "size": sum(e.size for _, e in entries),
            "entries": [
                {"path": p, "kind": e.kind, "size": e.size, "id": e.id.hex} for p, e in entries
            ],
        }
    return out
