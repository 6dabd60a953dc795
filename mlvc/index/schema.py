"""The index's tables (docs/sql-schema.md documents them), its schema version, and the small
SQL helpers every part of the index shares.

An index whose stored ``schema_version`` differs from ``SCHEMA_VERSION`` is rebuilt, not
migrated: it is a cache of objects and refs.
"""

from __future__ import annotations

import re

SCHEMA_VERSION = 9  # 2: model registry tables; 3: live_keys; 4: runs.experiment_id;
# 5: events; 6: model_files, the provenance view and the index on tree_files.object_id;
# 7: runs_wide a view over wide_base and side tables (wide.py); 8: series_levels;
# 9: ref_files

TABLES_DDL = """
CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE runs (
    id VARCHAR PRIMARY KEY, short_id VARCHAR, name VARCHAR, status VARCHAR, message VARCHAR,
    author VARCHAR, parent VARCHAR, parents VARCHAR[], created TIMESTAMPTZ,
    started TIMESTAMPTZ, ended TIMESTAMPTZ, duration_s DOUBLE, command VARCHAR, cwd VARCHAR,
    exit_code BIGINT, code_tree VARCHAR, data_tree VARCHAR, artifacts_tree VARCHAR,
    series_id VARCHAR, env_id VARCHAR, git_commit VARCHAR, git_branch VARCHAR,
    git_dirty BOOLEAN, reproduces VARCHAR, experiment_id VARCHAR);
CREATE TABLE params (run_id VARCHAR, key VARCHAR, value VARCHAR, value_num DOUBLE,
    type VARCHAR);
CREATE TABLE metrics (run_id VARCHAR, key VARCHAR, step BIGINT, timestamp TIMESTAMPTZ,
    value DOUBLE);
CREATE TABLE metric_summary (run_id VARCHAR, key VARCHAR, last DOUBLE, min DOUBLE,
    max DOUBLE, count BIGINT, last_step BIGINT);
-- long series sampled once, at ingest, for charts (series.py: level_points)
CREATE TABLE series_levels (run_id VARCHAR, key VARCHAR, axis VARCHAR, step BIGINT,
    timestamp TIMESTAMPTZ, value DOUBLE);
CREATE TABLE tree_files (tree_id VARCHAR, path VARCHAR, object_id VARCHAR, size BIGINT,
    kind VARCHAR);
CREATE TABLE env_packages (env_id VARCHAR, name VARCHAR, version VARCHAR);
CREATE TABLE tags (run_id VARCHAR, key VARCHAR, value VARCHAR);
CREATE TABLE refs (kind VARCHAR, name VARCHAR, run_id VARCHAR);
-- internal: the identity of each name or tag ref file whose refs row may be kept unread
CREATE TABLE ref_files (kind VARCHAR, name VARCHAR, ino UBIGINT, mtime_ns BIGINT,
    size BIGINT);
CREATE TABLE ingest_errors (run_id VARCHAR, object_id VARCHAR, error VARCHAR);
CREATE TABLE live_keys (run_id VARCHAR, live_key VARCHAR);
CREATE TABLE model_versions (name VARCHAR, version INTEGER, model_id VARCHAR, run_id VARCHAR,
    source VARCHAR, flavor VARCHAR, flavors VARCHAR[], signature VARCHAR,
    registered_by VARCHAR, registered_at TIMESTAMPTZ);
CREATE TABLE model_aliases (name VARCHAR, alias VARCHAR, version INTEGER, model_id VARCHAR,
    set_by VARCHAR, set_at TIMESTAMPTZ);
CREATE TABLE model_alias_log (name VARCHAR, alias VARCHAR, action VARCHAR, version INTEGER,
    previous INTEGER, changed_by VARCHAR, changed_at TIMESTAMPTZ);
CREATE TABLE events (id VARCHAR PRIMARY KEY, type VARCHAR, timestamp TIMESTAMPTZ,
    run_id VARCHAR, name VARCHAR, data VARCHAR);
CREATE TABLE model_files (model_id VARCHAR, path VARCHAR, object_id VARCHAR, size BIGINT,
    kind VARCHAR);
-- `mlvc which` looks files up by content: one ART probe instead of a scan of every file row
CREATE INDEX tree_files_object_id ON tree_files (object_id);
CREATE VIEW files AS
    SELECT s.run_id, s.section, t.path, t.object_id, t.size, t.kind
    FROM (SELECT id AS run_id, 'code' AS section, code_tree AS tree_id FROM runs
          UNION ALL SELECT id, 'data', data_tree FROM runs
          UNION ALL SELECT id, 'artifacts', artifacts_tree FROM runs) s
    JOIN tree_files t ON t.tree_id = s.tree_id;
CREATE VIEW provenance AS
    SELECT t.object_id, s.run_id, s.run_name, s.section,
           CASE s.section WHEN 'artifacts' THEN 'produced' ELSE 'consumed' END AS role,
           t.path, t.size, t.kind, s.created, NULL::VARCHAR AS model_name,
           NULL::INTEGER AS model_version
    FROM tree_files t
    JOIN (SELECT id AS run_id, name AS run_name, 'code' AS section, code_tree AS tree_id,
                 created FROM runs
          UNION ALL SELECT id, name, 'data', data_tree, created FROM runs
          UNION ALL SELECT id, name, 'artifacts', artifacts_tree, created FROM runs) s
      ON s.tree_id = t.tree_id
    UNION ALL
    SELECT m.object_id, v.run_id, NULL, 'model', 'registered', m.path, m.size, m.kind,
           v.registered_at, v.name, v.version
    FROM model_files m JOIN model_versions v ON v.model_id = m.model_id;
CREATE VIEW packages AS
    SELECT r.id AS run_id, p.name, p.version
    FROM runs r JOIN env_packages p ON p.env_id = r.env_id;
"""

