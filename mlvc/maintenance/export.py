"""``mlvc export parquet``: the index as Hive-partitioned Parquet on any pyarrow filesystem, so
engines bigger than one machine (DuckDB, Spark, Trino, Ray) read the team's whole history
where it lives (the terms: export_layout.py; docs/export.md).

Write order, so a crash never leaves a manifest naming a missing file: data files (read from
the index into local files under its shared lock; then renamed into place on a local disk,
uploaded whole to an object store, uploaded and renamed on HDFS) → manifest → old snapshot
files deleted. Files a crashed export left behind are named by no manifest: the next export
deletes them before writing (one exporter per destination at a time). Readers through mlvc
read only what the manifest names.
"""

from __future__ import annotations

import base64
import os
import secrets
import tempfile
import time
from dataclasses import dataclass, field

from ..errors import MlvcError, RemoteError, UsageError
from .export_layout import (
    MONTH,
    PART,
    REMOTE_FOLDER,
    RUN_TABLES,
    SHARED_TABLES,
    SNAPSHOT_TABLES,
    STAGING,
    TABLES,
    Destination,
    Manifest,
    one_line,
    open_destination,
    read_manifest,
    sync_dir,
    sync_file,
    write_manifest,
)

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
    write_manifest(dest, manifest)
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
        raise RemoteError(f"cannot reach export destination {dest.url!r}: {one_line(e)}") from None


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
            if info.type == pafs.FileType.File and PART.match(name) and rel not in listed:
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
    trees, envs = new_shared(con, exported)
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
            digest = content_digest(data)
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


def new_shared(con, exported):
    """The tree and environment ids that the new runs (``_mlvc_new``) name and exported runs
    do not: the Parquet and the Iceberg exports add only those."""
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


def content_digest(table) -> str:
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
            raise MlvcError(f"cannot write {table} under {self.stage}: {one_line(e)}") from None
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
                    sync_file(self.dest, src)
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
            raise RemoteError(f"cannot write to {self.dest.url}: {one_line(e)}") from None
        for d in dirs:
            sync_dir(self.dest, d)

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
