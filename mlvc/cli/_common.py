"""What every command module shares: the one repository opener, ``--json``, and ``emit``.

Command modules import this module and the library, never each other (nor ``mlvc.cli``),
so the shell has no import cycle. Library modules are imported inside the commands: the
shell's own imports stay light, and ``mlvc --help`` loads no DuckDB, Arrow or numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..render.text import to_json

if TYPE_CHECKING:
    from ..api.repo import Repo

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def open_repo() -> Repo:
    """The repository the command runs in: found from the working directory (``-C DIR``
    changed it first), with settings read from the environment once, here at the edge."""
    from ..api.repo import Repo

    return Repo()


def open_reader():
    """What the read commands (log, show, diff, query) read: the server that
    ``MLVC_TRACKING_URI`` names (mlvc.api.remote), else the local repository."""
    from ..api import remote

    return remote.RemoteRepo.from_env() if remote.configured() else open_repo()


_JSON = "mlvc.json"  # where json_option leaves the flag, in the click context's meta


def _remember_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    ctx.meta[_JSON] = value


def json_option(what: str = "the result") -> Callable[[F], F]:
    """The ``--json`` flag (help: "Print WHAT as JSON."). It is not passed to the command:
    ``emit`` and ``wants_json`` read it."""
    return click.option(
        "--json",
        is_flag=True,
        expose_value=False,
        callback=_remember_json,
        help=f"Print {what} as JSON.",
    )


def wants_json() -> bool:
    """Whether the running command was given ``--json``."""
    return bool(click.get_current_context().meta.get(_JSON))


def emit(result: T, text: Callable[[T], object]) -> None:
    """Print ``result`` as JSON when the command was given ``--json``, else ``text(result)``
    prints it for people. A result with ``to_dict()`` is printed as that dict."""
    if wants_json():
        click.echo(to_json(result.to_dict() if hasattr(result, "to_dict") else result))
    else:
        text(result)
