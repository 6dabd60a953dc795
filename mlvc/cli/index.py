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
def query(sql: str, fmt: str | None, output: str | None) -> None:
    """Run read-only SQL over the run index (tables: docs/sql-schema.md).

    Only reads run: SELECT, WITH, FROM, VALUES, SHOW, DESCRIBE, SUMMARIZE, PIVOT, EXPLAIN and
    the PRAGMAs that list tables. Ctrl-C stops a long query.

    Example: mlvc query "SELECT id, \\"metrics.acc\\" FROM runs_wide ORDER BY 2 DESC LIMIT 5"
    """
    from ..render.text import table_format, write_table

    table_format(fmt, output)  # a contradiction is refused before the query runs
    write_table(open_reader().query(sql), fmt, output)


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
