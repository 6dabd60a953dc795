"""runs_wide: one row per run, with a ``params.<key>`` and a ``metrics.<key>`` column per key.

runs_wide is a view over tables, so that a new key costs no rewrite of 100,000 rows:

- ``wide_base``: every column of ``runs``, plus the key columns known when it was last
  written whole; one row per run.
- ``wide_1``, ``wide_2``, ...: side tables, one per ingest that brought new keys: ``id`` and
  those keys' columns, with a row only for the runs holding one of them (runs are immutable,
  so only new runs can).

The view lists the columns in one canonical order (``runs``' columns, then params, then
metrics, each by key), so its answers do not depend on the order keys arrived in. Adding a
column to ``wide_base`` in place would not help: DuckDB rewrites the whole table at the next
checkpoint. It is written whole again (side tables folded in) when runs are dropped, a column
changes type or name, or the side tables hold more than SIDE_SHARE of the runs; side tables
past MAX_SIDE_TABLES are merged into one (a copy of their few rows, not of wide_base).
The layout is stored in ``meta`` as JSON (docs/sql-schema.md says how keys become column names
and types).
"""

from __future__ import annotations

import json

from .schema import arrow_schema, ident, insert, lit

MAX_WIDE_KEYS = 1000  # params.* / metrics.* columns in runs_wide, each
FILTER_MAX_COLUMNS = 32  # columns of one type pivoted by filters; more go through PIVOT
MAX_SIDE_TABLES = 8  # side tables before wide_base is written whole again
SIDE_SHARE = 0.25  # ... or when they hold more rows than this share of the runs
BASE = "wide_base"
WIDE_TYPES = {"DOUBLE": "value_num", "BOOLEAN": "value = 'true'", "VARCHAR": "value"}
# What decides a param column's type: which classes of value the key has.
VALUE_CLASS = "CASE WHEN type IN ('int', 'float') THEN 'num' ELSE type END"
FAMILIES = {"params": ("params", "p"), "metrics": ("metric_summary", "m")}
PIVOT_IN_PYTHON = 5000  # the new runs' key rows pivoted in Python up to this; SQL beyond
HELD = tuple(table for table, _ in FAMILIES.values())  # the key rows' tables


def _sqltype(family: str, classes) -> str:
    if family == "metrics":
        return "DOUBLE"
    typed = sorted(set(classes) - {"null"})  # one class of value gives a typed column
    one = typed[0] if len(typed) == 1 else None
    return {"num": "DOUBLE", "bool": "BOOLEAN"}.get(one, "VARCHAR")


def _names(keys: dict[str, list[str]]) -> dict[tuple[str, str], str]:
    """Column name of each (family, key), keys given sorted per family.

    DuckDB identifiers ignore case: of keys differing only in case (LR, lr), the first in
    byte order keeps the plain name, the others get #2, #3... (docs/sql-schema.md)
    """
    out, seen = {}, set()
    for family, family_keys in keys.items():
        for key in family_keys:
            name, n = f"{family}.{key}", 1
            while name.lower() in seen:
                n += 1
                name = f"{family}.{key}#{n}"
            seen.add(name.lower())
            out[family, key] = name
    return out


def _columns(con) -> list[list]:
    """[column, family, key, SQL type, value classes, table] of every key column, all in
    wide_base (the layout of a whole rewrite)."""
    classes = {
        ("params", key): cls
        for key, cls in con.execute(
            f"SELECT key, list_sort(list(DISTINCT {VALUE_CLASS})) FROM params "
            f"GROUP BY key ORDER BY key LIMIT {MAX_WIDE_KEYS}"
        ).fetchall()
    }
    for (key,) in con.execute(
        f"SELECT DISTINCT key FROM metric_summary ORDER BY key LIMIT {MAX_WIDE_KEYS}"
    ).fetchall():
        classes["metrics", key] = ["num"]
    return _layout(classes, {})


def _layout(classes: dict[tuple, list[str]], tables: dict[tuple, str]) -> list[list]:
    """Columns in canonical order (params, then metrics, by key), each in ``tables``' table
    (default wide_base)."""
    keys = {f: sorted(k for fam, k in classes if fam == f) for f in FAMILIES}
    names = _names(keys)
    return [
        [names[f, k], f, k, _sqltype(f, classes[f, k]), classes[f, k], tables.get((f, k), BASE)]
        for f in FAMILIES
        for k in keys[f]
    ]


