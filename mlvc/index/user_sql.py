"""SQL from users (``mlvc query``, ``Repo.query``): only reads run, and Ctrl-C stops them.

The index connection is already read-only, with external access off and its configuration
locked (db.py), so writes, files and ``SET`` fail inside DuckDB. Statements other than
reads are refused here before DuckDB sees them: some (``CALL enable_logging(...)`` with a
file) abort the whole process from inside DuckDB instead of raising an error.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
from contextlib import contextmanager

from ..errors import QueryError
from .schema import ident, lit  # quoting user values into SQL: re-exported for other layers

__all__ = ["check_read_only", "first_line", "ident", "interruptible", "lit", "tables_read"]

# Statement types (DuckDB's parser) that only read. SHOW, DESCRIBE, SUMMARIZE, VALUES, FROM
# and WITH parse as SELECT; EXPLAIN is checked by what it explains.
READS = {"SELECT"}
# PRAGMAs that list things (each is a table function of the same name: nothing is set)
READ_PRAGMAS = {
    "collations",
    "database_list",
    "database_size",
    "functions",
    "metadata_info",
    "platform",
    "show",
    "show_databases",
    "show_tables",
    "show_tables_expanded",
    "storage_info",
    "table_info",
    "user_agent",
    "version",
}
_COMMENTS = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
_EXPLAIN = re.compile(r"^\s*EXPLAIN\s+(?:ANALYZE\s+|\([^)]*\)\s*)?", re.IGNORECASE)
_PRAGMA = re.compile(r"^\s*PRAGMA\s+(\w+)", re.IGNORECASE)
_PIVOT = re.compile(r"^\s*(?:UN)?PIVOT\b", re.IGNORECASE)
ALLOWED = "SELECT, WITH, FROM, VALUES, SHOW, DESCRIBE, SUMMARIZE, PIVOT, EXPLAIN"


def check_read_only(sql: str, con=None) -> None:
    """Raise QueryError unless every statement of ``sql`` only reads. ``con``: a connection
    to parse with (DuckDB's module-level parser opens a database of its own first, ~25 ms
    of CPU once per process: a third of what a small ``mlvc query`` reads with)."""
    import duckdb

    parser = duckdb if con is None else con
    try:
        statements = parser.extract_statements(sql)
    except duckdb.Error as e:
        raise QueryError(first_line(e)) from None
    for statement in statements:
        _check(parser, statement.type.name, statement.query)


def _check(parser, kind: str, text: str) -> None:
    text = _COMMENTS.sub("", text, count=1)
    if kind in READS:
        return
    if kind == "EXPLAIN":
        inner = _EXPLAIN.sub("", text, count=1)
        if inner != text:
            for statement in parser.extract_statements(inner):
                _check(parser, statement.type.name, statement.query)
            return
    pragma = _PRAGMA.match(text)
    if kind == "PRAGMA" and pragma and pragma.group(1).lower() in READ_PRAGMAS:
        return
    if kind == "MULTI" and _PIVOT.match(text):  # PIVOT parses as several statements
        return
    word = (text.split() or [kind])[0].upper()
    raise QueryError(f"{word} statements are refused: queries only read ({ALLOWED})")


def tables_read(sql: str, con) -> frozenset[str] | None:
    """The names of the tables and views ``sql`` reads (lowercase), from DuckDB's parse tree
    (``json_serialize_sql``: parsed on ``con``, nothing bound, opened or run); None when
    that does not tell: a statement other than a SELECT (PIVOT, EXPLAIN, PRAGMA), or a table
    function (``query_table`` and ``query`` name their tables only when they run). A common
    table expression counts as a table of its name. Remembered by the text for the process
    (DuckDB's first ``json_serialize_sql`` on a connection costs ~5 ms; the read it decides
    for is often the same one again, a dashboard's)."""
    import duckdb

    names = _TABLES_READ.get(sql, _UNKNOWN)
    if names is not _UNKNOWN:
        return names
    try:
        tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0])
    except (duckdb.Error, TypeError, ValueError, RecursionError):  # (a tree nested too deep)
        return None  # not remembered: the next connection may parse it (an interrupt)
    names = _names_read(tree)
    if len(sql) > TABLES_READ_TEXT:
        return names
    with _TABLES_READ_LOCK:
        if len(_TABLES_READ) >= TABLES_READ_KEPT:
            _TABLES_READ.pop(next(iter(_TABLES_READ)))
        _TABLES_READ[sql] = names
    return names


