"""``mlvc export parquet``: the index as Hive-partitioned Parquet on any pyarrow filesystem, so
engines bigger than one machine (DuckDB, Spark, Trino, Ray) read the team's whole history
where it lives; and ``query_export``, DuckDB over such an export (``mlvc query --remote``).

Terms (docs/export.md):
    destination  a folder or URL that ``pyarrow.fs.FileSystem.from_uri`` opens (file://, s3://,
                 gs://, abfs://, hdfs://); a configured remote's export lives in its
                 ``export/`` folder, beside its packs.
    manifest     ``_mlvc_export.json`` at the destination: every data file of the export (path,
                 rows, bytes), each table's Arrow schema, and a generation number. It is the
                 commit point: written last, whole, after every file it names is complete.
    generation   one export that added something; its files are ``part-<generation>-<i>``.

Tables: the run tables (``runs``, ``params``, ``metrics``, ``metric_summary``, ``tags``) are
partitioned by ``month`` (the run's start, UTC, ``YYYY-MM``) and only ever appended: runs are
immutable, so an export adds the runs the destination lacks. ``tree_files`` and
``env_packages`` (shared by runs) get the trees and environments first named by new runs.
``refs`` and the model registry tables move, so they are small snapshots replaced whole when
they change.

Write order, so a crash never leaves a manifest naming a missing file: data files (on a local
or HDFS destination written under ``_staging/`` and renamed into place; an object store's PUT
is already whole or nothing) → manifest → old snapshot files deleted. Files a crashed export
left behind are named by no manifest: the next export deletes them before writing (one
exporter per destination at a time). Readers through mlvc read only what the manifest names.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from .._version import __version__
from ..core.layout import Layout
from ..errors import MlvcError, QueryError, RemoteError, UsageError

MANIFEST = "_mlvc_export.json"
FORMAT = 1
STAGING = "_staging"
REMOTE_FOLDER = "export"  # where a configured remote keeps its export
MONTH = "strftime(coalesce(started, created), '%Y-%m')"
_PART = re.compile(r"^part-\d{6}-\d+\.parquet$")
OBJECT_STORES = ("s3", "gs", "gcs", "abfs", "abfss", "az")

# table -> (kind, the SELECT that fills it). {new} is a registered table of the new runs' ids
# and months, {trees}/{envs} the new tree and environment ids.
RUN_TABLES = {
    "runs": "SELECT r.*, n.month FROM runs r JOIN {new} n ON r.id = n.id ORDER BY r.created, r.id",
    # in the index's order, which groups a run's rows (sorting 50 M metric points would cost
    # a third of the export for little: row groups already cover few runs each)
    "params": "SELECT t.*, n.month FROM params t JOIN {new} n ON t.run_id = n.id",
    "metrics": "SELECT t.*, n.month FROM metrics t JOIN {new} n ON t.run_id = n.id",
    "metric_summary": "SELECT t.*, n.month FROM metric_summary t JOIN {new} n ON t.run_id = n.id",
    "tags": "SELECT t.*, n.month FROM tags t JOIN {new} n ON t.run_id = n.id",
}
SHARED_TABLES = {
    "tree_files": "SELECT * FROM tree_files WHERE tree_id IN (SELECT id FROM {trees}) "
    "ORDER BY tree_id, path",
    "env_packages": "SELECT * FROM env_packages WHERE env_id IN (SELECT id FROM {envs}) "
    "ORDER BY env_id, name",
}
SNAPSHOT_TABLES = ("refs", "model_versions", "model_aliases", "model_alias_log")
TABLES = (*RUN_TABLES, *SHARED_TABLES, *SNAPSHOT_TABLES)
# what a reader of an export gets besides the tables (the index's views, over the export)
VIEWS = {
    "files": """SELECT s.run_id, s.section, t.path, t.object_id, t.size, t.kind
    FROM (SELECT id AS run_id, 'code' AS section, code_tree AS tree_id FROM runs
          UNION ALL SELECT id, 'data', data_tree FROM runs
          UNION ALL SELECT id, 'artifacts', artifacts_tree FROM runs) s
    JOIN tree_files t ON t.tree_id = s.tree_id""",
    "packages": """SELECT r.id AS run_id, p.name, p.version
    FROM runs r JOIN env_packages p ON p.env_id = r.env_id""",
}


# -- where the export goes --------------------------------------------------------------------


@dataclass
class Destination:
    """An opened export location: ``fs`` and ``root`` (a path inside it), from ``url``."""

    url: str
    fs: object
    root: str

    @property
    def renames(self) -> bool:
        """Whether files are staged and renamed (local disk, HDFS) rather than written whole
        by one PUT (object stores)."""
        return urlsplit(self.url).scheme not in OBJECT_STORES

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root


def destination_url(layout: Layout | None, dest: str, folder: str = REMOTE_FOLDER) -> str:
    """The URL ``dest`` names: a configured remote's ``folder`` (``export/`` for Parquet,
    ``iceberg/`` for Iceberg) when ``dest`` is a remote's name, else ``dest`` itself (a
    folder becomes ``file://``)."""
    remote = _remote_url(layout, dest)
    if remote is None:
        url = check_export_url(dest)
        _refuse_bare_name(layout, dest)
        return url
    return _child(remote, folder)


