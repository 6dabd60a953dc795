"""The index: DuckDB tables derived from run objects and refs, so history answers plain SQL.

Objects and refs are the truth; ``.mlvc/index.duckdb`` is a cache that ``rebuild`` recreates
from them bit for bit (docs/sql-schema.md documents every table). Terms:

    journal  ``.mlvc/journal/<run id>``, an empty file a commit writes before the run's ref.
             With a ref it marks a run not yet ingested; without one, either a commit still in
             progress (kept, dropped as abandoned after 10 minutes) or, for a run the index
             holds, a run whose ref was deleted (the index drops it).
    ingest   turning journalled runs into rows: one Arrow table per table per batch.
    lock     ``.mlvc/index.lock``, an ``flock``: exclusive to write the index, shared to read.

Writers never open DuckDB without the exclusive lock, so DuckDB's own file lock never fails in
front of a user. A committer only *tries* the lock (``try_ingest``); if it is busy the run stays
journalled and the next reader ingests it before answering.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import itertools
import json
import logging
import os
import pickle
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from ..core.ids import ObjectId
from ..core.objects import is_number
from ..core.settings import Settings
from ..errors import IndexBusy, IndexDamaged, MlvcError, QueryError
from ..store.odb import LocalStore
from ..store.typed import read_env, read_run, walk
from .user_sql import check_read_only, interruptible, is_interruption
from .user_sql import first_line as _first_line

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3  # 2: model registry tables; 3: live_keys
LOCK_WAIT = 30.0  # seconds a reader or ``sync`` waits for the index lock
ABANDONED_AFTER = 600.0  # a journal entry without a ref this old is a commit that died
REFS_SETTLE_NS = 2_000_000_000  # directory mtimes are coarse: recheck refs changed this recently
BATCH_RUNS = 500  # runs decoded per Arrow batch: bounds memory during a rebuild
MAX_WIDE_KEYS = 1000  # params.* / metrics.* columns in runs_wide, each

DB_NAME, LOCK_NAME, JOURNAL = "index.duckdb", "index.lock", "journal"

# Shared locks this process holds, by lock path: a nested reader must not try to upgrade.
_held_shared: dict[str, int] = {}
_held_guard = threading.Lock()

TABLES_DDL = """
CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE runs (
    id VARCHAR PRIMARY KEY, short_id VARCHAR, name VARCHAR, status VARCHAR, message VARCHAR,
    author VARCHAR, parent VARCHAR, parents VARCHAR[], created TIMESTAMPTZ,
    started TIMESTAMPTZ, ended TIMESTAMPTZ, duration_s DOUBLE, command VARCHAR, cwd VARCHAR,
    exit_code BIGINT, code_tree VARCHAR, data_tree VARCHAR, artifacts_tree VARCHAR,
    series_id VARCHAR, env_id VARCHAR, git_commit VARCHAR, git_branch VARCHAR,
    git_dirty BOOLEAN, reproduces VARCHAR);
CREATE TABLE params (run_id VARCHAR, key VARCHAR, value VARCHAR, value_num DOUBLE,
    type VARCHAR);
CREATE TABLE metrics (run_id VARCHAR, key VARCHAR, step BIGINT, timestamp TIMESTAMPTZ,
    value DOUBLE);
CREATE TABLE metric_summary (run_id VARCHAR, key VARCHAR, last DOUBLE, min DOUBLE,
    max DOUBLE, count BIGINT, last_step BIGINT);
CREATE TABLE tree_files (tree_id VARCHAR, path VARCHAR, object_id VARCHAR, size BIGINT,
    kind VARCHAR);
CREATE TABLE env_packages (env_id VARCHAR, name VARCHAR, version VARCHAR);
CREATE TABLE tags (run_id VARCHAR, key VARCHAR, value VARCHAR);
CREATE TABLE refs (kind VARCHAR, name VARCHAR, run_id VARCHAR);
CREATE TABLE ingest_errors (run_id VARCHAR, object_id VARCHAR, error VARCHAR);
CREATE TABLE live_keys (run_id VARCHAR, live_key VARCHAR);
CREATE TABLE model_versions (name VARCHAR, version INTEGER, model_id VARCHAR, run_id VARCHAR,
    source VARCHAR, flavor VARCHAR, flavors VARCHAR[], signature VARCHAR,
    registered_by VARCHAR, registered_at TIMESTAMPTZ);
CREATE TABLE model_aliases (name VARCHAR, alias VARCHAR, version INTEGER, model_id VARCHAR,
    set_by VARCHAR, set_at TIMESTAMPTZ);
CREATE TABLE model_alias_log (name VARCHAR, alias VARCHAR, action VARCHAR, version INTEGER,
    previous INTEGER, changed_by VARCHAR, changed_at TIMESTAMPTZ);
CREATE VIEW files AS
    SELECT s.run_id, s.section, t.path, t.object_id, t.size, t.kind
    FROM (SELECT id AS run_id, 'code' AS section, code_tree AS tree_id FROM runs
          UNION ALL SELECT id, 'data', data_tree FROM runs
          UNION ALL SELECT id, 'artifacts', artifacts_tree FROM runs) s
    JOIN tree_files t ON t.tree_id = s.tree_id;
CREATE VIEW packages AS
    SELECT r.id AS run_id, p.name, p.version
    FROM runs r JOIN env_packages p ON p.env_id = r.env_id;
