"""The write path: the journal applied to the index, and the index rebuilt from the refs.

Everything here runs under the exclusive index lock (lock.py). An ingest applies the
actionable journal entries in one transaction (new runs inserted in batches, runs whose ref
is gone deleted, then the refs, model tables and runs_wide refreshed) and checkpoints before
it deletes the entries, so a crash at any point leaves entries the next ingest applies again.
A rebuild writes a whole new file beside the index and renames it into place.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import time
from pathlib import Path

from ..core.ids import ObjectId
from ..errors import MlvcError
from ..refs.store import text_name
from ..store.odb import LocalStore
from . import events, models, pool, schema, wide
from .db import REBUILT, connect_rw, fsync_dir
from .decode import decode_runs, no_gc, shared_rows
from .journal import REF_KINDS, SYMBOLIC, Journal, ref_changes, runs_only, settle_ns, settled
from .lock import GaveWay
from .series import write_levels as series_levels
from .user_sql import damaged, first_line, unavailable

log = logging.getLogger(__name__)

BATCH_RUNS = 500  # runs decoded per request to a worker
BATCH_POINTS = 2_000_000  # metric points per Arrow batch, at most (but for one huge run)
PARALLEL_MIN_RUNS = 4000  # below this, starting worker processes costs more than it saves
KEEP_ROWS = 200_000  # params and summary rows of an ingest's new runs held for runs_wide


class Writer:
    """Writes the index file at ``path`` from ``journal``, ``store`` and ``refs``; batches of
    a big rebuild are decoded by up to ``workers`` processes."""

    def __init__(self, path: Path, journal: Journal, store, refs, workers: int):
        self.path = Path(path)
        self.dir = self.path.parent
        self.journal = journal
        self.store = store
        self.refs = refs
        self.workers = workers
        self.kept: _Kept | None = None  # the new runs' rows, while an ingest applies the journal
        # the index file attached to the process's database for it (db.connect_rw), not
        # opened as a database of its own; a server's (Index.keep_readers) opens its own
        self.attach = True
        # the SQL of the read this ingest is on the way to (Index.connect_readonly): a read
        # of runs only leaves the named refs and events to a later ingest (journal.runs_only)
        self.reading: str | None = None
        # whether a reader waits for the lock (IndexLock.wanted), for an ingest that gives
        # way to one (a committer's: ``give_way``); None for a reader's own
        self.wanted = None

    def give_way(self) -> None:
        """Between the steps of a committer's ingest (the index worker's, or an inline one):
        stop if a reader waits for the lock. The reader would otherwise wait for the rest of
        it, run at the committers' share of the CPU (in a storm of commits, ~1 s), then
        ingest the runs journalled meanwhile itself; it ingests them all at once instead."""
        if self.wanted is not None and self.wanted():
            raise GaveWay

    def _connect(self, path: Path | None = None):
        # a rebuild's file (``path``) in a database of its own: its settings stay there
        fresh = path is not None or not self.attach
        return connect_rw(path or self.path, shown=self.path, fresh=fresh)

    def ingest(self) -> bool:
        """Apply the journal; an index that is missing or of another schema version is
        rebuilt first, and so is a damaged one (with a warning; then True)."""
        import duckdb

        self.give_way()  # a reader waited for the lock already
        con, was_damaged, meta = None, False, None
        if self.path.exists():
            try:
                con = self._connect()
                meta = schema.read_meta(con)
                if not schema.is_current(meta):
                    con.close()
                    con = None
            except duckdb.Error as e:
                if con is not None:
                    con.close()
                if unavailable(e):  # not damage: say so rather than rebuild
                    raise MlvcError(f"cannot open the index: {first_line(e)}") from None
                log.info("the index is unreadable (%s); rebuilding it", first_line(e))
                con, was_damaged = None, True
        try:
            if con is None:
                self.rebuild()
                con, meta = self._connect(), None
            try:
                done = self._apply_journal(con, meta)
                con.execute("CHECKPOINT")  # journal entries go only once their rows left the WAL
            except duckdb.Error as e:  # a damaged block met while ingesting
                if was_damaged or not damaged(e):
                    raise
                con.close()
                con, was_damaged = None, True
                self.rebuild()
                con = self._connect()
                done = self._apply_journal(con)
                con.execute("CHECKPOINT")
        finally:
            if con is not None:
                con.close()
        for path in done:
            path.unlink(missing_ok=True)
        if was_damaged:
            log.warning(REBUILT)
        return was_damaged

    def rebuild(self) -> None:
        """Write a whole new index from every run ref to a temp file, then rename it into
        place (the journal is applied by the next ``ingest``). Decode workers start first,
        forked before DuckDB opens (no DuckDB threads to copy), and decode while this
        process opens the file and writes the schema."""
        name = self.path.name
        for stale in self.dir.glob(name + ".rebuild-*"):
            stale.unlink(missing_ok=True)
        run_ids = sorted(self.refs.run_ids())
        n = self._parallel(len(run_ids))
        with pool.Workers(n) if n else contextlib.nullcontext() as workers:
            tmp = self.dir / f"{name}.rebuild-{os.getpid()}"
            con = self._connect(tmp)
            try:
                # the commit checkpoints at once instead of writing the rows' WAL (~9 MB at
                # 10k runs) and syncing it, then checkpointing: a third off the commit's wall
                con.execute("SET wal_autocheckpoint = '1MB'")
                schema.create(con)
                con.begin()
                # refs, models and events first, while the workers decode the first batches
                meta = self._shared(con, self.journal.refs_fingerprint())
                self._insert_runs(con, run_ids, fresh=True, workers=workers)
                # runs_wide written whole once (growing it from empty wrote every run into a
                # side table first, then wrote it whole again)
                meta["runs_wide"] = json.dumps(wide.rewrite(con))
                schema.write_meta(con, meta)
                con.commit()
                con.execute("CHECKPOINT")
            finally:
                con.close()
        # Anything in the old WAL had not been checkpointed, so its journal entries remain.
        Path(str(self.path) + ".wal").unlink(missing_ok=True)
        os.replace(tmp, self.path)
        fsync_dir(self.dir)

    def _parallel(self, runs: int) -> int:
        """How many worker processes decode ``runs`` runs: none for few runs (starting them
        costs more than it saves) or a store that is not local."""
        chunks = -(-runs // BATCH_RUNS)
        workers = min(self.workers, chunks)
        if workers > 1 and runs >= PARALLEL_MIN_RUNS and isinstance(self.store, LocalStore):
            return workers
        return 0

    def _apply_journal(self, con, meta: dict | None = None) -> list[Path]:
        """Ingest and drop what the journal says, in one transaction; returns entries done.
        ``meta``: the index's, if the caller has just read it."""
        entries = self.journal.entries()
        only_runs = runs_only(con, self.reading)
        fingerprint = None if only_runs else self.journal.refs_fingerprint()
        meta = schema.read_meta(con) if meta is None else meta
        if not entries and (
            only_runs
            or self.journal.events_current(meta.get("events_fingerprint"))
            and self.journal.refs_current(con, meta.get("refs_fingerprint"), fingerprint)
        ):
            return []
        self.give_way()
        actionable = self.journal.actionable(con, entries)
        has_ref = {e.oid: self.refs.has_run(e.oid) for e in actionable}
        held = schema.indexed(con, [e.oid.hex for e in actionable])  # one probe for both
        dropped = sorted(oid.hex for oid, ref in has_ref.items() if not ref and oid.hex in held)
        new = [oid for oid, ref in has_ref.items() if ref and oid.hex not in held]
        con.begin()
        self.kept = _Kept()
        try:
            if dropped:
                _delete_runs(con, dropped)
            self._insert_runs(con, new)
            self._finish(con, fingerprint, [oid.hex for oid in new], dropped, meta)
            self.give_way()  # the last step it can stop at: past it, the commit checkpoints
            con.commit()
        except BaseException:
            con.rollback()
            raise
        finally:
            self.kept = None
        return [e.path for e in actionable]

    def _insert_runs(self, con, run_ids: list[ObjectId], fresh: bool = False, workers=None) -> None:
        """Insert runs in batches of BATCH_RUNS runs or BATCH_POINTS metric points, whichever
        comes first, decoded in worker processes if many (``workers``: started already)."""
        schemas = {t: schema.arrow_schema(con, t) for t in set(schema.DECODED)}
        requests = [
            (self.store, schemas, [oid.hex for oid in run_ids[i : i + BATCH_RUNS]], BATCH_POINTS)
            for i in range(0, len(run_ids), BATCH_RUNS)
        ]
        n = 0 if workers is not None else self._parallel(len(run_ids))
        # started here, the index is open: subprocesses (a rebuild forks before it opens)
        with pool.Workers(n, fork=False) if n else contextlib.nullcontext(workers) as workers:
            if workers is not None:
                decoded = workers.map(requests)
            else:  # a committer's ingest gives way between runs (not a rebuild's)
                check = self.give_way if self.kept is not None else None
                decoded = itertools.chain.from_iterable(
                    decode_runs(*r, check=check) for r in requests
                )
            with no_gc(), _one_thread(con, workers is not None):
                self._insert_decoded(con, schemas, decoded, _Seen(con, fresh))

    def _insert_decoded(self, con, schemas: dict, decoded, seen: _Seen) -> None:
        """Insert the batches ``decode_runs`` yields, with the trees and envs ``seen`` has not
        met yet, keeping each batch's tables for runs_wide when asked."""
        for tables, trees, envs in decoded:
            if self.kept is not None:  # applying the journal (not a rebuild)
                self.give_way()
                self.kept.add(tables)
            _insert_tables(con, tables)
            new_trees = seen.new(trees, "tree_files", "tree_id")
            new_envs = seen.new(envs, "env_packages", "env_id")
            _insert_tables(con, shared_rows(self.store, schemas, new_trees, new_envs))

    def _finish(self, con, fingerprint, new: list[str], dropped: list[str], stored: dict):
        """Refresh what depends on the whole index: refs, model tables and events (unless
        ``fingerprint`` is None: a read of runs only), runs_wide, and the entries of ``meta``
        (``stored``: as read at the start) that changed."""
        meta = {} if fingerprint is None else self._shared(con, fingerprint, stored)
        if new or dropped:
            rows = self.kept.tables(con) if self.kept is not None else None
            meta["runs_wide"] = wide.refresh(con, stored.get("runs_wide"), new, bool(dropped), rows)
        schema.write_meta(con, {k: v for k, v in meta.items() if stored.get(k) != v})

    def _shared(self, con, fingerprint: str, stored: dict | None = None) -> dict:
        """Refresh the refs and model tables (if the refs changed, or may have: a fingerprint
        stored too soon after a change equals a later one when a write in the same clock
        tick left the folders looking unchanged) and the events; returns their entries for
        ``meta``."""
        stored = schema.read_meta(con) if stored is None else stored
        if settled(stored.get("refs_fingerprint")) != fingerprint:
            if self.kept is not None:
                self.give_way()
            if refresh_refs(con, self.refs):
                fingerprint += SYMBOLIC
            models.refresh(con, self.refs, self.store)
        check = self.give_way if self.kept is not None else None
        events_fp = events.refresh(
            con, self.journal.layout, stored.get("events_fingerprint"), check
        )
        return {"refs_fingerprint": fingerprint, "events_fingerprint": events_fp}