def source_url(layout: Layout | None, source: str) -> str:
    """The URL an export is read from: a configured remote's (its ``export/`` folder is found
    by ``open_export``), else ``source`` itself."""
    remote = _remote_url(layout, source)
    if remote is None:
        url = check_export_url(source)
        _refuse_bare_name(layout, source)
        return url
    return remote


def _refuse_bare_name(layout: Layout | None, text: str) -> None:
    """A bare word that names no remote and no folder here is a typo or a remote not yet
    added, not a new folder to create in the working directory."""
    if "/" in text or ":" in text or os.path.isdir(text) or text in (".", ".."):
        return
    from ..remotes import config

    known = ", ".join(r.name for r in config.list_remotes(layout)) if layout else ""
    raise UsageError(
        f"no remote named {text!r} (configured: {known or 'none'}) and no folder {text!r} "
        f"here; add the remote with `mlvc remote add {text} URL`, or write ./{text} for a "
        "folder"
    )


def _remote_url(layout: Layout | None, name: str) -> str | None:
    """The URL of the configured remote ``name``, None when there is none by that name."""
    from ..remotes import config

    if layout is None:
        return None
    for remote in config.list_remotes(layout):
        if remote.name == name:
            _refuse_http(remote.url, f"remote {name!r}")
            return remote.url
    return None


def check_export_url(url: str) -> str:
    """``url`` normalized, or a one-line UsageError (bad scheme, credentials, an mlvc
    server)."""
    from ..remotes.config import check_url

    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme and scheme not in (*OBJECT_STORES, "file", "hdfs", "viewfs", "http", "https"):
        raise UsageError(
            f"export destination {url!r}: unknown scheme {scheme!r}; use a folder, file://, "
            "s3://, gs://, abfs:// or hdfs://"
        )
    url = check_url(url)
    _refuse_http(url, url)
    parts = urlsplit(url)
    if parts.scheme == "file" and not parts.path.startswith("/"):
        raise UsageError(f"export destination {url!r}: a file:// URL needs an absolute path")
    return url


def _refuse_http(url: str, what: str) -> None:
    if urlsplit(url).scheme in ("http", "https"):
        raise UsageError(
            f"{what} is an mlvc server ({url}); an export needs a folder or an object-store "
            "URL (s3://bucket/prefix, gs://, abfs://, hdfs://)"
        )


def _child(url: str, name: str) -> str:
    """``url`` with ``/name`` appended to its path (its query string kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + name))


def open_destination(url: str) -> Destination:
    """Open ``url`` through pyarrow.fs; a one-line error when it cannot be."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        fs, root = pafs.FileSystem.from_uri(url)
    except (pa.ArrowException, OSError, ValueError, TypeError) as e:
        raise UsageError(f"export destination {url!r}: {_one_line(e)}") from None
    root = root.rstrip("/") or root
    if urlsplit(url).scheme in OBJECT_STORES and not root.strip("/"):
        raise UsageError(f"export destination {url!r}: name a bucket (s3://BUCKET/PREFIX)")
    return Destination(url, fs, root)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:300]


# -- the manifest -----------------------------------------------------------------------------


