"""Model registry changes that emit their events: the calls every path (``mlvc models``,
``mlvc.models``, the server's REST and MLflow routes) makes instead of mlvc.refs.registry's,
so each change is announced the same way.

Events: ``registered_model.created`` (a name's first version, or MLflow's
create-registered-model), ``model_version.created``, ``model_version_alias.created`` (set or
moved) and ``model_version_alias.deleted``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..refs import registry
from . import emit

if TYPE_CHECKING:
    from ..workspace.context import RepoContext


def model_created(ctx: RepoContext, name: str, who: str) -> None:
    emit(ctx, "registered_model.created", {"name": name, "by": who})


def create_version(ctx: RepoContext, name: str, *args, announce_model: bool = True,
                   **kwargs) -> int:  # fmt: skip
    """``registry.create_version(refs, name, ...)``, then its events (``announce_model``: a
    first version also creates the registered model; False where that was announced)."""
    number = registry.create_version(ctx.refs, name, *args, **kwargs)
    info = registry.get(ctx.refs, name, number)
    if announce_model and number == 1:
        model_created(ctx, name, info.registered_by)
    emit(
        ctx,
        "model_version.created",
        {
            "name": name,
            "version": number,
            "model_id": info.model_id,
            "source": info.source,
            "run_id": info.run_id,
            "uri": f"models:/{name}/{number}",
            "by": info.registered_by,
        },
    )
    return number


def set_alias(
    ctx: RepoContext, name: str, alias: str, version: int | str, who: str
) -> registry.ModelVersion:
    previous = registry.aliases(ctx.refs, name).get(alias)
    info = registry.set_alias(ctx.refs, name, alias, version, who)
    emit(
        ctx,
        "model_version_alias.created",
        {
            "name": name,
            "alias": alias,
            "version": info.version,
            "previous": previous,
            "uri": f"models:/{name}@{alias}",
            "by": who,
        },
    )
    return info


def delete_alias(ctx: RepoContext, name: str, alias: str, who: str) -> int:
    previous = registry.delete_alias(ctx.refs, name, alias, who)
    emit(
        ctx,
        "model_version_alias.deleted",
        {"name": name, "alias": alias, "version": previous, "by": who},
    )
    return previous
