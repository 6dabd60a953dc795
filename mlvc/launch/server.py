"""The command server: one process that imports the CLI and the library once, then forks a
child per command a launcher hands it (mlvc.launch; wire format in mlvc.core.cmdserver).

``mlvc daemon start`` starts it detached, as ``__main__`` with its socket's path and its
idle time. It listens until ``mlvc daemon stop`` (or SIGTERM), until ``idle`` seconds pass
without a command, or until its code changes on disk (a launcher is then told ``stale`` and
runs the command itself). It stops accepting first, and reports every running command's
exit status before it ends.

The server stays single-threaded (a fork copies only the forking thread; a lock another
thread held would stay held in the child forever), so it preloads nothing that starts a
thread (duckdb starts none before it opens a database). numpy and pyarrow do start one at
import (OpenBLAS's pool, jemalloc's purger): they are imported with those turned off by
their environment variables (``load_modules``). Should one start a thread all the same (a
build that ignores them), the server starts again without them, which its commands then
import themselves.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import importlib
import io
import os
import selectors
import signal
import socket
import struct
import sys
import time

from ..core import cmdserver, fsmonitor
from ..core.crashlog import append_log

# what the served commands use, imported before the first fork (none starts a thread)
PRELOAD = (
    *(f"mlvc.cli.{m}" for m in ("runs", "index", "storage", "exec", "models", "server")),
    *(f"mlvc.cli.{m}" for m in ("remote", "export", "interop", "events", "webhooks", "daemon")),
    *("mlvc.cli", "mlvc.api.repo", "mlvc.api.remote", "mlvc.api.views"),
    *("mlvc.runs.record", "mlvc.runs.notify", "mlvc.diff.runs", "mlvc.render.diff"),
    *("mlvc.workspace.checkout", "mlvc.workspace.project", "mlvc.index.index"),
    *("mlvc.index.user_sql", "mlvc.index.db", "mlvc.index.decode", "mlvc.index.schema"),
    *("mlvc.refs.runlist", "mlvc.refs.resolve", "mlvc.events.hooks", "mlvc.events.consumers"),
    *("mlvc.capture.env", "mlvc.capture.git", "mlvc.capture.files", "mlvc.store.typed"),
    *("mlvc.core.ipc", "mlvc.core.series_blob", "mlvc.core.spawn", "mlvc.store.locks"),
    *("mlvc.workspace.statcache", "mlvc.events.pre", "mlvc.index.worker", "shutil", "tomllib"),
    # what a read's ingest on the way imports (mlvc query, after commits)
    *("mlvc.index.ingest", "mlvc.index.events", "mlvc.index.models", "mlvc.index.wide"),
    *("mlvc.index.series", "mlvc.index.summary", "mlvc.index.pool", "mlvc.refs.registry"),
    # starts no thread before a database is opened: a query's fork imported it (~0.1 s of CPU)
    "duckdb",
)
# Imported after PRELOAD with THREADLESS set (then the environment as it was): a query's fork
# imported them itself, ~0.15 s of CPU quiet and ~0.3 s under load, more than its ingest.
PRELOAD_THREADLESS = (
    "numpy",
    "numpy.ma",
    "pyarrow",
    "pyarrow.compute",
    "pyarrow.ipc",
    "pyarrow.csv",
)
THREADLESS = {
    "OPENBLAS_NUM_THREADS": "1",  # numpy's OpenBLAS starts a thread a core at import
    "OMP_NUM_THREADS": "1",  # ... as does a BLAS built on OpenMP
    "MKL_NUM_THREADS": "1",
    "JE_ARROW_MALLOC_CONF": "background_thread:false",  # pyarrow's jemalloc's purger
}
CORE_ONLY = "MLVC_DAEMON_PRELOAD"  # "core": without PRELOAD_THREADLESS (set for a restart)


class Threaded(RuntimeError):
    """PRELOAD_THREADLESS started a thread all the same: the server starts again without."""


def load_modules() -> None:
    """Import what the server's commands use (PRELOAD, then PRELOAD_THREADLESS unless
    CORE_ONLY says not), leaving this process one thread and its environment as it was."""
    for name in PRELOAD:
        importlib.import_module(name)
    if _threads() > 1:  # a fork would copy one thread of several
        raise RuntimeError("a preloaded module started a thread")
    if os.environ.get(CORE_ONLY) == "core":
        return
    saved = {k: os.environ.get(k) for k in THREADLESS}
    os.environ.update(THREADLESS)
    try:
        for name in PRELOAD_THREADLESS:
            importlib.import_module(name)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if _threads() > 1:
        raise Threaded(f"preloading {', '.join(PRELOAD_THREADLESS)} started a thread")
    from ..index.index import command_process

    command_process()  # pyarrow's probe for pandas made here once: no command hands it any


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


class Request:
    """A command to run, as received: in the child of the fork that runs it."""

    def __init__(self, fields: list[bytes], fds: list[int]):
        self.run = cmdserver.decode_run(fields)
        if len(fds) != 3:
            raise ValueError("expected descriptors 0, 1 and 2")
        self.fds = fds  # the caller's list: emptied once they are closed
        self.monitor: fsmonitor.Session | None = None


class Server:
    def __init__(self, path: str, idle: float):
        self.path, self.idle = path, idle
        self.log = cmdserver.log_path(path)
        self.started = time.time()
        self.served = 0
        self.stopping = False
        self.listener: socket.socket | None = None
        self.lock_fd: int | None = None
        self.sel = selectors.DefaultSelector()
        self.running: dict[int, dict] = {}  # pid -> {"pidfd", "conn", "ask", "report"}
        self.arriving: dict[int, Arriving] = {}  # requests being read, by socket fd
        self.paused = 0.0  # accepting again at this time (out of descriptors), if set
        self.monitor: fsmonitor.Watcher | None = None
        self.files: dict[str, tuple[int, int]] = {}
        self.last = time.monotonic()  # of a command (asking the status is not one)

    # -- start ---------------------------------------------------------------------------

    def bind(self) -> bool:
        """Take the server's lock and its socket; False if another server has them."""
        folder = os.path.dirname(self.path)
        os.makedirs(folder, mode=0o700, exist_ok=True)
        if not cmdserver.private(folder):
            append_log_line(self.log, f"refused: {folder} is not a private directory of this user")
            return False
        self.lock_fd = os.open(cmdserver.lock_path(self.path), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # another server listens there (or is starting)
        try:
            os.unlink(self.path)  # left by a server that was killed
        except FileNotFoundError:
            pass
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(64)
        self.sel.register(self.listener, selectors.EVENT_READ, ("accept",))
        return True

    def preload(self) -> None:
        load_modules()
        paths = [
            sys.executable,
            *(getattr(m, "__file__", None) for m in list(sys.modules.values())),
        ]
        for p in paths:
            if isinstance(p, str) and p not in self.files:
                try:
                    st = os.stat(p)
                except OSError:
                    continue
                self.files[p] = (st.st_mtime_ns, st.st_size)
        self.monitor = fsmonitor.start()
        if self.monitor is not None:
            self.sel.register(self.monitor.fd, selectors.EVENT_READ, ("events",))
        gc.collect()
        gc.freeze()  # the children then do not touch (copy) these objects' pages to collect

    def stale(self) -> bool:
        """Whether a file the server imported changed since (an upgrade, an edit)."""
        for p, was in self.files.items():
            try:
                st = os.stat(p)
            except OSError:
                return True
            if (st.st_mtime_ns, st.st_size) != was:
                return True
        return False

    # -- the loop ------------------------------------------------------------------------

    def serve(self) -> Request | None:
        """Accept and fork until stopped; returns the request in each child, None in the
        server once it has stopped and every command it started has ended. The idle clock
        starts here: a preload slower than the idle time must not stop a server that has
        answered nobody yet (the ``daemon start`` that spawned it waits in the backlog)."""
        self.last = time.monotonic()
        while True:
            if self.stopping and self.listener is not None:
                self.close_listener()
            if self.listener is None and not self.running and not self.arriving:
                return None
            if self.running:
                self.last = time.monotonic()
            elif not self.stopping and self.idle and time.monotonic() - self.last > self.idle:
                self.stopping = True
                continue
            self.expire()
            wait = min(0.5, self.idle or 0.5)
            if self.paused and self.listener is not None:
                if time.monotonic() >= self.paused:
                    self.paused = 0.0
                    self.sel.register(self.listener, selectors.EVENT_READ, ("accept",))
                else:
                    wait = min(wait, self.paused - time.monotonic())
            if self.monitor is not None and self.monitor.pending:
                self.monitor.work()  # a batch of a new root's watches, between requests
                wait = 0
            for key, _ in self.sel.select(timeout=wait):
                what = key.data
                if what[0] == "accept":
                    self.accept()
                elif what[0] == "request":
                    request = self.read_request(what[1])
                    if request is not None:  # the child's way out of the loop
                        return request
                elif what[0] == "ended":
                    self.reap(what[1])
                elif what[0] == "events":
                    self.monitor.drain()
                elif what[0] == "ask":
                    self.asked(what[1])
                else:  # the launcher hung up (killed): hang up on its command
                    self.hung_up(what[1])

    def accept(self) -> None:
        """Take a connection and start reading its request (``read_request``): the server
        reads requests as their bytes come, so a client that sends slowly, or not at all,
        holds up nobody but itself for up to REQUEST_TIME."""
        try:
            conn, _ = self.listener.accept()
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # the listener stays readable: without a pause the loop would spin until
                # a descriptor is freed (a command ends, a request is dropped)
                self.sel.unregister(self.listener)
                self.paused = time.monotonic() + ACCEPT_PAUSE
            return
        try:
            _pid, uid, _gid = struct.unpack(
                "3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
            )
            if uid != os.getuid():
                raise ValueError(f"a process of uid {uid} connected")
            if len(self.arriving) >= MAX_ARRIVING:
                raise ValueError(f"{MAX_ARRIVING} requests were arriving already")
            conn.setblocking(False)
            self.sel.register(conn, selectors.EVENT_READ, ("request", conn.fileno()))
        except (OSError, ValueError) as e:
            append_log_line(self.log, f"refused a request: {e}")
            conn.close()
            return
        self.arriving[conn.fileno()] = Arriving(conn)

    def read_request(self, fd: int) -> Request | None:
        """Read what has come of a request; once it is whole, answer it (status, stop) or
        fork its command. Returns the request in the child that runs it."""
        arriving = self.arriving[fd]
        try:
            if not arriving.read():
                return None
        except (OSError, ValueError) as e:
            self.drop(fd, f"refused a request: {e}")
            return None
        self.sel.unregister(arriving.conn)
        del self.arriving[fd]
        conn, fields, fds = arriving.conn, arriving.fields(), arriving.fds
        try:
            conn.setblocking(True)
            if fields[0] == cmdserver.STATUS:
                conn.sendall(self.status().encode() + b"\n")
            elif fields[0] == cmdserver.STOP:
                self.stopping = True
                conn.sendall(b"stopping\n")
            elif self.stopping:
                conn.sendall(b"stale\n")  # nothing ran: the launcher runs it itself
            elif self.stale():
                self.stopping = True
                append_log_line(self.log, "stopping: its code changed on disk")
                conn.sendall(b"stale\n")
            else:
                return self.fork(conn, Request(fields, fds))
        except (OSError, ValueError) as e:
            append_log_line(self.log, f"refused a request: {e}")
        for fd in fds:
            os.close(fd)
        conn.close()
        return None

    def expire(self) -> None:
        """Drop the requests that did not arrive whole within REQUEST_TIME."""
        now = time.monotonic()
        for fd in [fd for fd, a in self.arriving.items() if now > a.deadline]:
            self.drop(fd, "refused a request: too slow to arrive")

    def drop(self, fd: int, why: str) -> None:
        arriving = self.arriving.pop(fd)
        self.sel.unregister(arriving.conn)
        arriving.close()
        append_log_line(self.log, why)

    def fork(self, conn: socket.socket, request: Request) -> Request | None:
        ask, report = self.monitor_line()
        try:
            pid = os.fork()
        except OSError:  # accept() logs it; the launcher, with no pid, runs the command
            close_line(ask, report)
            raise
        if pid == 0:
            # before anything else: its own process group and the launcher's signal
            # dispositions, then the pid line (the launcher passes signals on from there)
            os.setpgid(0, 0)
            signal_defaults(request.run.ignored)
            try:
                conn.sendall(b"pid %d\n" % os.getpid())
            except OSError:  # the launcher is gone: nothing has run
                os._exit(129)
            self.close_in_child(conn)
            if ask is not None:
                ask[0].close()
                request.monitor = fsmonitor.Session(self.monitor, ask[1], report)
            return request
        for fd in request.fds:
            os.close(fd)
        request.fds.clear()  # closed: accept's error path must not close them again
        self.served += 1
        self.last = time.monotonic()
        with contextlib.suppress(OSError):  # the child made its group first
            os.setpgid(pid, pid)
        conn.settimeout(None)
        if ask is not None:
            ask[1].close()  # the child's end
            ask = (ask[0],)
        try:
            pidfd = os.pidfd_open(pid)  # main() checked that the kernel has it
        except OSError:  # out of descriptors: accept() logs it
            close_line(ask, report)
            raise
        mine = ask[0] if ask is not None else None
        self.running[pid] = {"pidfd": pidfd, "conn": conn, "ask": mine, "report": report}
        self.sel.register(pidfd, selectors.EVENT_READ, ("ended", pid))
        if mine is not None:
            mine.setblocking(False)
            self.sel.register(mine, selectors.EVENT_READ, ("ask", pid))
        self.sel.register(conn, selectors.EVENT_READ, ("conn", pid))
        return None

    def reap(self, pid: int) -> None:
        _, status = os.waitpid(pid, 0)
        run = self.running.pop(pid)
        self.sel.unregister(run["pidfd"])
        os.close(run["pidfd"])
        self.end_monitoring(run)
        conn = run["conn"]
        if conn is not None:
            self.sel.unregister(conn)
            try:
                conn.sendall(b"exit %d\n" % os.waitstatus_to_exitcode(status))
            except OSError:
                pass
            conn.close()

    def monitor_line(self) -> tuple:
        """A command's line to the monitor (fsmonitor.py): a socket pair to ask on and a
        memfd to report to; none (the command walks in full) without a monitor or when
        descriptors run out."""
        if self.monitor is None:
            return None, None
        ask = None
        try:
            ask = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            return ask, os.memfd_create("mlvc-walks", os.MFD_CLOEXEC)
        except OSError:
            close_line(ask, None)
            return None, None

    def asked(self, pid: int) -> None:
        """A command's question to the monitor (fsmonitor.Watcher.answer); a hang-up or
        garbage ends its line (it then walks in full)."""
        run = self.running.get(pid)
        ask = run["ask"] if run is not None else None
        if ask is None:
            return
        try:
            question = ask.recv(1 << 16)
            if question:
                ask.send(self.monitor.answer(question))
                return
        except (OSError, ValueError, EOFError, TypeError, KeyError, IndexError):
            pass
        self.sel.unregister(ask)
        ask.close()
        run["ask"] = None

    def end_monitoring(self, run: dict) -> None:
        """Close an ended command's line to the monitor, and take in what it walked."""
        if run.get("ask") is not None:
            self.sel.unregister(run["ask"])
            run["ask"].close()
        if run.get("report") is not None:
            try:
                self.monitor.collect(run["report"])
            except (OSError, ValueError, TypeError, KeyError, IndexError) as e:
                append_log_line(self.log, f"a command's walk report was refused: {e!r}")
            os.close(run["report"])

    def hung_up(self, pid: int) -> None:
        run = self.running.get(pid)  # reaped already in this round of events
        conn = run["conn"] if run is not None else None
        if conn is None:
            return
        try:
            if conn.recv(64):  # a launcher sends nothing after its request: not a hang-up
                return
        except OSError:
            pass
        self.sel.unregister(conn)
        conn.close()
        run["conn"] = None
        with contextlib.suppress(OSError):  # a stopped command (Ctrl-Z) must wake to end
            os.killpg(pid, signal.SIGHUP)
            os.killpg(pid, signal.SIGCONT)

    def close_listener(self) -> None:
        if not self.paused:
            self.sel.unregister(self.listener)
        self.paused = 0.0
        self.listener.close()
        self.listener = None
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def close_in_child(self, conn: socket.socket) -> None:
        """Drop the server's descriptors in a fork (closing the lock's copy keeps the
        server's flock: it belongs to the open file description)."""
        conn.close()
        for arriving in self.arriving.values():
            arriving.close()
        for run in self.running.values():
            os.close(run["pidfd"])
            if run["conn"] is not None:
                run["conn"].close()
            if run["ask"] is not None:
                run["ask"].close()
            if run["report"] is not None:
                os.close(run["report"])
        if self.monitor is not None:
            self.monitor.close()
        self.listener.close()
        self.sel.close()
        os.close(self.lock_fd)

    def status(self) -> str:
        watched = f" {self.monitor.status()}" if self.monitor is not None else ""
        return (
            f"status pid={os.getpid()} started={int(self.started)} served={self.served} "
            f"running={len(self.running)} idle={self.idle:g}{watched}"
        )


def close_line(ask: tuple | None, report: int | None) -> None:
    """Close what is left of a command's line to the monitor (ends of its socket pair,
    its report memfd) when it cannot be handed over."""
    for end in ask or ():
        end.close()
    if report is not None:
        os.close(report)


REQUEST_TIME = 2.0  # seconds a launcher has to send its whole request
MAX_ARRIVING = 32  # requests read at once; past this a new connection is refused
MAX_FDS = 3  # a command's stdin, stdout and stderr
ACCEPT_PAUSE = 0.1  # seconds the server stops accepting when it is out of descriptors


class Arriving:
    """A request being read as its bytes come (``Server.read_request``): a 4-byte length,
    then that many bytes of fields (cmdserver.encode), and with them up to MAX_FDS
    descriptors, within REQUEST_TIME."""

    def __init__(self, conn: socket.socket):
        self.conn = conn
        self.deadline = time.monotonic() + REQUEST_TIME
        self.data = bytearray()
        self.fds: list[int] = []
        self.size: int | None = None

    def read(self) -> bool:
        """Take what has come; whether the request is whole. ValueError (or OSError) for
        one that cannot be."""
        want = 65536 if self.size is None else min(1 << 20, self.size + 4 - len(self.data))
        try:
            data, fds, flags, _addr = socket.recv_fds(self.conn, max(want, 1), MAX_FDS)
        except BlockingIOError:
            return False
        self.fds += fds
        if flags & socket.MSG_CTRUNC:  # descriptors lost: over 3, or none left here
            raise ValueError("a request whose descriptors did not all arrive")
        if len(self.fds) > MAX_FDS:
            raise ValueError(f"a request with {len(self.fds)} descriptors")
        if not data:
            raise ValueError("a request cut short" if self.data else "an empty request")
        self.data += data
        if self.size is None and len(self.data) >= 4:
            self.size = int.from_bytes(self.data[:4], "big")
            if self.size > cmdserver.MAX_REQUEST:
                raise ValueError(f"a request of {self.size} bytes")
        if self.size is None:
            return False
        if len(self.data) > self.size + 4:
            raise ValueError("bytes after the request")
        return len(self.data) == self.size + 4

    def fields(self) -> list[bytes]:
        return bytes(self.data[4:]).split(b"\0")

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        self.conn.close()


def append_log_line(path: str, text: str | None) -> None:
    from pathlib import Path

    try:
        append_log(Path(path), text)
    except OSError:
        pass


# -- in the child ---------------------------------------------------------------------------

_old_streams: list = []  # the server's own stdio objects: freeing one would close fd 0, 1 or 2


def _stdio(fd: int, errors: str, line_buffering: bool, through: bool) -> io.TextIOWrapper:
    """A text stream on ``fd`` made as the interpreter makes its stdio at start-up
    (``through``: stdout and stderr unbuffered, as the server's own are under
    PYTHONUNBUFFERED, a start-up variable it shares with the launcher)."""
    raw = io.FileIO(fd, "r" if fd == 0 else "w", closefd=False)
    through = through and fd != 0
    stream = io.BufferedReader(raw) if fd == 0 else raw if through else io.BufferedWriter(raw)
    return io.TextIOWrapper(
        stream,
        encoding=sys.stdout.encoding,
        errors=errors,
        newline="\n",
        line_buffering=line_buffering,
        write_through=through,
    )


def signal_defaults(ignored: list[int]) -> None:
    """Python's start-up dispositions for the signals a launcher passes on, except those it
    ignores (``nohup``), which stay ignored, as they would in a process it started."""
    for name in cmdserver.SIGNALS:
        sig = getattr(signal, name)
        if int(sig) in ignored:
            signal.signal(sig, signal.SIG_IGN)
        elif sig == signal.SIGINT:
            signal.signal(sig, signal.default_int_handler)
        else:
            signal.signal(sig, signal.SIG_DFL)


def become(request: Request) -> None:
    """Make this fork the launcher's process as far as the command can tell: the
    launcher's stdio, directory, umask, environment, ``sys.path`` and arguments (its
    process group and signal dispositions were set at the fork)."""
    run = request.run
    for target, fd in enumerate(request.fds):
        os.dup2(fd, target)
    for fd in request.fds:
        if fd > 2:
            os.close(fd)
    _old_streams.extend((sys.stdin, sys.stdout, sys.stderr))
    through = sys.stdout.write_through  # -u or PYTHONUNBUFFERED, as the server started
    sys.stdin = sys.__stdin__ = _stdio(0, sys.stdin.errors, False, through)
    sys.stdout = sys.__stdout__ = _stdio(1, sys.stdout.errors, os.isatty(1), through)
    sys.stderr = sys.__stderr__ = _stdio(2, "backslashreplace", True, through)
    os.environ.clear()
    os.environ.update(run.env)
    time.tzset()
    os.umask(run.umask)
    sys.argv = run.argv
    if run.path:  # what the command sees of sys.path (capture_env scans it)
        sys.path[:] = run.path
    os.chdir(run.cwd)


def main(path: str, idle: str) -> int:
    server = Server(path, float(idle))
    try:  # a status per child needs pidfds (Linux 5.3): without them, no server
        os.close(os.pidfd_open(os.getpid()))
    except (OSError, AttributeError) as e:
        append_log_line(server.log, f"not started: this system has no pidfd_open ({e})")
        return 1
    if not server.bind():
        return 1
    signal.signal(signal.SIGTERM, lambda *_: setattr(server, "stopping", True))
    try:
        server.preload()
    except Threaded as e:  # this process cannot fork safely: it starts again, without them
        append_log_line(server.log, f"{e}; starting again without them")
        server.close_listener()
        os.environ[CORE_ONLY] = "core"
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    except Exception:
        append_log_line(server.log, None)  # the traceback
        server.close_listener()
        return 1
    append_log_line(server.log, f"listening at {path} (idle {float(idle):g} s)")
    try:
        request = server.serve()
    except Exception:  # in the server (a child has left serve() before it runs anything)
        append_log_line(server.log, None)
        if server.listener is not None:
            server.close_listener()
        return 1
    if request is None:  # the server, stopped
        append_log_line(server.log, f"stopped after {server.served} commands")
        return 0
    try:
        become(request)
    except OSError as e:  # the launcher's directory went away meanwhile
        sys.stderr.write(f"mlvc: error: cannot run the command here: {e.strerror}\n")
        return 1
    if request.monitor is not None and os.environ.get("MLVC_FSMONITOR") != "0":
        fsmonitor.SESSION.set(request.monitor)
    from ..cli import main as cli

    # the name click would take from a console script (this __main__ is a module's)
    cli(prog_name=os.path.basename(sys.argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
