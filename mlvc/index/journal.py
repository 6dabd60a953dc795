"""The journal: what the index must catch up with before it answers.

``.mlvc/journal/<run id>`` is an empty file a commit writes before the run's ref; the ingest
that applied it deletes it once its rows are checkpointed, so a crash anywhere leaves entries
the next ingest applies again. An entry whose run has a ref marks a run to ingest. One without
a ref is either a commit still in progress (kept, and dropped as abandoned after
ABANDONED_AFTER seconds) or, for a run the index holds, a run whose ref was deleted (the
index drops it).

Named refs (run names, tags, the model registry) are not journalled: the index keeps a
fingerprint of their folders and refreshes its ``refs`` and model tables when it changes.
A fingerprint taken within a clock tick of a change cannot be trusted alone (a later write
in the same tick leaves the folder looking unchanged); for names and tags, a reader then
checks the ``refs`` rows against the files themselves (``refs_match``) instead of ingesting.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import NamedTuple

from ..core.ids import ObjectId
from ..core.layout import Layout
from ..core.localfs import is_local
from ..refs.store import text_name
from . import schema
from .schema import indexed
from .user_sql import tables_read

ABANDONED_AFTER = 600.0  # a journal entry without a ref this old is a commit that died
REFS_SETTLE_NS = 2_000_000_000  # directory mtimes are coarse: recheck refs changed this recently
# ... on a file system this kernel stamps (core/localfs.py), by its clock: one tick, 10 ms at
# most; on any other (NFS, FUSE: times from elsewhere, whole seconds on some), REFS_SETTLE_NS
LOCAL_SETTLE_NS = 50_000_000
_LOCAL: dict[str, bool] = {}  # .mlvc folder -> on a local file system
# A refs fingerprint taken too soon after a change: of the model registry's folders (never
# matches), or of names and tags only (matches once ``refs_match`` finds the rows current).
UNSETTLED, RECENT = "/unsettled", "/recent"
# marks a stored fingerprint taken while a name or tag was a symbolic ref: its target may be
# a ref no folder of the fingerprint holds (refs/custom/x), so the rows are always checked
SYMBOLIC = "/symbolic"


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

    def events_current(self, stored: str | None) -> bool:
        """Whether an index whose events fingerprint is ``stored`` holds the event journal
        as it is now (index/events.py)."""
        from .events import current

        return current(self.layout, stored)

    def current(self, con, meta: dict[str, str], sql: str | None = None) -> bool:
        """Whether an index with ``meta`` (read on ``con``) needs no ingest now, for the read
        ``sql`` (one of runs only needs none of the named refs or events: ``runs_only``)."""
        return (
            schema.is_current(meta)
            and (  # the parse first: the other two list the event folder or stat each name
                runs_only(con, sql)  # while those change, and the read reads neither
                or self.events_current(meta.get("events_fingerprint"))
                and self.refs_current(con, meta.get("refs_fingerprint"))
            )
            and not self.actionable(con, self.entries())
        )

    def refs_current(self, con, stored: str | None, now: str | None = None) -> bool:
        """Whether the index on ``con``, whose refs fingerprint is ``stored``, holds the
        named refs as they are (``now``: the fingerprint, if just taken).

        A fingerprint stored within a tick of a change to names or tags (a run just named;
        during a stream of named commits, nearly always) matches, while the change is still
        that recent, once the ``refs`` rows are checked against the files: a few
        milliseconds, where an ingest took the exclusive lock and ~50 ms, and a server's
        every read took that path. Once it has settled, one ingest stores the fingerprint
        that matches as it is (no check of every file on every read)."""
        now = self.refs_fingerprint() if now is None else now
        if stored is not None and stored.endswith(SYMBOLIC):
            return stored[: -len(SYMBOLIC)] == now and refs_match(con, self.refs)
        if settled(stored) == now:
            return True
        return (
            stored is not None
            and stored.endswith(RECENT)
            and now == stored
            and refs_match(con, self.refs)
        )

    def refs_fingerprint(self) -> str:
        """Identity of refs/names, refs/tags and the model registry's folders as of now: any
        ref written there changes it.

        A directory changed within ``settle_ns`` may change again within the same mtime
        tick, so such a fingerprint is marked: RECENT when only names or tags changed
        (``refs_current`` checks those rows), else UNSETTLED, and never matches as it is.
        """
        parts, newest = [], [0, 0]  # names and tags; the model registry
        folders = ["names", "tags", "models"]
        try:
            for name in sorted(os.listdir(self.refs_dir / "models")):
                folders += [f"models/{name}/versions", f"models/{name}/aliases"]
        except (FileNotFoundError, NotADirectoryError):
            pass
        for i, ns in enumerate(folders):
            try:
                st = os.stat(self.refs_dir / ns)
            except FileNotFoundError:
                parts.append("-")
                continue
            parts.append(f"{st.st_ino}.{st.st_mtime_ns}")
            group = 0 if i < 2 else 1
            newest[group] = max(newest[group], st.st_mtime_ns)
        fp = "/".join(parts)
        window = settle_ns(self.layout.dir)
        recent = [time.time_ns() - t < window for t in newest]
        if recent[1]:
            fp += UNSETTLED
        elif recent[0]:
            fp += RECENT
        return fp


def runs_only(con, sql: str | None) -> bool:
    """Whether the read ``sql`` (None: reads of every kind) reads only tables the run journal
    keeps current, as DuckDB parses it on ``con``: then an ingest on its way applies the
    journal and leaves names, tags, the model registry and the events to the next read that
    names their tables (``schema.NOT_JOURNALLED``) or the index worker. During a stream of
    named commits those refreshes were two fifths of a reader's ingest (a ``stat`` a name,
    a listing of the event folder, three more tables to checkpoint)."""
    if sql is None:
        return False
    names = tables_read(sql, con)
    return names is not None and not names & schema.NOT_JOURNALLED


def settle_ns(mlvc_dir) -> int:
    """How long after a change to a folder of ``mlvc_dir`` (.mlvc) its mtime may still be
    taken again by a later change: a fingerprint or file identity younger than this is not
    trusted alone. Two seconds made every read in the two seconds after a named commit
    check each name file; on a local file system it is 50 ms."""
    key = os.fspath(mlvc_dir)
    local = _LOCAL.get(key)
    if local is None:
        local = _LOCAL[key] = is_local(key)
    return LOCAL_SETTLE_NS if local else REFS_SETTLE_NS


def settled(fingerprint: str | None) -> str | None:
    """A stored refs fingerprint, or None if it was taken too soon after a change to trust."""
    if fingerprint is None or fingerprint.endswith((UNSETTLED, RECENT, SYMBOLIC)):
        return None
    return fingerprint


REF_KINDS = (("name", "names"), ("tag", "tags"))


def refs_match(con, refs) -> bool:
    """Whether the ``refs`` rows of the index on ``con`` are the name and tag refs on disk
    now: a file noted in ``ref_files`` by its identity, any other read. Reads only; where
    ``ingest.refresh_refs`` would change a row, it answers False."""
    on_disk = {
        (k, n): st for k, ns in REF_KINDS for n, st in refs.name_stats(ns).items() if text_name(n)
    }  # a name that is not UTF-8 has no row: refresh_refs leaves it out, with a warning
    from ..refs.resolve import read_named

    stale, gone = ref_changes(con, on_disk)
    if gone:
        return False  # a ref deleted since: its row is still there
    folder = dict(REF_KINDS)
    for kind, name, held in stale:
        oid = read_named(refs, f"refs/{folder[kind]}/{name}", quiet=True)[0]
        if (None if oid is None else oid.hex) != held:
            return False
    return True


def ref_changes(con, on_disk: dict) -> tuple[list[tuple], list[tuple]]:
    """(stale, gone) for the name and tag ref files ``on_disk`` ((kind, name) -> (inode,
    mtime_ns, size)) against the index on ``con``: stale, (kind, name, the run id its
    ``refs`` row holds or None) of each file whose identity ``ref_files`` did not note as
    it is, sorted; gone, (kind, name) of each row of ``refs`` or ``ref_files`` whose file is
    no longer there. Compared in DuckDB: the two tables fetched into Python dicts cost ~6 µs
    a row (~0.3 s at 50,000 names, on every refresh)."""
    import pyarrow as pa

    keys = list(on_disk)
    stats = [on_disk[k] for k in keys]
    disk = pa.table({
        "kind": pa.array([k for k, _ in keys], pa.string()),
        "name": pa.array([n for _, n in keys], pa.string()),
        "ino": pa.array([s[0] for s in stats], pa.uint64()),
        "mtime_ns": pa.array([s[1] for s in stats], pa.int64()),
        "size": pa.array([s[2] for s in stats], pa.int64()),
    })  # fmt: skip
    con.register("_ref_disk", disk)
    try:
        stale = con.execute(
            "SELECT d.kind, d.name, r.run_id FROM _ref_disk d "
            "LEFT JOIN ref_files f ON f.kind = d.kind AND f.name = d.name "
            "LEFT JOIN refs r ON r.kind = d.kind AND r.name = d.name "
            "WHERE f.ino IS DISTINCT FROM d.ino OR f.mtime_ns IS DISTINCT FROM d.mtime_ns "
            "OR f.size IS DISTINCT FROM d.size ORDER BY d.kind, d.name"
        ).fetchall()
        gone = con.execute(
            "SELECT kind, name FROM (SELECT kind, name FROM refs UNION "
            "SELECT kind, name FROM ref_files) k WHERE NOT EXISTS (SELECT 1 FROM _ref_disk d "
            "WHERE d.kind = k.kind AND d.name = k.name) ORDER BY kind, name"
        ).fetchall()
    finally:
        _unregister(con, "_ref_disk")
    return [tuple(r) for r in stale], [tuple(r) for r in gone]


def _unregister(con, name: str) -> None:
    """Drop a registered table without hiding the error that ended the block: after a
    damaged block was read, DuckDB refuses this too ("transaction is aborted"), and that
    error would mask the one that says the index must be rebuilt."""
    import duckdb

    with contextlib.suppress(duckdb.Error):
        con.unregister(name)
