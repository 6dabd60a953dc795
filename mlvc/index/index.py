"""``Index``: the public operations on one repository's index (the package docstring defines
the terms).

A commit journals its run (``journal``) and then tries to ingest it (``try_ingest``); readers
(``query``, ``stream``, ``connect_readonly``) ingest what is pending before they answer;
``sync``, ``rebuild`` and ``check`` serve ``mlvc index`` and ``mlvc fsck``. A damaged index
found on the way is rebuilt from objects and refs, and the read done again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.ids import ObjectId
from ..core.layout import Layout
from ..core.settings import Settings
from ..errors import IndexDamaged
from . import schema
from .db import REBUILT, attach_ro, connect_ro, connect_rw, query_errors, writable
from .journal import UNSETTLED, Journal
from .lock import GaveWay, IndexLock
from .user_sql import check_read_only, interruptible

if TYPE_CHECKING:
    from .ingest import Writer  # imported where used: a commit only journals (pickle, ...)

log = logging.getLogger(__name__)


def command_process() -> None:
    """Set up a command's own short-lived process that holds no user objects (``mlvc
    query``): the ingest a reader may do on the way to its answer then does not import
    pandas (pyarrow's first ``pa.array`` of a list imports it to ask whether the list is a
    pandas object: ~0.2 s of CPU, more than the rest of the ingest; decode.py,
    ``arrow_without_pandas``). Not for a user's process, whose pandas objects pyarrow must
    keep recognising."""
    from .decode import arrow_without_pandas

    arrow_without_pandas()


class _Kept:
    """A read-only connection a long-lived process (the server) keeps open between reads;
    each reader gets a cursor of it. While it is open no other process can write the file
    (DuckDB's own lock), so what it read of ``meta`` stays true; a writer in this process
    closes it once it holds the exclusive lock, and one in another process waits for the
    keeper to let it go (``Index.release_idle``; ``connect_rw`` waits a little for that)."""

    def __init__(self, con, meta: dict[str, str]):
        self.con, self.meta = con, meta
        self.users = 0
        self.used = time.monotonic()


_KEPT: dict[str, _Kept] = {}  # index path -> its kept connection, in this process
_KEPT_LOCK = threading.Lock()


class Index:
    """The DuckDB index of one repository, kept in step with its journal."""

    def __init__(
        self,
        mlvc_dir: str | os.PathLike,
        store,
        refs,
        workers: int | None = None,
        settings: Settings | None = None,
    ):
        """``workers``: processes decoding runs in a big rebuild (default: CPUs, at most 4);
        ``settings.index_sync``: commits ingest inline, or in a detached worker."""
        layout = Layout(Path(mlvc_dir))
        self.dir = layout.dir
        self.settings = settings or Settings()
        self.workers = workers or min(os.cpu_count() or 1, 4)
        self.store = store
        self.refs = refs
        self.path = layout.index_db
        self.lock_path = layout.index_lock
        self.journal_dir = layout.journal
        self.lock = IndexLock(self.lock_path, self.dir)
        self.worker_lock = IndexLock(layout.index_worker_lock, self.dir)
        self._journal = Journal(layout, refs)
        self._keep = False
        self._rebuilt_damaged = False  # by an ingest, since check() began

    # -- a kept reader (a server's) ---------------------------------------------------------

    def keep_readers(self) -> None:
        """Keep one read-only connection open between reads and hand readers cursors of it
        (for a long-lived process, with ``release_idle`` called often): a read then costs no
        DuckDB open. Writers are not kept out for longer than the keeper's reads."""
        self._keep = True

    def release_idle(self, idle: float) -> bool:
        """Close the kept connection if no reader has used it for ``idle`` seconds (a writer
        of another process may be waiting for it); returns whether one was closed."""
        key = str(self.path)
        with _KEPT_LOCK:
            kept = _KEPT.get(key)
            if kept is None or kept.users or time.monotonic() - kept.used < idle:
                return False
            del _KEPT[key]
        kept.con.close()
        return True

    def _drop_kept(self) -> None:
        """Close the kept connection; the caller holds the exclusive lock, so no reader of
        this process is using it (readers hold the shared lock while they read)."""
        with _KEPT_LOCK:
            kept = _KEPT.pop(str(self.path), None)
        if kept is not None:
            kept.con.close()

    def _kept_cursor(self, sql: str | None):
        """A cursor of the kept connection if the index is current (for the read ``sql``),
        else None (the kept connection closed when it is behind: the caller ingests, then a
        new one is kept).

        The reader counts as a user of the connection in the same step that hands it over:
        counted only once its cursor was made, the idle release (another thread) could close
        the connection in between, and the read failed with DuckDB's "Connection already
        closed" (CI: a server's runs/search)."""
        import duckdb

        key = str(self.path)
        with _KEPT_LOCK:
            kept = _KEPT.get(key)
            if kept is not None:
                kept.users += 1
        cur, current = None, False
        try:
            if kept is None:
                if not self.path.exists():
                    return None
                con = connect_ro(self.path)
                try:
                    fresh = _Kept(con, schema.read_meta(con))
                except BaseException:
                    con.close()
                    raise
                with _KEPT_LOCK:
                    kept = _KEPT.setdefault(key, fresh)  # another thread's, if it kept one
                    kept.users += 1
                if kept is not fresh:
                    con.close()
            cur = kept.con.cursor()
            current = self._journal.current(cur, kept.meta, sql)
        except duckdb.Error:
            pass  # not current: the caller's writer path decides
        finally:
            if not current:  # whatever ended it, the reader is no user of it any more
                if cur is not None:
                    cur.close()
                if kept is not None:
                    self._kept_done()
        return cur if current else None

    def _kept_done(self) -> None:
        with _KEPT_LOCK:
            kept = _KEPT.get(str(self.path))
            if kept is not None and kept.users:
                kept.users -= 1
                kept.used = time.monotonic()

    # -- the journal ----------------------------------------------------------------------

    def journal(self, run_id: ObjectId) -> None:
        """Mark a run for ingestion. Call before writing ``refs/runs/<id>`` (and after
        deleting it, so the index drops the run)."""
        self._journal.add(run_id)

    def pending(self) -> list[ObjectId]:
        """Runs journalled and not yet ingested (including commits still in progress)."""
        return [entry.oid for entry in self._journal.entries()]

    # -- writing --------------------------------------------------------------------------

    def try_ingest(self, known=None) -> bool:
        """Ingest pending runs if the index lock is free right now; never waits.

        ``known`` (bulk.py): run id hex -> (run, series points) of runs the caller has just
        written; an inline ingest decodes those from memory instead of the store.

        By default the ingest runs in a detached worker (worker.py; one at a time, and a
        commit while it lives leaves its run to it), so a commit does not pay DuckDB's cost;
        ``MLVC_INDEX_SYNC=inline`` ingests in this process instead.

        Returns False when another process or thread holds the lock, or a reader waits for
        it (the runs stay journalled for the next reader) or when ingestion failed (logged; the next reader
        raises it).
        """
        if self.lock.wanted():  # a reader waits for the lock: it ingests these runs
            return False
        fd = self.lock.take(exclusive=True, wait=0.0)
        if fd is None:
            return False
        self._drop_kept()
        if self.settings.index_sync != "inline" and self._spawn_worker(fd):
            return True
        try:
            self._writer(known, give_way=True).ingest()
            return True
        except GaveWay:  # a reader waits: it ingests the run
            return True
        except Exception as e:  # the run is committed either way: a reader will report this
            log.warning("could not update the index (the next query will retry): %s", e)
            return False
        finally:
            os.close(fd)

    def _spawn_worker(self, fd: int) -> bool:
        """Start the detached worker unless one lives (it holds the worker lock for its
        life), letting the index lock ``fd`` go first: the worker takes the index lock
        only once its imports are done, so readers never wait for a process start. True
        if a worker has the journal (``fd`` is closed then); False to ingest here."""
        from .worker import spawn

        held = self.worker_lock.take(exclusive=True, wait=0.0)
        if held is None:  # a worker lives, and ingests what is journalled before it ends
            os.close(fd)
            return True
        try:
            if spawn(self.dir.parent, held):
                os.close(fd)
                return True
        except Exception as e:
            log.warning("could not start the index worker, ingesting here: %s", e)
        finally:
            os.close(held)  # the worker's copy keeps it held until it exits
        return False

    def ingest_as_worker(self, budget: float) -> bool:
        """The detached worker's loop: take the index lock (waiting briefly for a reader's
        read), ingest, let it go, and again while runs are journalled, for at most
        ``budget`` seconds; stop as soon as a reader waits for the lock (it ingests).
        Returns False if the lock stayed busy (the runs wait for the next reader)."""
        deadline = time.monotonic() + budget
        while not self.lock.wanted():
            fd = self.lock.take(exclusive=True, wait=min(1.0, budget))
            if fd is None:
                return False
            try:
                self._writer(give_way=True).ingest()
            except GaveWay:  # a reader waits: it ingests what is journalled
                return True
            finally:
                os.close(fd)
            if time.monotonic() >= deadline or not self.runs_journalled():
                break
        return True

    def runs_journalled(self) -> bool:
        """Whether a journalled run has its ref (a committed run the index may lack)."""
        return any(self.refs.has_run(e.oid) for e in self._journal.entries())

    def sync(self) -> None:
        """Ingest every pending run, waiting (bounded) for the lock."""
        self._write(rebuild=False)

    def rebuild(self) -> int:
        """Recreate the index from every run ref, then apply the journal; returns the number
        of runs in the new index."""
        fd = self.lock.take_or_raise(exclusive=True)
        try:
            self._drop_kept()
            self._write_locked(rebuild=True)
            con = connect_rw(self.path)
            try:
                return con.execute("SELECT count(*) FROM runs").fetchone()[0]
            finally:
                con.close()
        finally:
            os.close(fd)

    def _write(self, rebuild: bool) -> None:
        """Take the exclusive lock (bounded wait), then ``_write_locked``."""
        fd = self.lock.take_or_raise(exclusive=True)
        try:
            self._drop_kept()
            self._write_locked(rebuild)
        finally:
            os.close(fd)

    def _ingest_for_reading(self, sql: str | None) -> int:
        """Ingest what is pending (for the read ``sql``: ``connect_readonly``), then keep the
        lock, shared: returns its fd. A reader that let the lock go between its ingest and
        its read could wait there for a committer's whole ingest (the worker it starts holds
        the lock from its start-up on)."""
        fd = self.lock.take_or_raise(exclusive=True)
        try:
            self._drop_kept()
            self._write_locked(rebuild=False, reading=sql)
            self.lock.downgrade(fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _write_locked(self, rebuild: bool, reading: str | None = None) -> None:
        """Rebuild the index (if asked), then ingest the journal (for the read ``reading``,
        if one waits: ``connect_readonly``); the exclusive lock is held."""
        with writable(self.dir):
            writer = self._writer()
            writer.reading = reading
            if rebuild:
                writer.rebuild()
            if writer.ingest():
                self._rebuilt_damaged = True

    def _writer(self, known=None, give_way: bool = False) -> Writer:
        """The index's writer (``known``: BulkWriter's); ``give_way``: a committer's, which
        stops for a reader waiting for the lock (``Writer.give_way``)."""
        from .ingest import Writer

        args = (self.path, self._journal, self.store, self.refs, self.workers)
        if known:
            from .bulk import BulkWriter

            writer = BulkWriter(*args, known=known)
        else:
            writer = Writer(*args)
        # a server's threads would contend for the process's one database for the index
        writer.attach = not self._keep
        if give_way:
            writer.wanted = self.lock.wanted
        return writer

    def _repair(self) -> None:
        """Rebuild a damaged index (a cache) from objects and refs, and say so."""
        if self.lock.held_here():  # the rebuild would wait for this thread's own reader
            raise IndexDamaged(f"the index {self.path} is damaged; run `mlvc index rebuild`")
        self._write(rebuild=True)
        log.warning(REBUILT)

    # -- reading --------------------------------------------------------------------------

    def query(self, sql: str):
        """Run read-only SQL (user_sql.py); returns a ``pyarrow.Table``.

        A damaged index found on the way is rebuilt from objects and refs, and the query
        run again.
        """
        try:
            return self._query(sql)
        except IndexDamaged:
            self._repair()
            return self._query(sql)

    def _query(self, sql: str):
        import pyarrow as pa

        with self.connect_readonly(sql) as con, interruptible(con), query_errors():
            check_read_only(sql, con)
            rel = con.sql(sql)
            return pa.table({}) if rel is None else rel.to_arrow_table()

    def stream(self, sql: str, batch_size: int = 65536) -> Iterator:
        """Yield the result as ``pyarrow.RecordBatch``es; memory stays bounded."""
        for attempt in (0, 1):
            started = False
            try:
                with self.connect_readonly(sql) as con, query_errors():
                    check_read_only(sql, con)
                    rel = con.sql(sql)
                    if rel is None:
                        return
                    for batch in rel.to_arrow_reader(batch_size):
                        started = True
                        yield batch
                    return
            except IndexDamaged:
                if attempt or started:
                    raise
                self._repair()

    def check(self) -> list[str]:
        """Read every table of the index through (DuckDB checks each block it reads); a
        damaged index is rebuilt. Returns what was repaired (``mlvc fsck`` names it)."""
        if not self.path.exists():
            return []
        self._rebuilt_damaged = False
        try:
            with self.connect_readonly() as con, query_errors():
                tables = [
                    t
                    for (t,) in con.execute(
                        "SELECT table_name FROM information_schema.tables "
                        "WHERE table_schema = 'main' AND table_type = 'BASE TABLE'"
                    ).fetchall()
                ]
                for t in tables:
                    sql = f"SELECT * FROM {schema.ident(t)}"
                    for _batch in con.sql(sql).to_arrow_reader(65536):
                        pass
        except IndexDamaged:
            self._repair()
            self._rebuilt_damaged = True
        if self._rebuilt_damaged:  # here, or by the ingest that opening it needed first
            return [f"index {self.path} was damaged: rebuilt from objects and refs"]
        return []

    @contextmanager
    def connect_readonly(self, sql: str | None = None):
        """A read-only DuckDB connection to an up-to-date index, under the shared lock.

        Pending runs are ingested first, unless this thread already holds a reader (then the
        index is read as that reader sees it). ``sql``: the read to be made, if that is all:
        when it names only tables the run journal keeps current (not ``refs``, ``events``,
        the model tables: ``journal.runs_only``), names, tags, models and events changed
        since are left for a read that names them. Closing the ``with`` block closes the
        connection and releases the lock; keep it short, since writers wait for it.
        """
        fd, con, kept = self._open_for_reading(sql)
        try:
            with self.lock.reader():
                yield con
        finally:
            con.close()
            if kept:
                self._kept_done()
            os.close(fd)

    def _open_for_reading(self, sql: str | None):
        """(lock fd, read-only connection, whether it is a kept connection's cursor),
        ingesting first when the index is behind (for the read ``sql``)."""
        nested = self.lock.held_here()
        # behind for sure (no DuckDB open to learn it): straight to the exclusive lock, so
        # as not to wait for it twice (first shared, then again for an ingest started between)
        behind = not nested and not self._keep and self._surely_behind()
        if not behind:
            fd = self.lock.take_or_raise(exclusive=False)
            try:
                if self._keep and not nested:
                    con = self._kept_cursor(sql)
                    if con is not None:
                        return fd, con, True
                if nested:
                    con = connect_ro(self.path)
                elif self._keep and self._surely_behind():  # not asked above
                    con = None
                else:
                    con = self._open_if_current(sql)
            except BaseException:
                os.close(fd)
                raise
            if con is not None:
                return fd, con, False
            os.close(fd)
        fd = self._ingest_for_reading(sql)
        try:
            return fd, self._connect_ro(), False
        except BaseException:
            os.close(fd)
            raise

    def _connect_ro(self):
        """A read-only connection, the file attached to the process's reading database for
        it (db.attach_ro: no DuckDB start, ~2 ms instead of ~30), but in a process of many
        threads that keeps a reader of its own (a server, ``keep_readers``)."""
        return connect_ro(self.path) if self._keep else attach_ro(self.path)

    def _surely_behind(self) -> bool:
        """Whether the index needs an ingest, as far as the file system tells without
        opening DuckDB: a journalled run whose ref exists, or the model registry changed too
        recently for a stored fingerprint to match. (Names and tags changed as recently are
        checked against the index's rows: ``Journal.refs_current``.)"""
        if self._journal.refs_fingerprint().endswith(UNSETTLED):
            return True
        return self.runs_journalled()

    def _open_if_current(self, sql: str | None):
        """A read-only connection if the index needs no ingest (for the read ``sql``), else
        None."""
        import duckdb

        if not self.path.exists():
            return None
        try:
            con = self._connect_ro()
        except duckdb.Error:
            return None  # damaged or foreign-locked: the writer path decides
        try:
            current = self._journal.current(con, schema.read_meta(con), sql)
        except duckdb.Error:
            current = False
        except BaseException:  # Ctrl-C while it lists the refs: no connection left open
            con.close()
            raise
        if not current:
            con.close()
            return None
        return con
