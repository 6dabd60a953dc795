"""A detached process that ingests journalled runs into the index, then exits.

A committer that finds no worker alive takes ``.mlvc/index.worker.lock`` (non-blocking),
hands the locked descriptor to this process and returns at once: the flock belongs to the
open file description, so it stays held until the worker exits, and commits meanwhile
start no other worker. The worker takes the index lock itself, once its imports are done and
its DuckDB database is started (a process start costs more CPU than a small ingest, and
readers used to wait for it), ingests, and again while runs are journalled, for a few
seconds at most; it stops as soon as a reader waits for the index lock, between two steps
of an ingest if need be (``Writer.give_way``: that reader ingests). Failures are appended to
``.mlvc/logs/index-worker.log``; the journal keeps the runs for the next reader.

Usage (internal): ``python -m mlvc.index.worker PROJECT_ROOT WORKER_LOCK_FD``
"""

from __future__ import annotations

import os
import sys
import time

BUDGET = 5.0  # seconds between two looks at whether the worker may go on
LIFE = 60.0  # seconds a worker lives at most (then the next commit starts another)


def spawn(root, fd: int) -> bool:
    """Start a worker holding ``fd`` (an fd with the exclusive worker flock); True if
    started."""
    from ..core.spawn import spawn_detached

    return spawn_detached(
        "mlvc.index.worker", [str(root), str(fd)], pass_fds=(fd,), env={"MLVC_INDEX_SYNC": "inline"}
    )


def main(root: str, fd: int) -> int:
    from ..core.crashlog import append_log
    from ..core.layout import Layout
    from ..core.settings import Settings
    from ..refs.store import RefStore
    from ..store.pack.store import PackedStore
    from .db import start
    from .decode import arrow_without_pandas
    from .index import Index
    from .ingest import Writer  # noqa: F401 (imported before the lock is taken, as below)

    arrow_without_pandas()
    layout = Layout.of(root)
    start(layout.index_db)  # a reader that waits for the lock waits for none of this
    try:
        store = PackedStore(layout.objects, layout.tmp)
        index = Index(layout.dir, store, RefStore(layout.dir), settings=Settings.from_env())
        end = time.monotonic() + LIFE
        while True:
            took = index.ingest_as_worker(BUDGET)
            os.close(fd)
            fd = -1
            # a commit that saw this worker alive started none: its run is journalled by now
            if not took or index.lock.wanted() or not index.runs_journalled():
                return 0
            if time.monotonic() >= end:
                return 0
            fd = index.worker_lock.take(exclusive=True, wait=0.0)
            if fd is None:  # another worker started
                return 0
    except Exception:
        append_log(layout.worker_log)
        return 1
    finally:
        if fd is not None and fd >= 0:
            os.close(fd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