def refresh_refs(con, refs, now_ns: int | None = None) -> bool:
    """Bring the ``refs`` table up to date with refs/names and refs/tags, reading only the
    ref files whose identity (inode, mtime, size; ``ref_files``) changed since the last
    refresh. A file is noted there only when its own content is the run id (not a symbolic
    ref, whose target may change alone) and its mtime is older than ``settle_ns`` at
    ``now_ns`` (a rewrite within one tick of a coarse clock could keep it): the others are
    read again every time. During a stream of named commits this reads the few refs that
    changed instead of every one (1,600 files: ~40 ms of a reader's ingest). Returns whether
    a name or tag is a symbolic ref (then the stored fingerprint is marked SYMBOLIC)."""
    import pyarrow as pa

    from ..refs.resolve import read_named  # a damaged ref is skipped, with a warning

    now_ns = time.time_ns() if now_ns is None else now_ns
    on_disk = {
        (k, n): st
        for k, ns in REF_KINDS
        for n, st in refs.name_stats(ns).items()
        if _text_name(k, n)
    }
    stale, gone = ref_changes(con, on_disk)
    drop = sorted({(k, n) for k, n, _ in stale} | set(gone))  # rows to read again, or gone
    if drop:
        kinds, names = zip(*drop, strict=True)
        con.register("_dropped_refs", pa.table({"kind": kinds, "name": names}))
        for table in ("refs", "ref_files"):
            con.execute(
                f"DELETE FROM {table} t WHERE EXISTS (SELECT 1 FROM _dropped_refs k "
                "WHERE k.kind = t.kind AND k.name = t.name)"
            )
        con.unregister("_dropped_refs")
    rows, files, symbolic = [], [], False
    prefix = {k: f"refs/{ns}/" for k, ns in REF_KINDS}
    window = settle_ns(refs.dir)
    for kind, name, _ in stale:  # every symbolic ref among them: none is noted as read
        oid, direct = read_named(refs, prefix[kind] + name)
        if oid is not None:
            rows.append((kind, name, oid.hex))
            symbolic = symbolic or not direct
        st = on_disk[(kind, name)]
        if direct and oid is not None and now_ns - st[1] >= window:
            files.append((kind, name, *st))
    if rows:
        kinds, names, ids = zip(*rows, strict=True)
        schema.insert(con, "refs", pa.table({"kind": kinds, "name": names, "run_id": ids}))
    if files:
        k, n, ino, mtime, size = zip(*files, strict=True)
        table = {"kind": k, "name": n, "ino": pa.array(ino, pa.uint64()), "mtime_ns": mtime}
        schema.insert(con, "ref_files", pa.table({**table, "size": size}))
    return symbolic