"""

# Tables holding one run's rows, cleared when the run's ref is deleted.
RUN_TABLES = ("runs", "params", "metrics", "metric_summary", "tags", "ingest_errors", "live_keys")


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
        self.dir = Path(mlvc_dir)
        self.settings = settings or Settings()
        self.workers = workers or min(os.cpu_count() or 1, 4)
        self.store = store
        self.refs = refs
        self.path = self.dir / DB_NAME
        self.lock_path = self.dir / LOCK_NAME
        self.journal_dir = self.dir / JOURNAL

    # -- the journal ----------------------------------------------------------------------

    def journal(self, run_id: ObjectId) -> None:
        """Mark a run for ingestion. Call before writing ``refs/runs/<id>`` (and after
        deleting it, so the index drops the run)."""
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        os.close(os.open(self.journal_dir / run_id.hex, os.O_WRONLY | os.O_CREAT, 0o644))

    def pending(self) -> list[ObjectId]:
        """Runs journalled and not yet ingested (including commits still in progress)."""
        return [oid for oid, _path, _mtime in self._journal_entries()]

    def _journal_entries(self) -> list[tuple[ObjectId, Path, float]]:
        try:
            entries = list(os.scandir(self.journal_dir))
        except FileNotFoundError:
            return []
        out = []
        for ent in entries:
            try:
                oid = ObjectId.parse(ent.name)
                out.append((oid, Path(ent.path), ent.stat().st_mtime))
            except (ValueError, FileNotFoundError):
                continue
        return sorted(out)

    # -- public operations ----------------------------------------------------------------

    def try_ingest(self) -> bool:
        """Ingest pending runs if the index lock is free right now; never waits.

        By default the ingest runs in a detached worker (mlvc/index_worker.py) that inherits
        the lock, so a commit does not pay DuckDB's cost; ``MLVC_INDEX_SYNC=inline`` ingests
        in this process instead.

        Returns False when another process holds the lock (the runs stay journalled for
        the next reader) or when ingestion failed (logged; the next reader raises it).
        """
        fd = self._take_lock(exclusive=True, wait=0.0)
        if fd is None:
            return False
        if self.settings.index_sync != "inline":
            from .worker import spawn

            try:  # the detached worker inherits the locked descriptor and ingests
                if spawn(self.dir.parent, fd):
                    os.close(fd)  # the lock stays held by the worker's copy until it exits
                    return True
            except Exception as e:
                log.warning("could not start the index worker, ingesting here: %s", e)
        try:
            self._ingest_locked()
            return True
        except Exception as e:  # the run is committed either way: a reader will report this
            log.warning("could not update the index (the next query will retry): %s", e)
            return False
        finally:
            os.close(fd)

    def sync(self) -> None:
        """Ingest every pending run, waiting (bounded) for the lock."""
        fd = self._take_lock_or_raise(exclusive=True)
        try:
            with self._writing():
                self._ingest_locked()
        finally:
            os.close(fd)

    def rebuild(self) -> int:
        """Recreate the index from every run ref, then apply the journal; returns the number
        of runs in the new index."""
        fd = self._take_lock_or_raise(exclusive=True)
        try:
            with self._writing():
                self._rebuild_locked()
                self._ingest_locked()
            con = self._open_rw()
            try:
                return con.execute("SELECT count(*) FROM runs").fetchone()[0]
            finally:
                con.close()
        finally:
            os.close(fd)

    def query(self, sql: str):
        """Run read-only SQL (user_sql.py); returns a ``pyarrow.Table``.

        A damaged index found on the way is rebuilt from objects and refs, and the query
        run again.
        """
        check_read_only(sql)
        try:
            return self._query(sql)
        except IndexDamaged:
            self._repair()
            return self._query(sql)

    def _query(self, sql: str):
        import pyarrow as pa

        with self.connect_readonly() as con, interruptible(con), _query_errors():
            rel = con.sql(sql)
            return pa.table({}) if rel is None else rel.to_arrow_table()

    def stream(self, sql: str, batch_size: int = 65536) -> Iterator:
        """Yield the result as ``pyarrow.RecordBatch``es; memory stays bounded."""
        check_read_only(sql)
        for attempt in (0, 1):
            started = False
            try:
                with self.connect_readonly() as con, _query_errors():
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
        try:
            with self.connect_readonly() as con, _query_errors():
                tables = [
                    t
                    for (t,) in con.execute(
                        "SELECT table_name FROM information_schema.tables "
                        "WHERE table_schema = 'main' AND table_type = 'BASE TABLE'"
                    ).fetchall()
                ]
                for t in tables:
                    for _batch in con.sql(f"SELECT * FROM {_ident(t)}").to_arrow_reader(65536):
                        pass
        except IndexDamaged:
            self._repair()
            return [f"index {self.path} was damaged: rebuilt from objects and refs"]
        return []

    def _repair(self) -> None:
        """Rebuild a damaged index (a cache) from objects and refs, and say so."""
        if _held_shared.get(str(self.lock_path), 0) > 0:
            raise IndexDamaged(
                f"the index {self.path} is damaged; run `mlvc index rebuild`"
            )  # a reader in this process holds the lock a rebuild needs
        fd = self._take_lock_or_raise(exclusive=True)
        try:
            with self._writing():
                self._rebuild_locked()
                self._ingest_locked()
        finally:
            os.close(fd)
        log.warning(REBUILT)

    @contextmanager
    def connect_readonly(self):
        """A read-only DuckDB connection to an up-to-date index, under the shared lock.

        Pending runs are ingested first. Closing the ``with`` block closes the connection
        and releases the lock; keep it short, since writers wait for it.
        """
        fd, con = self._open_for_reading()
        key = str(self.lock_path)
        with _held_guard:
            _held_shared[key] = _held_shared.get(key, 0) + 1
        try:
            yield con
        finally:
            with _held_guard:
                _held_shared[key] -= 1
            con.close()
            os.close(fd)

    # -- locking --------------------------------------------------------------------------

    def _take_lock(self, exclusive: bool, wait: float) -> int | None:
        """An fd holding the index flock, or None if it stayed busy for ``wait`` seconds."""
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            # .mlvc is not writable here: lock the file read-only, or, if nobody could create
            # it, nobody can write the index either, and the folder serves as the lock
            target = self.lock_path if self.lock_path.exists() else self.dir
            fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
        op = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        deadline = time.monotonic() + wait
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, op)
                return fd
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _take_lock_or_raise(self, exclusive: bool) -> int:
        fd = self._take_lock(exclusive, LOCK_WAIT)
        if fd is None:
            raise IndexBusy(
                f"the index has been locked by another mlvc process for over {LOCK_WAIT:.0f} s "
                f"(a long query or an ingest holds {self.lock_path}); try again in a moment"
            )
        return fd

    def _open_for_reading(self):
        """(lock fd, read-only connection), ingesting first when the index is behind."""
        nested = _held_shared.get(str(self.lock_path), 0) > 0
        for attempt in range(2):
            fd = self._take_lock_or_raise(exclusive=False)
            try:
                con = self._open_if_current() if attempt == 0 and not nested else self._open_ro()
            except BaseException:
                os.close(fd)
                raise
            if con is not None:
                return fd, con
            os.close(fd)
            fd = self._take_lock_or_raise(exclusive=True)
            try:
                with self._writing():
                    self._ingest_locked()
            finally:
                os.close(fd)
        raise AssertionError("unreachable")

    def _open_if_current(self):
        """A read-only connection if the index needs no ingest, else None."""
        import duckdb

        if not self.path.exists():
            return None
        try:
            con = self._open_ro()
        except duckdb.Error:
            return None  # damaged or foreign-locked: the writer path decides
        try:
            meta = _read_meta(con)
            current = (
                meta.get("schema_version") == str(SCHEMA_VERSION)
                and _settled(meta.get("refs_fingerprint")) == self._refs_fingerprint()
                and not self._actionable(con, self._journal_entries())
            )
        except duckdb.Error:
            current = False
        if not current:
            con.close()
            return None
        return con

    def _actionable(self, con, entries) -> list:
        """Journal entries an ingest would act on now (not commits still in progress)."""
        now = time.time()
        out, unsure = [], []
        for entry in entries:
            oid, _path, mtime = entry
            if self.refs.has_run(oid) or now - mtime > ABANDONED_AFTER:
                out.append(entry)
            else:
                unsure.append(entry)
        if unsure:
            indexed = _indexed(con, [oid.hex for oid, _p, _m in unsure])
            out += [e for e in unsure if e[0].hex in indexed]
        return out

    # -- connections ----------------------------------------------------------------------

    def _open_ro(self):
        import duckdb

        con = duckdb.connect(
            str(self.path), read_only=True, config={"enable_external_access": False}
        )
        # Settings are per database in a process, and a reader nested in another shares its
        # database: only the first sets them. UTC gives the same answers on every machine;
        # the lock keeps user SQL from changing any setting (external access included).
        if not con.execute("SELECT current_setting('lock_configuration')").fetchall()[0][0]:
            con.execute("SET GLOBAL TimeZone = 'UTC'")
            con.execute("SET lock_configuration = true")
        return con

    def _open_rw(self, path: Path | None = None):
        """Read-write connection; only ever called under the exclusive lock."""
        import duckdb

        try:
            con = duckdb.connect(str(path or self.path))
        except duckdb.IOException as e:
            if "could not set lock" in str(e).lower():
                raise IndexBusy(
                    f"another program has {self.path} open (a duckdb shell?); close it and "
                    "try again"
                ) from None
            raise
        con.execute("SET TimeZone = 'UTC'")
        return con

    # -- writing (exclusive lock held) ----------------------------------------------------

    def ingest_holding_lock(self) -> None:
        """Ingest the journal; the caller holds the index lock exclusively (the detached
        worker, which inherited it from the committer that spawned it)."""
        self._ingest_locked()

    def _ingest_locked(self) -> None:
        import duckdb

        con, damaged = None, False
        if self.path.exists():
            try:
                con = self._open_rw()
                if _read_meta(con).get("schema_version") != str(SCHEMA_VERSION):
                    con.close()
                    con = None
            except duckdb.Error as e:
                log.info("the index is unreadable (%s); rebuilding it", _first_line(e))
                if con is not None:
                    con.close()
                con, damaged = None, True
        try:
            if con is None:
                self._rebuild_locked()
                con = self._open_rw()
            try:
                done = self._apply_journal(con)
                con.execute("CHECKPOINT")  # journal entries go only once their rows left the WAL
            except duckdb.Error as e:  # a damaged block met while ingesting
                if damaged or not _damaged(e):
                    raise
                con.close()
                con, damaged = None, True
                self._rebuild_locked()
                con = self._open_rw()
                done = self._apply_journal(con)
                con.execute("CHECKPOINT")
        finally:
            if con is not None:
                con.close()
        for path in done:
            path.unlink(missing_ok=True)
        if damaged:
            log.warning(REBUILT)

    @contextmanager
    def _writing(self):
        """Writing the index where .mlvc is not writable is one clear error."""
        import duckdb

        try:
            yield
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            raise self._not_writable(e.strerror) from None
        except duckdb.Error as e:
            text = str(e)
            if "Permission denied" not in text and "Read-only file system" not in text:
                raise
            raise self._not_writable(_first_line(e)) from None

    def _not_writable(self, why: str) -> MlvcError:
        return MlvcError(
            f"cannot write the index in {self.dir} ({why}); it is a cache that mlvc must "
            "update or rebuild here: make the folder writable, or ask its owner to run "
            "`mlvc index rebuild`"
        )

    def _apply_journal(self, con) -> list[Path]:
        """Ingest and drop what the journal says, in one transaction; returns entries done."""
        entries = self._journal_entries()
        fingerprint = self._refs_fingerprint()
        meta = _read_meta(con)
        if not entries and _settled(meta.get("refs_fingerprint")) == fingerprint:
            return []
        actionable = self._actionable(con, entries)
        with_ref = [oid for oid, _p, _m in actionable if self.refs.has_run(oid)]
        without = [oid.hex for oid, _p, _m in actionable if not self.refs.has_run(oid)]
        dropped = sorted(_indexed(con, without))
        indexed = _indexed(con, [oid.hex for oid in with_ref])
        new = [oid for oid in with_ref if oid.hex not in indexed]
        con.begin()
        try:
            if dropped:
                _delete_runs(con, dropped)
            self._insert_runs(con, new)
            self._finish(con, fingerprint, [oid.hex for oid in new], dropped)
            con.commit()
        except BaseException:
            con.rollback()
            raise
        return [path for _oid, path, _m in actionable]

    def _rebuild_locked(self) -> None:
        """Write a whole new index to a temp file, then rename it into place."""
        for stale in self.dir.glob(DB_NAME + ".rebuild-*"):
            stale.unlink(missing_ok=True)
        tmp = self.dir / f"{DB_NAME}.rebuild-{os.getpid()}"
        con = self._open_rw(tmp)
        try:
            con.execute(TABLES_DDL)
            con.execute("CREATE TABLE runs_wide AS SELECT * FROM runs")
            _write_meta(con, {"schema_version": str(SCHEMA_VERSION)})
            con.begin()
            run_ids = sorted(self.refs.run_ids())
            self._insert_runs(con, run_ids, fresh=True)
            self._finish(con, self._refs_fingerprint(), [o.hex for o in run_ids], [])
            con.commit()
            con.execute("CHECKPOINT")
        finally:
            con.close()
        # Anything in the old WAL had not been checkpointed, so its journal entries remain.
        Path(str(self.path) + ".wal").unlink(missing_ok=True)
        os.replace(tmp, self.path)
        _fsync_dir(self.dir)

    def _insert_runs(self, con, run_ids: list[ObjectId], fresh: bool = False) -> None:
        """Insert runs in batches of BATCH_RUNS, decoded in worker processes if many."""
        schemas = {
            t: con.sql(f"SELECT * FROM {t} LIMIT 0").to_arrow_table().schema
            for t in {*RUN_ROWS, *SHARED_ROWS}
        }
        chunks = [
            [oid.hex for oid in run_ids[i : i + BATCH_RUNS]]
            for i in range(0, len(run_ids), BATCH_RUNS)
        ]
        workers = min(self.workers, len(chunks))
        parallel = len(run_ids) >= PARALLEL_MIN_RUNS and isinstance(self.store, LocalStore)
        if workers > 1 and parallel:
            decoded = _Workers(workers).map([(self.store, schemas, c) for c in chunks])
        else:
            decoded = (decode_runs(self.store, schemas, c) for c in chunks)
        seen = _Seen(con, fresh)
        for tables, trees, envs in decoded:
            _insert_tables(con, tables)
            _insert_tables(con, _shared_rows(self.store, schemas, seen, trees, envs))

    def _finish(self, con, fingerprint: str, new: list[str], dropped: list[str]) -> None:
        """Refresh what depends on the whole index: refs, runs_wide, meta."""
        import pyarrow as pa

        from ..refs.resolve import named_runs  # damaged refs are skipped, with a warning

        stored = _read_meta(con)
        if stored.get("refs_fingerprint") != fingerprint:
            rows = [
                (kind, name, oid.hex)
                for kind, ns in (("name", "names"), ("tag", "tags"))
                for name, oid in sorted(named_runs(self.refs, ns).items())
            ]
            con.execute("DELETE FROM refs")
            if rows:
                kinds, names, ids = zip(*rows, strict=True)
                _insert(con, "refs", pa.table({"kind": kinds, "name": names, "run_id": ids}))
            self._refresh_models(con)
        meta = {"refs_fingerprint": fingerprint}
        if new or dropped:
            old = stored.get("runs_wide")
            meta["runs_wide"] = _refresh_runs_wide(con, old, new, bool(dropped))
        _write_meta(con, meta)

    def _refresh_models(self, con) -> None:
        """Rewrite the model registry tables from refs/models (a few rows per model)."""
        import pyarrow as pa

        from ..refs.registry import index_rows

        for table, rows in index_rows(self.refs, self.store).items():
            con.execute(f"DELETE FROM {table}")
            if rows:
                schema = con.sql(f"SELECT * FROM {table} LIMIT 0").to_arrow_table().schema
                cols = list(zip(*rows, strict=True))
                arrays = [pa.array(c, f.type) for c, f in zip(cols, schema, strict=True)]
                _insert(con, table, pa.Table.from_arrays(arrays, schema=schema))

    def _refs_fingerprint(self) -> str:
        """Identity of refs/names, refs/tags and the model registry's folders as of now: any
        ref written there changes it.

        A directory changed in the last couple of seconds may change again within the same
        mtime tick, so such a fingerprint is marked unsettled and never matches.
        """
        parts, newest = [], 0
        models = self.dir / "refs" / "models"
        folders = ["names", "tags", "models"]
        try:
            for name in sorted(os.listdir(models)):
                folders += [f"models/{name}/versions", f"models/{name}/aliases"]
        except (FileNotFoundError, NotADirectoryError):
            pass
        for ns in folders:
            try:
                st = os.stat(self.dir / "refs" / ns)
            except FileNotFoundError:
                parts.append("-")
                continue
            parts.append(f"{st.st_ino}.{st.st_mtime_ns}")
            newest = max(newest, st.st_mtime_ns)
        fp = "/".join(parts)
        if time.time_ns() - newest < REFS_SETTLE_NS:
            fp += "/unsettled"
        return fp


# -- helpers --------------------------------------------------------------------------------


REBUILT = "index was damaged; rebuilt from objects and refs"
# What DuckDB says when the file, not the query, is at fault
DAMAGE_SIGNS = (
    "Corrupt database file",
    "not a valid DuckDB database file",
    "Could not read enough bytes",
    "checksum",
)


def _damaged(e: BaseException) -> bool:
    return any(sign in str(e) for sign in DAMAGE_SIGNS)


@contextmanager
def _query_errors():
    """DuckDB errors in user SQL become QueryError with DuckDB's own words."""
    import duckdb

    try:
        yield
    except duckdb.Error as e:
        if is_interruption(e):
            raise KeyboardInterrupt from None
        if _damaged(e):
            raise IndexDamaged(_first_line(e)) from None
        raise QueryError(_first_line(e)) from None


