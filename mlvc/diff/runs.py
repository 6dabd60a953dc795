"""Compare two recorded runs section by section: params, metrics, files and environment.

``diff_runs`` reads only what differs: two subtrees (or envs) with equal ids are skipped
without being read, so an unchanged dataset folder costs nothing. ``render_diff`` turns the
result into a git-like report; ``RunDiff.to_dict`` into JSON-ready data.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..capture.env import env_diff
from ..core.ids import ObjectId
from ..core.objects import DIR, Run, TreeEntry, is_finite, is_number
from ..store.odb import ObjectStore
from ..store.typed import read_env, read_run, read_tree

FILE_SECTIONS = ("code", "data", "artifacts")
PATCH_MAX_BYTES = 1 << 20  # files bigger than this get no patch
BINARY_SNIFF = 8 << 10  # a NUL byte this early marks a file as binary, as git does
TOO_LARGE = "(file too large to diff)"
BINARY = "Binary files differ"


@dataclass(frozen=True)
class RunDiff:
    """What differs between run ``a`` (old) and run ``b`` (new); see ``to_dict`` for shapes."""

    a: str
    b: str
    params: dict
    metrics: dict
    code: dict
    data: dict
    artifacts: dict
    env: dict
    unchanged_metrics: int = 0

    def is_empty(self) -> bool:
        """True when the two runs differ in no section."""
        plain = [self.params, self.code, self.data, self.artifacts]
        return (
            not self.metrics
            and all(not v for section in plain for v in section.values())
            and _env_is_empty(self.env)
        )

    def to_dict(self) -> dict:
        """JSON-serializable form with keys a, b, params, metrics, code, data, artifacts, env.

        Shapes:
            params   {"changed": {k: [old, new]}, "added": {k: new}, "removed": {k: old}}
            metrics  {k: {"old", "new", "delta", "pct"}}; a side that lacks the metric is None
            code/data/artifacts
                     {"added": [{"path", "kind", "size", "id"}], "removed": [...],
                      "modified": [{"path", "old_kind", "new_kind", "old_size", "new_size",
                                    "old_id", "new_id"}]}, sorted by path; with patch=True
                     code entries also carry "patch"
            env      mlvc.capture.env.env_diff's result: {"python", "platform", "packages",
                      "variables", "requirements", "hardware", "mlvc"}

        Non-finite floats become the strings "nan", "inf" and "-inf", so a NaN metric stays
        distinct from a missing one (None). Ids are hex strings.
        """
        keys = ("a", "b", "params", "metrics", "code", "data", "artifacts", "env")
        return {k: _jsonable(getattr(self, k)) for k in keys}


def diff_runs(store: ObjectStore, a: ObjectId, b: ObjectId, patch: bool = False) -> RunDiff:
    """Compare run ``a`` (old) with run ``b`` (new); ``patch`` adds unified diffs to code."""
    ra, rb = read_run(store, a), read_run(store, b)
    metrics, unchanged = diff_metrics(ra.metrics, rb.metrics)
    files = {s: diff_trees(store, ra.sections[s], rb.sections[s]) for s in FILE_SECTIONS}
    if patch:
        add_patches(store, files["code"])
    return RunDiff(
        a=a.hex,
        b=b.hex,
        params=diff_params(ra.params, rb.params),
        metrics=metrics,
        env=_diff_envs(store, ra, rb),
        unchanged_metrics=unchanged,
        **files,
    )


# -- params and metrics ----------------------------------------------------------------------


def diff_params(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict:
    """Changed, added and removed params; a change of type (1, 1.0, "1") is a change."""
    return {
        "changed": {
            k: [old[k], new[k]]
            for k in sorted(old.keys() & new.keys())
            if not _same(old[k], new[k])
        },
        "added": {k: new[k] for k in sorted(new.keys() - old.keys())},
        "removed": {k: old[k] for k in sorted(old.keys() - new.keys())},
    }


def _same(x: Any, y: Any) -> bool:
    """Equal in value *and* type, all the way down; NaN equals NaN."""
    if type(x) is not type(y):
        return False
    if isinstance(x, float):
        return x == y or (math.isnan(x) and math.isnan(y))
    if isinstance(x, list | tuple):
        return len(x) == len(y) and all(map(_same, x, y))
    if isinstance(x, Mapping):
        return x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    return x == y


def diff_metrics(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[dict, int]:
    """Every metric that differs or exists on one side only, and how many are unchanged."""
    out, unchanged = {}, 0
    for k in sorted(old.keys() | new.keys()):
        x, y = old.get(k), new.get(k)
        if k in old and k in new and _same_metric(x, y):
            unchanged += 1
            continue
        out[k] = {"old": x, "new": y, "delta": _delta(x, y), "pct": _pct(x, y)}
    return out, unchanged


def _same_metric(x: Any, y: Any) -> bool:
    """Numerically equal (1 == 1.0), NaN equal to NaN."""
    if is_number(x) and is_number(y) and math.isnan(x) and math.isnan(y):
        return True
    return x == y and is_number(x) == is_number(y)


def _delta(x: Any, y: Any) -> float | None:
    return y - x if is_finite(x) and is_finite(y) else None


def _pct(x: Any, y: Any) -> float | None:
    """Percent change relative to |old|, so a drop reads negative even for negative values."""
    if not (is_finite(x) and is_finite(y)) or x == 0:
        return None
    return (y - x) / abs(x) * 100.0


# -- file trees ------------------------------------------------------------------------------


def diff_trees(store: ObjectStore, a: ObjectId | None, b: ObjectId | None) -> dict:
    """Added, removed and modified files between two trees, each list sorted by path."""
    out: dict[str, list] = {"added": [], "removed": [], "modified": []}
    stack = [(a, b, "")]  # iterative: trees of any depth
    while stack:
        _diff_tree(store, *stack.pop(), out, stack)
    for items in out.values():
        items.sort(key=lambda item: item["path"])
    return out


def _diff_tree(store: ObjectStore, a, b, prefix: str, out: dict, todo: list) -> None:
    """Compare one pair of folders; pairs of subfolders that differ go on ``todo``."""
    if a == b:
        return  # equal ids mean equal content: the whole subtree is skipped unread
    old = {e.name: e for e in read_tree(store, a).entries} if a else {}
    new = {e.name: e for e in read_tree(store, b).entries} if b else {}
    for name in sorted(old.keys() | new.keys()):
        ea, eb = old.get(name), new.get(name)
        if ea == eb:
            continue
        path = prefix + name
        dir_a, dir_b = _only(ea, dirs=True), _only(eb, dirs=True)
        if dir_a or dir_b:
            todo.append((dir_a and dir_a.id, dir_b and dir_b.id, path + "/"))
        file_a, file_b = _only(ea, dirs=False), _only(eb, dirs=False)
        if file_a and file_b:
            out["modified"].append(_modified(path, file_a, file_b))
        elif file_a:
            out["removed"].append(_file(path, file_a))
        elif file_b:
            out["added"].append(_file(path, file_b))


def _only(entry: TreeEntry | None, dirs: bool) -> TreeEntry | None:
    """The entry if it is a directory (dirs=True) or a non-directory (dirs=False)."""
    return entry if entry is not None and (entry.kind == DIR) == dirs else None


def _file(path: str, e: TreeEntry) -> dict:
    return {"path": path, "kind": e.kind, "size": e.size, "id": e.id.hex}


def _modified(path: str, a: TreeEntry, b: TreeEntry) -> dict:
    return {
        "path": path,
        "old_kind": a.kind,
        "new_kind": b.kind,
        "old_size": a.size,
        "new_size": b.size,
        "old_id": a.id.hex,
        "new_id": b.id.hex,
    }


# -- patches ---------------------------------------------------------------------------------


def add_patches(store: ObjectStore, files: dict) -> None:
    """Give every added, removed and modified file a ``"patch"``, like ``git diff``."""
    for item in files["added"]:
        item["patch"] = _patch(store, item["path"], None, item)
    for item in files["removed"]:
        item["patch"] = _patch(store, item["path"], item, None)
    for item in files["modified"]:
        old = {"id": item["old_id"], "size": item["old_size"]}
        new = {"id": item["new_id"], "size": item["new_size"]}
        item["patch"] = _patch(store, item["path"], old, new)


def _patch(store: ObjectStore, path: str, old: dict | None, new: dict | None) -> str:
    """A unified diff of one file (3 lines of context), or a note on why there is none."""
    sides = [s for s in (old, new) if s is not None]
    if any(s["size"] > PATCH_MAX_BYTES for s in sides):
        return TOO_LARGE
    texts = [_text(store, s) for s in (old, new)]
    if any(t is None for t in texts):
        return BINARY
    a_name = f"a/{path}" if old else "/dev/null"
    b_name = f"b/{path}" if new else "/dev/null"
    lines = difflib.unified_diff(
        texts[0].splitlines(keepends=True), texts[1].splitlines(keepends=True), a_name, b_name
    )
    return "".join(
        ln if ln.endswith("\n") else ln + "\n\\ No newline at end of file\n" for ln in lines
    )


def _text(store: ObjectStore, side: dict | None) -> str | None:
    """A file's content as text; "" for a missing side, None when the content is binary."""
    if side is None:
        return ""
    data = store.read_bytes(ObjectId.parse(side["id"]))
    if b"\0" in data[:BINARY_SNIFF]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


