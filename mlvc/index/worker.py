"""A detached process that ingests journalled runs into the index, then exits.

A committer that wins the index flock (non-blocking) hands the locked descriptor to this
process and returns at once: the flock belongs to the open file description, so it stays
held until the worker exits. Readers wait for it (bounded) as for any ingest. Failures are
appended to ``.mlvc/logs/index-worker.log``; the journal keeps the runs for the next reader.

Usage (internal): ``python -m mlvc.index.worker PROJECT_ROOT LOCK_FD``
"""

from __future__ import annotations

import os
import sys


def spawn(root, fd: int) -> bool:
    """Start a worker holding ``fd`` (an fd with the exclusive index flock); True if started."""
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
    from .decode import arrow_without_pandas
    from .index import Index

    arrow_without_pandas()
    layout = Layout.of(root)
    try:
        store = PackedStore(layout.objects, layout.tmp)
        index = Index(layout.dir, store, RefStore(layout.dir), settings=Settings.from_env())
        # one batch: runs journalled meanwhile wait for the next committer or reader, so a
        # stream of commits never starves readers of the lock
        index.ingest_holding_lock()
        return 0
    except Exception:
        append_log(layout.worker_log)
        return 1
    finally:
        os.close(fd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
