"""The runs table of the web UI: one page of ``runs_wide`` at a time.

Filtered by a user's SQL ``WHERE`` clause (checked read-only like any user SQL, on the
index's read-only connection), sorted by any columns, optionally grouped by experiment, with
only the columns asked for. Tag columns (``tags.<key>``) are joined from ``tags`` for the keys
a request names. Paging is by offset over a stable order (the run id breaks ties).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import UsageError
from ..index.user_sql import ident, lit

MAX_LIMIT = 1000
MAX_COLUMNS = 500
MAX_WHERE = 10_000  # characters
DEFAULT_RUN_COLUMNS = ("short_id", "name", "status", "created", "duration_s", "message")
DEFAULT_KEYS = 6  # params and metrics shown by default, each
MAX_TAG_KEYS = 1000
GROUPS = ("", "experiment")


@dataclass(frozen=True)
class Column:
    """A column the table can show: its name in SQL, family (run, params, metrics, tags)
    and DuckDB type."""

    name: str
    family: str
    type: str


def columns(index) -> list[Column]:
    """Every column of ``runs_wide``, then ``tags.<key>`` for each tag key (VARCHAR)."""
    out = []
    for name, sqltype in _described(index):
        family = name.split(".", 1)[0] if name.startswith(("params.", "metrics.")) else "run"
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
) -> dict[str, Any]:
    """One page of the runs table.

    Args:
        where: a SQL boolean expression over the table's columns (``"metrics.acc" > 0.8``).
        order: column names, each optionally prefixed with ``-`` for descending; the
            default is newest first.
        shown: the columns to return (default: ``default_columns``); ``id`` always comes.
        group: ``"experiment"`` sorts by experiment first and returns ``groups``.

    Returns ``{"columns", "rows" (lists, in column order), "ids", "total", "offset",
    "groups" ([{"experiment_id", "count", "start"}] when grouped)}``.
    """
    known = {c.name: c for c in columns(index)}
    shown = list(shown) if shown else default_columns(list(known.values()))
    if len(shown) > MAX_COLUMNS:
        raise UsageError(f"too many columns ({len(shown)}): at most {MAX_COLUMNS}")
    keys = [(o[1:], True) if o.startswith("-") else (o, False) for o in order]
    for name in [*shown, *(k for k, _ in keys)]:
        if name not in known:
            raise UsageError(f"unknown column {name[:200]!r}: the table has no such column")
    if group not in GROUPS:
        raise UsageError(f"unknown grouping {group[:40]!r}: use 'experiment' or nothing")
    if len(where) > MAX_WHERE or "\x00" in where:
        raise UsageError(f"the filter is over {MAX_WHERE} characters or holds a NUL character")
    if not 0 <= limit <= MAX_LIMIT or offset < 0:
        raise UsageError(f"limit must be 0 to {MAX_LIMIT} and offset 0 or more")
    tags = {n for n in [*shown, *(k for k, _ in keys)] if known[n].family == "tags"}
    tags |= {n for n in known if n.startswith("tags.") and _mentions(where, n)}
    base = _relation(sorted(tags))
    # the filter sits on lines of its own so a trailing -- comment cannot swallow the rest
    filt = f"WHERE (\n{where}\n)" if where.strip() else ""
    sort = [f"{ident(k)} {'DESC' if desc else 'ASC'} NULLS LAST" for k, desc in keys]
    sort = (["experiment_id"] if group else []) + (sort or ["created DESC"]) + ["id"]
    select = ", ".join(ident(n) for n in ["id", *(s for s in shown if s != "id")])
    rows = index.query(
        f"WITH t AS ({base}) SELECT {select} FROM t {filt}\n"
        f"ORDER BY {', '.join(sort)} LIMIT {int(limit)} OFFSET {int(offset)}"
    )
    total = index.query(f"WITH t AS ({base}) SELECT count(*) AS n FROM t {filt}\n")
    out = {
        "columns": [asdict(known[n]) for n in shown],
        "ids": rows.column("id").to_pylist(),
        "rows": _rows(rows, shown),
        "total": total.column("n")[0].as_py(),
        "offset": offset,
        "groups": [],
    }
    if group:
        counts = index.query(
            f"WITH t AS ({base}) SELECT experiment_id, count(*) AS n FROM t {filt}\n"
            "GROUP BY experiment_id ORDER BY experiment_id"
        ).to_pylist()
        start = 0
        for g in counts:
            out["groups"].append({"experiment_id": g["experiment_id"], "count": g["n"],
                                  "start": start})  # fmt: skip
            start += g["n"]
    return out


def _mentions(where: str, name: str) -> bool:
    return re.search(re.escape(ident(name)), where, re.IGNORECASE) is not None


def _relation(tag_columns: list[str]) -> str:
    if not tag_columns:
        return "SELECT * FROM runs_wide"
    picks = ", ".join(
        f"max(value) FILTER (WHERE key = {lit(n[5:])}) AS {ident(n)}" for n in tag_columns
    )
    return (
        f"SELECT w.*, {', '.join('g.' + ident(n) for n in tag_columns)} FROM runs_wide w "
        f"LEFT JOIN (SELECT run_id, {picks} FROM tags GROUP BY run_id) g ON g.run_id = w.id"
    )


def _rows(table, shown: list[str]) -> list[list]:
    cols = [table.column(n).to_pylist() for n in shown]
    return (
        [list(r) for r in zip(*cols, strict=True)] if cols else [[] for _ in range(table.num_rows)]
    )


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