TABLES_READ_KEPT = 256  # reads whose tables ``tables_read`` remembers, the oldest forgotten
TABLES_READ_TEXT = 20_000  # ... each of at most this many characters
_UNKNOWN = object()
_TABLES_READ: dict[str, frozenset[str] | None] = {}
_TABLES_READ_LOCK = threading.Lock()


def _names_read(tree) -> frozenset[str] | None:
    """``tables_read`` of a parse tree as ``json_serialize_sql`` gives it."""
    if not isinstance(tree, dict) or tree.get("error") is not False:
        return None
    names, nodes = set(), [tree]
    while nodes:
        node = nodes.pop()
        if isinstance(node, list):
            nodes.extend(node)
        elif isinstance(node, dict):
            kind = node.get("type")
            if kind == "TABLE_FUNCTION":
                return None
            if kind == "BASE_TABLE":
                names.add(str(node.get("table_name")).lower())
            nodes.extend(node.values())
    return frozenset(names)


def first_line(e: BaseException) -> str:
    """DuckDB's message up to its caret diagram: the error and any 'Did you mean' hint."""
    lines = []
    for line in str(e).strip().splitlines():
        if not line.strip() or line.startswith("LINE "):
            break
        lines.append(line.strip())
    return " ".join(lines) or type(e).__name__


@contextmanager
def interruptible(con):
    """Let Ctrl-C stop a query running on ``con`` (raising KeyboardInterrupt).

    DuckDB runs a query without returning to Python, so Python's SIGINT handler would run
    only once the query is done. ``signal.set_wakeup_fd`` has the C-level handler wake a
    thread, which interrupts the connection at once. Only in the main thread, with Python's
    default SIGINT handling and no other wakeup fd (an event loop's) in place.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        previous = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    except ValueError:
        previous = None
    if previous != -1:  # not ours to take
        if previous is not None:
            signal.set_wakeup_fd(previous)
        os.close(r)
        os.close(w)
        yield
        return
    pressed = threading.Event()

    def watch() -> None:
        while data := os.read(r, 64):
            if signal.SIGINT in data:
                pressed.set()
                con.interrupt()
                return

    watcher = threading.Thread(target=watch, name="mlvc-query-interrupt", daemon=True)
    watcher.start()
    try:
        yield
    except Exception as e:
        if pressed.is_set() or is_interruption(e):
            raise KeyboardInterrupt from None
        raise
    finally:
        signal.set_wakeup_fd(-1)
        os.close(w)  # the watcher reads end-of-file and returns
        watcher.join()
        os.close(r)


def is_interruption(e: BaseException) -> bool:
    """Whether ``e`` is DuckDB saying it stopped on Ctrl-C. Its Python binding may notice the
    signal itself and raise this (a plain RuntimeError) instead of KeyboardInterrupt."""
    import duckdb

    return isinstance(e, duckdb.InterruptException) or (
        type(e) is RuntimeError and str(e) == "Query interrupted"
    )


# What DuckDB's error text says about the index file: damaged (then it is rebuilt from the
# objects and refs), or kept from its work by the machine (descriptors, space, access:
# nothing is wrong with the file, and a rebuild would fail the same way; each read under a
# low open-file limit took the index for unreadable and started one)
DAMAGE_SIGNS = (
    "Corrupt database file",
    "not a valid DuckDB database file",
    "Could not read enough bytes",
    "checksum",
)
UNAVAILABLE_SIGNS = (
    "Too many open files",
    "No space left on device",
    "Disk quota exceeded",
    "Permission denied",
    "Read-only file system",
)


def damaged(e: BaseException) -> bool:
    """Whether a DuckDB error says the index file is damaged."""
    return _says(e, DAMAGE_SIGNS)


def unavailable(e: BaseException) -> bool:
    """Whether a DuckDB error says the machine, not the file, kept it from its work."""
    return _says(e, UNAVAILABLE_SIGNS)


def _says(e: BaseException, signs: tuple[str, ...]) -> bool:
    text = str(e)
    return any(sign in text for sign in signs)
