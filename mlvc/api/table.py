"""The runs table of the web UI: one page of ``runs_wide`` at a time.

Filtered by a user's SQL ``WHERE`` clause (checked read-only like any user SQL, on the
index's read-only connection), sorted by any columns, optionally grouped by experiment, with
only the columns asked for. Tag columns (``tags.<key>``) are joined from ``tags`` for the keys
a request names, and so are the params and metrics past runs_wide's 1,000 columns per
family (a repository of 1,500 metric keys shows all of them): from ``params`` and
``metric_summary``, for the page's runs only (read in long form and pivoted in Python), or,
when the filter or the sort names them, for every run (one map per run read once per
column). Paging is by offset over a stable order (the run id breaks ties).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from ..errors import QueryError, UsageError
from ..index.user_sql import ident, lit

MAX_LIMIT = 1000
MAX_COLUMNS = 500
MAX_WHERE = 10_000  # characters
DEFAULT_RUN_COLUMNS = ("short_id", "name", "status", "created", "duration_s", "message")
DEFAULT_KEYS = 6  # params and metrics shown by default, each
MAX_TAG_KEYS = 1000
MAX_EXTRA_KEYS = 100_000  # params / metrics past runs_wide's columns, each
# family -> (table, value column) of the keys joined beside runs_wide
JOINED = {"tags": ("tags", "value"), "params": ("params", "value"),
          "metrics": ("metric_summary", "last")}  # fmt: skip
GROUPS = ("", "experiment")


@dataclass(frozen=True)
class Column:
    """A column the table can show: its name in SQL, family (run, params, metrics, tags)
    and DuckDB type."""

    name: str
    family: str
    type: str


def columns(index, described: list[tuple[str, str]] | None = None) -> list[Column]:
    """Every column of ``runs_wide`` (``described``, if already read); the params (VARCHAR)
    and metrics (DOUBLE) it has no column for (past its 1,000 per family); then
    ``tags.<key>`` for each tag key (VARCHAR)."""
    out = [_column(name, sqltype) for name, sqltype in described or _described(index)]
    taken = {c.name.lower() for c in out}
    for family, sqltype in (("params", "VARCHAR"), ("metrics", "DOUBLE")):
        table, _ = JOINED[family]
        keys = index.query(
            f"SELECT DISTINCT key FROM {table} ORDER BY key LIMIT {MAX_EXTRA_KEYS}"
        ).column("key")
        for key in keys.to_pylist():
            name = f"{family}.{key}"
            if name.lower() not in taken:  # keys differing in case: only the first
                taken.add(name.lower())
                out.append(Column(name, family, sqltype))
    tag_keys = index.query(
        f"SELECT DISTINCT key FROM tags ORDER BY key LIMIT {MAX_TAG_KEYS}"
    ).column("key")
    out += [Column(f"tags.{k}", "tags", "VARCHAR") for k in tag_keys.to_pylist()]
    return out


def _described(index) -> list[tuple[str, str]]:
    rows = index.query("DESCRIBE runs_wide")
    return list(
        zip(
            rows.column("column_name").to_pylist(),
            rows.column("column_type").to_pylist(),
            strict=True,
        )
    )


def default_columns(cols: list[Column]) -> list[str]:
    names = {c.name for c in cols}
    out = [c for c in DEFAULT_RUN_COLUMNS if c in names]
    for family in ("params", "metrics"):
        out += [c.name for c in cols if c.family == family][:DEFAULT_KEYS]
    return out


def page(
    index,
    where: str = "",
    order: list[str] | tuple[str, ...] = (),
    shown: list[str] | tuple[str, ...] | None = None,
    offset: int = 0,
    limit: int = 100,
    group: str = "",
    count: bool = True,
) -> dict[str, Any]:
    """One page of the runs table.

    Args:
        where: a SQL boolean expression over the table's columns (``"metrics.acc" > 0.8``).
        order: column names, each optionally prefixed with ``-`` for descending; the
            default is newest first.
        shown: the columns to return (default: ``default_columns``); ``id`` always comes.
        group: ``"experiment"`` sorts by experiment first and returns ``groups``.
        count: whether to count the runs that match (``total``; None when not counted):
            a client paging through a table it already counted saves the query.

    Returns ``{"columns", "rows" (lists, in column order), "ids", "total", "offset",
    "groups" ([{"experiment_id", "count", "start"}] when grouped)}``.
    """
    described = _described(index)
    wide = {name: _column(name, sqltype) for name, sqltype in described}
    # a column asked for twice (?col=name&col=name) comes once
    shown = list(dict.fromkeys(shown)) if shown else default_columns(list(wide.values()))
    if len(shown) > MAX_COLUMNS:
        raise UsageError(f"too many columns ({len(shown)}): at most {MAX_COLUMNS}")
    keys = [(o[1:], True) if o.startswith("-") else (o, False) for o in order]
    if group not in GROUPS:
        raise UsageError(f"unknown grouping {group[:40]!r}: use 'experiment' or nothing")
    if len(where) > MAX_WHERE or "\x00" in where:
        raise UsageError(f"the filter is over {MAX_WHERE} characters or holds a NUL character")
    if not 0 <= limit <= MAX_LIMIT or offset < 0:
        raise UsageError(f"limit must be 0 to {MAX_LIMIT} and offset 0 or more")
    named = [*shown, *(k for k, _ in keys)]
    sorted_by = {k for k, _ in keys}
    # tags, and keys runs_wide has no column for, shown but neither sorted nor filtered on
    # are read for the page's rows only (in long form, pivoted here); looking them up
    # first would read every run's keys (~0.3 s over 2M metric rows), so a key is looked
    # up only if the page's runs have no value for it
    late = _late_columns(shown, set(wide), sorted_by, where)
    # the others are joined for every run when named or in the filter
    joined = _joined(
        index, [n for n in named if n not in wide and n not in late], _quoted(where), set(wide)
    )
    known = {**wide, **{c.name: c for c in joined}, **late}
    for name in named:
        if name not in known:
            raise UsageError(f"unknown column {name[:200]!r}: the table has no such column")
    in_filter = {c.name for c in joined if _mentions(where, c.name)}
    filtered = _relation([c for c in joined if c.name in in_filter])
    base = _relation([c for c in joined if c.name in in_filter | sorted_by])
    # the filter sits on lines of its own so a trailing -- comment cannot swallow the rest
    filt = f"WHERE (\n{where}\n)" if where.strip() else ""
    sort = [f"{ident(k)} {'DESC' if desc else 'ASC'} NULLS LAST" for k, desc in keys]
    sort = ", ".join((["experiment_id"] if group else []) + (sort or ["created DESC"]) + ["id"])
    late_names = set(late)
    names = ["id", *(s for s in shown if s != "id" and s not in late_names)]
    select = ", ".join(ident(n) for n in names)
    query = _filtered_query(index, where)
    ids: list[str] = []
    values: dict[str, list] = {n: [] for n in shown}
    if limit:
        rows = query(
            f"WITH t AS ({base}) SELECT {select} FROM t {filt}\n"
            f"ORDER BY {sort} LIMIT {int(limit)} OFFSET {int(offset)}"
        )
        ids = rows.column("id").to_pylist()
        values.update({n: _pylist(rows.column(n)) for n in names if n in values})
        values.update(_late_values(index, list(late.values()), ids))
    unseen = [n for n in late if not any(v is not None for v in values[n])]
    if unseen:  # no value on this page: does the key exist at all?
        exists = {c.name for c in _joined(index, unseen, [], set(wide))}
        for name in unseen:
            if name not in exists:
                raise UsageError(f"unknown column {name[:200]!r}: the table has no such column")
    total = None
    if count:
        total = query(f"WITH t AS ({filtered}) SELECT count(*) AS n FROM t {filt}\n")
        total = total.column("n").to_pylist()[0]
    cols = [values[n] for n in shown]
    out = {
        "columns": [asdict(known[n]) for n in shown],
        "ids": ids,
        "rows": [list(r) for r in zip(*cols, strict=True)] if cols else [[] for _ in ids],
        "total": total,
        "offset": offset,
        "groups": [],
    }
    if group and count:
        counts = query(
            f"WITH t AS ({filtered}) SELECT experiment_id, count(*) AS n FROM t {filt}\n"
            "GROUP BY experiment_id ORDER BY experiment_id"
        ).to_pylist()
        start = 0
        for g in counts:
            out["groups"].append({"experiment_id": g["experiment_id"], "count": g["n"],
                                  "start": start})  # fmt: skip
            start += g["n"]
    return out


def _filtered_query(index, where: str):
    """``index.query``, whose SQL errors name the filter when there is one: DuckDB's message
    points into the statement the filter was put in, which people never see."""

    def query(sql: str):
        try:
            return index.query(sql)
        except QueryError as e:
            if not where.strip() or type(e) is not QueryError:
                raise
            raise QueryError(
                f"the filter is not a valid SQL condition over the table's columns (it is read "
                f"as WHERE (<filter>)): {e}"
            ) from None

    return query


def _mentions(where: str, name: str) -> bool:
    return any(q.lower() == name.lower() for q in _quoted(where))


def _column(name: str, sqltype: str) -> Column:
    family = name.split(".", 1)[0] if name.startswith(("params.", "metrics.")) else "run"
    return Column(name, family, sqltype)


def _quoted(where: str) -> list[str]:
    """The quoted identifiers in a filter (``"metrics.acc"``, ``"tags.team"``)."""
    return [m.replace('""', '"') for m in re.findall(r'"((?:[^"]|"")+)"', where)]


def _joined(index, names: list[str], mentioned: list[str], wide: set[str]) -> list[Column]:
    """The columns among ``names`` (exactly) and ``mentioned`` (in any case, as SQL reads
    identifiers) that are a tag or a param or metric key runs_wide has no column for:
    one query per family."""
    taken = {n.lower() for n in wide}
    out: dict[str, Column] = {}
    for family, (table, _value) in JOINED.items():
        prefix = family + "."
        exact = {n[len(prefix) :] for n in names if n.startswith(prefix)}
        loose = {n[len(prefix) :].lower() for n in mentioned if n.lower().startswith(prefix)}
        if not exact and not loose:
            continue
        parts = []  # lower(key) on every row doubles the scan: only when needed
        if exact:
            parts.append(f"key IN (SELECT unnest([{', '.join(map(lit, sorted(exact)))}]))")
        if loose:
            parts.append(f"lower(key) IN ({', '.join(map(lit, sorted(loose)))})")
        found = index.query(
            f"SELECT DISTINCT key FROM {table} WHERE {' OR '.join(parts)} ORDER BY key"
        ).column("key")
        sqltype = "DOUBLE" if family == "metrics" else "VARCHAR"
        for key in found.to_pylist():
            name = prefix + key
            if family == "tags" or name.lower() not in taken:
                out.setdefault(name, Column(name, family, sqltype))
    return sorted(out.values(), key=lambda c: c.name)


def _relation(joined: list[Column]) -> str:
    """runs_wide, with the ``joined`` columns (tags, and keys it has no column for) beside."""
    picks, joins = _joins(joined)
    return f"SELECT {', '.join(['w.*', *picks])} FROM runs_wide w {joins}"


def _joins(joined: list[Column]) -> tuple[list[str], str]:
    """The ``joined`` columns' select items and LEFT JOINs onto ``w.id``."""
    select, joins = [], []
    for n, family in enumerate(f for f in JOINED if any(c.family == f for c in joined)):
        cols = [c for c in joined if c.family == family]
        table, value = JOINED[family]
        keys = [c.name.split(".", 1)[1] for c in cols]
        # one map per run, read once per column: a FILTER aggregate per column would scan
        # every row once per column
        picks = ", ".join(f"m[{lit(c.name.split('.', 1)[1])}] AS {ident(c.name)}" for c in cols)
        where = f"key IN ({', '.join(map(lit, keys))})"
        one = (  # a key twice in a run (a tag set twice) gives its largest value
            f"SELECT run_id, key, max({value}) AS v FROM {table} WHERE {where} GROUP BY run_id, key"
        )
        joins.append(
            f"LEFT JOIN (SELECT run_id, {picks} FROM (SELECT run_id, map_from_entries(list((key, "
            f"v))) AS m FROM ({one}) GROUP BY run_id)) j{n} ON j{n}.run_id = w.id"
        )
        select += [f"j{n}.{ident(c.name)}" for c in cols]
    return select, " ".join(joins)


