"""Event records and their journal ``.mlvc/events/`` (the format; mlvc.events emits).

An event is one file ``.mlvc/events/<id>.json`` holding the compact JSON of
``{"id", "type", "timestamp", "data"}`` with sorted keys, so its bytes are stable. Ids are
``evt_<16 hex: µs since the epoch><8 hex: random>``: they sort by time, and two processes
emitting in the same microsecond still write two files. A writer renames a complete,
fsynced temp file into place, so a reader never sees half an event; a file that is not a
valid event anyway (a damaged disk, a hand edit) is skipped with a warning by readers and
reported by fsck.

The format lives here, below the index, because the index derives its ``events`` table
from it (objects and journals are the truth; the index is a cache).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .layout import Layout

log = logging.getLogger("mlvc.events")

SUFFIX = ".json"
MAX_EVENT_BYTES = 1 << 20  # an event names things; it never carries data
_ID = re.compile(r"evt_[0-9a-f]{24}")
_TYPE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")


def new_id(us: int | None = None) -> str:
    """A fresh event id for the time ``us`` (µs since the epoch; default: now)."""
    us = time.time_ns() // 1000 if us is None else us
    return f"evt_{us:016x}{os.urandom(4).hex()}"


def id_time_us(event_id: str) -> int:
    """The µs since the epoch an event id was made at."""
    return int(event_id[4:20], 16)


def id_at(us: int) -> str:
    """The smallest id of time ``us``: a cursor for events at or after it."""
    return f"evt_{us:016x}" + "0" * 8


def iso_utc(us: int) -> str:
    """ISO-8601 UTC with µs and ``Z``: ``2026-12-01T03:04:05.123456Z``."""
    t = datetime.fromtimestamp(us // 1_000_000, tz=timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{us % 1_000_000:06d}Z"


def is_event_type(text: str) -> bool:
    """Whether ``text`` is a dotted lower-case event type such as ``run.finished``."""
    return bool(_TYPE.fullmatch(text))


@dataclass(frozen=True)
class Event:
    """One thing that happened: ``type`` (``run.finished``), when, and ``data`` (ids, names,
    links; JSON-able)."""

    id: str
    type: str
    timestamp: str
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def new(cls, type: str, data: dict[str, Any] | None = None) -> Event:
        """A new event of ``type`` made now."""
        us = time.time_ns() // 1000
        return cls(new_id(us), type, iso_utc(us), jsonable(dict(data or {})))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "timestamp": self.timestamp, "data": self.data}

    def to_json(self) -> str:
        """Compact JSON with sorted keys: the same event always gives the same bytes."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: Any) -> Event:
        """An event from its dict; ValueError naming the problem if it is not one."""
        if not isinstance(d, dict):
            raise ValueError("an event is a JSON object")
        eid, kind, ts, data = d.get("id"), d.get("type"), d.get("timestamp"), d.get("data")
        if not isinstance(eid, str) or not _ID.fullmatch(eid):
            raise ValueError(f"bad event id {eid!r}")
        if not isinstance(kind, str) or not is_event_type(kind):
            raise ValueError(f"bad event type {kind!r}")
        if not isinstance(ts, str):
            raise ValueError(f"bad event timestamp {ts!r}")
        if not isinstance(data, dict):
            raise ValueError("event data is not a JSON object")
        return cls(eid, kind, ts, data)

    @classmethod
    def from_json(cls, text: str | bytes) -> Event:
        try:
            return cls.from_dict(json.loads(text))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"not JSON: {e}") from None

    @property
    def time_us(self) -> int:
        return id_time_us(self.id)

    def matches(self, patterns: Iterable[str] | None) -> bool:
        return type_matches(self.type, patterns)


