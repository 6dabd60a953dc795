"""Local refs as a remote's refs.json sees them, and the three-way rule that moves them.

A remote's refs are the local refs under ``refs/`` minus ``runs/`` (run names, tags, model
versions and aliases); HEAD is never pushed. Each key is compared three ways: the local
value, the remote's, and ``base``, the value both last agreed on. A side that still holds
the base value did not change it, so the other side's value wins; when both changed it, to
different values, it is a conflict, reported and never overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.ids import ObjectId
from ..refs import registry
from . import format as fmt


def local_refs(refs) -> dict[str, str]:
    """Every movable local ref as refs.json keys it."""
    out: dict[str, str] = {}
    for space in ("names", "tags"):
        for name, oid in refs.list(space).items():
            out[f"{space}/{name}"] = oid.hex
    for model in registry.names(refs):
        for number, oid in registry.versions(refs, model).items():
            out[f"models/{model}/versions/{number}"] = oid.hex
        for alias, number in registry.aliases(refs, model).items():
            out[f"models/{model}/aliases/{alias}"] = (
                f"{fmt.SYMBOLIC}models/{model}/versions/{number}"
            )
    return out


def target(value: str) -> ObjectId | None:
    """The object a ref value names (None for a symbolic one)."""
    return None if value.startswith(fmt.SYMBOLIC) else ObjectId.parse(value)


def write_local(refs, key: str, value: str, message: str, author: str = "") -> None:
    if value.startswith(fmt.SYMBOLIC):
        refs.write(f"refs/{key}", None, message, author,
                   symbolic="refs/" + value[len(fmt.SYMBOLIC) :])  # fmt: skip
    else:
        refs.write(f"refs/{key}", ObjectId.parse(value), message, author)


@dataclass
class Merge:
    """What pull does to local refs."""

    updated: dict[str, str] = field(default_factory=dict)  # key -> new local value
    kept: list[str] = field(default_factory=list)  # changed here only: push them
    conflicts: list[str] = field(default_factory=list)  # one line each


def plan_pull(remote_name: str, local: dict, remote: dict, base: dict) -> Merge:
    """Which local refs take the remote's value (three-way, see the module docstring)."""
    out = Merge()
    for key, theirs in sorted(remote.items()):
        mine, agreed = local.get(key), base.get(key)
        if mine == theirs:
            continue
        if mine is None or mine == agreed:
            out.updated[key] = theirs
        elif theirs == agreed:
            out.kept.append(key)
        else:
            out.conflicts.append(
                f"{key}: changed here ({_short(mine)}) and on {remote_name} ({_short(theirs)}); "
                f"kept yours (move it with `mlvc tag`/a commit, or push with --force)"
            )
    return out


def _short(value: str) -> str:
    return value if value.startswith(fmt.SYMBOLIC) else value[:10]
