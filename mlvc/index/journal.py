"""The journal: what the index must catch up with before it answers.

``.mlvc/journal/<run id>`` is an empty file a commit writes before the run's ref; the ingest
that applied it deletes it once its rows are checkpointed, so a crash anywhere leaves entries
the next ingest applies again. An entry whose run has a ref marks a run to ingest. One without
a ref is either a commit still in progress (kept, and dropped as abandoned after
ABANDONED_AFTER seconds) or, for a run the index holds, a run whose ref was deleted (the
index drops it).

Named refs (run names, tags, the model registry) are not journalled: the index keeps a
fingerprint of their folders and refreshes its ``refs`` and model tables when it changes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import NamedTuple

from ..core.ids import ObjectId
from ..core.layout import Layout
from . import schema
from .schema import indexed

ABANDONED_AFTER = 600.0  # a journal entry without a ref this old is a commit that died
REFS_SETTLE_NS = 2_000_000_000  # directory mtimes are coarse: recheck refs changed this recently


class Entry(NamedTuple):
    oid: ObjectId
    path: Path
    mtime: float


class Journal:
    """The journal of the repository at ``layout``, judged against its ``refs``."""

    def __init__(self, layout: Layout, refs):
        self.dir = layout.journal
        self.layout = layout
        self.refs_dir = layout.refs
        self.refs = refs

    def add(self, run_id: ObjectId) -> None:
        """Mark a run for ingestion (before its ref is written, and after it is deleted)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        os.close(os.open(self.dir / run_id.hex, os.O_WRONLY | os.O_CREAT, 0o644))

    def entries(self) -> list[Entry]:
        """Every entry, sorted by run id (commits still in progress included)."""
        try:
            found = list(os.scandir(self.dir))
        except FileNotFoundError:
            return []
        out = []
        for ent in found:
            try:
                oid = ObjectId.parse(ent.name)
                out.append(Entry(oid, Path(ent.path), ent.stat().st_mtime))
            except (ValueError, FileNotFoundError):
                continue
        return sorted(out)

    def actionable(self, con, entries: list[Entry]) -> list[Entry]:
        """Entries an ingest would act on now (not commits still in progress), given the
        index connection ``con``."""
        now = time.time()
        out, unsure = [], []
        for entry in entries:
            if self.refs.has_run(entry.oid) or now - entry.mtime > ABANDONED_AFTER:
                out.append(entry)
            else:
                unsure.append(entry)
        if unsure:
            held = indexed(con, [e.oid.hex for e in unsure])
            out += [e for e in unsure if e.oid.hex in held]
        return out

    def events_fingerprint(self) -> str:
        """The event journal as of now (``<count>:<newest id>``): the index's ``events``
        table is current when it noted the same."""
        from .events import fingerprint

        return fingerprint(self.layout)

    def current(self, con, meta: dict[str, str]) -> bool:
        """Whether an index with ``meta`` (read on ``con``) needs no ingest now."""
        return (
            schema.is_current(meta)
            and settled(meta.get("refs_fingerprint")) == self.refs_fingerprint()
            and meta.get("events_fingerprint") == self.events_fingerprint()
            and not self.actionable(con, self.entries())
        )

    def refs_fingerprint(self) -> str:
        """Identity of refs/names, refs/tags and the model registry's folders as of now: any
        ref written there changes it.

        A directory changed in the last couple of seconds may change again within the same
        mtime tick, so such a fingerprint is marked unsettled and never matches.
        """
        parts, newest = [], 0
        folders = ["names", "tags", "models"]
        try:
            for name in sorted(os.listdir(self.refs_dir / "models")):
                folders += [f"models/{name}/versions", f"models/{name}/aliases"]
        except (FileNotFoundError, NotADirectoryError):
            pass
        for ns in folders:
            try:
                st = os.stat(self.refs_dir / ns)
            except FileNotFoundError:
                parts.append("-")
                continue
            parts.append(f"{st.st_ino}.{st.st_mtime_ns}")
            newest = max(newest, st.st_mtime_ns)
        fp = "/".join(parts)
        if time.time_ns() - newest < REFS_SETTLE_NS:
            fp += "/unsettled"
        return fp


def settled(fingerprint: str | None) -> str | None:
    """A stored refs fingerprint, or None if it was taken too soon after a change to trust."""
    return None if fingerprint is None or fingerprint.endswith("/unsettled") else fingerprint
