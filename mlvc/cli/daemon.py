"""``mlvc daemon``: a command server that keeps mlvc loaded, so that everyday commands
(commit, log, status, query, ...) cost no interpreter start-up and no imports
(mlvc.launch; the server is mlvc.launch.server, started detached by name)."""

from __future__ import annotations

import os
import time

import click

from ..core import cmdserver
from ..errors import CommandServerFailed, UsageError
from ..render.text import echo


def _answer(path: str) -> dict[str, str] | None:
    line = cmdserver.control(path, cmdserver.STATUS)
    if not line or not line.startswith("status "):
        return None
    return dict(part.partition("=")[::2] for part in line.split()[1:])


def _ended(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for process ``pid`` to end; whether it has. (Not by
    taking the server's lock, even for a moment: a server starting then would fail it.)"""
    import select

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


@click.group("daemon")
def daemon() -> None:
    """Keep mlvc loaded in a command server, so commands start at once.

    While it runs, `mlvc commit`, `log`, `show`, `status`, `diff`, `query` and the other
    everyday commands of this Python and this mlvc run in a fork of it: no interpreter
    start-up, no imports (a commit of 20,000 unchanged files then takes about half as
    long). They behave as before: same directory, environment, input, output, exit code
    and signals. Commands that run your programs (run, reproduce, bisect) or serve
    (server, ui, models) always run in their own process; MLVC_DAEMON=0 runs any
    command in its own, and MLVC_DAEMON=1 starts the server by itself when a command
    finds none. One server per user, Python, mlvc installation and locale; it stops after
    --idle seconds without a command, and by itself when mlvc is upgraded.

    \b
    Example:
      mlvc daemon start
      mlvc commit -m "baseline"
      mlvc daemon status
      mlvc daemon stop
    """


@daemon.command("start")
@click.option(
    "--idle",
    type=float,
    default=cmdserver.IDLE,
    show_default=True,
    metavar="SECONDS",
    help="Stop after this long without a command (0: never).",
)
def start(idle: float) -> None:
    """Start the command server of this Python, mlvc and environment (nothing to do if it
    runs).

    \b
    Example:
      mlvc daemon start --idle 600
    """
    from ..core.spawn import spawn_detached

    if not idle >= 0:
        raise UsageError(f"--idle {idle}: give a number of seconds, 0 or more")
    path = cmdserver.address()
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError as e:
        raise CommandServerFailed(f"cannot make {folder}: {e.strerror}") from None
    if not cmdserver.private(folder):
        raise CommandServerFailed(
            f"{folder} is not a folder only you can enter (its socket would take your "
            "commands' environment): `chmod 700` it, or set XDG_RUNTIME_DIR to one that is"
        )
    known = _answer(path)
    if known is None:
        if not spawn_detached("mlvc.launch.server", [path, repr(idle)]):
            raise CommandServerFailed("could not start the command server (see `mlvc daemon`)")
        deadline = time.monotonic() + 20.0
        while known is None and time.monotonic() < deadline:
            time.sleep(0.02)
            known = _answer(path)
        if known is None:
            raise CommandServerFailed(
                f"the command server did not answer at {path}; see {cmdserver.log_path(path)}"
            )
    echo(f"mlvc: command server {known['pid']} listening at {path}")


@daemon.command("status")
def status() -> None:
    """Say whether the command server of this Python, mlvc and environment runs (exit 1 if
    not).

    \b
    Example:
      mlvc daemon status
    """
    path = cmdserver.address()
    known = _answer(path)
    if known is None:
        echo(f"mlvc: no command server listens at {path}")
        raise SystemExit(1)
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(known["started"])))
    echo(
        f"mlvc: command server {known['pid']} listening at {path} since {since}: "
        f"{known['served']} commands served, {known['running']} running, "
        f"idle timeout {known['idle']} s"
    )
    if "watched" in known:  # its file-system monitor (mlvc.core.fsmonitor)
        echo(
            f"mlvc: data folders watched: {known['watched']}; walks asked: {known['walks']}, "
            f"folders taken unchanged: {known['reused']}"
        )
    else:
        echo("mlvc: data folders are not watched (MLVC_FSMONITOR=0, or no inotify here)")


@daemon.command("stop")
def stop() -> None:
    """Stop the command server of this Python, mlvc and environment; commands it runs
    finish first.

    \b
    Example:
      mlvc daemon stop
    """
    path = cmdserver.address()
    known = _answer(path)
    if known is None or cmdserver.control(path, cmdserver.STOP) is None:
        echo(f"mlvc: no command server listens at {path}")
        return
    if _ended(int(known["pid"]), 30.0):
        echo("mlvc: command server stopped")
    else:
        echo(f"mlvc: command server stopping: {known['running']} commands still running")


COMMANDS = (daemon,)