def _pylist(column) -> list:
    """``column.to_pylist()``, but timestamps (UTC or naive, to the microsecond) converted
    here: pyarrow imports pandas to convert them, which a fresh server's first table page
    paid (0.3 s quiet, over 1 s on a loaded machine)."""
    import pyarrow as pa

    kind = column.type
    if not pa.types.is_timestamp(kind) or kind.unit not in _PER_SECOND:
        return column.to_pylist()
    if kind.tz not in (None, "UTC", "Etc/UTC", "+00:00"):
        return column.to_pylist()
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc if kind.tz else None)
    scale = 1_000_000 // _PER_SECOND[kind.unit]
    return [  # a view, not a cast: casting imports pyarrow.compute (0.3 s)
        None if v is None else epoch + timedelta(microseconds=v * scale)
        for chunk in column.chunks
        for v in chunk.view(pa.int64()).to_pylist()
    ]


_PER_SECOND = {"s": 1, "ms": 1000, "us": 1_000_000}


def _late_columns(
    shown: list[str], wide: set[str], sorted_by: set[str], where: str
) -> dict[str, Column]:
    """The columns of ``shown`` read for the page's runs only: a tag, or a param or metric
    key runs_wide has no column for (one differing from a runs_wide column only in case is
    not one), that neither the sort nor the filter names."""
    taken = {n.lower() for n in wide}
    out = {}
    for name in shown:
        family = name.split(".", 1)[0]
        if (
            "." not in name
            or family not in JOINED
            or name in wide
            or name in sorted_by
            or _mentions(where, name)
            or (family != "tags" and name.lower() in taken)
        ):
            continue
        out[name] = Column(name, family, "DOUBLE" if family == "metrics" else "VARCHAR")
    return out


