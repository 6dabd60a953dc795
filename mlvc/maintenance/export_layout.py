"""What a Parquet export is (docs/export.md): where it goes, its tables, its manifest.

Terms:
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

``export.py`` writes an export, ``export_query.py`` reads one, ``iceberg.py`` writes the same
tables as Iceberg.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from .._version import __version__
from ..core.layout import Layout
from ..errors import RemoteError, UsageError

MANIFEST = "_mlvc_export.json"
FORMAT = 1
STAGING = "_staging"
REMOTE_FOLDER = "export"  # where a configured remote keeps its export
MONTH = "strftime(coalesce(started, created), '%Y-%m')"
PART = re.compile(r"^part-\d{6}-\d+\.parquet$")
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
    return child_url(remote, folder)


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


def child_url(url: str, name: str) -> str:
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
        raise UsageError(f"export destination {url!r}: {one_line(e)}") from None
    root = root.rstrip("/") or root
    if urlsplit(url).scheme in OBJECT_STORES and not root.strip("/"):
        raise UsageError(f"export destination {url!r}: name a bucket (s3://BUCKET/PREFIX)")
    return Destination(url, fs, root)


def one_line(e: BaseException) -> str:
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
        raise RemoteError(f"cannot read {where}: {one_line(e)}") from None
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
            f"{where} is not an mlvc export manifest this version reads: {one_line(e)}"
        ) from None
    return manifest


def _check_rel(path: str, table: str) -> None:
    parts = path.split("/")
    if (
        parts[0] != table
        or any(p in ("", ".", "..") for p in parts)
        or "\\" in path
        or not PART.match(parts[-1])
    ):
        raise ValueError(f"file {path!r} lies outside table {table!r}")


def _missing(e: BaseException) -> bool:
    text = str(e)
    return "does not exist" in text or "NoSuchKey" in text or "Path does not exist" in text


def write_manifest(dest: Destination, manifest: Manifest) -> None:
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
    sync_file(dest, tmp)
    try:
        dest.fs.move(tmp, final)
    except OSError:  # HDFS does not rename over a file
        dest.fs.delete_file(final)
        dest.fs.move(tmp, final)
    sync_dir(dest, dest.root)


def sync_file(dest: Destination, path: str) -> None:
    """fsync a local file, so the manifest never lands before the data it names."""
    import pyarrow.fs as pafs

    if isinstance(dest.fs, pafs.LocalFileSystem):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def sync_dir(dest: Destination, path: str) -> None:
    import pyarrow.fs as pafs

    if isinstance(dest.fs, pafs.LocalFileSystem):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