def _settled(fingerprint: str | None) -> str | None:
    """A stored refs fingerprint, or None if it was taken too soon after a change to trust."""
    return None if fingerprint is None or fingerprint.endswith("/unsettled") else fingerprint


def _read_meta(con) -> dict[str, str]:
    return dict(con.execute("SELECT key, value FROM meta").fetchall())


def _write_meta(con, values: dict[str, str]) -> None:
    for key, value in values.items():
        con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])


def _insert(con, table: str, data) -> None:
    """One INSERT of a whole Arrow table, matched by column name."""
    name = f"_arrow_{table}"
    con.register(name, data)
    try:
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {name}")
    finally:
        con.unregister(name)


def _indexed(con, ids: list[str]) -> set[str]:
    """Which of these run ids the index holds."""
    return _present(con, "SELECT id FROM runs", ids)


def _present(con, select: str, values) -> set[str]:
    """Which of ``values`` the one-column query ``select`` returns."""
    values = sorted(values)
    if not values:
        return set()
    import pyarrow as pa

    con.register("_arrow_probe", pa.table({"v": pa.array(values, pa.string())}))
    try:
        rows = con.execute(f"SELECT v FROM _arrow_probe WHERE v IN ({select})").fetchall()
        return {r[0] for r in rows}
    finally:
        con.unregister("_arrow_probe")