PROBE_LITERALS = 256  # values probed as an SQL list; more go in a registered Arrow table

# Tables holding one run's rows, cleared when the run's ref is deleted.
RUN_TABLES = (
    "runs",
    "params",
    "metrics",
    "metric_summary",
    "series_levels",
    "tags",
    "ingest_errors",
    "live_keys",
)
# Tables filled row by row (their DDL fixes each row's column order): per run, and shared.
RUN_ROWS = ("runs", "params", "metrics", "tags", "ingest_errors", "live_keys")
SHARED_ROWS = ("tree_files", "env_packages", "ingest_errors")
# Tables (and the view over some) an ingest brings up to date from the named refs, the model
# registry and the event journal rather than from the run journal: a read that names none of
# them needs only the journalled runs ingested (``journal.runs_only``).
NOT_JOURNALLED = frozenset({
    "meta", "refs", "ref_files", "events", "provenance",
    "model_versions", "model_aliases", "model_alias_log", "model_files",
})  # fmt: skip
# Tables whose Arrow schemas a decoder needs (decode.py): those above, and metric_summary.
DECODED = (*RUN_ROWS, "metric_summary", *SHARED_ROWS)


def create(con) -> None:
    """The tables of an empty index at this schema version (runs_wide without key columns)."""
    from . import wide

    con.execute(TABLES_DDL)
    wide.rewrite(con)
    write_meta(con, {"schema_version": str(SCHEMA_VERSION)})


def is_current(meta: dict[str, str]) -> bool:
    """Whether an index with this ``meta`` has the tables this mlvc writes."""
    return meta.get("schema_version") == str(SCHEMA_VERSION)


def read_meta(con) -> dict[str, str]:
    return dict(con.execute("SELECT key, value FROM meta").fetchall())


def write_meta(con, values: dict[str, str]) -> None:
    """Set these ``meta`` entries, in one statement (one per entry cost an ingest ~2 ms each)."""
    if not values:
        return
    rows = ", ".join(["(?, ?)"] * len(values))
    con.execute(
        f"INSERT OR REPLACE INTO meta VALUES {rows}", [x for kv in values.items() for x in kv]
    )


# The tables TABLES_DDL creates: their columns are fixed for this SCHEMA_VERSION (wide.py's
# tables are not), so their Arrow schemas are asked of DuckDB once per process.
FIXED = frozenset(re.findall(r"CREATE TABLE (\w+)", TABLES_DDL))
_ARROW_SCHEMAS: dict[str, object] = {}


def arrow_schema(con, table: str):
    """The Arrow schema of an index table (its columns in DDL order). A fixed table's is
    remembered: asking DuckDB cost ~1 ms a table, 11 per ingest of one run."""
    known = _ARROW_SCHEMAS.get(table)
    if known is None:
        known = con.sql(f"SELECT * FROM {ident(table)} LIMIT 0").to_arrow_table().schema
        if table in FIXED:
            _ARROW_SCHEMAS[table] = known
    return known


def insert(con, table: str, data) -> None:
    """One INSERT of a whole Arrow table, matched by column name."""
    name = f"_arrow_{table}"
    con.register(name, data)
    try:
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {name}")
    finally:
        con.unregister(name)


def indexed(con, ids: list[str]) -> set[str]:
    """Which of these run ids the index holds."""
    if 0 < len(ids) <= PROBE_LITERALS:  # a probe of the primary key's index
        listed = ", ".join(lit(i) for i in ids)
        return {r[0] for r in con.execute(f"SELECT id FROM runs WHERE id IN ({listed})").fetchall()}
    return present(con, "SELECT id FROM runs", ids)


def present(con, select: str, values) -> set[str]:
    """Which of ``values`` the one-column query ``select`` returns. A few are given as a
    literal list (registering an Arrow table for them cost ~1.5 ms more than the probe)."""
    values = sorted(values)
    if not values:
        return set()
    if len(values) <= PROBE_LITERALS:
        listed = ", ".join(f"({lit(v)})" for v in values)
        rows = con.execute(f"SELECT v FROM (VALUES {listed}) t(v) WHERE v IN ({select})")
        return {r[0] for r in rows.fetchall()}
    import pyarrow as pa

    con.register("_arrow_probe", pa.table({"v": pa.array(values, pa.string())}))
    try:
        rows = con.execute(f"SELECT v FROM _arrow_probe WHERE v IN ({select})").fetchall()
        return {r[0] for r in rows}
    finally:
        con.unregister("_arrow_probe")


def lit(text: str) -> str:
    """``text`` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def ident(text: str) -> str:
    """``text`` as an SQL identifier (any characters)."""
    return '"' + text.replace('"', '""') + '"'
