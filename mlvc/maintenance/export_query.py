"""``mlvc query --remote``: DuckDB over a Parquet export, reading the files its manifest
names through pyarrow datasets over pyarrow.fs (any DuckDB version: no httpfs extension)."""

from __future__ import annotations

from ..errors import QueryError, RemoteError, UsageError
from .export_layout import (
    MANIFEST,
    REMOTE_FOLDER,
    RUN_TABLES,
    TABLES,
    VIEWS,
    Destination,
    Manifest,
    child_url,
    one_line,
    open_destination,
    read_manifest,
)


def open_export(url: str) -> tuple[Destination, Manifest]:
    """The export at ``url`` (or, for a remote's root, in its ``export/`` folder)."""
    dest = open_destination(url)
    manifest = read_manifest(dest)
    if manifest is None:
        inner = open_destination(child_url(url, REMOTE_FOLDER))
        manifest = read_manifest(inner)
        dest = inner
    if manifest is None:
        raise UsageError(
            f"no mlvc export at {url} (no {MANIFEST}, nor in its {REMOTE_FOLDER}/ folder); write "
            "one with `mlvc export parquet REMOTE` (a remote's name: into its export/ folder) "
            "or `mlvc export parquet URL`"
        )
    return dest, manifest


def datasets(dest: Destination, manifest: Manifest) -> dict[str, object]:
    """One pyarrow dataset (or empty table) per exported table, over the files the manifest
    names: files a crashed export left are never read."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    out = {}
    for table in TABLES:
        schema = manifest.schema(table)
        files = [dest.path(f["path"]) for f in manifest.files(table)]
        if schema is None:
            continue
        if not files:
            out[table] = schema.empty_table()
            continue
        partitioning = None
        if table in RUN_TABLES:
            partitioning = ds.partitioning(pa.schema([("month", pa.string())]), flavor="hive")
        out[table] = ds.dataset(
            files,
            schema=schema,
            filesystem=dest.fs,
            format="parquet",
            partitioning=partitioning,
            partition_base_dir=dest.path(table),
        )
    return out


def query_export(url: str, sql: str):
    """Run read-only SQL (the rules of ``mlvc query``) over the export at ``url`` in an
    in-memory DuckDB; returns a ``pyarrow.Table``."""
    import duckdb
    import pyarrow as pa

    from ..index.user_sql import check_read_only, first_line, interruptible, is_interruption

    check_read_only(sql)
    dest, manifest = open_export(url)
    con = duckdb.connect(":memory:", config={"enable_external_access": False})
    try:
        for name, data in datasets(dest, manifest).items():
            con.register(name, data)
        for name, view in VIEWS.items():
            con.execute(f"CREATE VIEW {name} AS {view}")
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET lock_configuration = true")
        try:
            with interruptible(con):
                rel = con.sql(sql)
                return pa.table({}) if rel is None else rel.to_arrow_table()
        except duckdb.Error as e:
            if is_interruption(e):
                raise KeyboardInterrupt from None
            raise QueryError(first_line(e)) from None
        except (pa.ArrowException, OSError) as e:
            raise RemoteError(f"cannot read the export at {url}: {one_line(e)}") from None
    finally:
        con.close()