_USED_OBJECTS = """
    SELECT oid FROM (
        SELECT code_tree AS oid FROM runs UNION ALL SELECT data_tree FROM runs
        UNION ALL SELECT artifacts_tree FROM runs UNION ALL SELECT env_id FROM runs)
    WHERE oid IS NOT NULL"""


def _delete_runs(con, ids: list[str]) -> None:
    import pyarrow as pa

    con.register("_arrow_drop", pa.table({"id": ids}))
    try:
        for table in RUN_TABLES:
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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- turning runs into rows -----------------------------------------------------------------

# Tables filled row by row (their DDL fixes each row's column order): per run, and shared.
RUN_ROWS = ("runs", "params", "metrics", "tags", "ingest_errors", "live_keys")
SHARED_ROWS = ("tree_files", "env_packages", "ingest_errors")
PARALLEL_MIN_RUNS = 4000  # below this, starting worker processes costs more than it saves
READ_THREADS = 8  # object reads in flight while decoding: the disk, not the CPU, is the limit


class _Rows:
    """Rows for some index tables, as tuples in each table's column order."""

    def __init__(self, schemas: dict):
        self.schemas = schemas
        self.rows = {t: [] for t in schemas}

    def error(self, run_id: str | None, object_id: str, message: str) -> None:
        self.rows["ingest_errors"].append((run_id, object_id, message))

    def table(self, name: str):
        import pyarrow as pa

        schema = self.schemas[name]
        columns = list(zip(*self.rows[name], strict=True)) or [[] for _ in schema]
        arrays = [pa.array(c, f.type) for c, f in zip(columns, schema, strict=True)]
        return pa.Table.from_arrays(arrays, schema=schema)

    def tables(self) -> dict:
        return {name: self.table(name) for name in self.rows}