def _text_name(kind: str, name: str) -> bool:
    """Whether a ref's file name is text (UTF-8); one that is not cannot be a row, and is
    left out with a warning (``mlvc fsck`` names it)."""
    if text_name(name):
        return True
    shown = os.fsencode(name).decode(errors="backslashreplace")
    log.warning("ignoring %s ref %s: its name is not UTF-8; run `mlvc fsck`", kind, shown)
    return False


_USED_OBJECTS = """
    SELECT oid FROM (
        SELECT code_tree AS oid FROM runs UNION ALL SELECT data_tree FROM runs
        UNION ALL SELECT artifacts_tree FROM runs UNION ALL SELECT env_id FROM runs)
    WHERE oid IS NOT NULL"""


def _delete_runs(con, ids: list[str]) -> None:
    """Delete these runs' rows, and the tree and env rows no remaining run uses."""
    import pyarrow as pa

    con.register("_arrow_drop", pa.table({"id": ids}))
    try:
        for table in schema.RUN_TABLES:
            col = "id" if table == "runs" else "run_id"
            con.execute(f"DELETE FROM {table} WHERE {col} IN (SELECT id FROM _arrow_drop)")
        # Trees and envs are shared: drop only those no remaining run names.
        con.execute(f"DELETE FROM tree_files WHERE tree_id NOT IN ({_USED_OBJECTS})")
        con.execute(f"DELETE FROM env_packages WHERE env_id NOT IN ({_USED_OBJECTS})")
        con.execute(
            f"DELETE FROM ingest_errors WHERE run_id IS NULL AND object_id NOT IN ({_USED_OBJECTS})"
        )
    finally:
        con.unregister("_arrow_drop")


