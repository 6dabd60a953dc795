"""DuckDB connections to the index file, and what DuckDB's errors mean for it.

Readers connect read-only, with external access off and the configuration locked, so user
SQL can neither write nor change a setting; writers connect read-write, and only under the
exclusive index lock. Both answer in UTC, the same on every machine. An error naming the file
rather than the query means the file is damaged, and the index, a cache, is rebuilt.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import IndexBusy, IndexDamaged, MlvcError, QueryError
from .user_sql import damaged, first_line, ident, is_interruption

REBUILT = "index was damaged; rebuilt from objects and refs"
KEPT_WAIT = 5.0  # seconds a writer waits for DuckDB's own lock (a server's kept reader)
# What DuckDB says when the file, not the query, is at fault
_CONFIGURING = threading.Lock()


def connect_ro(path: Path):
    """A read-only connection for readers (user SQL included)."""
    import duckdb

    con = duckdb.connect(str(path), read_only=True, config={"enable_external_access": False})
    # Settings are per database in a process, and readers open at once in one process share
    # its database: only the first sets them. UTC gives the same answers on every machine;
    # the lock keeps user SQL from changing any setting (external access included). Checking
    # and setting is one step for the process's threads: two readers that both saw it unset
    # once raced, the second's SET failed, and its connection, kept alive by the error's
    # traceback, kept the database open read-only so that no writer of the process could
    # open it (CI: test_threads_sharing_the_cache_get_the_same_answers).
    with _CONFIGURING:
        try:
            locked = con.execute("SELECT current_setting('lock_configuration')").fetchall()[0][0]
        except BaseException:
            con.close()
            raise
        if not locked:
            _lock(con)
    return con


def _lock(con, *settings: str) -> None:
    """Apply ``settings`` to ``con``'s database, make it answer in UTC (the same on every
    machine) and lock its configuration; ``con`` is closed if any of it fails."""
    try:
        for sql in (*settings, "SET GLOBAL TimeZone = 'UTC'", "SET lock_configuration = true"):
            con.execute(sql)
    except BaseException:
        con.close()
        raise


def connect_rw(path: Path, shown: Path | None = None, fresh: bool = False):
    """A read-write connection; only ever called under the exclusive index lock.
    ``shown``: the path to name if another program holds DuckDB's own lock on it.

    The file is attached to this process's database for it (``_attach``, ``_index_db``),
    not opened as a database of its own: starting a DuckDB database costs ~18 ms of CPU
    (~45 ms in a fork of the command server), attaching a file to a running one ~1.5 ms, and
    an ingest a reader makes on its way to an answer opened one each time (a sixth of its
    CPU). The reader's read after it attaches the file to the same database. ``fresh``: a
    database of its own all the same (a rebuild, whose settings must not outlive it and
    which forks before it opens DuckDB)."""
    import duckdb

    deadline = time.monotonic() + KEPT_WAIT
    while True:
        try:
            con = None if fresh else _attach(str(path), path, lambda: _index_db(path))
            if con is None:
                con = duckdb.connect(str(path))
                con.execute("SET TimeZone = 'UTC'")
            return con
        except duckdb.IOException as e:
            if "could not set lock" not in str(e).lower():
                raise
            # a server keeps a reader open between its reads, and lets it go once idle
            # (it is, while this process holds the exclusive lock): wait a little for that
            if time.monotonic() >= deadline:
                raise IndexBusy(
                    f"another program has {shown or path} open (a duckdb shell?); close it "
                    "and try again"
                ) from None
            time.sleep(0.02)


KEPT = 4  # databases this process keeps, one an index file, the least recently used closed


def attach_ro(path: Path):
    """A read-only connection for readers (user SQL included), like ``connect_ro``'s, made by
    attaching the file to this process's database for it (``_attach``, ``_index_db``)."""
    return _attach(str(path), path, lambda: _index_db(path), "(READ_ONLY)") or connect_ro(path)


def _index_db(path: Path):
    """An in-memory database for the index file ``path``, as locked as a reader's database of
    its own: no file but the index, its WAL (and the WAL's checkpoint file, which a writer's
    checkpoint makes) and its spill folder, and the configuration locked. Writers attach
    the file to it read-write (their SQL is mlvc's own), readers read-only."""
    import duckdb

    key = str(path)
    con = duckdb.connect(":memory:")
    spill = f"{path}.tmp"  # where DuckDB spills for a database of its own
    files = ", ".join(_quoted(key + end) for end in ("", ".wal", ".wal.checkpoint"))
    _lock(
        con,
        f"SET allowed_paths = [{files}]",
        f"SET temp_directory = {_quoted(spill)}",
        f"SET allowed_directories = [{_quoted(spill + os.sep)}]",
        "SET enable_external_access = false",
    )
    return con


def start(path: Path) -> None:
    """Start this process's database for the index file ``path`` now, not on the first
    connection (the index worker, before it takes the lock: starting one costs ~18 ms of
    CPU, ~0.1 s of wall at a committer's share of a loaded machine, which a reader would
    wait for)."""
    key = str(path)
    with _HOSTS_LOCK:
        if key not in _HOSTS:
            _HOSTS[key] = _Host(_index_db(path))


class _Host:
    """An in-memory database of this process that index files are attached to, one at a
    time (``busy``)."""

    def __init__(self, con):
        self.con, self.busy = con, False