class _Decoder(_Rows):
    """Turns run objects and their metric series into rows; needs no database."""

    def __init__(self, schemas: dict):
        super().__init__({t: schemas[t] for t in RUN_ROWS})
        self.series = []  # (run id, Arrow table of key, step, value, timestamp)
        self.trees: set[str] = set()
        self.envs: set[str] = set()

    def add(self, oid: ObjectId, run, series) -> None:
        """One run, as read by ``_load``."""
        if isinstance(run, Exception):
            self.error(oid.hex, oid.hex, f"run object unreadable: {run}")
            return
        sizes = {t: len(r) for t, r in self.rows.items()}
        n_series = len(self.series)
        try:
            self._add_run(oid.hex, run, series)
        except Exception as e:  # a run object with values no column can hold
            for t, n in sizes.items():
                del self.rows[t][n:]
            del self.series[n_series:]
            self.error(oid.hex, oid.hex, f"run cannot be indexed: {e}")
            return
        self.trees.update(t.hex for t in run.sections.values() if t is not None)
        if run.env is not None:
            self.envs.add(run.env.hex)

    def _add_run(self, rid: str, run, blob) -> None:
        started, ended = _micros(run.started), _micros(run.ended)
        git = run.git if isinstance(run.git, dict) else {}
        parents = [p.hex for p in run.parents]
        self.rows["runs"].append((
            rid, rid[:10], _text(run.name), _text(run.status), _text(run.message),
            _text(run.author), parents[0] if parents else None, parents, started, started,
            ended, (ended - started) / 1e6 if started and ended else None,
            shlex.join(str(a) for a in run.command), _text(run.cwd),
            _int64(run.exit_code),
            _hex(run.code), _hex(run.data), _hex(run.artifacts), _hex(run.series),
            _hex(run.env), _text(git.get("commit")), _text(git.get("branch")),
            _git_dirty(git), _hex(run.reproduces),
        ))  # fmt: skip
        for key, value in sorted(run.params.items()):
            self.rows["params"].append((rid, key, *_param(value)))
        for key, value in sorted(run.tags.items()):
            self.rows["tags"].append((rid, key, _text(value)))
        if isinstance(run.extra.get("live_key"), str):  # run:<live key>/... URIs resolve by it
            self.rows["live_keys"].append((rid, run.extra["live_key"]))
        if run.series is not None:
            try:
                if isinstance(blob, Exception):
                    raise blob
                table = _series_table(blob)
                if len(table):
                    self.series.append((rid, table))
            except Exception as e:  # corrupt, missing or not our Parquet shape
                self.error(rid, run.series.hex, f"metric series unreadable: {e}")
        for key, value in sorted(run.metrics.items()):
            if not is_number(value):
                self.error(rid, rid, f"metric {key!r} is not a number: {value!r}")
                continue
            self.rows["metrics"].append((rid, key, 0, ended, float(value)))

    def tables(self) -> dict:
        """The rows' tables, with the metric series points apart as ``series``."""
        return {**super().tables(), "series": self._series_points()}

    def _series_points(self):
        """All series points of the batch, run_id dictionary-encoded (no 64-byte copies)."""
        import pyarrow as pa

        schema = self.schemas["metrics"]
        if not self.series:
            return schema.empty_table()
        rids, series = zip(*self.series, strict=True)
        points = pa.concat_tables(series).combine_chunks()
        # Each series' index repeated along it, without a Python loop over the points.
        ends = pa.array(list(itertools.accumulate(len(t) for t in series)), pa.int32())
        which = pa.RunEndEncodedArray.from_arrays(ends, pa.array(range(len(rids)), pa.int32()))
        run_col = pa.DictionaryArray.from_arrays(_run_end_decode(which), pa.array(rids))
        timestamps = points.column("timestamp").cast(schema.field("timestamp").type)
        points = points.set_column(3, "timestamp", timestamps).add_column(0, "run_id", run_col)
        return points.select(schema.names)