@contextlib.contextmanager
def _one_thread(con, one: bool):
    """DuckDB on one thread while ``one`` (worker processes use the other cores: DuckDB's own
    threads only contended with them, a tenth of a rebuild's CPU, its compression); its
    default back afterwards, since settings outlive a connection in a process that keeps the
    database open (a server). A failing reset never hides the error that ended the block."""
    import duckdb

    if not one or con.execute("SELECT current_setting('lock_configuration')").fetchall()[0][0]:
        yield  # (the process's database for the index: db._index_db, locked as a reader's)
        return
    con.execute("SET threads = 1")
    try:
        yield
    finally:
        with contextlib.suppress(duckdb.Error):  # an aborted transaction refuses it
            con.execute("RESET threads")


class _Seen:
    """Trees and envs already in the index: asked of DuckDB once, then remembered."""

    def __init__(self, con, fresh: bool):
        self.con, self.fresh, self.ids = con, fresh, set()

    def new(self, ids: list[str], table: str, column: str) -> list[str]:
        unseen = set(ids) - self.ids
        if unseen and not self.fresh:  # a fresh index holds only what this ingest added
            known = f"SELECT {column} FROM {table} UNION ALL SELECT object_id FROM ingest_errors"
            unseen -= schema.present(self.con, known, unseen)
        self.ids |= set(ids)
        return sorted(unseen)


class _Kept:
    """The ``runs``, ``params`` and ``metric_summary`` rows an ingest inserted, held while
    fewer than KEEP_ROWS, so that runs_wide grows from them (wide.refresh) instead of scans
    of the whole tables (at 100,000 runs, 2 M params rows)."""

    NAMES = ("runs", "params", "metric_summary")

    def __init__(self):
        self.parts: dict | None = {name: [] for name in self.NAMES}
        self.rows = 0

    def add(self, tables: dict) -> None:
        if self.parts is None:
            return
        for name, parts in self.parts.items():
            table = tables.get(name)
            if table is not None and len(table):
                parts.append(table)
                self.rows += len(table)
        if self.rows > KEEP_ROWS:
            self.parts = None

    def tables(self, con) -> dict | None:
        """The rows kept, an Arrow table per name (run ids decoded); None if too many."""
        import pyarrow as pa

        if self.parts is None:
            return None
        out = {}
        for name, parts in self.parts.items():
            plain = schema.arrow_schema(con, name)
            out[name] = pa.concat_tables([plain.empty_table(), *(t.cast(plain) for t in parts)])
        return out


def _insert_tables(con, tables: dict) -> None:
    """One INSERT per non-empty table (``decode._Decoder.tables``): series points and final
    metrics both into ``metrics``, the long series' samples into ``series_levels``."""
    tables = dict(tables)
    levels = tables.pop("levels", None)
    for name, table in tables.items():
        if len(table):
            schema.insert(con, "metrics" if name == "series" else name, table)
    if levels is not None:
        series_levels(con, levels)  # long series sampled once, for charts
