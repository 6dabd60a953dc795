"""The kept reader of a long-lived process (the server's): a reader's cursor stays open while
the keeper lets idle connections go, however the two interleave."""

from __future__ import annotations

import threading
import time


def test_reads_survive_the_idle_release_running_beside_them(repo):
    """CI once saw a server's read fail with DuckDB's ConnectionException: the idle release
    closed the kept connection between a reader taking it and counting itself a user of it."""
    for i in range(3):
        repo.commit(f"run {i}", params={"i": i}, capture_code=False, capture_env=False)
    repo.query("SELECT 1")  # ingested: reads below take the kept connection, no writer
    repo.index.keep_readers()
    stop = threading.Event()

    def release() -> None:  # the server's idle release, at its most eager
        while not stop.is_set():
            repo.index.release_idle(0.0)
            time.sleep(0)  # hands the GIL over: the reader runs between releases

    releaser = threading.Thread(target=release)
    releaser.start()
    try:
        for _ in range(100):
            assert repo.query("SELECT count(*) AS n FROM runs").column("n").to_pylist() == [3]
    finally:
        stop.set()
        releaser.join()
        repo.index.release_idle(0.0)