def _pivot(columns: list[list], only: str | None, sources: dict | None = None) -> dict[str, str]:
    """Subqueries of run_id and these columns' values (runs in ``only``), by alias: one per
    family and SQL type.

    Up to FILTER_MAX_COLUMNS columns, one ``any_value(v) FILTER (WHERE key = ...)`` each;
    beyond, DuckDB's PIVOT, its columns renamed by position (its output follows the IN list).
    The filters cost time quadratic in the columns (1,000: 18 s for 3 runs, PIVOT 0.06 s),
    PIVOT a grouping by key first (25 columns over 100,000 runs: 0.87 s CPU, filters 0.58 s).
    """
    out = {}
    for family, (table, alias) in FAMILIES.items():
        table = (sources or {}).get(family, table)
        for sqltype, expr in WIDE_TYPES.items():
            cols = [c for c in columns if c[1] == family and c[3] == sqltype]
            if not cols:
                continue
            value = expr if family == "params" else "last"
            keys = ", ".join(lit(c[2]) for c in cols)
            where = f"key IN ({keys})" + (f" AND run_id IN (SELECT id FROM {only})" if only else "")
            rows = f"SELECT run_id, key, {value} AS v FROM {table} WHERE {where}"
            if len(cols) <= FILTER_MAX_COLUMNS:
                exprs = ", ".join(
                    f"any_value(v) FILTER (WHERE key = {lit(c[2])}) AS {ident(c[0])}" for c in cols
                )
                sub = f"SELECT run_id, {exprs} FROM ({rows}) GROUP BY run_id"
            else:
                names = ", ".join(ident(c[0]) for c in cols)
                sub = (
                    f"SELECT * FROM (PIVOT ({rows}) ON key IN ({keys}) USING any_value(v) "
                    f"GROUP BY run_id) AS _pivot(run_id, {names})"
                )
            out[f"{alias}{len(out)}"] = sub
    return out


def _base_select(columns: list[list], only: str | None = None, sources=None) -> str:
    """SELECT producing wide_base rows: runs' columns and these key columns (the runs in
    ``only``: all of ``sources["runs"]`` when given, which holds just those runs' rows)."""
    select, joins = ["r.*"], []
    for alias, sub in _pivot(columns, only, sources).items():
        joins.append(f"LEFT JOIN ({sub}) {alias} ON {alias}.run_id = r.id")
        select.append(f"{alias}.* EXCLUDE (run_id)")
    runs = (sources or {}).get("runs")
    sql = f"SELECT {', '.join(select)} FROM {runs or 'runs'} r {' '.join(joins)}"
    return sql + (f" WHERE r.id IN (SELECT id FROM {only})" if only and not runs else "")


def _side_select(columns: list[list], only: str, sources=None) -> str:
    """SELECT producing side table rows: runs in ``only`` holding one of these keys."""
    subs = _pivot(columns, only, sources)
    ids = " UNION ".join(f"SELECT run_id FROM ({sub})" for sub in subs.values())
    select, joins = ["i.run_id AS id"], []
    for alias, sub in subs.items():
        joins.append(f"LEFT JOIN ({sub}) {alias} ON {alias}.run_id = i.run_id")
        select.append(f"{alias}.* EXCLUDE (run_id)")
    return f"SELECT {', '.join(select)} FROM ({ids}) i {' '.join(joins)}"


def refresh(con, old: str | None, new: list[str], dropped: bool, rows: dict | None = None) -> str:
    """Bring runs_wide up to date with the runs ``new`` (ingested) and ``dropped``; returns
    its layout for ``meta``. ``rows``: the ``runs``, ``params`` and ``metric_summary`` rows
    of the new runs (Arrow tables), if the caller holds them: then growing runs_wide reads
    those instead of scanning the whole tables for the new runs' rows (at 100,000 runs, 2 M
    params rows: most of the 85 ms of CPU an ingest of one run with a new key took), and
    pivots them in Python when they are few (PIVOT_IN_PYTHON)."""
    import pyarrow as pa

    state = None if dropped else _parse(old)
    if state is None:
        return json.dumps(rewrite(con, state))
    rows = {t: (rows or {}).get(t) for t in ("runs", *HELD)}
    if None not in rows.values() and sum(len(rows[t]) for t in HELD) <= PIVOT_IN_PYTHON:
        grown = _grow(con, state, {}, rows)  # few rows in hand: nothing to register
    else:
        con.register("_arrow_new", pa.table({"id": pa.array(new, pa.string())}))
        sources = {}
        for source, table in (*((f, t) for f, (t, _) in FAMILIES.items()), ("runs", "runs")):
            if rows.get(table) is not None:
                sources[source] = f"_arrow_new_{table}"
                con.register(sources[source], rows[table])
        try:
            grown = _grow(con, state, sources)
        finally:
            for name in ["_arrow_new", *sources.values()]:
                con.unregister(name)
    return json.dumps(rewrite(con, state) if grown is None else grown)