def _late_values(index, late: list[Column], ids: list[str]) -> dict[str, list]:
    """The ``late`` columns' values for the runs ``ids`` (in that order): one query per
    family reading (run, key, value) rows of those runs and keys only, pivoted here. Joining
    a map per run in SQL cost DuckDB ~0.4 s for 500 columns, even for one row."""
    out = {c.name: [None] * len(ids) for c in late}
    if not ids:
        return out
    at = {run: i for i, run in enumerate(ids)}
    for family, (table, value) in JOINED.items():
        cols = {c.name.split(".", 1)[1]: c.name for c in late if c.family == family}
        if not cols:
            continue
        got = index.query(  # a key twice in a run (a tag set twice) gives its largest value
            f"SELECT run_id, key, max({value}) AS v FROM {table} WHERE run_id IN "
            f"({', '.join(map(lit, ids))}) AND key IN (SELECT unnest([{', '.join(map(lit, cols))}])) "
            "GROUP BY run_id, key"
        )
        for run, key, v in zip(*(got.column(n).to_pylist() for n in ("run_id", "key", "v")),
                               strict=True):  # fmt: skip
            out[cols[key]][at[run]] = v
    return out


def experiment_names(refs, store) -> dict[str, str]:
    """{experiment id: name} of the experiments the server's MLflow API made (each a JSON
    blob named by ``refs/mlflow/experiments/<id>``); "0" is "Default"."""
    import json

    out = {"0": "Default"}
    for eid in refs.names("mlflow/experiments"):
        oid = refs.read_or_none(f"refs/mlflow/experiments/{eid}")
        try:
            name = json.loads(store.read_bytes(oid)).get("name") if oid else None
        except (ValueError, AttributeError, OSError):
            name = None
        if isinstance(name, str):
            out[eid] = name
    return out
