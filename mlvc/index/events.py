"""The ``events`` table: the event journal (``.mlvc/events/``, mlvc.core.events) as rows.

The journal is the truth; this table is derived from it like every other (a rebuild reads
the whole journal again). The index stores the journal's fingerprint (file count and newest
id) and brings the table up to date when it differs: events after the newest it had, with a
look-back for ones renamed in late by a slower writer, are inserted unless held already.
"""

from __future__ import annotations

import json
import logging

from ..core.events import LATE_WINDOW_US, event_ids, id_at, id_time_us, load
from ..core.layout import Layout
from . import schema

log = logging.getLogger(__name__)

COLUMNS = ("id", "type", "timestamp", "run_id", "name", "data")


def fingerprint(layout: Layout) -> str:
    """The journal as of now, as the index notes it: ``<file count>:<newest id>``."""
    ids = event_ids(layout)
    return _fingerprint(ids)


def _fingerprint(ids: list[str]) -> str:
    return f"{len(ids)}:{ids[-1] if ids else '-'}"


def refresh(con, layout: Layout, stored: str | None) -> str:
    """Insert the journal's events the table lacks; returns the journal's fingerprint."""
    ids = event_ids(layout)
    fp = _fingerprint(ids)
    if stored == fp:
        return fp
    candidates = ids
    count, _, newest = (stored or "").partition(":")
    if count.isdigit() and int(count) <= len(ids) and newest.startswith("evt_"):
        look = id_at(max(0, id_time_us(newest) - LATE_WINDOW_US))
        candidates = [i for i in ids if i > look]
    else:  # files removed, or a first fill: compare everything
        held_all = {r[0] for r in con.execute("SELECT id FROM events").fetchall()}
        stale = sorted(held_all - set(ids))
        if stale:
            con.execute("DELETE FROM events WHERE id IN (SELECT unnest(?::VARCHAR[]))", [stale])
    held = schema.present(con, "SELECT id FROM events", candidates)
    rows = []
    for eid in candidates:
        if eid in held:
            continue
        try:
            event = load(layout, eid)
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as e:
            log.warning("the index skips the damaged event file %s: %s", eid, e)
            continue
        rows.append(_row(event))
    if rows:
        _insert(con, rows)
    return fp


def _row(event) -> tuple:
    data = event.data
    run_id = data.get("run_id") if isinstance(data.get("run_id"), str) else None
    name = data.get("name") if isinstance(data.get("name"), str) else None
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return (event.id, event.type, event.time_us, run_id, name, text)


def _insert(con, rows: list[tuple]) -> None:
    import pyarrow as pa

    cols = list(zip(*rows, strict=True))
    table = pa.table(
        {
            "id": pa.array(cols[0], pa.string()),
            "type": pa.array(cols[1], pa.string()),
            "timestamp": pa.array(cols[2], pa.timestamp("us", tz="UTC")),
            "run_id": pa.array(cols[3], pa.string()),
            "name": pa.array(cols[4], pa.string()),
            "data": pa.array(cols[5], pa.string()),
        }
    )
    schema.insert(con, "events", table)
