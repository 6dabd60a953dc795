"""runs_wide: one row per run, with a ``params.<key>`` and a ``metrics.<key>`` column per key.

It is a table, not a view, so wide queries scan one row per run. Each ingest keeps it in
step: new runs are appended when their keys and value types fit the columns, and the table
is created again otherwise. Its columns are stored in ``meta`` as a JSON signature
(docs/sql-schema.md says how keys become column names and types).
"""

from __future__ import annotations

import json

from .schema import ident, lit

MAX_WIDE_KEYS = 1000  # params.* / metrics.* columns in runs_wide, each
WIDE_TYPES = {"DOUBLE": "value_num", "BOOLEAN": "value = 'true'", "VARCHAR": "value"}
# What decides a param column's type: which classes of value the key has.
VALUE_CLASS = "CASE WHEN type IN ('int', 'float') THEN 'num' ELSE type END"


def _columns(con) -> list[list]:
    """[column, family, key, SQL type, value classes] of runs_wide's params.* and metrics.*."""
    out, seen = [], set()

    def add(family: str, key: str, sqltype: str, classes: list[str]) -> None:
        # DuckDB identifiers ignore case: of keys differing only in case (LR, lr), the first
        # in byte order keeps the plain name, the others get #2, #3... (docs/sql-schema.md)
        name, n = f"{family}.{key}", 1
        while name.lower() in seen:
            n += 1
            name = f"{family}.{key}#{n}"
        seen.add(name.lower())
        out.append([name, family, key, sqltype, classes])

    rows = con.execute(
        f"SELECT key, list_sort(list(DISTINCT {VALUE_CLASS})) FROM params "
        f"GROUP BY key ORDER BY key LIMIT {MAX_WIDE_KEYS}"
    ).fetchall()
    for key, classes in rows:
        typed = sorted(set(classes) - {"null"})  # one class of value gives a typed column
        sqltype = {"num": "DOUBLE", "bool": "BOOLEAN"}.get(typed[0]) if len(typed) == 1 else None
        add("params", key, sqltype or "VARCHAR", classes)
    metric_keys = con.execute(
        f"SELECT DISTINCT key FROM metric_summary ORDER BY key LIMIT {MAX_WIDE_KEYS}"
    ).fetchall()
    for (key,) in metric_keys:
        add("metrics", key, "DOUBLE", ["num"])
    return out


def _fits(con, columns: list[list], table: str) -> bool:
    """Whether runs_wide's columns stay as they are with the runs listed in ``table``."""
    have = {(family, key): set(classes) for _n, family, key, _t, classes in columns}
    new = con.execute(
        f"SELECT DISTINCT 'params', key, {VALUE_CLASS} FROM params "
        f"WHERE run_id IN (SELECT id FROM {table}) UNION ALL "
        "SELECT DISTINCT 'metrics', key, 'num' FROM metric_summary "
        f"WHERE run_id IN (SELECT id FROM {table})"
    ).fetchall()
    return all(cls in have.get((family, key), ()) for family, key, cls in new)


def _select(columns: list[list[str]], only: str | None = None) -> str:
    """SELECT producing runs_wide rows (only for run ids in table ``only`` when given)."""
    parts = {"params": [], "metrics": []}
    for name, family, key, sqltype, _classes in columns:
        expr = WIDE_TYPES[sqltype] if family == "params" else "last"
        parts[family].append(f"any_value({expr}) FILTER (WHERE key = {lit(key)}) AS {ident(name)}")
    where = f" WHERE run_id IN (SELECT id FROM {only})" if only else ""
    select, joins = ["r.*"], []
    for cols, (table, alias) in zip(
        parts.values(), (("params", "p"), ("metric_summary", "m")), strict=True
    ):
        if cols:
            sub = f"SELECT run_id, {', '.join(cols)} FROM {table}{where} GROUP BY run_id"
            joins.append(f"LEFT JOIN ({sub}) {alias} ON {alias}.run_id = r.id")
            select.append(f"{alias}.* EXCLUDE (run_id)")
    sql = f"SELECT {', '.join(select)} FROM runs r {' '.join(joins)}"
    return sql + (f" WHERE r.id IN (SELECT id FROM {only})" if only else "")


def refresh(con, old: str | None, new: list[str], dropped: bool) -> str:
    """Bring runs_wide up to date; returns its column signature for ``meta``.

    runs_wide is a table, not a view, so wide queries scan one row per run. New runs are
    appended when their keys and value types fit the columns; a new key or a column changing
    type (or runs dropped) creates it again from params and metric_summary. Adding a column
    in place would save little: DuckDB rewrites the table at the next checkpoint anyway.
    """
    import pyarrow as pa

    old_columns = None if dropped else _parse_signature(old)
    con.register("_arrow_new", pa.table({"id": pa.array(new, pa.string())}))
    try:
        if old_columns is not None and _fits(con, old_columns, "_arrow_new"):
            _append(con, old_columns)
            return old
    finally:
        con.unregister("_arrow_new")
    columns = _columns(con)
    con.execute(f"CREATE OR REPLACE TABLE runs_wide AS {_select(columns)}")
    return json.dumps(columns)


def _append(con, columns: list[list]) -> None:
    """Insert the runs_wide rows of the runs listed in ``_arrow_new``."""
    con.execute(f"INSERT INTO runs_wide BY NAME {_select(columns, only='_arrow_new')}")


def _parse_signature(text: str | None) -> list[list] | None:
    """runs_wide's columns as stored in meta, or None (none yet, or from an older mlvc)."""
    try:
        columns = json.loads(text or "null")
    except ValueError:
        return None
    if isinstance(columns, list) and all(len(c) == 5 for c in columns):
        return columns
    return None