@dataclass
class Manifest:
    generation: int = 0
    tables: dict[str, dict] = field(default_factory=dict)
    runs: int = 0

    def files(self, table: str) -> list[dict]:
        return self.tables.get(table, {}).get("files", [])

    def all_paths(self) -> set[str]:
        return {f["path"] for t in self.tables.values() for f in t.get("files", [])}

    def schema(self, table: str):
        import pyarrow as pa

        text = self.tables.get(table, {}).get("schema")
        return None if text is None else pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "written_by": f"mlvc {__version__}",
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "generation": self.generation,
            "runs": self.runs,
            "partitioning": {"month": "YYYY-MM of the run's start (UTC), Hive style"},
            "tables": self.tables,
        }
        return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def read_manifest(dest: Destination) -> Manifest | None:
    """The destination's manifest, None when there is none; UsageError when it is not one
    this mlvc reads (or names a file outside the export)."""
    import pyarrow as pa

    where = f"{dest.url} ({MANIFEST})"
    try:
        with dest.fs.open_input_stream(dest.path(MANIFEST)) as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except (pa.ArrowException, OSError) as e:
        if _missing(e):
            return None
        raise RemoteError(f"cannot read {where}: {_one_line(e)}") from None
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"format {doc.get('format')!r}, this mlvc reads {FORMAT}")
        manifest = Manifest(int(doc["generation"]), dict(doc["tables"]), int(doc.get("runs", 0)))
        for name, table in manifest.tables.items():
            if name not in TABLES or not isinstance(table, dict):
                raise ValueError(f"unknown table {name!r}")
            for f in table.get("files", []):
                _check_rel(str(f["path"]), name)
                int(f.get("rows", 0)), int(f.get("bytes", 0))
            manifest.schema(name)
    except (ValueError, KeyError, TypeError, pa.ArrowException) as e:
        raise UsageError(
            f"{where} is not an mlvc export manifest this version reads: {_one_line(e)}"
        ) from None
    return manifest


def _check_rel(path: str, table: str) -> None:
    parts = path.split("/")
    if (
        parts[0] != table
        or any(p in ("", ".", "..") for p in parts)
        or "\\" in path
        or not _PART.match(parts[-1])
    ):
        raise ValueError(f"file {path!r} lies outside table {table!r}")


def _missing(e: BaseException) -> bool:
    text = str(e)
    return "does not exist" in text or "NoSuchKey" in text or "Path does not exist" in text


def _write_manifest(dest: Destination, manifest: Manifest) -> None:
    data = manifest.to_json()
    final = dest.path(MANIFEST)
    if not dest.renames:
        with dest.fs.open_output_stream(final) as f:  # one PUT: whole or nothing
            f.write(data)
        return
    tmp = dest.path(f"{STAGING}/{MANIFEST}.{secrets.token_hex(4)}")
    dest.fs.create_dir(dest.path(STAGING))
    with dest.fs.open_output_stream(tmp) as f:
        f.write(data)
    _sync(dest, tmp)
    try:
        dest.fs.move(tmp, final)
    except OSError:  # HDFS does not rename over a file
        dest.fs.delete_file(final)
        dest.fs.move(tmp, final)
    _sync_dir(dest, dest.root)


def _sync(dest: Destination, path: str) -> None:
    """fsync a local file, so the manifest never lands before the data it names."""
    import pyarrow.fs as pafs

    if isinstance(dest.fs, pafs.LocalFileSystem):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _sync_dir(dest: Destination, path: str) -> None:
    import pyarrow.fs as pafs

    if isinstance(dest.fs, pafs.LocalFileSystem):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- exporting --------------------------------------------------------------------------------


@dataclass
class ExportReport:
    """What one export did (``--json`` prints it)."""

    destination: str
    generation: int
    runs_added: int
    runs_total: int
    files_written: int = 0
    bytes_written: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    removed_leftovers: int = 0
    seconds: float = 0.0
    unit: str = "files"  # what files_written counts (Iceberg: table commits)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def export_parquet(index, url: str, scratch: str | os.PathLike | None = None) -> ExportReport:
    """Export what ``index`` holds that the destination lacks (the whole index the first time)
    as Parquet; returns what was written. Running it again with nothing new writes nothing.

    The index is read (under its shared lock) into Parquet files on local disk: in the
    destination's ``_staging/`` when it is a local folder, else in ``scratch`` (default: the
    system's temp folder). They are moved or uploaded after the lock is released, so a slow
    upload never keeps the index's writers waiting."""
    started = time.monotonic()
    dest = open_destination(url)
    _check_writable(dest)
    manifest = read_manifest(dest)
    if manifest is None:
        _refuse_foreign(dest)
        manifest = Manifest()
    removed = _remove_leftovers(dest, manifest)
    exported = _exported(dest, manifest)
    writer = _Writer(dest, manifest.generation + 1, scratch)
    report = ExportReport(url, manifest.generation, 0, manifest.runs, removed_leftovers=removed)
    try:
        with index.connect_readonly() as con:
            new = _new_runs(con, exported["id"])
            changed = _write_tables(con, writer, manifest, exported, new)
        if changed:
            _commit(dest, manifest, writer, changed, new.num_rows, report)
    finally:
        writer.cleanup()
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _commit(dest, manifest: Manifest, writer: _Writer, changed, added: int, report) -> None:
    """Files into place, then the manifest, then the snapshot files it no longer names."""
    old_snapshots = _apply(manifest, writer, changed)
    manifest.generation = writer.generation
    manifest.runs += added
    writer.finish()
    _write_manifest(dest, manifest)
    for rel in old_snapshots:
        _delete(dest, dest.path(rel))
    report.generation = manifest.generation
    report.runs_added = added
    report.runs_total = manifest.runs
    report.files_written = len(writer.written)
    report.bytes_written = sum(f["bytes"] for f in writer.written)
    report.rows = {t: sum(f["rows"] for f in files) for t, files in writer.by_table.items()}


