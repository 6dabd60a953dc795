"""DuckDB connections to the index file, and what DuckDB's errors mean for it.

Readers connect read-only, with external access off and the configuration locked, so user
SQL can neither write nor change a setting; writers connect read-write, and only under the
exclusive index lock. Both answer in UTC, the same on every machine. An error naming the file
rather than the query means the file is damaged, and the index, a cache, is rebuilt.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import IndexBusy, IndexDamaged, MlvcError, QueryError
from .user_sql import first_line, is_interruption

REBUILT = "index was damaged; rebuilt from objects and refs"
KEPT_WAIT = 5.0  # seconds a writer waits for DuckDB's own lock (a server's kept reader)
# What DuckDB says when the file, not the query, is at fault
DAMAGE_SIGNS = (
    "Corrupt database file",
    "not a valid DuckDB database file",
    "Could not read enough bytes",
    "checksum",
)


def damaged(e: BaseException) -> bool:
    """Whether a DuckDB error says the index file is damaged."""
    return any(sign in str(e) for sign in DAMAGE_SIGNS)


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
    try:
        with _CONFIGURING:
            if not con.execute("SELECT current_setting('lock_configuration')").fetchall()[0][0]:
                con.execute("SET GLOBAL TimeZone = 'UTC'")
                con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def connect_rw(path: Path, shown: Path | None = None):
    """A read-write connection; only ever called under the exclusive index lock.
    ``shown``: the path to name if another program holds DuckDB's own lock on it."""
    import duckdb

    deadline = time.monotonic() + KEPT_WAIT
    while True:
        try:
            con = duckdb.connect(str(path))
            break
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
    con.execute("SET TimeZone = 'UTC'")
    return con


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
