"""Metric alert rules (``[[alerts]]`` in mlvc.toml) and their evaluation over points.

A rule watches one metric of the runs in its scope (``experiment``, ``tags``). Its condition
is ``when``, an SQL boolean expression over ``value`` and ``step`` (``isnan(value)``,
``value > 2.5 AND step > 100``), where ``value`` is the point's value or, with ``window =
k``, the ``agg`` (mean, min, max, last) of the last k points; and/or ``compare``: the value
is worse than a reference — the run's parent (``"parent"``) or a registered model's run
(``"models:/clf@champion"``, ``"models:/clf/3"``) — by more than ``worse_by`` (``"5%"``
or an absolute number), lower being better with ``direction = "min"`` (the default) and
higher with ``"max"``. A run whose rule turns true fires ``alert.fired``; turning false
again fires ``alert.resolved``. ``throttle`` keeps a rule from firing on one run more often
than that (a fire within it is silent, and so is its resolve).

The SQL runs in an in-memory DuckDB with external access off and its configuration locked,
after the safe user-SQL check (mlvc.index.user_sql); a rule that does not parse or names
anything but ``value`` and ``step`` is refused when the rules are loaded, in one line naming
the rule. Evaluation happens off the training process (mlvc.runs.watch).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..core.events import parse_duration
from ..errors import MlvcError, UsageError

AGGS = {"mean": "avg", "min": "min", "max": "max", "last": "last"}
DIRECTIONS = ("min", "max")
KEYS = {
    "name", "metric", "when", "window", "agg", "compare", "worse_by", "direction",
    "experiment", "tags", "throttle",
}  # fmt: skip
MAX_WINDOW = 100_000
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_MODEL = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))")


@dataclass(frozen=True)
class Rule:
    """One ``[[alerts]]`` table, checked."""

    name: str
    metric: str
    when: str | None = None
    window: int = 1
    agg: str = "last"
    compare: str | None = None
    worse_by: float = 0.0
    worse_pct: bool = False
    direction: str = "min"
    experiment: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    throttle: float = 0.0

    def in_scope(self, experiment: str, tags: dict[str, Any]) -> bool:
        if self.experiment is not None and str(experiment) != self.experiment:
            return False
        return all(str(tags.get(k)) == v for k, v in self.tags.items())

    def worse(self, value: float, reference: float) -> bool:
        """Whether ``value`` is worse than ``reference`` by more than ``worse_by``."""
        if math.isnan(value):
            return True  # a NaN is worse than any number
        margin = abs(reference) * self.worse_by if self.worse_pct else self.worse_by
        gap = value - reference if self.direction == "min" else reference - value
        return gap > margin

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.name, "metric": self.metric}
        if self.when:
            out["when"] = self.when
        if self.window > 1:
            out.update(window=self.window, agg=self.agg)
        if self.compare:
            worse = f"{self.worse_by * 100:g}%" if self.worse_pct else self.worse_by
            out.update(compare=self.compare, worse_by=worse, direction=self.direction)
        return out


def load_rules(raw: dict, source: str = "mlvc.toml", check_sql: bool = True) -> list[Rule]:
    """The ``[[alerts]]`` of a parsed mlvc.toml; UsageError naming the rule and its problem."""
    tables = raw.get("alerts", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise UsageError(f"{source}: alerts must be [[alerts]] tables")
    rules, names = [], set()
    for k, table in enumerate(tables):
        rule = _rule(table, f"{source}: alert rule #{k + 1}", source)
        if rule.name in names:
            raise UsageError(f"{source}: alert rule {rule.name!r} is defined twice")
        names.add(rule.name)
        if check_sql:
            check_when(rule, source)
        rules.append(rule)
    return rules


def stall_after(raw: dict, source: str = "mlvc.toml") -> float | None:
    """``[events] stall_after`` in seconds (None: stalls are not watched)."""
    section = raw.get("events", {})
    if not isinstance(section, dict):
        raise UsageError(f"{source}: [events] must be a table")
    value = section.get("stall_after")
    if value is None:
        return None
    try:
        seconds = parse_duration(str(value))
    except ValueError as e:
        raise UsageError(f"{source}: [events] stall_after: {e}") from None
    if seconds <= 0:
        raise UsageError(f"{source}: [events] stall_after must be more than 0")
    return seconds


def _rule(t: dict, where: str, source: str) -> Rule:
    name = t.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UsageError(f"{where}: name must be letters, digits, '_', '.', '-' (got {name!r})")
    where = f"{source}: alert rule {name!r}"
    unknown = sorted(set(t) - KEYS)
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(KEYS))})")
    metric = t.get("metric")
    if not isinstance(metric, str) or not metric:
        raise UsageError(f"{where}: metric must name a metric")
    when = t.get("when")
    if when is not None and (not isinstance(when, str) or not when.strip()):
        raise UsageError(f"{where}: when must be an SQL expression over value and step")
    window = t.get("window", 1)
    if not isinstance(window, int) or isinstance(window, bool) or not 1 <= window <= MAX_WINDOW:
        raise UsageError(f"{where}: window must be a whole number of points, 1 to {MAX_WINDOW}")
    agg = t.get("agg", "mean" if window > 1 else "last")
    if agg not in AGGS:
        raise UsageError(f"{where}: agg must be one of {', '.join(AGGS)} (got {agg!r})")
    compare = t.get("compare")
    if compare is not None and (
        not isinstance(compare, str) or (compare != "parent" and not _MODEL.fullmatch(compare))
    ):
        raise UsageError(
            f'{where}: compare must be "parent" or a model such as "models:/clf@champion" '
            f'or "models:/clf/3" (got {compare!r})'
        )
    if when is None and compare is None:
        raise UsageError(f"{where}: give when (an SQL condition), compare, or both")
    worse_by, pct = _worse_by(t.get("worse_by", 0), where)
    direction = t.get("direction", "min")
    if direction not in DIRECTIONS:
        raise UsageError(f'{where}: direction must be "min" or "max" (got {direction!r})')
    experiment = t.get("experiment")
    if experiment is not None and not isinstance(experiment, (str, int)):
        raise UsageError(f"{where}: experiment must be an experiment id")
    tags = t.get("tags", {})
    if not isinstance(tags, dict) or not all(isinstance(k, str) for k in tags):
        raise UsageError(f'{where}: tags must be a table such as {{team = "vision"}}')
    throttle = t.get("throttle", 0)
    try:
        throttle_s = parse_duration(throttle) if isinstance(throttle, str) else float(throttle)
    except (TypeError, ValueError) as e:
        raise UsageError(f"{where}: throttle: {e}") from None
    if not throttle_s >= 0:
        raise UsageError(f"{where}: throttle must be 0 or more")
    return Rule(
        name, metric, when, window, agg, compare, worse_by, pct, direction,
        None if experiment is None else str(experiment),
        {k: str(v) for k, v in tags.items()}, throttle_s,
    )  # fmt: skip


def _worse_by(value: Any, where: str) -> tuple[float, bool]:
    text = str(value).strip()
    pct = text.endswith("%")
    try:
        number = float(text[:-1] if pct else text)
    except ValueError:
        number = float("nan")
    if not math.isfinite(number) or number < 0:
        raise UsageError(f'{where}: worse_by must be a number >= 0 or a percentage like "5%"')
    return (number / 100 if pct else number), pct


# -- evaluation ------------------------------------------------------------------------------


def connect():
    """An in-memory DuckDB for rule SQL: no files, no network, settings locked."""
    import duckdb

    con = duckdb.connect(":memory:", config={"enable_external_access": False})
    con.execute("SET lock_configuration = true")
    return con


def check_when(rule: Rule, source: str = "mlvc.toml", con=None) -> None:
    """Refuse a ``when`` that is not one read-only boolean expression over value and step;
    the error names the rule's own expression and one reason (DuckDB's text rewritten: it
    speaks of the query the expression is wrapped in)."""
    if not rule.when:
        return
    import duckdb

    from ..index.user_sql import check_read_only, first_line

    where = f"{source}: alert rule {rule.name!r}: when {rule.when!r}"
    points = "SELECT 1::BIGINT AS seq, 0::BIGINT AS step, 0.5::DOUBLE AS value"
    own = con is None
    con = con or connect()
    try:
        check_read_only(f"SELECT {rule.when}")
        if len(duckdb.extract_statements(f"SELECT {rule.when}")) != 1:
            raise UsageError("it must be one expression (no ';')")
        con.execute(f"SELECT ({rule.when}) AS hit FROM ({points}) AS points")  # its own errors
        types = [d[1] for d in con.execute(_sql(rule, points)).description]
    except MlvcError as e:
        raise UsageError(f"{where}: {_reason(e.message)}") from None
    except duckdb.Error as e:
        raise UsageError(f"{where}: {_reason(first_line(e))}") from None
    finally:
        if own:
            con.close()
    if str(types[-1]).upper() != "BOOLEAN":
        raise UsageError(f"{where}: it is {types[-1]}, not a true/false condition")


def _reason(error: str) -> str:
    """One line saying what is wrong with a rule's expression, from DuckDB's error."""
    msg = re.sub(r"^[A-Za-z ]*Error: ", "", error.strip())
    column = re.search(r'Referenced column "([^"]+)" not found', msg)
    if column:
        return f'unknown name "{column.group(1)}": a rule sees value and step'
    if "GROUP BY" in msg or "aggregate" in msg.lower():
        return (
            "aggregate functions are not allowed in when; to look at several points use "
            f"window = k with agg = one of {', '.join(AGGS)}"
        )
    return msg.split("! Candidate bindings")[0].rstrip("!")


def _sql(rule: Rule, source: str) -> str:
    k = rule.window
    frame = f"ROWS BETWEEN {k - 1} PRECEDING AND CURRENT ROW"
    value = "value" if rule.agg == "last" or k == 1 else f"{AGGS[rule.agg]}(value) OVER w"
    cond = f"({rule.when})" if rule.when else "TRUE"
    return (
        f"SELECT seq, step, value, n, {cond} AS hit FROM ("
        f"SELECT seq, step, {value} AS value, count(*) OVER w AS n FROM ({source}) "
        f"WINDOW w AS (ORDER BY seq {frame}))\nORDER BY seq"
    )


def evaluate(
    con,
    rule: Rule,
    tail: list[tuple[int, float]],
    points: list[tuple[int, float]],
    reference: float | None = None,
) -> list[tuple[int, float, bool]]:
    """(step, value the rule saw, hit) for each of ``points`` ((step, value), in order);
    ``tail`` holds up to window-1 points before them. ``reference``: the compared value
    (None: a compare rule never holds)."""  # fmt: skip
    import pyarrow as pa

    rows = [*tail, *points]
    table = pa.table(
        {
            "seq": pa.array(range(len(rows)), pa.int64()),
            "step": pa.array([s for s, _ in rows], pa.int64()),
            "value": pa.array([v for _, v in rows], pa.float64()),
        }
    )
    con.register("_pts", table)
    try:
        got = con.execute(_sql(rule, "SELECT * FROM _pts")).fetchall()
    finally:
        con.unregister("_pts")
    out = []
    for _seq, step, value, n, hit in got[len(tail) :]:
        ok = bool(hit) and n >= rule.window
        if ok and rule.compare:
            ok = reference is not None and not math.isnan(reference)
            ok = ok and rule.worse(value, reference)
        out.append((step, value, ok))
    return out


def model_ref(compare: str) -> tuple[str, str | None, int | None]:
    """(model name, alias, version) of a ``models:/`` compare target."""
    m = _MODEL.fullmatch(compare)
    assert m is not None
    return m["name"], m["alias"], int(m["version"]) if m["version"] else None


@dataclass
class RuleState:
    """One rule on one run: whether it is alerting, when it last fired, the last points."""

    alerting: bool = False
    silent: bool = False  # the current alert was throttled: its resolve is silent too
    fired_us: int = 0
    tail: list[tuple[int, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        tail = [[s, _num(v)] for s, v in self.tail]
        return {"alerting": self.alerting, "silent": self.silent, "fired_us": self.fired_us,
                "tail": tail}  # fmt: skip

    @classmethod
    def from_dict(cls, d: Any) -> RuleState:
        if not isinstance(d, dict):
            return cls()
        tail = [(int(s), float(v)) for s, v in d.get("tail", []) if isinstance(s, int)]
        return cls(bool(d.get("alerting")), bool(d.get("silent")), int(d.get("fired_us", 0)),
                   tail)  # fmt: skip


def _num(v: float) -> float | str:
    return v if math.isfinite(v) else str(v)


def step_rule(
    state: RuleState, rule: Rule, results: list[tuple[int, float, bool]], now_us: int
) -> list[tuple[str, int, float]]:
    """Walk the results through the rule's state: the transitions to announce, as
    (``alert.fired``/``alert.resolved``, step, value)."""
    out = []
    for step, value, hit in results:
        if hit and not state.alerting:
            state.alerting = True
            state.silent = bool(rule.throttle) and now_us - state.fired_us < rule.throttle * 1e6
            if not state.silent:
                state.fired_us = now_us
                out.append(("alert.fired", step, value))
        elif not hit and state.alerting:
            state.alerting = False
            if not state.silent:
                out.append(("alert.resolved", step, value))
            state.silent = False
    return out