def decode_runs(store, schemas: dict, run_ids: list[str]) -> tuple[dict, list, list]:
    """Arrow tables of the rows of these runs, and the trees and envs they use.

    Pure but for reading the store, so worker processes can run it in parallel.
    """
    decoder = _Decoder(schemas)
    oids = [ObjectId.parse(rid) for rid in run_ids]
    # Reading objects waits on the disk, not the GIL: overlap the reads, decode in order.
    with ThreadPoolExecutor(READ_THREADS) as pool:
        for oid, (run, series) in zip(
            oids, pool.map(functools.partial(_load, store), oids), strict=True
        ):
            decoder.add(oid, run, series)
    return decoder.tables(), sorted(decoder.trees), sorted(decoder.envs)


def _load(store, oid: ObjectId) -> tuple:
    """(run or the error reading it, series blob or the error reading it, or None)."""
    try:
        run = read_run(store, oid)
    except MlvcError as e:
        return e, None
    if run.series is None:
        return run, None
    try:
        return run, store.read_bytes(run.series)
    except MlvcError as e:
        return run, e


class _Seen:
    """Trees and envs already in the index: asked of DuckDB once, then remembered."""

    def __init__(self, con, fresh: bool):
        self.con, self.fresh, self.ids = con, fresh, set()

    def new(self, ids: list[str], table: str, column: str) -> list[str]:
        unseen = set(ids) - self.ids
        if unseen and not self.fresh:  # a fresh index holds only what this ingest added
            known = f"SELECT {column} FROM {table} UNION ALL SELECT object_id FROM ingest_errors"
            unseen -= _present(self.con, known, unseen)
        self.ids |= set(ids)
        return sorted(unseen)


def _shared_rows(store, schemas: dict, seen: _Seen, trees: list[str], envs: list[str]) -> dict:
    """Rows of the trees and envs not in the index yet (shared by runs: listed once)."""
    rows = _Rows({t: schemas[t] for t in SHARED_ROWS})
    for tree in seen.new(trees, "tree_files", "tree_id"):
        try:
            files = [
                (tree, path, e.id.hex, e.size, e.kind)
                for path, e in walk(store, ObjectId.parse(tree))
            ]
        except MlvcError as e:
            rows.error(None, tree, f"tree unreadable: {e}")
            continue
        rows.rows["tree_files"] += files
    for env in seen.new(envs, "env_packages", "env_id"):
        try:
            packages = read_env(store, ObjectId.parse(env)).facts.get("packages") or {}
        except MlvcError as e:
            rows.error(None, env, f"env unreadable: {e}")
            continue
        if isinstance(packages, dict):
            rows.rows["env_packages"] += [(env, n, _text(v)) for n, v in sorted(packages.items())]
    return rows.tables()


def _insert_tables(con, tables: dict) -> None:
    """One INSERT per non-empty table; metrics and series go in together."""
    tables = dict(tables)
    final, series = tables.pop("metrics", None), tables.pop("series", None)
    for name, table in tables.items():
        if len(table):
            _insert(con, name, table)
    if final is not None and (len(final) or len(series)):
        _insert_metrics(con, final, series)


