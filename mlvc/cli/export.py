"""``mlvc export``: the run history as Parquet or Iceberg tables where big engines read it."""

from __future__ import annotations

import click

from ..render.text import echo, human_size
from ._common import emit, json_option, open_repo


@click.group()
def export() -> None:
    """Export the run index for engines bigger than one machine (docs/export.md).

    Example: mlvc export parquet s3://team-bucket/mlvc-history
    """


def _summary(report) -> None:
    if not report.runs_added and not report.files_written:
        echo(f"up to date: {report.destination} holds all {report.runs_total} runs")
        return
    echo(
        f"exported {report.runs_added} run{'s' * (report.runs_added != 1)} to "
        f"{report.destination} "
        f"(generation {report.generation}, {report.runs_total} runs in all): "
        f"{report.files_written} {report.unit}"
        + (f", {human_size(report.bytes_written)}" if report.bytes_written else "")
        + f" in {report.seconds:.2f} s"
    )


@export.command("parquet")
@click.argument("dest")
@json_option("what was written")
def export_parquet(dest: str) -> None:
    """Write the index as Hive-partitioned Parquet to DEST, adding only the runs it lacks.

    DEST is a folder, a URL (file://, s3://bucket/prefix?endpoint_override=HOST:PORT&scheme=http,
    gs://, abfs://, hdfs://) or the name of a configured remote (its export/ folder). Tables:
    runs, params, metrics, metric_summary, tags (partitioned by month of the run's start),
    tree_files, env_packages, refs and the model registry's; a manifest, _mlvc_export.json,
    names every file. Read it back with `mlvc query --remote DEST`.

    \b
    Example:
      mlvc export parquet /mnt/shared/mlvc-history
      mlvc export parquet origin
      mlvc query --remote origin "SELECT count(*) FROM runs"
    """
    emit(open_repo().export_parquet(dest), _summary)


@export.command("iceberg")
@click.argument("dest")
@click.option(
    "--catalog",
    metavar="URI",
    default=None,
    help="The Iceberg catalog (sqlite:///PATH, postgresql://..., or a REST catalog's "
    "http(s):// URL); default: a SQL catalog on sqlite at DEST/catalog.db (a folder DEST).",
)
@json_option("what was written")
def export_iceberg(dest: str, catalog: str | None) -> None:
    """Create or append Iceberg tables (namespace mlvc) with the runs DEST lacks.

    Needs the extra: pip install 'mlvc[iceberg]'. The tables' data and metadata live under
    DEST (the warehouse); Spark, Trino, DuckDB and pyiceberg read them through the catalog.

    \b
    Example:
      mlvc export iceberg /mnt/shared/mlvc-iceberg
      mlvc export iceberg s3://bucket/iceberg --catalog sqlite:////srv/catalog.db
    """
    emit(open_repo().export_iceberg(dest, catalog), _summary)


COMMANDS = (export,)
