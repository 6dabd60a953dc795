"""``mlvc export iceberg``: the same tables as the Parquet export (export.py), as Iceberg
tables in namespace ``mlvc``, so Spark, Trino, DuckDB or pyiceberg read them through a
catalog. Needs the extra ``mlvc[iceberg]`` (pyiceberg with its SQL catalog).

Catalog: ``--catalog URI`` (``sqlite:///``/``postgresql://``: a SQL catalog; ``http(s)://``: a
REST catalog), or by default a SQL catalog on sqlite at ``DEST/catalog.db`` (DEST must then be
a local folder: sqlite needs a local file). The tables' data and metadata (the warehouse) live
under DEST, on any filesystem pyarrow reaches.

Incremental like the Parquet export: the runs the ``runs`` table holds are the runs exported.
Each commit to a table is atomic (Iceberg's snapshot swap in the catalog); the other tables are
committed before ``runs``, so ``runs`` never names a run whose rows are missing elsewhere. A
crash between those commits leaves rows of runs that ``runs`` lacks: every commit records its
generation (``mlvc.generation`` in the snapshot summary), and the next export first deletes
the rows of its new runs from a table that is a generation ahead of ``runs``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from ..errors import MissingExtra, MlvcError, RemoteError, UsageError
from .export import ExportReport, clean_scratch, content_digest, new_shared
from .export_layout import (
    MONTH,
    RUN_TABLES,
    SHARED_TABLES,
    SNAPSHOT_TABLES,
    one_line,
    open_destination,
)

NAMESPACE = "mlvc"
GENERATION = "mlvc.generation"
DIGEST = "mlvc.digest"


def _pyiceberg():
    try:
        import pyiceberg.catalog  # noqa: F401
        import pyiceberg.catalog.sql  # noqa: F401  (sqlalchemy)
        import pyiceberg.expressions  # noqa: F401
    except ImportError:
        raise MissingExtra(
            "`mlvc export iceberg` needs pyiceberg: pip install 'mlvc[iceberg]'"
        ) from None


def io_properties(url: str) -> dict[str, str]:
    """pyiceberg's FileIO settings for the warehouse URL (an S3 endpoint and region given as
    the URL's query parameters, as pyarrow.fs takes them)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    props: dict[str, str] = {"py-io-impl": "pyiceberg.io.pyarrow.PyArrowFileIO"}
    if parts.scheme == "s3":
        if "endpoint_override" in query:
            endpoint = query["endpoint_override"]
            if "://" not in endpoint:
                endpoint = f"{query.get('scheme', 'https')}://{endpoint}"
            props["s3.endpoint"] = endpoint
            props["s3.force-virtual-addressing"] = "false"
        if "region" in query:
            props["s3.region"] = query["region"]
    return props