def _insert_metrics(con, final, series) -> None:
    """Every series point, each final metric whose key the run's series lacks, summaries."""
    con.register("_arrow_final", final)
    con.register("_arrow_series", series)
    try:
        con.execute("""
            CREATE OR REPLACE TEMP TABLE _final AS
            SELECT * FROM _arrow_final
            ANTI JOIN (SELECT DISTINCT run_id, key FROM _arrow_series) USING (run_id, key)""")
        con.execute("INSERT INTO metrics BY NAME SELECT * FROM _arrow_series")
        con.execute("INSERT INTO metrics BY NAME SELECT * FROM _final")
        # "last" is the value at the highest step; later timestamps, then larger values
        # break ties, so the result never depends on scan order.
        con.execute("""
            INSERT INTO metric_summary
            SELECT run_id, key, arg_max(value, (step, timestamp, value)),
                   min(value) FILTER (WHERE NOT isnan(value)),
                   max(value) FILTER (WHERE NOT isnan(value)), count(*), max(step)
            FROM (SELECT * FROM _arrow_series UNION ALL SELECT * FROM _final)
            GROUP BY run_id, key""")
        con.execute("DROP TABLE _final")
    finally:
        con.unregister("_arrow_final")
        con.unregister("_arrow_series")


class _Workers:
    """Worker processes running ``decode_runs``: a rebuild of many runs on many cores.

    Plain subprocesses, not multiprocessing: spawning re-imports the caller's ``__main__``,
    which would re-run an unguarded user script that happened to trigger a rebuild.
    """

    def __init__(self, n: int):
        root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
        cmd = [sys.executable, "-c", "from mlvc.index.index import _worker_main; _worker_main()"]
        self.procs = [
            subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
            for _ in range(n)
        ]

    def map(self, requests: list[tuple]) -> Iterator[tuple]:
        """Results in request order; each worker holds one request, so memory stays bounded."""
        n = len(self.procs)
        try:
            for k, request in enumerate(requests[:n]):
                self._send(k, request)
            for k in range(len(requests)):
                try:
                    ok, result = pickle.load(self.procs[k % n].stdout)
                except EOFError:
                    raise MlvcError("an index worker process died; see its error above") from None
                if k + n < len(requests):
                    self._send(k % n, requests[k + n])
                if not ok:
                    raise MlvcError(f"an index worker failed: {result}")
                yield result
        finally:
            for proc in self.procs:  # EOF ends an idle worker, EPIPE a busy one
                for pipe in (proc.stdin, proc.stdout):
                    try:
                        pipe.close()
                    except OSError:  # the worker died with a request unread
                        pass
            for proc in self.procs:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def _send(self, k: int, request: tuple) -> None:
        pickle.dump(request, self.procs[k].stdin, protocol=pickle.HIGHEST_PROTOCOL)
        self.procs[k].stdin.flush()