# -- environment -----------------------------------------------------------------------------


def _diff_envs(store: ObjectStore, a: Run, b: Run) -> dict:
    """The env diff; equal env ids (or both absent) are not read at all."""
    if a.env == b.env:
        return env_diff({}, {})
    old = read_env(store, a.env).facts if a.env else {}
    new = read_env(store, b.env).facts if b.env else {}
    return env_diff(old, new)


def _env_is_empty(env: dict) -> bool:
    """env_diff's "nothing changed": every value empty or None (packages one level down)."""
    return all(not v for k, v in env.items() if k != "packages") and not any(
        env["packages"].values()
    )


# -- environment changes as words (mlvc diff prints them; reproduce's verdict quotes them) ---


def env_lines(e: dict) -> list[str]:
    """env_diff's result as report lines, one per change (what ``mlvc diff`` prints)."""
    return [text for _kind, text in env_change_lines(e)]


def env_change_lines(e: dict) -> list[tuple[str, str]]:
    out = []
    for name in ("python", "mlvc"):
        if e.get(name):
            out += _change_lines(name, e[name]["old"], e[name]["new"])
    for section in ("platform", "hardware"):
        for k, (old, new) in e.get(section, {}).items():
            out += _change_lines(f"{section}.{k}", old, new)
    pk = e["packages"]
    for way in ("upgraded", "downgraded"):
        out += [("M", f"  {n} {old} → {new} ({way})") for n, (old, new) in pk[way].items()]
    out += [("+", f"+ {n} {v}") for n, v in pk["added"].items()]
    out += [("-", f"- {n} {v}") for n, v in pk["removed"].items()]
    for n, (old, new) in pk.get("sources", {}).items():
        out.append(("M", f"  {n} source {_show(old)} → {_show(new)}"))
    for n, (old, new) in pk.get("installers", {}).items():
        out.append(("M", f"  {n} installer {_show(old or None)} → {_show(new or None)}"))
    for k, (old, new) in e.get("variables", {}).items():
        out += _change_lines(f"${k}", old, new)
    out += [("M", f"  requirements {path} changed") for path in e.get("requirements", [])]
    return out


def _change_lines(label: str, old: Any, new: Any) -> list[tuple[str, str]]:
    """``label old → new``; for two maps, one line per differing key ("version" unnamed)."""
    if old is None and new is not None:
        return [("+", f"+ {label} {_show(new)}")]
    if new is None and old is not None:
        return [("-", f"- {label} {_show(old)}")]
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        named = [(label if k == "version" else f"{label}.{k}", k) for k in keys]
        return [_one_change(name, old.get(k), new.get(k)) for name, k in named]
    return [_one_change(label, old, new)]


def _one_change(label: str, old: Any, new: Any) -> tuple[str, str]:
    return ("M", f"  {label} {_show(old)} → {_show(new)}")


def _show(v: Any) -> str:
    if v is None:
        return "(none)"
    if isinstance(v, Mapping) and "version" in v:
        return str(v["version"])
    return v if isinstance(v, str) else json.dumps(_jsonable(v), sort_keys=True)


def _jsonable(value: Any) -> Any:
    """Plain JSON values: non-finite floats as "nan"/"inf"/"-inf", ids as hex."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, ObjectId):
        return value.hex
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
