"""Worker processes that decode batches of runs (``decode.decode_runs``) for a big rebuild.

A worker is forked from the rebuilding process once it has imported what decoding needs
(pyarrow, numpy, the decoder): starting a fresh interpreter and importing them cost each
worker ~0.3 s of CPU, two workers an eighth of a 10,000-run rebuild. Forking is safe only
where no other thread of this process may hold a lock the child needs, so a process running
other Python threads (a server, the index worker's gathered jobs), or where ``os.fork`` is
missing, starts plain subprocesses instead (not multiprocessing: spawning re-imports the
caller's ``__main__``, which would re-run an unguarded user script that happened to trigger a
rebuild); those run this module's ``main`` with the caller's own mlvc, whatever the working
directory holds. A forked worker never returns into the caller's code: it ends with
``os._exit``, so no atexit hook, buffer flush or DuckDB object of the parent runs twice.

Protocol, the same for both: worker ``w`` is sent its whole share of the requests at once
(requests ``w``, ``w + n``, ...) and answers, request after request, one message per decoded
batch (a request may make several: ``decode_runs``' points budget) and then one saying the
request is done. A thread of the rebuilding process per worker reads its messages as soon as
they are written, so a worker decodes its next batch while the rebuild inserts the last one
(before, a worker sat blocked on its full pipe until the rebuild came to it); at most AHEAD
batches a worker are held unread, so memory stays bounded.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

from ..core.spawn import own_python
from ..errors import MlvcError
from .decode import arrow_without_pandas, decode_runs

BATCH, DONE, FAILED, ENDED = "batch", "done", "failed", "ended"  # a worker's messages
AHEAD = 2  # decoded batches a worker may hold ready before the rebuild takes them
FORK = True  # fork workers where it is safe (tests turn it off to run the other path)
_MAIN = "from mlvc.index.pool import main; main()"


class _Forked:
    """A forked worker: its pid, and the parent's ends of its two pipes."""

    def __init__(self, pid: int, stdin, stdout):
        self.pid, self.stdin, self.stdout = pid, stdin, stdout

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> None:
        """Reap the worker; subprocess.TimeoutExpired if it runs on past ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                pid, _ = os.waitpid(self.pid, 0 if deadline is None else os.WNOHANG)
            except ChildProcessError:  # reaped already
                return
            if pid:
                return
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.005)


def can_fork() -> bool:
    """Whether workers may be forked from this process: no other Python thread runs (one
    might hold a lock the child would wait on forever, or be halfway through writing)."""
    return FORK and hasattr(os, "fork") and threading.active_count() == 1


class Workers:
    """``n`` worker processes, started at once; ``map`` ends them. Forked where ``can_fork``
    and the caller allows it: ``fork=False`` where this process has a DuckDB database open
    (its threads are not Python threads, and a child must not copy them mid-work)."""

    def __init__(self, n: int, fork: bool = True):
        self.procs: list = []
        self.ended = False
        self.stop = threading.Event()  # tells the reader threads to give up
        self.readers: list[threading.Thread] = []
        try:
            if fork and can_fork():
                _warm()
                for _ in range(n):
                    self.procs.append(self._fork())
            else:
                cmd = own_python(_MAIN)  # this process's mlvc first on sys.path
                for _ in range(n):
                    self.procs.append(
                        subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                    )
        except BaseException:
            self._end(kill=True)
            raise

    def _fork(self) -> _Forked:
        """A worker forked from this process, serving its request pipe until it closes."""
        req_r, req_w = os.pipe()
        out_r, out_w = os.pipe()
        # the parent's ends of the earlier workers' pipes: a worker holding one would keep a
        # sibling from seeing its EOF (or EPIPE) when the rebuild dies
        siblings = [f.fileno() for p in self.procs for f in (p.stdin, p.stdout)]
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            code = 1
            try:
                for fd in (req_w, out_r, *siblings):
                    os.close(fd)
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # the rebuild decides; EOF ends us
                arrow_without_pandas()
                with open(req_r, "rb") as inp, open(out_w, "wb") as out:
                    serve(inp, out)
                code = 0
            except BaseException:  # noqa: BLE001 - said on stderr; the rebuild sees us end
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(req_r)
        os.close(out_w)
        return _Forked(pid, open(req_w, "wb"), open(out_r, "rb"))

    def map(self, requests: list[tuple]) -> Iterator[tuple]:
        """Batches in request order; worker ``k % n`` decodes request ``k``."""
        n = len(self.procs)
        queues = [queue.Queue(AHEAD) for _ in range(n)]
        ok = False
        try:
            for k, proc in enumerate(self.procs):
                _send(proc.stdin, requests[k::n])
            for proc, q in zip(self.procs, queues, strict=True):
                reader = threading.Thread(
                    target=_read, args=(proc.stdout, q, self.stop), name="mlvc-index-pool"
                )
                reader.daemon = True
                reader.start()
                self.readers.append(reader)
            for k in range(len(requests)):
                yield from _results(queues[k % n])
            ok = True
        finally:
            self._end(kill=not ok)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc) -> None:
        self._end(kill=True)  # workers that ``map`` never ended

    def _end(self, kill: bool) -> None:
        """Close the request pipes (EOF ends an idle worker) and reap the workers (``kill``:
        at once), then let the reader threads see the result pipes end. Once only: a reaped
        worker's pid may name another process by then."""
        if self.ended:
            return
        self.ended = True
        self.stop.set()
        for proc in self.procs:
            if kill:
                proc.kill()
            with contextlib.suppress(OSError):  # the worker died with a request unread
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for reader in self.readers:
            reader.join(timeout=10)
        for proc in self.procs:
            with contextlib.suppress(OSError):
                proc.stdout.close()