def jsonable(value: Any) -> Any:
    """``value`` with what strict JSON cannot hold made plain: NaN and infinities as the
    strings ``"nan"``, ``"inf"``, ``"-inf"``, tuples as lists, keys as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def type_matches(kind: str, patterns: Iterable[str] | None) -> bool:
    """Whether ``kind`` matches any glob of ``patterns`` (``run.*``); None matches all."""
    if patterns is None:
        return True
    pats = list(patterns)
    return not pats or any(fnmatch.fnmatchcase(kind, p) for p in pats)


def event_path(layout: Layout, event_id: str) -> Path:
    return layout.events / f"{event_id}{SUFFIX}"


def event_ids(layout: Layout, after: str | None = None) -> list[str]:
    """Ids of the event files, sorted (by time), those after the cursor ``after`` only."""
    try:
        names = os.listdir(layout.events)
    except FileNotFoundError:
        return []
    # only well-formed ids: a stray name (not UTF-8, not hex) is fsck's to report, and
    # would fail every index ingest (DuckDB takes no lone surrogate)
    ids = sorted(
        i for i in (n[: -len(SUFFIX)] for n in names if n.endswith(SUFFIX)) if _ID.fullmatch(i)
    )
    if after is not None:
        import bisect

        ids = ids[bisect.bisect_right(ids, after) :]
    return ids


def load(layout: Layout, event_id: str) -> Event:
    """The event ``event_id``; ValueError if its file is not a valid event of that id,
    FileNotFoundError if it is gone."""
    path = event_path(layout, event_id)
    with open(path, "rb") as f:
        raw = f.read(MAX_EVENT_BYTES + 1)
    if len(raw) > MAX_EVENT_BYTES:
        raise ValueError(f"larger than {MAX_EVENT_BYTES} bytes")
    event = Event.from_json(raw)
    if event.id != event_id:
        raise ValueError(f"holds the event {event.id}, not {event_id}")
    return event


def read_events(
    layout: Layout, after: str | None = None, types: Iterable[str] | None = None
) -> Iterator[Event]:
    """Events in id (time) order, after the id ``after``, of the type globs ``types``.

    A file that is not a valid event is skipped with a warning (``mlvc fsck`` reports it).
    """
    patterns = None if types is None else list(types)
    for eid in event_ids(layout, after):
        try:
            event = load(layout, eid)
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as e:
            log.warning("skipping the damaged event file %s: %s", event_path(layout, eid), e)
            continue
        if event.matches(patterns):
            yield event


# Writers take an id before they rename their file in: another process's event may land a
# little after a reader saw a later id. Followers therefore look back this far each time.
LATE_WINDOW_US = 5_000_000


def follow(
    layout: Layout,
    after: str | None = None,
    types: Iterable[str] | None = None,
    poll: float = 0.2,
    stop=None,
) -> Iterator[Event]:
    """Events after ``after``, then every new one as it lands, until ``stop()`` is true.

    Polls the journal folder every ``poll`` seconds. Events written late (their id older
    than one already seen, by up to LATE_WINDOW_US) are still delivered, each once.
    """
    patterns = None if types is None else list(types)
    seen: dict[str, int] = {}
    cursor = after
    while True:
        for event in read_events(layout, cursor, patterns):
            if event.id not in seen:
                seen[event.id] = event.time_us
                yield event
        if seen:
            newest = max(seen.values())
            floor = newest - LATE_WINDOW_US
            look = id_at(floor)
            cursor = look if after is None or look > after else after
            seen = {k: v for k, v in seen.items() if v >= floor}
        if stop is not None and stop():
            return
        time.sleep(poll)


def check(layout: Layout) -> list[str]:
    """Problems of the event journal, for fsck: files that are not valid events."""
    problems = []
    try:
        names = sorted(os.listdir(layout.events))
    except FileNotFoundError:
        return []
    for name in names:
        path = layout.events / name
        eid = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else None
        if eid is None or not _ID.fullmatch(eid):
            problems.append(f"event journal: {path} is not an event file (remove it)")
            continue
        try:
            load(layout, eid)
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as e:
            problems.append(f"event journal: {path} is damaged ({e}); remove it or restore it")
    return problems


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``30s``, ``10m``, ``2h``, ``1d``, ``1h30m``; ValueError if not."""
    t = str(text).strip().lower()
    pos, total = 0, 0.0
    for m in _DURATION.finditer(t):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    if pos == 0 or pos != len(t):
        raise ValueError(f"{text!r} is not a duration such as 30s, 10m, 2h or 1d")
    return total


def parse_since(text: str, now_us: int | None = None) -> int:
    """µs since the epoch for ``--since``: an ISO-8601 time (UTC unless it says otherwise)
    or a duration back from now (``10m``, ``2h``, ``1d``); ValueError if neither."""
    now_us = time.time_ns() // 1000 if now_us is None else now_us
    try:
        return now_us - int(parse_duration(text) * 1_000_000)
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO time (2026-12-01T09:00:00Z) nor a duration back "
            "from now (10m, 2h, 1d)"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return int(t.timestamp() * 1_000_000)
