"""Importing an MLflow history (issue 15): ``import_mlflow(ctx, SOURCE)``.

Terms: a *source* is an MLflow tracking store or server (``source``: ``sql`` reads
``sqlite:///``, ``postgresql://`` and ``mysql://`` stores, ``files`` a ``./mlruns`` folder,
``rest`` an ``http(s)://`` server); ``write`` records what a source yields as mlvc runs,
shaped as ``mlvc server`` shapes the runs MLflow clients log to it, so the server's MLflow
API answers for imported runs by their MLflow run ids.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .source import open_source
from .write import ImportReport, import_history

if TYPE_CHECKING:
    from ...workspace.context import RepoContext

__all__ = ["ImportReport", "import_mlflow"]


def import_mlflow(
    ctx: RepoContext, uri: str, experiments: Iterable[str] = (), token: str | None = None
) -> ImportReport:
    """Import the MLflow history at ``uri`` (every experiment, or those named); ``token``
    is a REST server's bearer token."""
    source = open_source(uri, token)
    try:
        return import_history(ctx, source, experiments)
    finally:
        source.close()
