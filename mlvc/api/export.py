"""Reading an export where it lives: ``query_remote`` (``mlvc query --remote``), inside a
repository (a remote's name resolves through its config) or outside one (a URL)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..core.layout import Layout
from ..core.layout import find_root as layout_find_root

if TYPE_CHECKING:
    import pyarrow as pa


def query_remote(remote: str, sql: str, start: str | os.PathLike | None = None) -> pa.Table:
    """Run read-only SQL over the Parquet export of ``remote``: a configured remote's name
    (when run inside a repository) or a folder or URL."""
    from ..maintenance.export_layout import source_url
    from ..maintenance.export_query import query_export

    root = layout_find_root(start)
    layout = Layout.of(root) if root is not None else None
    return query_export(source_url(layout, remote), sql)