def rewrite(con, state: dict | None = None) -> dict:
    """Write wide_base whole from params and metric_summary, dropping side tables."""
    for (name,) in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
        "AND regexp_matches(table_name, '^wide_[0-9]+$')"
    ).fetchall():
        con.execute(f"DROP TABLE {ident(name)}")
    columns = _columns(con)
    con.execute(f"CREATE OR REPLACE TABLE {BASE} AS {_base_select(columns)}")
    state = {"columns": columns, "tables": [], "side_rows": 0}
    _view(con, state)
    return state


def _grow(con, state: dict, sources: dict, rows: dict | None = None) -> dict | None:
    """Append the new runs, from their ``rows`` in hand (pivoted in Python) or by SQL over
    ``sources`` and ``_arrow_new`` (their ids): new keys go to a new side table. None when
    wide_base must be written whole instead."""
    columns, tables = state["columns"], list(state["tables"])
    have = {(c[1], c[2]): c for c in columns}
    found: dict[tuple, set] = {}
    for family, key, cls in _found(con, sources, rows):
        found.setdefault((family, key), set()).add(cls)
    if any(k in have and not cls <= set(have[k][4]) for k, cls in found.items()):
        return None  # a column changes type
    classes = {k: c[4] for k, c in have.items()}
    for k, cls in found.items():
        classes.setdefault(k, sorted(cls))
    for family in FAMILIES:  # the first MAX_WIDE_KEYS keys of each family, as a rewrite
        extra = sorted(k for f, k in classes if f == family)[MAX_WIDE_KEYS:]
        for key in extra:
            if (family, key) in have:
                return None  # a new key pushes an old column out
            del classes[family, key]
    added = [k for k in classes if k not in have]
    if added and len(tables) >= MAX_SIDE_TABLES:
        columns, tables = _merge_sides(con, columns, tables)
        have = {(c[1], c[2]): c for c in columns}
    side = f"wide_{len(tables) + 1}"
    layout = _layout(classes, {**{k: c[5] for k, c in have.items()}, **dict.fromkeys(added, side)})
    if any(c[0] != have[c[1], c[2]][0] for c in layout if (c[1], c[2]) in have):
        return None  # a new key renames an old column (keys differing in case)
    if added:
        con.execute(
            f"CREATE TABLE {side} (id VARCHAR, "
            + ", ".join(f"{ident(c[0])} {c[3]}" for c in layout if c[5] == side)
            + ")"
        )
        tables.append(side)
    base = [c for c in layout if c[5] == BASE]
    few = rows is not None
    if few:
        pivoted = _pivot_rows(base + [c for c in layout if c[5] != BASE], rows)
        _insert_pivoted(con, BASE, base, pivoted, rows["runs"])
    else:
        con.execute(f"INSERT INTO {BASE} BY NAME {_base_select(base, '_arrow_new', sources)}")
    side_rows = state["side_rows"]
    for table in tables:  # only those holding a key of the new runs get rows
        cols = [c for c in layout if c[5] == table and (c[1], c[2]) in found]
        if cols and few:
            side_rows += _insert_pivoted(con, table, cols, pivoted)
        elif cols:
            sql = f"INSERT INTO {table} BY NAME {_side_select(cols, '_arrow_new', sources)}"
            side_rows += con.execute(sql).fetchall()[0][0]  # rows inserted
    if side_rows > SIDE_SHARE * max(
        con.execute("SELECT count(*) FROM runs").fetchall()[0][0], 4000
    ):
        return None
    state = {"columns": layout, "tables": tables, "side_rows": side_rows}
    if added:
        _view(con, state)
    return state


def _pivot_rows(columns: list[list], rows: dict) -> dict[str, dict[str, object]]:
    """run id -> {column name: value} of these key columns, from the new runs' ``rows``:
    what ``_pivot``'s SQL gives (a run with a row of the key gets the column, even if the
    value is null), without planning a query of one FILTER per column (~15 ms a run)."""
    by_key = {(c[1], c[2]): c for c in columns}
    out: dict[str, dict[str, object]] = {}
    params = rows["params"]
    for rid, key, value, num in zip(
        *(params[n].to_pylist() for n in ("run_id", "key", "value", "value_num")), strict=True
    ):
        col = by_key.get(("params", key))
        if col is not None:  # WIDE_TYPES: the value each SQL type takes
            if col[3] == "DOUBLE":
                value = num
            elif col[3] == "BOOLEAN" and value is not None:
                value = value == "true"
            out.setdefault(rid, {})[col[0]] = value
    summary = rows["metric_summary"]
    for rid, key, last in zip(
        *(summary[n].to_pylist() for n in ("run_id", "key", "last")), strict=True
    ):
        col = by_key.get(("metrics", key))
        if col is not None:
            out.setdefault(rid, {})[col[0]] = last
    return out