def _warm() -> None:
    """Import what decoding needs before forking, so workers inherit it instead of each
    importing it again."""
    import numpy  # noqa: F401
    import pyarrow  # noqa: F401
    import pyarrow.compute  # noqa: F401

    from . import series, summary  # noqa: F401


def _read(stream, into: queue.Queue, stop: threading.Event) -> None:
    """A reader thread: a worker's messages into ``into``, until it ends or ``stop``."""
    while True:
        try:
            message = _get(stream)
        except (EOFError, OSError, ValueError):  # ValueError: the pipe closed under us
            message = (ENDED, None)
        except BaseException as e:  # noqa: BLE001 - handed to the rebuild, which raises it
            message = (FAILED, f"{type(e).__name__}: {e}")
        while True:
            try:
                into.put(message, timeout=0.1)
                break
            except queue.Full:
                if stop.is_set():
                    return
        if message[0] in (ENDED, FAILED):
            return


def _results(messages: queue.Queue) -> Iterator[tuple]:
    """The batches of a worker's current request, until it says it is done."""
    while True:
        kind, result = messages.get()
        if kind == DONE:
            return
        if kind == ENDED:
            raise MlvcError("an index worker process died; see its error above")
        if kind == FAILED:
            raise MlvcError(f"an index worker failed: {result}")
        yield result


def _send(stream, requests: list[tuple]) -> None:
    pickle.dump(requests, stream, protocol=pickle.HIGHEST_PROTOCOL)
    stream.flush()


def serve(inp, out) -> None:
    """A worker's loop: decode each request list read from ``inp`` until it closes."""
    while True:
        try:
            requests = pickle.load(inp)
        except EOFError:
            return
        for request in requests:
            try:
                for batch in decode_runs(*request):
                    _put(out, (BATCH, batch))
                _put(out, (DONE, None))
            except BrokenPipeError:  # the rebuild is gone
                return
            except Exception as e:
                _put(out, (FAILED, f"{type(e).__name__}: {e}"))
                return


def main() -> None:
    """A worker started as a subprocess: decode requests from stdin until it closes."""
    arrow_without_pandas()
    serve(sys.stdin.buffer, sys.stdout.buffer)


def _put(out, message: tuple) -> None:
    """Write a message: a pickle whose Arrow buffers travel out of band, written to the
    pipe as they are (pickling them in band copied every point once more: 14 ms of a
    worker's CPU per 1,200-run batch, against 0.4 ms)."""
    buffers = []
    head = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    views = [b.raw() for b in buffers]
    pickle.dump((head, [v.nbytes for v in views]), out, protocol=5)
    for view in views:
        out.write(view)
    out.flush()


def _get(inp) -> tuple:
    """Read a message ``_put`` wrote; EOFError if the pipe ends first."""
    head, sizes = pickle.load(inp)
    buffers = []
    for n in sizes:
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            k = inp.readinto(view[got:])
            if not k:
                raise EOFError("the pipe ended inside a message")
            got += k
        buffers.append(buf)
    return pickle.loads(head, buffers=buffers)


if __name__ == "__main__":
    main()