def warehouse(url: str) -> str:
    """The warehouse location: ``url`` without its query string."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query="", fragment="")).rstrip("/")


def open_catalog(url: str, catalog: str | None):
    """The catalog for an export to ``url`` (see the module docstring)."""
    _pyiceberg()
    from pyiceberg.catalog import load_catalog

    scheme = urlsplit(url).scheme
    if catalog is None:
        if scheme != "file":
            raise UsageError(
                f"an Iceberg export to {url} needs --catalog URI (sqlite:///PATH, "
                "postgresql://..., or a REST catalog's URL): the default sqlite catalog must "
                "sit in a local folder"
            )
        dest = open_destination(url)
        dest.fs.create_dir(dest.root)
        catalog = f"sqlite:///{dest.root}/catalog.db"
    if not catalog.startswith(("sqlite:", "postgresql", "http://", "https://")):
        raise UsageError(
            f"--catalog {catalog!r}: give sqlite:///PATH, postgresql://... or a REST "
            "catalog's http(s):// URL"
        )
    try:
        return load_catalog("mlvc", uri=catalog, warehouse=warehouse(url), **io_properties(url))
    except MlvcError:
        raise
    except Exception as e:  # pyiceberg and SQLAlchemy raise many kinds
        raise UsageError(f"cannot open the Iceberg catalog {catalog}: {one_line(e)}") from None


def export_iceberg(
    index, url: str, catalog: str | None = None, scratch: str | os.PathLike | None = None
) -> ExportReport:
    """Append to ``url``'s Iceberg tables what ``index`` holds and they lack.

    The new rows are read (under the index's shared lock) into Parquet files in ``scratch``
    (default: the system's temp folder), then appended with the lock released, so slow
    commits to the warehouse never keep the index's writers waiting."""
    started = time.monotonic()
    cat = open_catalog(url, catalog)
    scratch = Path(scratch or tempfile.gettempdir())
    clean_scratch(scratch)
    stage = scratch / f"mlvc-iceberg-{secrets.token_hex(6)}"
    try:
        report = _export(cat, index, url, stage)
    except MlvcError:
        raise
    except Exception as e:
        raise RemoteError(f"Iceberg export to {url} failed: {one_line(e)}") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _export(cat, index, url: str, stage: Path) -> ExportReport:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    cat.create_namespace_if_not_exists(NAMESPACE)
    stage.mkdir(parents=True)
    with index.connect_readonly() as con:  # what to add, read into local files
        schemas = _schemas(con)
        tables = {name: _table(cat, name, schema) for name, schema in schemas.items()}
        generation = _generation(tables["runs"]) + 1
        exported = _exported(tables["runs"])
        new = con.sql(
            f"SELECT id, {MONTH} AS month FROM runs ORDER BY created, id"
        ).to_arrow_table()
        if exported["id"]:
            known = pa.array(sorted(exported["id"]), pa.string())
            new = new.filter(pc.invert(pc.is_in(new["id"], value_set=known)))
        con.register("_mlvc_new", new)
        trees, envs = new_shared(con, exported)
        con.register("_mlvc_trees", trees)
        con.register("_mlvc_envs", envs)
        names = {"new": "_mlvc_new", "trees": "_mlvc_trees", "envs": "_mlvc_envs"}
        queries = {n: sql.format(**names) for n, sql in (RUN_TABLES | SHARED_TABLES).items()}
        queries |= {n: f"SELECT * FROM {n} ORDER BY ALL" for n in SNAPSHOT_TABLES}
        for name, sql in queries.items():
            reader = con.sql(sql).to_arrow_reader(1 << 16)
            with pq.ParquetWriter(stage / f"{name}.parquet", reader.schema) as w:
                for batch in reader:
                    w.write_batch(batch)
    report = ExportReport(url, generation - 1, new.num_rows, len(exported["id"]))
    report.unit = "table commits"
    props = {GENERATION: str(generation)}
    # the column each table's rows belong by, and the ids this export adds
    owners = {name: ("run_id", new) for name in RUN_TABLES}
    owners |= {"runs": ("id", new), "tree_files": ("tree_id", trees)}
    owners["env_packages"] = ("env_id", envs)
    order = [t for t in RUN_TABLES if t != "runs"] + list(SHARED_TABLES) + ["runs"]
    for name in order:  # runs last: it is what the next export learns from
        key, ids = owners[name]
        data = pq.read_table(stage / f"{name}.parquet")
        if not data.num_rows:
            continue
        table = tables[name]
        if name != "runs" and _generation(table) >= generation:  # a crashed export's rows
            _delete_ids(table, key, ids["id"].to_pylist())
        table.append(data, snapshot_properties=props)
        report.rows[name] = data.num_rows
        report.files_written += 1
    for name in SNAPSHOT_TABLES:
        data = pq.read_table(stage / f"{name}.parquet")
        digest = content_digest(data)
        if _summary(tables[name]).get(DIGEST) != digest:
            with warnings.catch_warnings():  # "delete did not match any records": fine
                warnings.simplefilter("ignore")
                tables[name].overwrite(data, snapshot_properties={**props, DIGEST: digest})
            report.rows[name] = data.num_rows
            report.files_written += 1
    if report.files_written:
        report.generation = generation
    report.runs_total = len(exported["id"]) + new.num_rows
    return report


def _schemas(con) -> dict:
    """The Arrow schema of every exported table, as the Parquet export writes it."""
    empty = "(SELECT ''::VARCHAR AS id, ''::VARCHAR AS month LIMIT 0)"
    names = {"new": empty, "trees": "(SELECT ''::VARCHAR AS id LIMIT 0)"}
    names["envs"] = names["trees"]
    out = {}
    for name, sql in (RUN_TABLES | SHARED_TABLES).items():
        out[name] = con.sql(sql.format(**names)).limit(0).to_arrow_table().schema
    for name in SNAPSHOT_TABLES:
        out[name] = con.sql(f"SELECT * FROM {name} LIMIT 0").to_arrow_table().schema
    return out


def _table(cat, name: str, schema):
    """The Iceberg table ``mlvc.<name>``, created (partitioned by month) when absent."""
    identifier = f"{NAMESPACE}.{name}"
    if cat.table_exists(identifier):
        return cat.load_table(identifier)
    table = cat.create_table(identifier, schema=schema)
    if name in RUN_TABLES:
        with table.update_spec() as spec:
            spec.add_identity("month")
        table = cat.load_table(identifier)
    return table


def _summary(table) -> dict:
    snapshot = table.current_snapshot()
    if snapshot is None or snapshot.summary is None:
        return {}
    return dict(snapshot.summary.additional_properties)


def _generation(table) -> int:
    try:
        return int(_summary(table).get(GENERATION, 0))
    except ValueError:
        return 0


def _exported(runs) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {"id": set(), "trees": set(), "envs": set()}
    if runs.current_snapshot() is None:
        return out
    columns = ("id", "code_tree", "data_tree", "artifacts_tree", "env_id")
    data = runs.scan(selected_fields=columns).to_arrow()
    out["id"] = set(data["id"].to_pylist())
    for c in ("code_tree", "data_tree", "artifacts_tree"):
        out["trees"].update(v for v in data[c].to_pylist() if v)
    out["envs"] = {v for v in data["env_id"].to_pylist() if v}
    return out


def _delete_ids(table, key: str, ids: list[str]) -> None:
    from pyiceberg.expressions import In

    if ids:
        table.delete(delete_filter=In(key, ids))
