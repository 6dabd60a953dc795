"""MLflow's search language over the index: filter strings (``metrics.acc > 0.5 AND
params.lr = '0.01'``) and ``order_by`` clauses, parsed and translated to SQL over the
index's tables (``runs``, ``params``, ``tags``, ``metric_summary``, ``live_keys``).

Shared by ``mlvc server``'s ``runs/search`` (mlvc.server.mlflow.search, which adds its open
runs and the overlay) and ``mlvc.search_runs``. Values become quoted literals (``lit``),
keys are matched as values, never spliced as identifiers: the SQL holds nothing the filter
could inject. A malformed filter is a ``UsageError`` (HTTP 400, MLflow's
INVALID_PARAMETER_VALUE) naming what is wrong.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import UsageError


def bad(message: str) -> UsageError:
    return UsageError(message)


def lit(text: str) -> str:
    """``text`` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


MAX_RESULTS, DEFAULT_RESULTS = 50_000, 1_000
VIEW_TYPES = {"ACTIVE_ONLY": ("active",), "DELETED_ONLY": ("deleted",),
              "ALL": ("active", "deleted"), "1": ("active",), "2": ("deleted",),
              "3": ("active", "deleted")}  # fmt: skip
STRING_ATTRS = {"run_name", "status", "run_id", "user_id", "lifecycle_stage", "artifact_uri"}
NUMBER_ATTRS = {"start_time", "end_time"}
ATTR_ALIASES = {"attribute", "attributes", "attr", "run"}
_TOKEN = re.compile(
    r"""\s*(?:(?P<str>'(?:[^']|'')*'|"(?:[^"]|"")*")|(?P<op><=|>=|!=|<>|=|<|>|\(|\)|,)"""
    r"""|(?P<num>-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)|(?P<word>`[^`]*`(?:\.`[^`]*`)?|[\w.\-/]+))""",
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise bad(f"invalid filter string at {text[pos : pos + 30]!r}")
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class Cond:
    """One condition: ``family.key op value``."""

    def __init__(self, family: str, key: str, op: str, value: Any):
        self.family, self.key, self.op, self.value = family, key, op, value


def _ident(word: str) -> tuple[str, str]:
    word = word.replace("`", "")
    family, _, key = word.partition(".")
    if not key:
        family, key = "attributes", family
    family = family.lower()
    if family in ATTR_ALIASES:
        family = "attributes"
    elif family in ("metric", "metrics"):
        family = "metrics"
    elif family in ("param", "params", "parameter", "parameters"):
        family = "params"
    elif family in ("tag", "tags"):
        family = "tags"
    else:
        raise bad(f"invalid filter: unknown entity {family!r} (use metrics, params, tags or "
                  "attributes)")  # fmt: skip
    if family == "attributes":
        key = {"run_name": "run_name", "name": "run_name"}.get(key, key)
        if key not in STRING_ATTRS | NUMBER_ATTRS:
            raise bad(f"invalid filter: unknown attribute {key!r}")
    return family, key


def _string(tok: tuple[str, str]) -> str:
    kind, text = tok
    if kind != "str":
        raise bad(f"invalid filter: expected a quoted string, got {text!r}")
    q = text[0]
    return text[1:-1].replace(q + q, q)


def parse_filter(text: str | None) -> list[Cond]:
    if not text or not text.strip():
        return []
    toks = _tokens(text)
    out, i = [], 0
    while i < len(toks):
        if toks[i][0] != "word":
            raise bad(f"invalid filter: expected a key, got {toks[i][1]!r}")
        family, key = _ident(toks[i][1])
        i += 1
        if i >= len(toks):
            raise bad("invalid filter: a condition lacks its operator")
        op = toks[i][1].upper()
        if op == "NOT" and i + 1 < len(toks) and toks[i + 1][1].upper() == "IN":
            op, i = "NOT IN", i + 1
        if op == "<>":
            op = "!="
        if op not in ("=", "!=", "<", "<=", ">", ">=", "LIKE", "ILIKE", "IN", "NOT IN"):
            raise bad(f"invalid filter: unknown operator {toks[i][1]!r}")
        i += 1
        if op in ("IN", "NOT IN"):
            if i >= len(toks) or toks[i][1] != "(":
                raise bad("invalid filter: IN needs a list in parentheses")
            values, i = [], i + 1
            while i < len(toks) and toks[i][1] != ")":
                if toks[i][1] != ",":
                    values.append(_string(toks[i]))
                i += 1
            if i >= len(toks) or not values:
                raise bad("invalid filter: an IN list is not closed or empty")
            i += 1
            value: Any = values
        else:
            if i >= len(toks):
                raise bad("invalid filter: a condition lacks its value")
            numeric = family == "metrics" or key in NUMBER_ATTRS
            if numeric:
                if toks[i][0] != "num" or op in ("LIKE", "ILIKE"):
                    raise bad(f"invalid filter: {family}.{key} compares with a number")
                value = float(toks[i][1])
            else:
                if op in ("<", "<=", ">", ">=") and family != "params":
                    raise bad(f"invalid filter: {op} does not apply to {family}.{key}")
                value = _string(toks[i])
            i += 1
        if op in ("IN", "NOT IN") and (family == "metrics" or key in NUMBER_ATTRS):
            raise bad(f"invalid filter: IN does not apply to {family}.{key}")
        out.append(Cond(family, key, op, value))
        if i < len(toks):
            if toks[i][1].upper() != "AND":
                raise bad(f"invalid filter: expected AND, got {toks[i][1]!r} (MLflow "
                          "filters join conditions with AND only)")  # fmt: skip
            i += 1
            if i >= len(toks):
                raise bad("invalid filter: nothing after AND")
    return out


def parse_order(items: list[str]) -> list[tuple[str, str, bool]]:
    out = []
    for item in items:
        parts = item.strip().split()
        if not parts or len(parts) > 2:
            raise bad(f"invalid order_by clause {item!r}")
        asc = True
        if len(parts) == 2:
            if parts[1].upper() not in ("ASC", "DESC"):
                raise bad(f"invalid order_by clause {item!r}: end it with ASC or DESC")
            asc = parts[1].upper() == "ASC"
        family, key = _ident(parts[0])
        out.append((family, key, asc))
    return out


# -- SQL over the index ------------------------------------------------------------------------

RID = "coalesce(lk.live_key, r.id)"
ATTR_SQL = {
    "run_name": "coalesce(rn.value, r.name)",
    "status": "upper(r.status)",
    "run_id": RID,
    "user_id": "r.author",
    "start_time": "epoch_ms(r.started)",
    "end_time": "epoch_ms(r.ended)",
    "artifact_uri": "'mlflow-artifacts:/' || r.experiment_id || '/' || " + RID + " || '/artifacts'",
}
SQL_OPS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">=", "LIKE": "LIKE",
           "ILIKE": "ILIKE"}  # fmt: skip


