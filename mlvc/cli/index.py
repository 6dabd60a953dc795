"""The commands over the run index: ``mlvc query`` and ``mlvc index rebuild``."""

from __future__ import annotations

import click

from ..render.text import FORMATS, echo
from ._common import open_reader, open_repo


@click.command()
@click.argument("sql")
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=None,
    help="Output format (default: from the -o file's extension, else table).",
)
@click.option(
    "-o",
    "--output",
    default=None,
    type=click.Path(dir_okay=False),
    help="Write the result to a file (.csv, .json, .parquet: that format).",
)
@click.option(
    "--remote",
    metavar="NAME|URL",
    default=None,
    help="Query the Parquet export of a remote (a configured name, a folder or a URL; "
    "`mlvc export parquet` writes it) instead of the local index.",
)
def query(sql: str, fmt: str | None, output: str | None, remote: str | None) -> None:
    """Run read-only SQL over the run index (tables: docs/sql-schema.md).

    Only reads run: SELECT, WITH, FROM, VALUES, SHOW, DESCRIBE, SUMMARIZE, PIVOT, EXPLAIN and
    the PRAGMAs that list tables. Ctrl-C stops a long query.

    With --remote the same SQL runs over a remote's export (no runs_wide there: its
    columns are built per index; the long tables params and metric_summary hold the same).

    \b
    Example:
      mlvc query "SELECT id, \\"metrics.acc\\" FROM runs_wide ORDER BY 2 DESC LIMIT 5"
      mlvc query --remote origin "SELECT month, count(*) FROM runs GROUP BY ALL"
    """
    from ..render.text import table_format, write_table

    table_format(fmt, output)  # a contradiction is refused before the query runs
    if remote is not None:
        from ..api.export import query_remote

        table = query_remote(remote, sql)
    else:
        table = open_reader().query(sql)
    write_table(table, fmt, output)


@click.group()
def index() -> None:
    """Manage the DuckDB index (a cache rebuilt from objects and refs).

    Example: mlvc index rebuild
    """


@index.command("rebuild")
def index_rebuild() -> None:
    """Rebuild the index from objects and refs.

    Example: mlvc index rebuild
    """
    n = open_repo().rebuild_index()
    echo(f"index rebuilt: {n} runs")


COMMANDS = (query, index)