_HOSTS: dict[str, _Host] = {}  # by key, the least recently used first
_HOSTS_LOCK = threading.Lock()  # held across a fork, so none is half made or in hand
_HOSTS_PID = [os.getpid()]


def _attach(key: str, path: Path, make, options: str = "") -> _Attached | None:
    """``path`` attached to this process's in-memory database ``key`` (made by ``make`` if
    missing), under its file name's stem as a database of its own would be named, as the
    default database of a new cursor; None if that database is in use (by another thread,
    or another connection of this one: the caller opens a database of its own). Databases
    not in use past KEPT are closed, least recently used first."""
    with _HOSTS_LOCK:
        if _HOSTS_PID[0] != os.getpid():  # forked by a path that ran no fork hook
            _inherited()
        host = _HOSTS.get(key)
        if host is not None and host.busy:
            return None
        if host is None:
            host = _Host(make())
        else:
            del _HOSTS[key]
        _HOSTS[key] = host  # last: the most recently used
        host.busy = True
        idle = [k for k in _HOSTS if not _HOSTS[k].busy]
        for k in idle[: max(0, len(_HOSTS) - KEPT)]:  # (a negative end would close some)
            _HOSTS.pop(k).con.close()
    alias = ident(Path(path).stem)
    try:
        cur = host.con.cursor()
    except BaseException:
        host.busy = False
        raise
    try:
        cur.execute(f"ATTACH {_quoted(str(path))} AS {alias} {options}")
    except BaseException:
        cur.close()
        host.busy = False
        raise
    attached = _Attached(cur, alias, host)
    try:
        cur.execute(f"USE {alias}")
    except BaseException:
        attached.close()
        raise
    return attached


def _drop(host: _Host) -> None:
    """Close ``host`` (a detach failed: nothing may stay attached to it)."""
    import duckdb

    with _HOSTS_LOCK:
        for k, h in list(_HOSTS.items()):
            if h is host:
                del _HOSTS[k]
    with contextlib.suppress(duckdb.Error):
        host.con.close()


def _before_fork() -> None:
    """Close the databases not in use before a fork, and keep any from being taken or made
    until it is done: a child that closed its copy of one (at its start, or its end) would
    wait for DuckDB threads that stay behind in the parent (it died of SIGSEGV)."""
    _HOSTS_LOCK.acquire()
    for key in [k for k, host in _HOSTS.items() if not host.busy]:
        with contextlib.suppress(Exception):
            _HOSTS.pop(key).con.close()


def _after_fork_in_child() -> None:
    _inherited()
    _HOSTS_LOCK.release()


def _inherited() -> None:
    """In a forked child: the parent's databases still in use there are never closed (their
    references are leaked on purpose) nor used; this process makes its own."""
    if _HOSTS:
        import ctypes

        for host in _HOSTS.values():
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(host.con))
        _HOSTS.clear()
    _HOSTS_PID[0] = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_HOSTS_LOCK.release,
        after_in_child=_after_fork_in_child,
    )


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class _Attached:
    """A cursor of one of this process's in-memory databases whose default database is one
    index file; it is used as a connection of its own, and ``close`` detaches the file
    (checkpointing a writer's, as closing a database of its own would). Should the detach
    fail, the in-memory database is closed, so the file is never left attached (DuckDB's
    lock on it held)."""

    def __init__(self, cur, alias: str, host: _Host):
        self._cur, self._alias, self._host = cur, alias, host

    def __getattr__(self, name: str):
        return getattr(self._cur, name)

    def close(self) -> None:
        import duckdb

        cur, self._cur = self._cur, None
        if cur is None:
            return
        try:
            with contextlib.suppress(duckdb.Error):  # no transaction open: nothing to end
                cur.execute("ROLLBACK")  # an open one would keep the file attached
            cur.execute("USE memory")
            cur.execute(f"DETACH {self._alias}")
        except BaseException as e:
            cur.close()
            _drop(self._host)
            if not isinstance(e, duckdb.Error):
                raise
            # else a database DuckDB invalidated (its checkpoint met a damaged block): the
            # error that says so was raised already, and closing must not hide it
            return
        cur.close()
        self._host.busy = False


@contextmanager
def query_errors() -> Iterator[None]:
    """DuckDB errors in user SQL become QueryError with DuckDB's own words; damage found on
    the way becomes IndexDamaged."""
    import duckdb

    try:
        yield
    except duckdb.Error as e:
        if is_interruption(e):
            raise KeyboardInterrupt from None
        if damaged(e):
            raise IndexDamaged(first_line(e)) from None
        raise QueryError(first_line(e)) from None


@contextmanager
def writable(folder: Path) -> Iterator[None]:
    """Writing the index where ``folder`` (.mlvc) is not writable is one clear error."""
    import duckdb

    try:
        yield
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise _not_writable(folder, e.strerror) from None
    except duckdb.Error as e:
        text = str(e)
        if "Permission denied" not in text and "Read-only file system" not in text:
            raise
        raise _not_writable(folder, first_line(e)) from None


def _not_writable(folder: Path, why: str) -> MlvcError:
    return MlvcError(
        f"cannot write the index in {folder} ({why}); it is a cache that mlvc must "
        "update or rebuild here: make the folder writable, or ask its owner to run "
        "`mlvc index rebuild`"
    )


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
