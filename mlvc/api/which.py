"""``mlvc which``: every run that consumed or produced a file, found by its content.

A file's id is the BLAKE3 of its bytes (``b3sum``), whatever its path and however the store
chunks it, so a copy found anywhere (outside the repository too) names the same runs. The
lookup is one probe of the index's ``provenance`` view by ``object_id``, which an ART index
on ``tree_files.object_id`` serves (docs/sql-schema.md); a hash prefix is first resolved to
one id by a scan of the file ids, like git's short ids.

Terms:
    consumed   the file was in a run's ``code`` or ``data`` section (an input).
    produced   the file was in a run's ``artifacts`` (an output, a log, a model file).
    first producer  the earliest run (by start time, then id) that produced it.
    model      a registered model version whose tree holds the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.ids import ObjectId, is_hex_prefix, short
from ..errors import AmbiguousObject, UnknownObject, UnreadablePath, UsageError

if TYPE_CHECKING:
    from ..workspace.context import RepoContext

_PREFIX_SHOWN = 5  # ids listed in an "ambiguous prefix" error


@dataclass
class Provenance:
    """What ``mlvc which`` found for one file id (see the module docstring for the terms)."""

    object_id: str
    given: str  # what the user gave: a path, a hash or a prefix
    path: str | None = None  # the file hashed, when a path was given
    size: int | None = None
    consumed: list[dict] = field(default_factory=list)
    produced: list[dict] = field(default_factory=list)
    models: list[dict] = field(default_factory=list)

    @property
    def first_producer(self) -> dict | None:
        return self.produced[0] if self.produced else None

    @property
    def found(self) -> bool:
        return bool(self.consumed or self.produced or self.models)

    def to_dict(self) -> dict:
        """``{"id", "given", "path", "size", "consumed": [...], "produced": [...],
        "first_producer", "models": [...]}``; each run entry is ``{"run", "short", "name",
        "section", "path", "started"}``; each model ``{"name", "version", "path", "run"}``."""
        return {
            "id": self.object_id,
            "given": self.given,
            "path": self.path,
            "size": self.size,
            "consumed": self.consumed,
            "produced": self.produced,
            "first_producer": self.first_producer,
            "models": self.models,
        }


def which(ctx: RepoContext, target: str) -> Provenance:
    """The runs and model versions that hold the file ``target`` names: a path (hashed; it
    may lie outside the repository), a full file id, or a unique id prefix."""
    given = str(target)
    path = Path(given)
    if os.path.lexists(path):
        oid, size = _hash(path, given)
        found = _lookup(ctx, oid.hex)
        return _shape(oid.hex, given, found, path=str(path.resolve()), size=size)
    text = given.strip().lower()
    if not is_hex_prefix(text):
        raise UsageError(
            f"{given!r} is neither a file nor a file id (64 hex digits, or a prefix of at "
            "least 4); give a path to a file or its id (`b3sum FILE` prints it)"
        )
    oid_hex = text if len(text) == 64 else _resolve_prefix(ctx, text)
    found = _lookup(ctx, oid_hex)
    size = found[0]["size"] if found else None
    return _shape(oid_hex, given, found, size=size)


def _hash(path: Path, given: str) -> tuple[ObjectId, int]:
    from ..store.odb import hash_file

    if path.is_dir():
        raise UsageError(
            f"{given} is a folder; `mlvc which` finds one file by its content: give a file "
            f"inside it (e.g. {given.rstrip('/')}/FILE) or a file id"
        )
    try:
        return hash_file(path), path.stat().st_size
    except OSError as e:
        raise UnreadablePath(given, e) from None


def _resolve_prefix(ctx: RepoContext, prefix: str) -> str:
    """The one file id in the index starting with ``prefix`` (a scan of the file ids)."""
    ids = _prefix_matches(ctx, prefix)
    if not ids:
        raise UnknownObject(
            f"no file of any run or registered model has an id starting with {prefix}"
        )
    if len(ids) > 1:
        shown = ", ".join(short(i) for i in ids[:_PREFIX_SHOWN])
        more = " ..." if len(ids) > _PREFIX_SHOWN else ""
        raise AmbiguousObject(
            f"file id prefix {prefix} is ambiguous: {len(ids)} files match ({shown}{more}); "
            "give more digits"
        )
    return ids[0]


def _prefix_matches(ctx: RepoContext, prefix: str) -> list[str]:
    # ``prefix`` is checked hex above, so it is safe inside the literal
    rows = ctx.index.query(
        f"SELECT DISTINCT object_id FROM provenance WHERE object_id LIKE '{prefix}%' "
        "ORDER BY object_id"
    )
    return rows.column("object_id").to_pylist()


def _lookup(ctx: RepoContext, oid_hex: str) -> list[dict]:
    """Every provenance row of one file id: the indexed point lookup."""
    rows = ctx.index.query(
        # times as epoch µs: Arrow's timestamp-with-zone conversion would import pandas
        "SELECT run_id, run_name, section, role, path, size, epoch_us(created) AS us, "
        "model_name, "
        f"model_version FROM provenance WHERE object_id = '{oid_hex}' "
        "ORDER BY created NULLS LAST, run_id, section, path"
    )
    return rows.to_pylist()


def _iso(us: int | None) -> str | None:
    if us is None:
        return None
    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).isoformat()


def _shape(
    oid_hex: str, given: str, rows: list[dict], path: str | None = None, size: int | None = None
) -> Provenance:
    out = Provenance(oid_hex, given, path=path, size=size)
    for r in rows:
        if r["role"] == "registered":
            out.models.append(
                {
                    "name": r["model_name"],
                    "version": r["model_version"],
                    "path": r["path"],
                    "run": r["run_id"],
                }
            )
            continue
        entry = {
            "run": r["run_id"],
            "short": short(r["run_id"]),
            "name": r["run_name"] or "",
            "section": r["section"],
            "path": r["path"],
            "started": _iso(r["us"]),
        }
        (out.produced if r["role"] == "produced" else out.consumed).append(entry)
    return out
