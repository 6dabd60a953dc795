"""The ``mlvc`` command: a thin shell that parses, makes one library call, and renders.

``main`` is the entry point (``mlvc = "mlvc.cli:main"``, ``python -m mlvc``). It maps every
``MlvcError`` to one line on stderr and its documented exit code (docs/cli.md), and gathers
the commands of the modules beside it (``COMMAND_MODULES``). Those import only ``_common``
and the library.

A command's module is imported when the command runs (click's lazy-group pattern): ``mlvc
log`` loads ``cli.runs`` only, not the server's or the registry's commands. ``--help`` and
the documentation generator list every command, so they load every module.
"""

from __future__ import annotations

import errno
import importlib
import logging
import os
import sys
from collections.abc import Iterator, MutableMapping

import click

from .._version import __version__
from ..errors import MlvcError
from ..render.text import clean, echo

# command name -> the module of mlvc.cli that defines it (in its COMMANDS); a test checks it
COMMAND_MODULES = {
    **dict.fromkeys(
        ("init", "commit", "log", "show", "runs", "status", "diff", "checkout", "tag"), "runs"
    ),
    **dict.fromkeys(("query", "index", "which"), "index"),
    **dict.fromkeys(("gc", "du", "fsck"), "storage"),
    **dict.fromkeys(("run", "reproduce", "lineage", "bisect"), "exec"),
    "models": "models",
    **dict.fromkeys(("server", "token", "ui"), "server"),
    **dict.fromkeys(("remote", "push", "fetch", "pull", "clone"), "remote"),
    "export": "export",
    "import": "interop",
    "events": "events",
    "webhook": "webhooks",
    "daemon": "daemon",
}


class _LazyCommands(MutableMapping):
    """A group's ``commands``: every name is listed at once, and a command's module is
    imported the first time the command itself is looked up."""

    def __init__(self, modules: dict[str, str]):
        self.modules = modules
        self.loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self.loaded and name in self.modules:
            module = importlib.import_module(f"{__name__}.{self.modules[name]}")
            for command in module.COMMANDS:
                self.loaded.setdefault(command.name, command)
        return self.loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self.loaded[name] = command

    def __delitem__(self, name: str) -> None:
        self.loaded.pop(name, None)
        self.modules = {k: v for k, v in self.modules.items() if k != name}

    def __iter__(self) -> Iterator[str]:
        return iter({**dict.fromkeys(self.modules), **dict.fromkeys(self.loaded)})

    def __len__(self) -> int:
        return len({*self.modules, *self.loaded})

    def __contains__(self, name: object) -> bool:
        return name in self.modules or name in self.loaded


class MlvcGroup(click.Group):
    """Maps library errors to one-line messages and exit codes, and library warnings to one
    line each on stderr."""

    def main(self, args=None, *rest, standalone_mode: bool = True, **kwargs):
        """click's main; a process started from the command line then ends through
        ``_exit_now`` (no interpreter teardown) when that is safe."""
        if args is not None or not standalone_mode:  # CliRunner, or a caller wanting a value
            return super().main(args, *rest, standalone_mode=standalone_mode, **kwargs)
        try:
            super().main(None, *rest, standalone_mode=True, **kwargs)
        except SystemExit as e:
            if _ran[-1:] and _ran[-1] in FAST_EXIT:
                _exit_now(e)
            raise

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.ClickException as e:  # click prints it; what the user typed is in it
            e.message = clean(e.message)
            raise

    def invoke(self, ctx: click.Context):
        handler = _WarningLines()
        logging.getLogger("mlvc").addHandler(handler)
        try:
            return super().invoke(ctx)
        except click.ClickException as e:
            e.message = clean(e.message)
            raise
        except MlvcError as e:
            echo(f"mlvc: error: {clean(e)}", err=True)
            for line in getattr(e, "details", ()):  # a hook's own lines, under the error
                echo(f"  {clean(line)}", err=True)
            ctx.exit(e.exit_code)
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(1)
        except KeyboardInterrupt:
            echo("mlvc: interrupted", err=True)
            ctx.exit(130)
        except OSError as e:  # a resource of the machine ran out: said, not a traceback
            message = _exhausted(e)
            if message is None:
                raise
            echo(f"mlvc: error: {clean(message)}", err=True)
            ctx.exit(1)
        except Exception as e:  # DuckDB stopped on Ctrl-C, or ran out, and said so its own way
            if "duckdb" not in sys.modules:
                raise
            if _interruption(e):
                echo("mlvc: interrupted", err=True)
                ctx.exit(130)
            from ..index.user_sql import first_line, unavailable

            if not unavailable(e):
                raise
            echo(f"mlvc: error: {clean(first_line(e))}", err=True)
            ctx.exit(1)
        finally:
            logging.getLogger("mlvc").removeHandler(handler)
            _ran.append(ctx.invoked_subcommand)


