"""The index: DuckDB tables derived from run objects and refs, so history answers plain SQL.

Objects and refs are the truth; ``.mlvc/index.duckdb`` is a cache that ``rebuild`` recreates
from them bit for bit (docs/sql-schema.md documents every table). Terms:

    journal    ``.mlvc/journal/<run id>``, an empty file a commit writes before the run's ref.
               With a ref it marks a run not yet ingested; without one, either a commit still
               in progress (kept, dropped as abandoned after 10 minutes) or, for a run the
               index holds, a run whose ref was deleted (the index drops it).
    ingest     turning journalled runs into rows: one Arrow table per table per batch, decoded
               in worker processes when a rebuild has many runs.
    lock       ``.mlvc/index.lock``, an ``flock``: exclusive to write the index, shared to read.
               ``.mlvc/index.worker.lock`` is held by the one detached worker (worker.py)
               for its life; it takes the index lock only around its ingests.
    reader     a holder of the shared lock with a read-only connection (``connect_readonly``).
               A reader ingests the journal first, so no run reported committed is missing
               from its answers. A reader opened by a thread (or task) that already holds one
               is nested: it reads the index as it stands, since its own shared lock keeps
               every writer out, itself included. Nesting is counted per thread, never per
               process: another thread's reader is waited for, as another process's is.
    runs_wide  one row per run with a ``params.<key>`` and a ``metrics.<key>`` column per key,
               a view over ``wide_base`` and side tables for keys added since (wide.py),
               kept in step by each ingest.

Writers never open DuckDB without the exclusive lock, so DuckDB's own file lock never fails in
front of a user. A server keeps one read-only connection open between its reads
(``Index.keep_readers``), closes it before it writes, and lets it go after a moment without
reads, which a writer in another process waits for (a few seconds at most). A committer only *tries* the lock (``try_ingest``); if it is busy, or a reader is
waiting for it (a marker in ``.mlvc/index.wanted/``), the run stays journalled and the next
reader ingests it before answering.

Public: ``Index`` (``mlvc.index.index``, re-exported here), ``user_sql`` (the rules for SQL
from users) and ``series`` (metric series sampled for charts, docs/ui-compare.md). The other modules are this package's own (an import-linter contract keeps them
so): ``schema`` (tables, schema version, SQL helpers), ``journal``, ``lock``, ``db``
(connections, what DuckDB's errors mean), ``ingest`` (the write path), ``decode`` (runs into
rows), ``pool`` (decoding in worker processes), ``wide`` (runs_wide), ``models`` (the model
registry's tables) and ``worker`` (the detached ingest a commit starts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .index import Index

__all__ = ["Index"]


def __getattr__(name: str):
    """``Index`` on first use: importing the package stays cheap (PEP 562)."""
    if name == "Index":
        from .index import Index

        return Index
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
