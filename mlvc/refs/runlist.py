"""The run list: every recorded run's one-line summary, newest first, without the index.

``mlvc log`` shows a few fields of each run (name, status, times, message, author, parent).
Reading them from the DuckDB index costs the duckdb and pyarrow imports (~0.5 s) for a
command that prints one line, so the list is built from what the index is built from: the
set of runs (``refs/runs/<id>``) and their run objects, sorted as the index's ``runs`` table
would sort them (``created DESC NULLS LAST, id``).

Reading every run object on each ``log`` would cost a read per run, so the summaries are kept
in ``.mlvc/runlist``, one JSON line per run, appended by each commit, each fetch (and a
server's receiving a push) and by a ``log`` that had to read runs the file lacked. Run
objects are immutable, so a line never goes stale: the file only lacks runs (read then) or
holds runs no longer listed (ignored). A torn or foreign line is skipped (its run is read
again), and a file that cannot be written (a read-only repository) only means the runs are
read each time. ``refs/runs`` stays the truth.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from ..core.ids import ObjectId
from ..errors import MlvcError
from ..store.typed import read_run

if TYPE_CHECKING:
    from pathlib import Path

    from ..core.objects import Run
    from ..store.odb import ObjectStore
    from .store import RefStore

log = logging.getLogger("mlvc")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_FIELDS = ("name", "status", "message", "author", "started", "ended", "parent")
_HEX = frozenset("0123456789abcdef")
REWRITE_SLACK = 1024  # lines for runs no longer listed (or repeated) tolerated before a rewrite


def summary(oid: ObjectId, run: Run) -> list:
    """A run's line in the run list: its id, then ``_FIELDS`` (unknown times as None)."""
    parent = run.parents[0].hex if run.parents else None
    return [oid.hex, run.name, run.status, run.message, run.author, _micros(run.started),
            _micros(run.ended), parent]  # fmt: skip


def remember(path: Path, runs: Iterable[tuple[ObjectId, Run]]) -> None:
    """Append the summaries of these runs to the run list (a cache: failures only warn)."""
    _append(path, [summary(oid, run) for oid, run in runs])


def remember_read(path: Path, store: ObjectStore, ids: Iterable[ObjectId]) -> None:
    """Append the summaries of the runs ``ids``, read from ``store`` (runs a fetch brought:
    a later ``log`` then need not read them); an unreadable one is left out."""
    _append(path, _summaries(store, ids))


def _summaries(store: ObjectStore, ids: Iterable[ObjectId]) -> list[list]:
    rows = []
    for oid in ids:
        try:
            rows.append(summary(oid, read_run(store, oid)))
        except MlvcError:
            continue  # unreadable: left out, as the index leaves it out (ingest_errors)
    return rows


def recent_runs(
    path: Path, refs: RefStore, store: ObjectStore, limit: int | None = None
) -> list[dict[str, Any]]:
    """Runs newest first, as the rows of the index's ``runs`` columns that ``log`` shows:
    id, short_id, name, status, message, author, created, ended, parent."""
    ids = _run_ids(refs)
    cached, lines = _read(path)
    known = {rid: row for rid, row in cached.items() if rid in ids}
    new = _summaries(store, (ObjectId.parse(rid) for rid in sorted(ids - known.keys())))
    known.update((row[0], row) for row in new)
    if lines - len(known) > REWRITE_SLACK:
        _rewrite(path, list(known.values()))
    elif new:
        _append(path, new)
    if limit is None:
        rows = sorted(known.values(), key=_order)
    else:
        rows = heapq.nsmallest(max(limit, 0), known.values(), key=_order)
    return [_dict(row) for row in rows]


def _run_ids(refs: RefStore) -> set[str]:
    """The ids ``refs/runs`` lists, as hex (``RefStore.run_ids`` without making ObjectIds)."""
    try:
        names = os.listdir(refs.dir / "refs" / "runs")
    except FileNotFoundError:
        return set()
    return {n for n in names if len(n) == 64 and _HEX.issuperset(n)}


def _order(row: list) -> tuple:
    """The index's ``ORDER BY created DESC, id`` (DuckDB puts NULLs last)."""
    created = row[5]
    return (created is None, -(created or 0), row[0])


def _dict(row: list) -> dict[str, Any]:
    rid, name, status, message, author, started, ended, parent = row
    return {
        "id": rid,
        "short_id": rid[:10],
        "name": _text(name),
        "status": _text(status),
        "message": _text(message),
        "author": _text(author),
        "created": _time(started),
        "ended": _time(ended),
        "parent": parent,
    }


def _text(value) -> str | None:
    return None if value is None else str(value)


def _micros(value) -> int | None:
    """Run times are int microseconds; 0 (or anything else) means unknown."""
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63
    return value if ok else None


def _time(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + timedelta(microseconds=us)


def _valid(row) -> bool:
    """A line as ``summary`` writes it; any other is ignored (its run is read again)."""
    if type(row) is not list or len(row) != 1 + len(_FIELDS):
        return False
    rid, started, ended, parent = row[0], row[5], row[6], row[7]
    return (
        type(rid) is str
        and len(rid) == 64
        and (started is None or _micros(started) is not None)
        and (ended is None or _micros(ended) is not None)
        and (parent is None or (type(parent) is str and len(parent) == 64))
    )


def _read(path: Path) -> tuple[dict[str, list], int]:
    """The summaries in the run list by run id, and how many lines it holds."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return {}, 0
    lines = data.split(b"\n")
    try:  # one parse for the whole file: the common case, every line whole
        parsed = json.loads(b"[" + b",".join(line for line in lines if line) + b"]")
    except ValueError:
        parsed = [_loads(line) for line in lines]
    return {row[0]: row for row in parsed if _valid(row)}, len(lines) - 1


def _loads(line: bytes):
    try:
        return json.loads(line)
    except ValueError:
        return None  # torn by a writer killed mid-line, or not ours


def _encode(rows: list[list]) -> bytes:
    return b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in rows)


def _append(path: Path, rows: list[list]) -> None:
    """One write with O_APPEND: concurrent writers' lines do not interleave."""
    if not rows:
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, _encode(rows))
        finally:
            os.close(fd)
    except OSError as e:
        log.debug("run list not written: %s", e)


def _rewrite(path: Path, rows: list[list]) -> None:
    """The run list holding only ``rows`` (temp file + rename; a cache, so no fsync)."""
    tmp = path.with_name(f".{path.name}.{os.urandom(4).hex()}.tmp")
    try:
        tmp.write_bytes(_encode(rows))
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        log.debug("run list not rewritten: %s", e)
