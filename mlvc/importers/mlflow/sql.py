"""Reading MLflow's SQL store (``sqlite:///mlflow.db``, ``postgresql://``, ``mysql://``):
one reader for the one schema, through DB-API drivers that hand back Arrow where they can
(ADBC for SQLite and PostgreSQL; PyMySQL for MySQL, fetched in bulk). Metric points are read
columnar for a batch of runs at once and never touched one by one in Python.

The schema is checked before anything is read: every table and column used here must be
there, else the import stops with the schema's alembic version named.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from ...errors import ImportSourceError, MissingExtra, UsageError
from .files import local_artifacts
from .source import (
    LOGGED_MODEL_ID,
    Artifact,
    Experiment,
    LoggedModel,
    ModelVersion,
    RegisteredModel,
    RunData,
    RunInfo,
    check_run_id,
    dataset_input,
    logged_status,
    version_files,
)

if TYPE_CHECKING:
    import pyarrow as pa

# every table and column read here; a schema lacking one is not one this importer knows
COLUMNS = {
    "experiments": ("experiment_id", "name", "artifact_location", "lifecycle_stage",
                    "creation_time", "last_update_time"),
    "experiment_tags": ("key", "value", "experiment_id"),
    "runs": ("run_uuid", "name", "user_id", "status", "start_time", "end_time",
             "lifecycle_stage", "artifact_uri", "experiment_id"),
    "params": ("key", "value", "run_uuid"),
    "tags": ("key", "value", "run_uuid"),
    "metrics": ("key", "value", "timestamp", "run_uuid", "step", "is_nan"),
    "inputs": ("input_uuid", "source_type", "source_id", "destination_type", "destination_id"),
    "datasets": ("dataset_uuid", "name", "digest", "dataset_source_type", "dataset_source",
                 "dataset_schema", "dataset_profile"),
    "input_tags": ("input_uuid", "name", "value"),
    "registered_models": ("name", "creation_time", "last_updated_time", "description"),
    "registered_model_tags": ("key", "value", "name"),
    "registered_model_aliases": ("alias", "version", "name"),
    "model_versions": ("name", "version", "creation_time", "last_updated_time", "description",
                       "user_id", "current_stage", "source", "run_id"),
    "model_version_tags": ("key", "value", "name", "version"),
}  # fmt: skip
MAX_FLOAT = sys.float_info.max  # MLflow's SQL store writes ±inf as ±max (MySQL has no inf)


def _connect(uri: str) -> tuple[Any, str]:
    """A DB-API connection for ``uri`` and the dialect's name."""
    parts = urlsplit(uri)
    dialect = parts.scheme.split("+", 1)[0].lower()
    try:
        if dialect == "sqlite":
            path = unquote(uri.split("://", 1)[1].lstrip("/"))
            path = "/" + path if uri.startswith("sqlite:////") or parts.path.startswith("//") \
                else path  # fmt: skip
            return _sqlite(path), "sqlite"
        if dialect in ("postgresql", "postgres"):
            try:
                import adbc_driver_postgresql as pg
            except ImportError:
                raise MissingExtra(
                    "reading a PostgreSQL MLflow store needs adbc-driver-postgresql: "
                    "pip install 'mlvc[mlflow-import]'"
                ) from None
            return Adbc(pg.connect(parts._replace(scheme="postgresql").geturl())), "postgresql"
        if dialect == "mysql":
            try:
                import pymysql
            except ImportError:
                raise MissingExtra(
                    "reading a MySQL MLflow store needs pymysql: pip install 'mlvc[mlflow-import]'"
                ) from None
            con = pymysql.connect(
                host=parts.hostname or "localhost", port=parts.port or 3306,
                user=unquote(parts.username or ""), password=unquote(parts.password or ""),
                database=parts.path.lstrip("/"),
            )  # fmt: skip
            return con, "mysql"
    except (MissingExtra, ImportSourceError):
        raise
    except Exception as e:  # every driver has its own error classes
        raise ImportSourceError(f"cannot open the MLflow store {_safe(uri)}: {_first(e)}") from None
    raise UsageError(f"unknown SQL store {_safe(uri)}: use sqlite://, postgresql:// or mysql://")


def _sqlite(path: str):
    import os

    if not os.path.isfile(path):
        raise ImportSourceError(f"no MLflow database at {path}; check the sqlite:/// path")
    try:
        import adbc_driver_sqlite as lite
    except ImportError:  # the standard library's driver: the same SQL, fetched in bulk
        import sqlite3

        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    return Adbc(lite.connect(f"file:{path}?mode=ro"))


