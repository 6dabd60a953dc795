"""The commands over the run index: ``mlvc query``, ``mlvc index rebuild`` and ``mlvc which``."""

from __future__ import annotations

import click

from ..render.text import FORMATS, echo
from ._common import emit, json_option, open_reader, open_repo


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
        from ..index.index import command_process

        command_process()  # no pandas imported by an ingest on the way: ~0.2 s of CPU
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


@click.command()
@click.argument("target", metavar="PATH|HASH")
@json_option("what was found")
def which(target: str) -> None:
    """Which runs consumed or produced this exact file, found by its content.

    PATH is hashed (BLAKE3, as `b3sum` prints it; the file may lie outside the
    repository); HASH is a file id or a unique prefix of one (at least 4 hex digits). Lists
    every run that had the file as code or data (consumed) or as an artifact, output or
    model file (produced), with the path it had there, the first producer, and the
    registered model versions that contain it.

    Example: mlvc which ~/Downloads/model.pkl
    """
    emit(open_repo().which(target), _echo_which)


def _echo_which(res) -> None:
    from ..render.provenance import render_provenance

    for line in render_provenance(res):
        echo(line)


COMMANDS = (query, index, which)