def _worker_main() -> None:
    """A ``_Workers`` process: decode requests from stdin until it closes."""
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            request = pickle.load(inp)
        except EOFError:
            return
        try:
            result = (True, decode_runs(*request))
        except Exception as e:
            result = (False, f"{type(e).__name__}: {e}")
        pickle.dump(result, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()


def _run_end_decode(array):
    import pyarrow.compute as pc

    return pc.run_end_decode(array)


def _series_table(data: bytes):
    """A metric series Parquet blob as a table of key, step, value, timestamp (int64 µs).

    Timestamps may be stored as int64 microseconds or as any Arrow timestamp. Values that
    the index's types cannot hold raise, so one bad blob never spoils a batch.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    blob = pq.ParquetFile(pa.BufferReader(data))
    names = set(blob.schema_arrow.names)
    if not {"key", "step", "value"} <= names:
        raise ValueError("a series needs the columns key, step and value (and timestamp)")
    if "timestamp" not in names:
        table = blob.read(columns=["key", "step", "value"], use_threads=False)
        table = table.append_column("timestamp", pa.nulls(len(table), pa.int64()))
        return _cast_as(table, _series_schema())
    table = blob.read(columns=["key", "step", "value", "timestamp"], use_threads=False)
    ts = table.column("timestamp")
    if pa.types.is_timestamp(ts.type):  # stored as UTC: the int64 view is epoch time
        if ts.type.unit != "us":
            ts = ts.cast(pa.timestamp("us", tz=ts.type.tz), safe=False)
        table = table.set_column(3, "timestamp", ts.cast(pa.int64()))
    return _cast_as(table, _series_schema())


@functools.cache
def _series_schema():
    import pyarrow as pa

    return pa.schema(
        [("key", pa.string()), ("step", pa.int64()), ("value", pa.float64()),
         ("timestamp", pa.int64())]
    )  # fmt: skip


def _cast_as(table, schema):
    """The table in ``schema``'s types; a cast (which refuses lossy values) only if needed."""
    return table if table.schema == schema else table.cast(schema)


def _micros(t) -> int | None:
    """Run times are int microseconds; 0 means unknown."""
    return t if _int64(t) and t > 0 else None


def _int64(value) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63:
        return value
    return None


def _text(value) -> str | None:
    return None if value is None else str(value)


def _hex(oid) -> str | None:
    return None if oid is None else oid.hex


def _git_dirty(git: dict) -> bool | None:
    dirty = git.get("dirty")
    if dirty is None and "patch" in git:
        dirty = git["patch"]
    return None if dirty is None else bool(dirty)


def _param(value) -> tuple[str | None, float | None, str]:
    """(text form, numeric value, type) of a param value."""
    if isinstance(value, bool):
        return ("true" if value else "false"), None, "bool"
    if isinstance(value, int):
        return str(value), float(value), "int"
    if isinstance(value, float):
        return repr(value), value, "float"
    if value is None:
        return None, None, "null"
    if isinstance(value, str):
        return value, None, "str"
    return json.dumps(value, sort_keys=True, default=str), None, "str"


# -- runs_wide ------------------------------------------------------------------------------

WIDE_TYPES = {"DOUBLE": "value_num", "BOOLEAN": "value = 'true'", "VARCHAR": "value"}
# What decides a param column's type: which classes of value the key has.
VALUE_CLASS = "CASE WHEN type IN ('int', 'float') THEN 'num' ELSE type END"


def _wide_columns(con) -> list[list]:
    """[column, family, key, SQL type, value classes] of runs_wide's params.* and metrics.*."""
    out, seen = [], set()

    def add(family: str, key: str, sqltype: str, classes: list[str]) -> None:
        # DuckDB identifiers ignore case: of keys differing only in case (LR, lr), the first
        # in byte order keeps the plain name, the others get #2, #3... (docs/sql-schema.md)
        name, n = f"{family}.{key}", 1
        while name.lower() in seen:
            n += 1
            name = f"{family}.{key}#{n}"
        seen.add(name.lower())
        out.append([name, family, key, sqltype, classes])

    rows = con.execute(
        f"SELECT key, list_sort(list(DISTINCT {VALUE_CLASS})) FROM params "
        f"GROUP BY key ORDER BY key LIMIT {MAX_WIDE_KEYS}"
    ).fetchall()
    for key, classes in rows:
        typed = sorted(set(classes) - {"null"})  # one class of value gives a typed column
        sqltype = {"num": "DOUBLE", "bool": "BOOLEAN"}.get(typed[0]) if len(typed) == 1 else None
        add("params", key, sqltype or "VARCHAR", classes)
    metric_keys = con.execute(
        f"SELECT DISTINCT key FROM metric_summary ORDER BY key LIMIT {MAX_WIDE_KEYS}"
    ).fetchall()
    for (key,) in metric_keys:
        add("metrics", key, "DOUBLE", ["num"])
    return out


def _wide_fits(con, columns: list[list], table: str) -> bool:
    """Whether runs_wide's columns stay as they are with the runs listed in ``table``."""
    have = {(family, key): set(classes) for _n, family, key, _t, classes in columns}
    new = con.execute(
        f"SELECT DISTINCT 'params', key, {VALUE_CLASS} FROM params "
        f"WHERE run_id IN (SELECT id FROM {table}) UNION ALL "
        "SELECT DISTINCT 'metrics', key, 'num' FROM metric_summary "
        f"WHERE run_id IN (SELECT id FROM {table})"
    ).fetchall()
    return all(cls in have.get((family, key), ()) for family, key, cls in new)


def _wide_select(columns: list[list[str]], only: str | None = None) -> str:
    """SELECT producing runs_wide rows (only for run ids in table ``only`` when given)."""
    parts = {"params": [], "metrics": []}
    for name, family, key, sqltype, _classes in columns:
        expr = WIDE_TYPES[sqltype] if family == "params" else "last"
        parts[family].append(
            f"any_value({expr}) FILTER (WHERE key = {_lit(key)}) AS {_ident(name)}"
        )
    where = f" WHERE run_id IN (SELECT id FROM {only})" if only else ""
    select, joins = ["r.*"], []
    for cols, (table, alias) in zip(
        parts.values(), (("params", "p"), ("metric_summary", "m")), strict=True
    ):
        if cols:
            sub = f"SELECT run_id, {', '.join(cols)} FROM {table}{where} GROUP BY run_id"
            joins.append(f"LEFT JOIN ({sub}) {alias} ON {alias}.run_id = r.id")
            select.append(f"{alias}.* EXCLUDE (run_id)")
    sql = f"SELECT {', '.join(select)} FROM runs r {' '.join(joins)}"
    return sql + (f" WHERE r.id IN (SELECT id FROM {only})" if only else "")


def _refresh_runs_wide(con, old: str | None, new: list[str], dropped: bool) -> str:
    """Bring runs_wide up to date; returns its column signature for ``meta``.

    runs_wide is a table, not a view, so wide queries scan one row per run. New runs are
    appended when their keys and value types fit the columns; a new key or a column changing
    type (or runs dropped) creates it again from params and metric_summary. Adding a column
    in place would save little: DuckDB rewrites the table at the next checkpoint anyway.
    """
    import pyarrow as pa

    old_columns = None if dropped else _parse_signature(old)
    con.register("_arrow_new", pa.table({"id": pa.array(new, pa.string())}))
    try:
        if old_columns is not None and _wide_fits(con, old_columns, "_arrow_new"):
            _append_wide(con, old_columns)
            return old
    finally:
        con.unregister("_arrow_new")
    columns = _wide_columns(con)
    con.execute(f"CREATE OR REPLACE TABLE runs_wide AS {_wide_select(columns)}")
    return json.dumps(columns)


def _append_wide(con, columns: list[list]) -> None:
    """Insert the runs_wide rows of the runs listed in ``_arrow_new``."""
    con.execute(f"INSERT INTO runs_wide BY NAME {_wide_select(columns, only='_arrow_new')}")


def _parse_signature(text: str | None) -> list[list] | None:
    """runs_wide's columns as stored in meta, or None (none yet, or from an older mlvc)."""
    try:
        columns = json.loads(text or "null")
    except ValueError:
        return None
    if isinstance(columns, list) and all(len(c) == 5 for c in columns):
        return columns
    return None


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'