class Adbc:
    """An ADBC connection through the driver manager's low-level API: Arrow streams straight
    from the driver, without its DB-API layer (whose import brings pandas: ~1 s of CPU at
    start-up, a third of a million-point import)."""

    def __init__(self, database):
        import adbc_driver_manager as adbc

        self.database = database
        self.conn = adbc.AdbcConnection(database)

    def table(self, sql: str) -> pa.Table:
        import adbc_driver_manager as adbc
        import pyarrow as pa

        stmt = adbc.AdbcStatement(self.conn)
        try:
            stmt.set_sql_query(sql)
            stream, _ = stmt.execute_query()
            return pa.RecordBatchReader._import_from_c(stream.address).read_all()
        finally:
            stmt.close()

    def close(self) -> None:
        self.conn.close()
        self.database.close()


def _first(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


def _safe(uri: str) -> str:
    """``uri`` without its password."""
    parts = urlsplit(uri)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return uri


def _in(ids: list[str]) -> str:
    """A SQL list of checked run ids (no quoting needed: letters, digits, - and _)."""
    return "(" + ",".join(f"'{check_run_id(i)}'" for i in ids) + ")"


class SqlSource:
    def __init__(self, uri: str):
        self.description = _safe(uri)
        self.con, self.dialect = _connect(uri)
        self.version = self._check_schema()

    def close(self) -> None:
        try:
            self.con.close()
        except Exception:
            pass

    def _dialect(self, sql: str) -> str:
        """``sql`` (identifiers quoted "so", as ``key``, reserved in MySQL) for the dialect:
        MySQL quotes them `so` (string literals here are always in single quotes)."""
        return sql.replace('"', "`") if self.dialect == "mysql" else sql

    def table(self, sql: str) -> pa.Table:
        """The answer to ``sql`` as an Arrow table (Arrow straight from ADBC drivers)."""
        import pyarrow as pa

        sql = self._dialect(sql)

        if isinstance(self.con, Adbc):
            return self.con.table(sql)
        cur = self.con.cursor()
        try:
            cur.execute(sql)
            if hasattr(cur, "fetch_arrow_table"):
                return cur.fetch_arrow_table()
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
        finally:
            cur.close()
        cols = list(zip(*rows, strict=True)) if rows else [()] * len(names)
        return pa.table({n: pa.array(list(c)) for n, c in zip(names, cols, strict=True)})

    def rows(self, sql: str) -> list[tuple]:
        sql = self._dialect(sql)
        if isinstance(self.con, Adbc):
            t = self.con.table(sql)
            return list(zip(*(c.to_pylist() for c in t.columns), strict=True))
        cur = self.con.cursor()
        try:
            cur.execute(sql)
            return [tuple(r) for r in cur.fetchall()]
        finally:
            cur.close()

    def _check_schema(self) -> str:
        try:
            version = self.rows("SELECT version_num FROM alembic_version")
        except Exception:
            raise ImportSourceError(
                f"{self.description} is not an MLflow database (no alembic_version table)"
            ) from None
        version_text = version[0][0] if version else "none"
        for table, columns in COLUMNS.items():
            try:
                quoted = ", ".join(f'"{c}"' for c in columns)
                self.rows(f"SELECT {quoted} FROM {table} WHERE 1 = 0")
            except Exception:
                raise ImportSourceError(
                    f"MLflow schema version {version_text} of {self.description} is not one mlvc "
                    f"knows (its {table} table lacks a column mlvc reads); upgrade mlvc, or "
                    "run `mlflow db upgrade` on a copy of the database"
                ) from None
        return version_text

    # -- experiments and runs ---------------------------------------------------------------

    def experiments(self) -> list[Experiment]:
        tags: dict[str, dict[str, str]] = {}
        for k, v, eid in self.rows('SELECT "key", value, experiment_id FROM experiment_tags'):
            tags.setdefault(str(eid), {})[k] = v or ""
        out = []
        for eid, name, loc, stage, created, updated in self.rows(
            "SELECT experiment_id, name, artifact_location, lifecycle_stage, creation_time, "
            "last_update_time FROM experiments ORDER BY experiment_id"
        ):
            out.append(Experiment(str(eid), name, loc or "", stage or "active",
                                  _int(created), _int(updated), tags.get(str(eid), {})))  # fmt: skip
        return out

    def runs(self, experiment_ids: list[str]) -> list[RunInfo]:
        if not experiment_ids:
            return []
        ids = ",".join(str(int(e)) for e in experiment_ids if e.isdigit())
        out = []
        for row in self.rows(
            "SELECT run_uuid, experiment_id, name, user_id, status, start_time, end_time, "
            f"lifecycle_stage, artifact_uri FROM runs WHERE experiment_id IN ({ids}) "
            "ORDER BY start_time, run_uuid"
        ):
            rid, eid, name, user, status, start, end, stage, uri = row
            out.append(RunInfo(check_run_id(rid), str(eid), name or "", user or "", status,
                               _int(start), _int(end), stage or "active", uri or ""))  # fmt: skip
        return out

    def details(self, runs: list[RunInfo]) -> Iterator[RunData]:
        if not runs:
            return
        where = _in([r.run_id for r in runs])
        params: dict[str, dict[str, str]] = {}
        for k, v, rid in self.rows(
            f'SELECT "key", value, run_uuid FROM params WHERE run_uuid IN {where}'
        ):
            params.setdefault(rid, {})[k] = v if v is not None else ""
        tags: dict[str, dict[str, str]] = {}
        for k, v, rid in self.rows(
            f'SELECT "key", value, run_uuid FROM tags WHERE run_uuid IN {where}'
        ):
            tags.setdefault(rid, {})[k] = v if v is not None else ""
        inputs = self._inputs(where)
        series = self._metrics(runs, where)
        for r in runs:
            yield RunData(r, params.get(r.run_id, {}), tags.get(r.run_id, {}),
                          series.get(r.run_id) or _empty(), inputs.get(r.run_id, []),
                          metrics_sorted=True)  # fmt: skip

    def _metrics(self, runs: list[RunInfo], where: str) -> dict[str, pa.Table]:
        """Each run's points in the order of MLflow's (run_uuid, key, step) index (the
        database walks it: no sort). From SQLite, a query per run (no 32-byte run id per
        point to carry: ~25% less CPU for the fetch); from a server, one for the batch, cut
        by run."""
        import pyarrow as pa
        import pyarrow.compute as pc

        cols = '"key", step, timestamp, value, is_nan FROM metrics'
        if self.dialect == "sqlite":
            parts = [_typed(self.table(f"SELECT {cols} WHERE run_uuid = "
                                       f"'{check_run_id(r.run_id)}' ORDER BY \"key\", step"))
                     for r in runs]  # fmt: skip
            t = pa.concat_tables(parts) if parts else None
            bounds = [(r.run_id, len(p)) for r, p in zip(runs, parts, strict=True) if len(p)]
        else:
            t = self.table(f'SELECT run_uuid, {cols} WHERE run_uuid IN {where} '
                           'ORDER BY run_uuid, "key", step')  # fmt: skip
            bounds = None
        if t is None or t.num_rows == 0:
            return {}
        value = t["value"].cast(pa.float64())
        is_nan = pc.not_equal(t["is_nan"].cast(pa.int64()), 0)
        value = pc.if_else(is_nan, math.nan, value)
        value = pc.if_else(pc.equal(value, MAX_FLOAT), math.inf, value)
        value = pc.if_else(pc.equal(value, -MAX_FLOAT), -math.inf, value)
        points = pa.table({
            "key": t["key"].cast(pa.string()), "step": t["step"].cast(pa.int64()),
            "timestamp": t["timestamp"].cast(pa.int64()), "value": value,
        })  # fmt: skip
        if bounds is None:
            return split_by_run(t["run_uuid"].cast(pa.string()), points)
        out, start = {}, 0
        for rid, n in bounds:
            out[rid] = points.slice(start, n)
            start += n
        return out

    def _inputs(self, where: str) -> dict[str, list[dict]]:
        rows = self.rows(
            "SELECT i.input_uuid, i.destination_id, d.name, d.digest, d.dataset_source_type, "
            "d.dataset_source, d.dataset_schema, d.dataset_profile FROM inputs i "
            "JOIN datasets d ON i.source_id = d.dataset_uuid "
            "WHERE i.source_type = 'DATASET' AND i.destination_type = 'RUN' "
            f"AND i.destination_id IN {where} ORDER BY i.input_uuid"
        )
        if not rows:
            return {}
        ids = ",".join("'" + str(r[0]).replace("'", "''") + "'" for r in rows)
        tags: dict[str, dict[str, str]] = {}
        for uuid, k, v in self.rows(
            f"SELECT input_uuid, name, value FROM input_tags WHERE input_uuid IN ({ids})"
        ):
            tags.setdefault(uuid, {})[k] = v or ""
        out: dict[str, list[dict]] = {}
        for uuid, rid, name, digest, stype, source, schema, profile in rows:
            ds = {"name": name, "digest": digest, "source_type": stype, "source": source,
                  "schema": schema, "profile": profile}  # fmt: skip
            out.setdefault(rid, []).append(dataset_input(ds, tags.get(uuid, {})))
        return out

    def artifacts(self, run: RunInfo) -> Iterator[Artifact]:
        return local_artifacts(run.artifact_uri)

    def registry(self) -> list[RegisteredModel]:
        models = {}
        for name, created, updated, desc in self.rows(
            "SELECT name, creation_time, last_updated_time, description FROM registered_models "
            "ORDER BY name"
        ):
            models[name] = RegisteredModel(name, _int(created), _int(updated), desc or "")
        for k, v, name in self.rows('SELECT "key", value, name FROM registered_model_tags'):
            if name in models:
                models[name].tags[k] = v or ""
        for alias, version, name in self.rows(
            "SELECT alias, version, name FROM registered_model_aliases"
        ):
            if name in models:
                models[name].aliases[alias] = int(version)
        tags: dict[tuple, dict[str, str]] = {}
        for k, v, name, version in self.rows(
            'SELECT "key", value, name, version FROM model_version_tags'
        ):
            tags.setdefault((name, int(version)), {})[k] = v or ""
        for row in self.rows(
            "SELECT name, version, creation_time, last_updated_time, description, user_id, "
            "current_stage, source, run_id FROM model_versions ORDER BY name, version"
        ):
            name, version, created, updated, desc, user, stage, source, run_id = row
            if name in models:
                models[name].versions.append(ModelVersion(
                    int(version), _int(created), _int(updated), desc or "", user or "",
                    stage or "None", source or "", run_id or "",
                    tags.get((name, int(version)), {}),
                ))  # fmt: skip
        return list(models.values())

    def model_files(self, version: ModelVersion, runs: dict[str, RunInfo]) -> list[Artifact]:
        return version_files(version, runs, self.artifacts)

    def logged_models(self, experiment_ids: list[str]) -> list[LoggedModel]:
        """``logged_models`` with its params and tags (a schema older than MLflow 3 has
        none: [])."""
        ids = ",".join(str(int(e)) for e in experiment_ids if e.isdigit())
        if not ids:
            return []
        try:
            rows = self.rows(
                "SELECT model_id, experiment_id, name, artifact_location, creation_timestamp_ms, "
                "last_updated_timestamp_ms, status, lifecycle_stage, model_type, source_run_id, "
                f"status_message FROM logged_models WHERE experiment_id IN ({ids}) "
                "ORDER BY creation_timestamp_ms, model_id"
            )
            params = self.rows("SELECT model_id, param_key, param_value FROM logged_model_params")
            tags = self.rows("SELECT model_id, tag_key, tag_value FROM logged_model_tags")
        except Exception:  # no such tables: an MLflow 2 schema
            return []
        out = {}
        for mid, eid, name, loc, created, updated, status, stage, mtype, rid, message in rows:
            if not LOGGED_MODEL_ID.match(str(mid)):
                continue
            out[mid] = LoggedModel(
                mid, str(eid), name or "", loc or "", _int(created), _int(updated),
                logged_status(status), mtype or "", rid or "", message or "",
                deleted=stage == "deleted",
            )  # fmt: skip
        for mid, k, v in params:
            if mid in out:
                out[mid].params[k] = v or ""
        for mid, k, v in tags:
            if mid in out:
                out[mid].tags[k] = v or ""
        return list(out.values())

    def logged_model_files(self, model: LoggedModel) -> Iterator[Artifact]:
        return local_artifacts(model.artifact_location)


def split_by_run(run_ids: pa.ChunkedArray, points: pa.Table) -> dict[str, pa.Table]:
    """``points`` cut into one table per run id, the rows sorted by run already."""
    import pyarrow.compute as pc

    counts = pc.value_counts(run_ids)  # sorted input: in order of the runs
    out, start = {}, 0
    for rid, n in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(),
                      strict=True):  # fmt: skip
        out[rid] = points.slice(start, n)
        start += n
    return out


def _typed(t: pa.Table) -> pa.Table:
    """A run's metric rows in one schema whatever SQLite's dynamic types gave (each query's
    column types are inferred from its own rows)."""
    import pyarrow as pa

    schema = pa.schema([("key", pa.string()), ("step", pa.int64()), ("timestamp", pa.int64()),
                        ("value", pa.float64()), ("is_nan", pa.int64())])  # fmt: skip
    if t.schema == schema:
        return t
    return pa.table([t[f.name].cast(f.type) for f in schema], schema=schema)


def _empty() -> pa.Table:
    from .source import metrics_table

    return metrics_table()


def _int(value: Any) -> int | None:
    return int(value) if value is not None else None
