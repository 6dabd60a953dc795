"""The model registry: named models with numbered, immutable versions and movable aliases.

All of it is refs (see mlvc.refs.store), so it is as durable and as logged as run names:
    refs/models/<name>/versions/<n>    the model tree of version n; created once, never moved
    refs/models/<name>/aliases/<a>     ``ref: refs/models/<name>/versions/<n>``
Every change appends to the reflog with who and when; a version's first reflog line holds
its source as JSON (``register {"source": ..., "run_id": ..., "trusted": ...}``; trusted:
it came from this repository or was registered with ``trust=True``), an alias's lines hold the
versions it moved between. A version number is taken by a create-only write under the ref's
lock, so concurrent registers of one name never share a number. The index derives the
``model_versions``, ``model_aliases`` and ``model_alias_log`` tables from these refs
(mlvc.index.models).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field

from ..core.ids import ObjectId
from ..errors import RefExists, UnknownModel, UsageError
from .store import check_ref_name

ROOT = "refs/models"
_VERSION = re.compile(r"^[1-9][0-9]{0,8}$")
MAX_TRIES = 10_000


def version_ref(name: str, version: int) -> str:
    return f"{ROOT}/{name}/versions/{version}"


def alias_ref(name: str, alias: str) -> str:
    return f"{ROOT}/{name}/aliases/{alias}"


def check_name(name: str, what: str = "model name") -> str:
    try:
        check_ref_name(name, what)
    except UsageError:
        raise UsageError(
            f"invalid {what} {name!r}: use letters, digits and . _ - + = "
            "(at most 200, not starting with '.' or '-')"
        ) from None
    return name


def check_alias(alias: str) -> str:
    check_name(alias, "alias")
    if alias.isdigit():
        raise UsageError(f"invalid alias {alias!r}: an alias cannot be a number (versions are)")
    return alias


@dataclass(frozen=True)
class ModelVersion:
    """One registered version; ``uri`` loads it."""

    name: str
    version: int
    model_id: str
    source: str = ""
    run_id: str | None = None
    registered_by: str = ""
    registered_at: float | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)
    trusted: bool = False  # from this repository, or registered with trust=True

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def to_dict(self) -> dict:
        return {**asdict(self), "aliases": list(self.aliases), "uri": self.uri}


def _message(kind: str, value: dict) -> str:
    return f"{kind} {json.dumps(value, sort_keys=True)}"


def _parse(message: str) -> tuple[str, dict]:
    kind, _, rest = message.partition(" ")
    try:
        value = json.loads(rest) if rest else {}
    except ValueError:
        value = {}
    return kind, value if isinstance(value, dict) else {}


# -- reading --------------------------------------------------------------------------------


def names(refs) -> list[str]:
    try:
        entries = os.listdir(refs.dir / ROOT)
    except FileNotFoundError:
        return []
    return sorted(n for n in entries if not n.startswith(".") and (refs.dir / ROOT / n).is_dir())


def versions(refs, name: str) -> dict[int, ObjectId]:
    found = refs.list(f"models/{name}/versions")
    return dict(sorted((int(k), v) for k, v in found.items() if _VERSION.match(k)))


def aliases(refs, name: str) -> dict[str, int]:
    """Alias → version number."""
    out = {}
    base = refs.dir / ROOT / name / "aliases"
    try:
        entries = sorted(os.listdir(base))
    except FileNotFoundError:
        return out
    for alias in entries:
        if alias.endswith(".lock") or alias.startswith("."):
            continue
        target = refs.read_symbolic(alias_ref(name, alias)) or ""
        number = target.rsplit("/", 1)[-1]
        if target.startswith(f"{ROOT}/{name}/versions/") and _VERSION.match(number):
            out[alias] = int(number)
    return out


def version_info(refs, name: str, version: int, oid: ObjectId, alias_map) -> ModelVersion:
    """Version ``version`` of model ``name`` (tree ``oid``), as its reflog tells it;
    ``alias_map`` (alias -> version) gives its aliases."""
    log = refs.reflog(version_ref(name, version))
    first = log[0] if log else {}
    _kind, value = _parse(first.get("message", ""))
    run_id = value.get("run_id")
    source = value.get("source", "")
    # Versions registered before trust was recorded: those from a run of this repository.
    trusted = value.get("trusted", isinstance(source, str) and source.startswith("run:"))
    for entry in log[1:]:
        kind, note = _parse(entry["message"])
        if kind == "run-ended" and note.get("run_id"):
            run_id = note["run_id"]
    return ModelVersion(
        name=name,
        version=version,
        model_id=oid.hex,
        source=source,
        run_id=run_id,
        registered_by=first.get("author", ""),
        registered_at=first.get("time"),
        aliases=tuple(sorted(a for a, v in alias_map.items() if v == version)),
        trusted=trusted is True,
    )


def get(
    refs, name: str, version: int | str | None = None, alias: str | None = None
) -> ModelVersion:
    """A version by number, by alias, or (neither given) the latest."""
    check_name(name)
    found = versions(refs, name)
    if not found:
        raise UnknownModel(f"no registered model {name!r}{_close(refs, name)}")
    alias_map = aliases(refs, name)
    if alias is not None:
        if alias not in alias_map:
            known = ", ".join(sorted(alias_map)) or "none"
            raise UnknownModel(f"model {name!r} has no alias {alias!r} (aliases: {known})")
        version = alias_map[alias]
    if version is None or version == "latest":
        version = max(found)
    if isinstance(version, str) and not _VERSION.match(version):
        raise UsageError(f"invalid version {version!r} of model {name!r}: versions are 1, 2, ...")
    version = int(version)
    if version not in found:
        raise UnknownModel(
            f"model {name!r} has no version {version} (versions 1 to {max(found)})"
            if len(found) == max(found)
            else f"model {name!r} has no version {version} (versions: {_span(found)})"
        )
    return version_info(refs, name, version, found[version], alias_map)


def _span(found) -> str:
    return ", ".join(str(v) for v in sorted(found))


def _close(refs, name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, names(refs), n=5, cutoff=0.5)
    return f"; did you mean: {', '.join(close)}" if close else ""


def list_models(refs) -> list[dict]:
    """Every registered model: name, versions, latest version, aliases, last change."""
    out = []
    for name in names(refs):
        found = versions(refs, name)
        if not found:
            continue
        latest = version_info(refs, name, max(found), found[max(found)], {})
        out.append(
            {
                "name": name,
                "versions": len(found),
                "latest": max(found),
                "latest_model_id": found[max(found)].hex,
                "aliases": aliases(refs, name),
                "registered_at": latest.registered_at,
            }
        )
    return out


def alias_history(refs, name: str, alias: str | None = None) -> list[dict]:
    """Every alias move of a model (or one alias), oldest first, with who and when."""
    found = [alias] if alias else _alias_names(refs, name)
    out = []
    for a in found:
        for entry in refs.reflog(alias_ref(name, a)):
            kind, value = _parse(entry["message"])
            out.append(
                {
                    "name": name,
                    "alias": a,
                    "action": "delete" if kind == "alias-delete" else "set",
                    "version": value.get("version"),
                    "previous": value.get("previous"),
                    "by": entry["author"],
                    "at": entry["time"],
                }
            )
    return sorted(out, key=lambda e: (e["at"], e["alias"]))


def _alias_names(refs, name: str) -> list[str]:
    logs = refs.dir / "logs" / ROOT / name / "aliases"
    try:
        return sorted(n for n in os.listdir(logs) if not n.startswith("."))
    except FileNotFoundError:
        return []


# -- writing --------------------------------------------------------------------------------


def create_version(
    refs,
    name: str,
    tree: ObjectId,
    source: str,
    run_id: str | None,
    who: str,
    trusted: bool = False,
    number: int | None = None,
) -> int:
    """Take the next version number for ``tree``; safe against concurrent registers.
    ``trusted``: its pickles may be loaded without an opt-in (mlvc.models.trust).
    ``number``: exactly this version (an importer keeping another registry's numbers);
    RefExists if it is taken."""
    check_name(name)
    message = _message("register", {"source": source, "run_id": run_id, "trusted": trusted})
    if number is not None:
        refs.write(version_ref(name, number), tree, message, who, create_only=True)
        return number
    for _ in range(MAX_TRIES):
        number = max(versions(refs, name), default=0) + 1
        while refs.reflog(version_ref(name, number)):
            number += 1  # a deleted version's number is never given to another tree
        try:
            refs.write(version_ref(name, number), tree, message, who, create_only=True)
            return number
        except RefExists:
            continue  # another register took this number first: take the next
    raise UsageError(f"could not take a version number for model {name!r}; try again")


def set_alias(refs, name: str, alias: str, version: int | str, who: str) -> ModelVersion:
    check_alias(alias)
    target = get(refs, name, version)
    previous = aliases(refs, name).get(alias)
    message = _message("alias", {"version": target.version, "previous": previous})
    refs.write(
        alias_ref(name, alias), None, message, who, symbolic=version_ref(name, target.version)
    )
    return get(refs, name, target.version)


def delete_alias(refs, name: str, alias: str, who: str) -> int:
    """Remove an alias; returns the version it pointed at."""
    check_alias(alias)
    previous = aliases(refs, name).get(alias)
    if previous is None:
        check_name(name)
        raise UnknownModel(f"model {name!r} has no alias {alias!r}")
    refs.delete(alias_ref(name, alias), _message("alias-delete", {"previous": previous}), who)
    return previous


def note_run(refs, name: str, version: int, run_id: str, who: str) -> None:
    """Record the run id of a version registered while its run was live: the ref is
    rewritten with the same tree (versions never move) so the reflog holds the fact."""
    ref = version_ref(name, version)
    refs.write(ref, refs.read(ref), _message("run-ended", {"run_id": run_id}), who)
