"""The ``mlvc`` command's entry point (``mlvc = "mlvc.launch:main"``).

A command a command server may run (``SERVED``) is handed to the server of this
interpreter, mlvc and environment when one listens (``mlvc daemon start``; the wire format
is mlvc.core.cmdserver's): the command then costs no interpreter start-up and no imports.
Otherwise, or with ``MLVC_DAEMON=0``, the CLI runs here as it always has; with
``MLVC_DAEMON=1`` a launcher that finds no server also starts one in the background (this
command runs here, the next ones in it). Nothing of the CLI is imported before that is
known.

While the server's fork runs the command, this process waits for its exit status and
passes on the signals it gets (Ctrl-C, ``kill``, a closed terminal; Ctrl-Z stops both);
it then ends with that status, or by the signal that ended the command.
"""

from __future__ import annotations

import os
import sys

# the everyday commands and the help; not those that run a user's program or serve for
# hours (run, reproduce, bisect, server, ui, models), nor ``daemon`` itself
SERVED = frozenset(
    {
        *("init", "commit", "log", "show", "runs", "status", "diff", "checkout", "tag"),
        *("query", "index", "which", "gc", "du", "fsck", "lineage", "token", "events"),
        *("--help", "-h", "--version"),
    }
)


def main() -> None:
    if os.environ.get("MLVC_DAEMON", "") != "0" and _command(sys.argv[1:]) in SERVED:
        code = _hand_over(sys.argv)
        if code is not None:
            os._exit(code)  # this process wrote nothing: nothing to flush
    from ..cli import main as cli

    cli()


def _command(args: list[str]) -> str | None:
    """The command name in ``args`` (after the top-level ``-C DIR``), if any."""
    i = 0
    while i < len(args) and args[i].startswith("-C"):
        i += 2 if args[i] == "-C" else 1
    return args[i] if i < len(args) else None


def _hand_over(argv: list[str]) -> int | None:
    """Run ``argv`` in the server's fork; its exit status, or None when nothing ran (no
    server, a server whose code changed on disk, descriptors that cannot be passed)."""
    import _socket  # not socket: its enums cost ~2 ms of a ~25 ms launch

    from ..core import cmdserver

    path = cmdserver.address()
    folder = os.path.dirname(path)
    if not cmdserver.private(folder):
        if not os.path.lexists(folder):
            _start_server(path)
        return None
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        try:
            sock.connect(path)
        except OSError:  # no server (ENOENT, ECONNREFUSED)
            _start_server(path)
            return None
        import signal

        forwarder = _Forwarder(signal)  # from here on, signals wait for the command
        try:
            if not _ours(sock):
                return None
            message = cmdserver.run_request(
                argv, dict(os.environb), ignored=forwarder.ignored, path=sys.path
            )
            fds = b"".join(fd.to_bytes(4, sys.byteorder) for fd in (0, 1, 2))
            rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)]
            sent = sock.sendmsg([message], rights)
            if sent < len(message):  # not an empty send: the command may have run and
                sock.sendall(message[sent:])  # its server closed the socket (EPIPE) by now
        except OSError:  # a closed descriptor 0-2, or the server went away: nothing ran
            forwarder.restore()
            return None
        return _wait(sock, forwarder)
    finally:
        sock.close()


def _ours(sock) -> bool:
    """Whether the process at the socket runs as this user (the folder was checked before
    the connect; this closes the gap between the two)."""
    import _socket

    cred = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)  # pid, uid, gid
    return int.from_bytes(cred[4:8], sys.byteorder) == os.getuid()


def _start_server(path: str) -> None:
    """With ``MLVC_DAEMON=1``, start the server of ``path`` in the background (when several
    launchers do at once, one server wins its lock and the others end)."""
    if os.environ.get("MLVC_DAEMON") != "1":
        return
    from ..core import cmdserver
    from ..core.spawn import spawn_detached

    spawn_detached("mlvc.launch.server", [path, repr(cmdserver.IDLE)])


def _wait(sock, state: _Forwarder) -> int | None:
    """Read the server's lines until the exit status, passing signals on meanwhile."""
    buf = b""
    try:
        while True:
            try:
                data = sock.recv(256)
            except OSError:
                data = b""
            if not data:
                return state.lost()
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                word, _, value = line.partition(b" ")
                if word == b"stale":
                    return None
                if word == b"pid":
                    state.started(int(value))
                elif word == b"exit":
                    return state.ended(int(value))
    finally:
        state.restore()


class _Forwarder:
    """Passes the signals this process gets to the command's process group (the command's
    fork made one of its own, so its children get them too, as from a terminal). A signal
    this process ignores (``nohup``, a shell's background job) is not caught: the command
    ignores it too (``ignored`` goes with the request)."""

    def __init__(self, signal):
        self.signal = signal
        self.pid: int | None = None
        self.early: list[int] = []
        self.old = {}
        self.ignored: list[int] = []
        from ..core.cmdserver import SIGNALS

        for name in SIGNALS:
            sig = getattr(signal, name)
            if signal.getsignal(sig) is signal.SIG_IGN:
                self.ignored.append(int(sig))
            else:
                self.old[sig] = signal.signal(sig, self.forward)

    def forward(self, sig: int, _frame) -> None:
        if self.pid is None:
            self.early.append(sig)
            return
        if sig == self.signal.SIGTSTP:  # Ctrl-Z: stop the command, then this process
            self._kill(self.signal.SIGSTOP)
            self.signal.signal(sig, self.signal.SIG_DFL)
            os.kill(os.getpid(), sig)
            self.signal.signal(sig, self.forward)  # continued (fg, bg): so is the command
            self._kill(self.signal.SIGCONT)
            return
        self._kill(sig)

    def _kill(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except OSError:  # ended meanwhile
            pass

    def started(self, pid: int) -> None:
        self.pid = pid
        for sig in self.early:
            self.forward(sig, None)

    def ended(self, status: int) -> int:
        """This process's exit status for the command's: a command ended by a signal ends
        this process by the same signal (a shell then sees what it would have seen)."""
        if status >= 0:
            return status
        self.restore()
        self.signal.signal(-status, self.signal.SIG_DFL)
        os.kill(os.getpid(), -status)
        return 128 - status

    def lost(self) -> int | None:
        """The server went away: before the command started, nothing ran; after, wait for
        the command to end (its status is lost with the server)."""
        if self.pid is None:
            return None
        try:
            fd = os.pidfd_open(self.pid)
        except OSError:
            fd = None
        if fd is not None:
            import select

            select.select([fd], [], [])
            os.close(fd)
        sys.stderr.write(
            f"mlvc: error: the command server stopped while running this command (pid "
            f"{self.pid}); its exit status is unknown\n"
        )
        return 1

    def restore(self) -> None:
        for sig, handler in self.old.items():
            self.signal.signal(sig, handler)
        self.old = {}
