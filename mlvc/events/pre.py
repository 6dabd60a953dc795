"""The vetoing hooks' calls, with what each one is told (mlvc.events.hooks runs them).

Every path that makes one of these changes calls here first: ``mlvc commit`` and
``Repo.commit`` (``pre-commit``), setting or deleting an alias from the CLI, the Python API,
the REST API or the MLflow client (``pre-alias``), and ``mlvc push`` (``pre-push``). A veto
raises ``HookRejected`` and the change is not made.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..errors import MlvcError
from .hooks import run_pre

if TYPE_CHECKING:
    from ..workspace.context import RepoContext


def _environ(ctx: RepoContext):
    return getattr(getattr(ctx, "settings", None), "environ", None) or None


def commit(ctx: RepoContext, spec: dict[str, Any]) -> None:
    """``pre-commit``: ``spec`` says what is about to be recorded (message, name, params,
    tags, the paths given). Without a hook the author is not looked up here: that is a
    ``git config`` process, which the commit then asks beside its file walk."""
    if not (ctx.layout.hooks / "pre-commit").exists():
        return
    run_pre(ctx.layout, "pre-commit", {**spec, "author": ctx.author()}, _environ(ctx))


def alias(ctx: RepoContext, name: str, alias: str, to: int | str | None, who: str) -> None:
    """``pre-alias``: the alias ``alias`` of the model ``name`` is about to move from its
    version (``from``; None: new) to ``to`` (None: deleted)."""
    if not (ctx.layout.hooks / "pre-alias").exists():
        return
    from ..refs import registry  # here: a commit's pre-commit call does not need it

    previous = registry.aliases(ctx.refs, name).get(alias)
    target = int(to) if isinstance(to, str) and to.isdigit() else to
    data = {"model": name, "alias": alias, "from": previous, "to": target, "by": who}
    if target is not None:
        try:
            info = registry.get(ctx.refs, name, version=target)
        except MlvcError:
            pass  # the change itself reports an unknown version
        else:
            data.update(run_id=info.run_id, uri=info.uri, source=info.source)
    run_pre(ctx.layout, "pre-alias", data, _environ(ctx))


def push(ctx: RepoContext, remote: str, url: str, runs: Iterable[Any]) -> None:
    """``pre-push``: the runs (ids) about to be sent to ``remote``."""
    ids = [getattr(r, "hex", r) for r in runs]
    run_pre(ctx.layout, "pre-push", {"remote": remote, "url": url, "runs": ids}, _environ(ctx))