def _compare(expr: str, c: Cond) -> str:
    if c.op in ("IN", "NOT IN"):
        return f"{expr} {c.op} ({', '.join(lit(v) for v in c.value)})"
    value = repr(float(c.value)) if isinstance(c.value, float) else lit(c.value)
    if value in ("nan", "inf", "-inf"):
        value = f"'{value}'::DOUBLE"
    return f"{expr} {SQL_OPS[c.op]} {value}"


FAMILY_TABLES = {"metrics": ("metric_summary", "last"), "params": ("params", "value"),
                 "tags": ("tags", "value")}  # fmt: skip


def _sql_cond(c: Cond, overlay: bool = False) -> str:
    if c.family == "attributes":
        if c.key == "lifecycle_stage":
            return "TRUE"  # decided by the overlay, in Python
        return _compare(_attr_sql(c.key, overlay), c)
    table, col = FAMILY_TABLES[c.family]
    recorded = (f"r.id IN (SELECT run_id FROM {table} WHERE key = {lit(c.key)} AND "
                f"{_compare(col, c)})")  # fmt: skip
    if c.family != "tags" or not overlay:
        return recorded
    # a tag set after the run ended (the overlay) wins over the recorded one
    return (f"({RID} IN (SELECT rid FROM _mlflow_tags WHERE key = {lit(c.key)} AND "
            f"{_compare('value', c)}) OR ({recorded} AND {RID} NOT IN "
            f"(SELECT rid FROM _mlflow_masks WHERE key = {lit(c.key)})))")  # fmt: skip