def _insert_pivoted(con, table: str, columns: list[list], pivoted: dict, runs=None) -> int:
    """Insert into ``table`` one row per run of ``runs`` (Arrow rows of ``runs``) with these
    key columns, or without ``runs``, an ``id`` row per run holding one of them; returns
    the rows inserted."""
    import pyarrow as pa

    types = {"DOUBLE": pa.float64(), "BOOLEAN": pa.bool_(), "VARCHAR": pa.string()}
    names = {c[0] for c in columns}
    if runs is None:
        ids = sorted(rid for rid, values in pivoted.items() if names & values.keys())
        data = pa.table({"id": pa.array(ids, pa.string())})
    else:
        ids, data = runs["id"].to_pylist(), runs
    for col in columns:
        values = [pivoted.get(rid, {}).get(col[0]) for rid in ids]
        data = data.append_column(col[0], pa.array(values, types[col[3]]))
    if len(data):
        insert(con, table, data)
    return len(data)


def _found(con, sources: dict, rows: dict | None) -> list[tuple]:
    """(family, key, value class) of the new runs' keys, distinct: from their rows in hand
    without a query, else from ``sources`` or the tables."""
    if rows is not None:
        import pyarrow.compute as pc

        # compute kernels, not Table.group_by: that imports pyarrow.acero and with it
        # pyarrow.dataset and every file system (~0.15 s of CPU in a process that reads)
        params, classes = rows["params"], {"int": "num", "float": "num"}  # VALUE_CLASS
        out = set()
        for kind in pc.unique(params["type"]).to_pylist():
            of = pc.is_null(params["type"]) if kind is None else pc.equal(params["type"], kind)
            keys = pc.unique(params["key"].filter(of)).to_pylist()
            out.update(("params", key, classes.get(kind, kind)) for key in keys)
        summary = pc.unique(rows["metric_summary"]["key"]).to_pylist()
        return [*out, *(("metrics", key, "num") for key in summary)]
    return con.execute(
        f"SELECT DISTINCT 'params', key, {VALUE_CLASS} FROM {sources.get('params', 'params')} "
        "WHERE run_id IN (SELECT id FROM _arrow_new) UNION ALL "
        f"SELECT DISTINCT 'metrics', key, 'num' FROM {sources.get('metrics', 'metric_summary')} "
        "WHERE run_id IN (SELECT id FROM _arrow_new)"
    ).fetchall()


def _merge_sides(con, columns: list[list], tables: list[str]) -> tuple[list[list], list[str]]:
    """The side tables folded into one, ``wide_1``: a fold that costs the side tables' rows
    (runs that brought keys after wide_base was written), not wide_base's 100,000 (which
    took 1.8 s of wall, 0.6 s of CPU). wide_base is written whole only when the side
    tables hold SIDE_SHARE of the runs."""
    aliases = {t: f"s{n}" for n, t in enumerate(tables, 1)}
    ids = " UNION ".join(f"SELECT id FROM {t}" for t in tables)
    select = ["i.id"] + [f"{aliases[c[5]]}.{ident(c[0])}" for c in columns if c[5] in aliases]
    joins = "".join(f" LEFT JOIN {t} {a} ON {a}.id = i.id" for t, a in aliases.items())
    con.execute(f"CREATE TABLE wide_merging AS SELECT {', '.join(select)} FROM ({ids}) i{joins}")
    for t in tables:
        con.execute(f"DROP TABLE {t}")
    con.execute("ALTER TABLE wide_merging RENAME TO wide_1")
    return [[*c[:5], "wide_1"] if c[5] in aliases else c for c in columns], ["wide_1"]


def _view(con, state: dict) -> None:
    """runs_wide: runs' columns, then the key columns in canonical order."""
    run_cols = arrow_schema(con, "runs").names
    aliases = {BASE: "b", **{t: f"s{n}" for n, t in enumerate(state["tables"], 1)}}
    select = [f"b.{ident(c)}" for c in run_cols]
    select += [f"{aliases[c[5]]}.{ident(c[0])}" for c in state["columns"]]
    joins = "".join(
        f" LEFT JOIN {t} {aliases[t]} ON {aliases[t]}.id = b.id" for t in state["tables"]
    )
    con.execute(
        f"CREATE OR REPLACE VIEW runs_wide AS SELECT {', '.join(select)} FROM {BASE} b{joins}"
    )


def _parse(text: str | None) -> dict | None:
    """runs_wide's layout as stored in meta, or None (none yet, or unreadable)."""
    try:
        state = json.loads(text or "null")
    except ValueError:
        return None
    if (
        isinstance(state, dict)
        and all(len(c) == 6 for c in state.get("columns", [None]))
        and isinstance(state.get("tables"), list)
        and isinstance(state.get("side_rows"), int)
    ):
        return state
    return None