def _check_writable(dest: Destination) -> None:
    """The destination is a folder (or absent, then created), not a file."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        info = dest.fs.get_file_info(dest.root)
        if info.type == pafs.FileType.File:
            raise UsageError(f"export destination {dest.url!r} is a file, not a folder")
        if info.type == pafs.FileType.NotFound:
            dest.fs.create_dir(dest.root)
    except (pa.ArrowException, OSError) as e:
        raise RemoteError(f"cannot reach export destination {dest.url!r}: {_one_line(e)}") from None


def _refuse_foreign(dest: Destination) -> None:
    """No manifest: refuse a folder that holds a remote's packs (export beside them, in
    ``export/``), so cleaning up leftovers never touches anything but an export."""
    import pyarrow.fs as pafs

    info = dest.fs.get_file_info(dest.path("mlvc-remote.json"))
    if info.type != pafs.FileType.NotFound:
        raise UsageError(
            f"{dest.url} is an mlvc remote's root; export to its {REMOTE_FOLDER}/ folder "
            "(give the remote's name, or add /export to the URL's path)"
        )


def _remove_leftovers(dest: Destination, manifest: Manifest) -> int:
    """Delete data files that no manifest names (a crashed export's) and the staging folder."""
    import pyarrow.fs as pafs

    listed = manifest.all_paths()
    removed = 0
    for table in TABLES:
        selector = pafs.FileSelector(dest.path(table), recursive=True, allow_not_found=True)
        for info in dest.fs.get_file_info(selector):
            rel = info.path[len(dest.root) :].lstrip("/")
            name = rel.rsplit("/", 1)[-1]
            if info.type == pafs.FileType.File and _PART.match(name) and rel not in listed:
                _delete(dest, info.path)
                removed += 1
    staging = dest.fs.get_file_info(dest.path(STAGING))
    if staging.type == pafs.FileType.Directory:
        dest.fs.delete_dir(dest.path(STAGING))
    return removed


def _delete(dest: Destination, path: str) -> None:
    import pyarrow as pa

    try:
        dest.fs.delete_file(path)
    except (pa.ArrowException, OSError):
        pass  # gone already; a leftover is removed by the next export anyway


def _exported(dest: Destination, manifest: Manifest) -> dict[str, set[str]]:
    """The runs the export holds, and the trees and environments they name."""
    import pyarrow.dataset as ds

    out: dict[str, set[str]] = {"id": set(), "trees": set(), "envs": set()}
    files = [dest.path(f["path"]) for f in manifest.files("runs")]
    if not files:
        return out
    columns = ["id", "code_tree", "data_tree", "artifacts_tree", "env_id"]
    table = ds.dataset(files, filesystem=dest.fs, format="parquet").to_table(columns=columns)
    out["id"] = set(table["id"].to_pylist())
    for c in ("code_tree", "data_tree", "artifacts_tree"):
        out["trees"].update(v for v in table[c].to_pylist() if v)
    out["envs"] = {v for v in table["env_id"].to_pylist() if v}
    if len(out["id"]) != manifest.runs:
        raise UsageError(
            f"{dest.url}: the manifest counts {manifest.runs} runs but its files hold "
            f"{len(out['id'])}; the export is damaged: remove it and export again"
        )
    return out


def _new_runs(con, exported: set[str]):
    """(id, month) of the runs the index holds and the export lacks, oldest first."""
    import pyarrow as pa

    table = con.sql(f"SELECT id, {MONTH} AS month FROM runs ORDER BY created, id").to_arrow_table()
    if not exported:
        return table
    import pyarrow.compute as pc

    known = pa.array(sorted(exported), pa.string())
    return table.filter(pc.invert(pc.is_in(table["id"], value_set=known)))


def _write_tables(con, writer: _Writer, manifest: Manifest, exported, new) -> set[str]:
    """Write every table's new files; returns the tables that changed."""
    import pyarrow as pa

    changed: set[str] = set()
    con.register("_mlvc_new", new)
    trees, envs = _new_shared(con, new, exported)
    con.register("_mlvc_trees", trees)
    con.register("_mlvc_envs", envs)
    names = {"new": "_mlvc_new", "trees": "_mlvc_trees", "envs": "_mlvc_envs"}
    try:
        for table, sql in RUN_TABLES.items():
            rel = con.sql(sql.format(**names))
            writer.schemas[table] = rel.limit(0).to_arrow_table().schema
            if new.num_rows:
                writer.write(table, rel.to_arrow_reader(1 << 16), partitioned=True)
                changed.add(table)
        for table, sql in SHARED_TABLES.items():
            rel = con.sql(sql.format(**names))
            writer.schemas[table] = rel.limit(0).to_arrow_table().schema
            if (trees if table == "tree_files" else envs).num_rows:
                writer.write(table, rel.to_arrow_reader(1 << 16), partitioned=False)
                changed.add(table)
        for table in SNAPSHOT_TABLES:
            data = con.sql(f"SELECT * FROM {table} ORDER BY ALL").to_arrow_table()
            writer.schemas[table] = data.schema
            digest = _digest(data)
            if digest != manifest.tables.get(table, {}).get("digest"):
                writer.digests[table] = digest
                writer.write(
                    table, pa.RecordBatchReader.from_batches(data.schema, data.to_batches())
                )
                changed.add(table)
    finally:
        for name in names.values():
            con.unregister(name)
    if manifest.generation == 0:
        changed.update(TABLES)  # the first export writes its manifest even when empty
    return changed


def _new_shared(con, new, exported):
    """The tree and environment ids that new runs name and exported runs do not."""
    import pyarrow as pa

    rows = con.sql(
        "SELECT code_tree, data_tree, artifacts_tree, env_id FROM runs "
        "WHERE id IN (SELECT id FROM _mlvc_new)"
    ).fetchall()
    trees = {t for r in rows for t in r[:3] if t} - exported["trees"]
    envs = {r[3] for r in rows if r[3]} - exported["envs"]
    return (
        pa.table({"id": pa.array(sorted(trees), pa.string())}),
        pa.table({"id": pa.array(sorted(envs), pa.string())}),
    )


def _digest(table) -> str:
    """A digest of a snapshot table's content, so an unchanged one is not rewritten."""
    import blake3
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return blake3.blake3(sink.getvalue().to_pybytes()).hexdigest()


def _apply(manifest: Manifest, writer: _Writer, changed: set[str]) -> list[str]:
    """Record the written files in the manifest; returns the snapshot files replaced."""
    old: list[str] = []
    for table in TABLES:
        entry = manifest.tables.setdefault(table, {"files": []})
        entry["kind"] = (
            "runs" if table in RUN_TABLES else "shared" if table in SHARED_TABLES else "snapshot"
        )
        schema = writer.schemas[table]
        entry["schema"] = base64.b64encode(schema.serialize().to_pybytes()).decode()
        if table in SNAPSHOT_TABLES and table in changed:
            old += [f["path"] for f in entry["files"]]
            entry["files"] = []
            entry["digest"] = writer.digests.get(table)
        entry["files"] = entry["files"] + writer.by_table.get(table, [])
    return old


SCRATCH_GRACE_S = 3600.0  # a stage this old belongs to a killed export


def clean_scratch(scratch: str | os.PathLike) -> None:
    """Remove the local stages killed exports left in ``scratch`` (older than an hour)."""
    import shutil

    cutoff = time.time() - SCRATCH_GRACE_S
    try:
        entries = list(os.scandir(scratch))
    except OSError:
        return
    for ent in entries:
        if ent.name.startswith(("mlvc-export-", "mlvc-iceberg-")):
            try:
                if ent.is_dir(follow_symlinks=False) and ent.stat().st_mtime < cutoff:
                    shutil.rmtree(ent.path, ignore_errors=True)
            except OSError:
                continue


class _Writer:
    """Writes one generation's files on local disk, then moves or uploads them into place."""

    def __init__(self, dest: Destination, generation: int, scratch=None):
        import pyarrow.fs as pafs

        self.dest = dest
        self.generation = generation
        self.token = f"{generation:06d}-{secrets.token_hex(4)}"
        self.local = pafs.LocalFileSystem()
        if isinstance(dest.fs, pafs.LocalFileSystem):
            self.stage = dest.path(f"{STAGING}/{self.token}")  # renamed into place
        else:
            scratch = str(scratch or tempfile.gettempdir())
            clean_scratch(scratch)
            self.stage = f"{os.path.abspath(scratch)}/mlvc-export-{self.token}"
        self.staged: list[tuple[str, str]] = []  # (staged local path, path in the export)
        self.written: list[dict] = []
        self.by_table: dict[str, list[dict]] = {}
        self.schemas: dict[str, object] = {}
        self.digests: dict[str, str] = {}

    def write(self, table: str, reader, partitioned: bool = False) -> None:
        import pyarrow as pa
        import pyarrow.dataset as ds

        base = f"{self.stage}/{table}"
        files: list = []
        partitioning = (
            ds.partitioning(pa.schema([("month", pa.string())]), flavor="hive")
            if partitioned
            else None
        )
        fmt = ds.ParquetFileFormat()
        try:
            ds.write_dataset(
                reader,
                base,
                format=fmt,
                file_options=fmt.make_write_options(compression="zstd"),
                filesystem=self.local,
                partitioning=partitioning,
                basename_template=f"part-{self.generation:06d}-{{i}}.parquet",
                existing_data_behavior="overwrite_or_ignore",
                min_rows_per_group=1 << 17,  # not one row group per streamed batch
                max_rows_per_group=1 << 20,
                file_visitor=files.append,
            )
        except (pa.ArrowException, OSError) as e:
            raise MlvcError(f"cannot write {table} under {self.stage}: {_one_line(e)}") from None
        for f in files:
            rel = table + f.path[len(base) :]
            entry = {"path": rel, "rows": f.metadata.num_rows, "bytes": f.size}
            self.by_table.setdefault(table, []).append(entry)
            self.written.append(entry)
            self.staged.append((f.path, rel))

    def finish(self) -> None:
        """Every file into place whole: a rename on local disk (fsynced first), one upload
        each to an object store (complete or absent), an upload then a rename on HDFS."""
        import pyarrow as pa
        import pyarrow.fs as pafs

        local = isinstance(self.dest.fs, pafs.LocalFileSystem)
        dirs: set[str] = set()
        try:
            for src, rel in self.staged:
                final = self.dest.path(rel)
                if local:
                    _sync(self.dest, src)
                elif self.dest.renames:  # HDFS: upload beside, then rename
                    remote = self.dest.path(f"{STAGING}/{self.token}/{rel}")
                    self._upload(src, remote)
                    src = remote
                else:
                    self._upload(src, final)
                    continue
                parent = final.rsplit("/", 1)[0]
                if parent not in dirs:
                    self.dest.fs.create_dir(parent)
                    dirs.add(parent)
                self.dest.fs.move(src, final)
        except (pa.ArrowException, OSError) as e:
            raise RemoteError(f"cannot write to {self.dest.url}: {_one_line(e)}") from None
        for d in dirs:
            _sync_dir(self.dest, d)

    def _upload(self, src: str, dst: str) -> None:
        import pyarrow.fs as pafs

        pafs.copy_files(src, dst, source_filesystem=self.local, destination_filesystem=self.dest.fs)

    def cleanup(self) -> None:
        """Remove what was staged (locally, and in the destination's ``_staging/``)."""
        import pyarrow as pa
        import pyarrow.fs as pafs

        for fs, path in ((self.local, self.stage), (self.dest.fs, self.dest.path(STAGING))):
            try:
                if fs.get_file_info(path).type == pafs.FileType.Directory:
                    fs.delete_dir(path)
            except (pa.ArrowException, OSError):
                pass  # the next export removes leftovers


# -- reading an export ------------------------------------------------------------------------


def open_export(url: str) -> tuple[Destination, Manifest]:
    """The export at ``url`` (or, for a remote's root, in its ``export/`` folder)."""
    dest = open_destination(url)
    manifest = read_manifest(dest)
    if manifest is None:
        inner = open_destination(_child(url, REMOTE_FOLDER))
        manifest = read_manifest(inner)
        dest = inner
    if manifest is None:
        raise UsageError(
            f"no mlvc export at {url} (no {MANIFEST}); write one with `mlvc export parquet {url}`"
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
            raise RemoteError(f"cannot read the export at {url}: {_one_line(e)}") from None
    finally:
        con.close()