def _exhausted(e: OSError) -> str | None:
    """One line for an error that says the machine ran out of something (open files, disk
    space), which the user fixes outside mlvc; None for any other error."""
    where = f" ({e.filename})" if e.filename else ""
    if e.errno == errno.EMFILE:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return (
            f"too many open files{where}: this process may open {soft}; raise the limit "
            "(`ulimit -n 4096`) and run the command again"
        )
    if e.errno == errno.ENFILE:
        return (
            f"the system has too many open files{where}: close some programs and run the "
            "command again"
        )
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"no space left on the device{where}: free some space and run the command again "
            "(`mlvc fsck` checks the repository)"
        )
    return None


# the commands a process ends with _exit_now after (their paths audited: no file object
# left for teardown to flush, no DuckDB connection, no pool); others end the ordinary way
FAST_EXIT = frozenset({"commit", "status", "log", "show", "diff", "runs"})
_ran: list[str | None] = []  # the command the top-level group invoked


def _exit_now(done: SystemExit) -> None:
    """End the process with ``done``'s exit code without the interpreter's teardown (freeing
    every module and object: ~15 ms of CPU after a commit's output), once what teardown does
    that matters is done: the atexit hooks (packs, open fluent runs, logging, finalizers of
    temporary files) and flushing stdout and stderr. Returns, so the caller ends the ordinary
    way, when teardown may do more: an exit code that is not a number (printed by Python), a
    thread that is not a daemon still running (Python waits for it), DuckDB loaded (a
    connection left open checkpoints as it is freed), or a flush that fails (Python reports
    it and exits 120)."""
    import atexit
    import threading

    code = done.code
    if code is not None and not isinstance(code, int):
        return
    if "duckdb" in sys.modules:
        return
    main_thread = threading.main_thread()
    if any(t is not main_thread and not t.daemon for t in threading.enumerate()):
        return
    atexit._run_exitfuncs()
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        return
    os._exit(code or 0)


def _interruption(e: BaseException) -> bool:
    from ..index.user_sql import is_interruption

    return is_interruption(e)


class _WarningLines(logging.Handler):
    """Library warnings as ``mlvc: warning: ...``, one line each, each said once; other
    records as they are."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno != logging.WARNING:
            echo(message, err=True)
        elif message not in self.seen:
            self.seen.add(message)
            echo(f"mlvc: warning: {clean(message)}", err=True)


@click.group(cls=MlvcGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlvc")
@click.option("-C", "chdir", metavar="DIR", help="Run as if mlvc was started in DIR.")
def main(chdir: str | None) -> None:
    """mlvc: version every ML run — code, data, environment, params, metrics, artifacts.

    \b
    Typical session:
      mlvc init
      python train.py && mlvc commit -m "baseline" -p lr=0.01 -M acc=0.91 --artifacts model.pkl
      mlvc diff HEAD~1 HEAD
      mlvc query "SELECT id, \\"params.lr\\", \\"metrics.acc\\" FROM runs_wide"
      mlvc checkout HEAD~1 --to /tmp/replay
    """
    if chdir:
        try:
            os.chdir(chdir)
        except OSError as e:
            raise click.BadParameter(
                f"cannot enter {chdir}: {e.strerror}", param_hint="-C"
            ) from None


main.commands = _LazyCommands(COMMAND_MODULES)

__all__ = ["main"]
