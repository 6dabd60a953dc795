"""The ``events`` table: the event journal (``.mlvc/events/``, mlvc.core.events) as rows.

The journal is the truth; this table is derived from it like every other (a rebuild reads
the whole journal again). The index stores the journal's fingerprint (file count and newest
id) and brings the table up to date when it differs: events after the newest it had, with a
look-back for ones renamed in late by a slower writer, are inserted unless held already.

The fingerprint also notes the folder's identity (inode, mtime) when its last change was
older than ``journal.settle_ns`` as it was listed: while the folder still has that identity, no
event came or went, and a reader knows the table is current from one ``stat`` instead of
listing every event file (~1.4 µs each: ~50 ms at 10,000 runs, ~0.5 s at 100,000, on every
read). A folder changed more recently may change again within the same clock tick unseen,
so then the listing decides, as before.
"""

from __future__ import annotations

import json
import logging
import os
import time

from ..core.events import LATE_WINDOW_US, event_ids, id_at, id_time_us, load
from ..core.layout import Layout
from . import schema
from .journal import settle_ns

log = logging.getLogger(__name__)

COLUMNS = ("id", "type", "timestamp", "run_id", "name", "data")
UNSURE = "~"  # the folder's identity, when it had changed too recently to be trusted
CHECK_EVERY = 64  # event files ``refresh`` reads between two calls of its ``check``


def current(layout: Layout, stored: str | None) -> bool:
    """Whether an index whose events fingerprint is ``stored`` holds the journal as it is:
    from the folder's identity alone when the stored one was settled, else by a listing
    while the folder changes. Once it has settled under another identity, no: one ingest
    notes it (and whatever event came), so reads stop listing."""
    if stored is None:
        return False
    folder, settled = _folder(layout)
    if _identity(stored) == folder:
        return True
    if settled:
        return False
    return _counted(stored) == _counted(fingerprint(layout))


def fingerprint(layout: Layout) -> str:
    """The journal as of now, as the index notes it: ``<file count>:<newest id>@<folder>``,
    the folder's inode and mtime (``UNSURE`` if it changed within ``settle_ns``), taken
    before the listing: an event renamed in after it changes the folder again."""
    folder, settled = _folder(layout)
    return _fingerprint(event_ids(layout), folder if settled else UNSURE)


def _folder(layout: Layout) -> tuple[str, bool]:
    """(the events folder's identity, whether its last change is older than ``settle_ns``)."""
    try:
        st = os.stat(layout.events)
    except FileNotFoundError:
        return "-", True
    window = settle_ns(layout.dir)
    return f"{st.st_ino}.{st.st_mtime_ns}", time.time_ns() - st.st_mtime_ns >= window


def _fingerprint(ids: list[str], folder: str) -> str:
    return f"{len(ids)}:{ids[-1] if ids else '-'}@{folder}"


def _counted(fp: str | None) -> str:
    """``<count>:<newest>`` of a fingerprint (the whole of one stored before the folder's
    identity was noted)."""
    return (fp or "").partition("@")[0]


def _identity(fp: str) -> str | None:
    """The settled folder identity a fingerprint notes, else None."""
    folder = fp.partition("@")[2]
    return None if folder in ("", UNSURE) else folder


def refresh(con, layout: Layout, stored: str | None, check=None) -> str:
    """Insert the journal's events the table lacks; returns the journal's fingerprint.
    ``check``: called before each CHECK_EVERY event files read (it may raise to stop:
    ``Writer.give_way``; many may wait, when reads of runs only left them)."""
    folder, settled = _folder(layout)
    if stored is not None and _identity(stored) == folder:
        return stored  # settled when noted, and untouched since: nothing to list
    ids = event_ids(layout)
    fp = _fingerprint(ids, folder if settled else UNSURE)
    if _counted(stored) == _counted(fp):
        return fp
    candidates = ids
    count, _, newest = _counted(stored).partition(":")
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
        if check is not None and len(rows) % CHECK_EVERY == 0:
            check()
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