def _attr_sql(key: str, overlay: bool) -> str:
    if key == "run_name" and overlay:  # a name given after the run ended
        return "coalesce(ovn.value, rn.value, r.name)"
    return ATTR_SQL.get(key, "NULL")


def runs_sql(conds, order, experiment_ids, deleted_filter: str, limit: int,
         overlay: bool = False) -> str:  # fmt: skip
    """The page's recorded runs as (oid, sort keys...), ordered and limited in SQL.

    Joins on the 64-character ids are the cost over 100k runs, so the live keys and the
    run-name tags are joined only when a condition or the order needs them (the page's
    live keys are looked up after the LIMIT, ``live_keys``), and an order key that a
    condition also tests is joined once, with the condition (a key has one value a run, so
    the inner join keeps the runs the semi-join did); ties are broken by the object id."""
    used = {c.key for c in conds if c.family == "attributes"}
    used |= {key for family, key, _ in order if family == "attributes"}
    joins = []
    tagged = overlay and (any(c.family == "tags" for c in conds) or
                          any(f == "tags" for f, _, _ in order) or "run_name" in used)  # fmt: skip
    if deleted_filter or used & {"run_id", "artifact_uri"} or tagged:
        joins.append("LEFT JOIN live_keys lk ON lk.run_id = r.id")
    if "run_name" in used:
        joins.append("LEFT JOIN tags rn ON rn.run_id = r.id AND rn.key = 'mlflow.runName'")
        if overlay:
            joins.append(f"LEFT JOIN _mlflow_tags ovn ON ovn.rid = {RID} AND "
                         "ovn.key = 'mlflow.runName'")  # fmt: skip
    sorts = []
    joined: set[int] = set()  # conditions tested in an order key's join
    for n, (family, key, asc) in enumerate(order):
        if family == "attributes":
            expr = _attr_sql(key, overlay)
        else:
            table, col = FAMILY_TABLES[family]
            on = f"o{n}.run_id = r.id AND o{n}.key = {lit(key)}"
            # a tag the overlay may have changed is tested with it (_sql_cond), not here
            folds = not (family == "tags" and overlay)
            tested = [
                i for i, c in enumerate(conds) if folds and (c.family, c.key) == (family, key)
            ]
            if tested:
                on += "".join(f" AND {_compare(f'o{n}.{col}', conds[i])}" for i in tested)
                joined.update(tested)
            joins.append(f"{'JOIN' if tested else 'LEFT JOIN'} {table} o{n} ON {on}")
            expr = f"o{n}.{col}"
            if family == "tags" and overlay:
                joins.append(f"LEFT JOIN _mlflow_tags v{n} ON v{n}.rid = {RID} AND "
                             f"v{n}.key = {lit(key)} LEFT JOIN _mlflow_masks m{n} ON "
                             f"m{n}.rid = {RID} AND m{n}.key = {lit(key)}")  # fmt: skip
                expr = f"coalesce(v{n}.value, CASE WHEN m{n}.rid IS NULL THEN o{n}.value END)"
        sorts.append((expr, asc))
    where = [f"r.experiment_id IN ({', '.join(lit(e) for e in experiment_ids)})"]
    where += [_sql_cond(c, overlay) for i, c in enumerate(conds) if i not in joined]
    if deleted_filter:
        where.append(deleted_filter)
    keys = [f"s{i}" for i in range(len(sorts))]
    select = ", ".join(
        ["r.id AS oid"] + [f"{e} AS {k}" for k, (e, _) in zip(keys, sorts, strict=True)]
    )
    order_sql = ", ".join([f"{k} {'ASC' if a else 'DESC'} NULLS LAST" for k, (_, a) in
                           zip(keys, sorts, strict=True)] + ["oid ASC"])  # fmt: skip
    return (f"SELECT {select} FROM runs r {' '.join(joins)} WHERE {' AND '.join(where)} "
            f"ORDER BY {order_sql} LIMIT {limit}")  # fmt: skip
