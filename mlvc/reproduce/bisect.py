"""``mlvc bisect A B --metric M``: which change between two runs moved a metric.

Between two runs, code, data, params and environment variables may all have changed at
once. Bisect re-runs mixes of the two (probes, mlvc.reproduce.probe) and narrows down, with
delta debugging (Zeller's ddmin), the smallest set of changes that, taken from B onto A,
moves the metric from A's value to B's:

1. A and B are re-run unchanged first; each must give its own recorded value (within
   ``rtol``), or bisect stops (NotDeterministic): a verdict built on a metric that moves by
   itself would be noise.
2. By section: ddmin over the sections that differ (code, data, params, env, command),
   each taken whole from B.
3. Within the culprit sections: ddmin over their files and keys (the other sections from A).

A probe's value is **A-like** within ``rtol`` of A's recorded value, **B-like** within
``rtol`` of B's, else **neither**. ddmin looks for probes that are B-like; a "neither" probe
counts as not B-like (the change it holds moves the metric only part of the way), and the
report counts such probes. So the culprits are a 1-minimal set: taking all of them from B
gives B's value, and leaving any one of them out does not.

What cannot be varied is reported, not bisected: the Python interpreter, packages, platform
and hardware (probes run in the current environment; rebuilding one environment per probe
is out of reach), and params a script logged itself (they are results of its inputs).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..core.ids import ObjectId
from ..core.objects import is_number
from ..diff.runs import add_patches, env_lines
from ..errors import NotDeterministic, NotReproducible, ProbeFailed, UsageError
from ..exec.plan import Echo
from ..runs.staging import pin
from ..store.locks import writing
from ..store.typed import read_run
from .probe import (
    PROBE_TAG,
    SECTIONS,
    Change,
    Probe,
    Side,
    changes,
    mix,
    probe_log,
    run_probe,
    templated,
)
from .run import PATH_FACTS

if TYPE_CHECKING:
    from ..workspace.context import RepoContext

DEFAULT_RTOL = 1e-6
A_LIKE, B_LIKE, NEITHER = "A", "B", "neither"
_HUNK = re.compile(r"^(@@ [^@]* @@)", re.M)


@dataclass
class ProbeResult:
    run_id: ObjectId
    from_b: frozenset[int]
    value: float
    outcome: str  # A_LIKE, B_LIKE or NEITHER
    reused: bool


@dataclass
class Bisection:
    """The verdict of ``mlvc bisect``; ``to_dict`` is what ``--json`` prints."""

    metric: str
    a: ObjectId
    b: ObjectId
    a_value: float
    b_value: float
    rtol: float
    changes: list[Change]
    culprits: list[int]
    probes: list[ProbeResult]
    not_varied: list[str] = field(default_factory=list)
    hunks: dict[int, list[str]] = field(default_factory=dict)  # change index -> hunk headers

    @property
    def reruns(self) -> int:
        return sum(1 for p in self.probes if not p.reused)

    def sections_of(self, from_b: frozenset[int]) -> dict[str, str]:
        """Per section that differs: which side the probe took it from (A, B or mixed)."""
        out = {}
        for section in SECTIONS:
            idx = {i for i, c in enumerate(self.changes) if c.section == section}
            if idx:
                took = idx & from_b
                out[section] = "B" if took == idx else "A" if not took else "mixed"
        return out

    def change_dict(self, i: int) -> dict:
        c = self.changes[i]
        name = "path" if c.section in ("code", "data") else "key"
        out = {"section": c.section, name: c.name, "a": _plain(c.a), "b": _plain(c.b)}
        if i in self.hunks:
            out["hunks"] = self.hunks[i]
        return out

    def to_dict(self) -> dict:
        return {
            "metric": self.metric,
            "a": {"run": self.a.hex, "value": self.a_value},
            "b": {"run": self.b.hex, "value": self.b_value},
            "rtol": self.rtol,
            "culprits": [self.change_dict(i) for i in self.culprits],
            "not_culprits": [
                self.change_dict(i) for i in range(len(self.changes)) if i not in self.culprits
            ],
            "not_varied": self.not_varied,
            "probes": [
                {
                    "id": p.run_id.hex,
                    "metric": p.value,
                    "outcome": p.outcome,
                    "sections": self.sections_of(p.from_b),
                    "from_b": [self.changes[i].label for i in sorted(p.from_b)],
                    "reused": p.reused,
                }
                for p in self.probes
            ],
            "reruns": self.reruns,
        }


def _plain(v: Any) -> Any:
    """A change's side as JSON: a file's id, a value, an argv list; None when absent."""
    if hasattr(v, "id") and hasattr(v, "kind"):
        return v.id.hex
    return list(v) if isinstance(v, tuple) else v


def bisect(
    ctx: RepoContext,
    a_spec: str,
    b_spec: str,
    metric: str,
    rtol: float = DEFAULT_RTOL,
    jobs: int = 1,
    echo: Echo = print,
) -> Bisection:
    """Name the smallest set of changes between runs A and B that moves ``metric`` from A's
    value to B's (see the module docstring)."""
    if jobs < 1:
        raise UsageError(f"-j {jobs}: the number of probes at once must be at least 1")
    if not (math.isfinite(rtol) and rtol >= 0):
        raise UsageError(f"--rtol {rtol}: a tolerance is a finite number >= 0")
    a = Side.load(ctx, ctx.resolve(a_spec))
    b = Side.load(ctx, ctx.resolve(b_spec))
    for side, spec in ((a, a_spec), (b, b_spec)):
        _check_runnable(side, spec)
    va, vb = _metric_values(a, b, metric)
    if _close(vb, va, rtol):
        raise UsageError(
            f"metric {metric} is the same in both runs ({va:.10g} and {vb:.10g}, within rtol "
            f"{rtol:g}): there is nothing to bisect"
        )
    found = changes(a, b)
    not_varied = _not_varied(a, b)
    if not found:
        why = f" (only: {'; '.join(not_varied)})" if not_varied else ""
        raise NotReproducible(
            f"runs {a.oid.short} and {b.oid.short} differ in nothing a probe can vary{why}; "
            "bisect varies code and data files, entry point params and captured variables"
        )
    session = _Session(ctx, a, b, found, metric, va, vb, rtol, jobs, echo)
    with session:
        culprits = session.run()
    result = Bisection(
        metric, a.oid, b.oid, va, vb, rtol, found, culprits, session.results, not_varied
    )
    result.hunks = _hunks(ctx, found, culprits)
    return result


def _check_runnable(side: Side, spec: str) -> None:
    if not side.run.command:
        raise NotReproducible(
            f"run {side.oid.short} ({spec}) records no command, so bisect cannot re-run "
            "mixes of it; record runs with `mlvc run ENTRY` or `mlvc commit --command CMD`"
        )


def _metric_values(a: Side, b: Side, metric: str) -> tuple[float, float]:
    va, vb = a.run.metrics.get(metric), b.run.metrics.get(metric)
    if va is None and vb is None:
        known = sorted({*a.run.metrics, *b.run.metrics})
        listed = ", ".join(known[:10]) if known else "none"
        raise UsageError(
            f"neither run {a.oid.short} nor {b.oid.short} has metric {metric!r} "
            f"(their metrics: {listed})"
        )
    for side, value in ((a, va), (b, vb)):
        if value is None or not is_number(value) or not math.isfinite(value):
            raise UsageError(
                f"run {side.oid.short} has no finite value of metric {metric!r} "
                f"({value!r}); bisect compares two numbers"
            )
    return float(va), float(vb)


def _close(value: float, ref: float, rtol: float) -> bool:
    return abs(value - ref) <= rtol * abs(ref) or value == ref


def _not_varied(a: Side, b: Side) -> list[str]:
    """Differences probes cannot take from B: the environment beyond variables, and params
    that are not entry point params (a script logged them)."""
    from ..capture.env import env_diff

    out = []
    if a.facts and b.facts:
        strip = [
            {
                **f,
                "variables": {},
                "python": {k: v for k, v in f.get("python", {}).items() if k not in PATH_FACTS},
            }
            for f in (a.facts, b.facts)
        ]
        out += [f"environment {line.strip()}" for line in env_lines(env_diff(*strip))]
    inputs = {*a.params, *b.params} if templated(a, b) else set()
    for key in sorted({*a.run.params, *b.run.params} - inputs):
        old, new = a.run.params.get(key), b.run.params.get(key)
        if old != new:
            out.append(f"param {key} {_show(old)} → {_show(new)} (logged by the script)")
    return out


def _show(v: Any) -> str:
    if v is None:
        return "(unset)"
    if isinstance(v, tuple | list):
        return " ".join(map(str, v))
    return str(v)


def _hunks(ctx: RepoContext, found: list[Change], culprits: list[int]) -> dict[int, list[str]]:
    """The hunk headers of each culprit text file that is on both sides."""
    out = {}
    for i in culprits:
        c = found[i]
        if c.section not in ("code", "data") or c.a is None or c.b is None:
            continue
        item = {
            "path": c.name,
            "old_id": c.a.id.hex,
            "new_id": c.b.id.hex,
            "old_size": c.a.size,
            "new_size": c.b.size,
        }
        add_patches(ctx.store, {"added": [], "removed": [], "modified": [item]})
        out[i] = _HUNK.findall(item["patch"])
    return out


class _Session:
    """One bisection: probes memoized in memory and found again by key in the index."""

    def __init__(self, ctx, a: Side, b: Side, found, metric, va, vb, rtol, jobs, echo):
        self.ctx, self.a, self.b, self.changes = ctx, a, b, found
        self.metric, self.va, self.vb, self.rtol = metric, va, vb, rtol
        self.jobs, self.echo = jobs, echo
        self.memo: dict[frozenset[int], ProbeResult] = {}
        self.results: list[ProbeResult] = []
        self.pins = contextlib.ExitStack()
        self.tags = {"bisect.a": a.oid.hex, "bisect.b": b.oid.hex, "bisect.metric": metric}

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *exc) -> None:
        self.pins.close()

    def run(self) -> list[int]:
        everything = frozenset(range(len(self.changes)))
        base, full = self.evaluate([frozenset(), everything])
        for res, side, want in ((base, self.a, self.va), (full, self.b, self.vb)):
            if not _close(res.value, want, self.rtol):
                raise NotDeterministic(
                    f"re-running run {side.oid.short} as recorded gave {self.metric}="
                    f"{res.value:.10g} (probe {res.run_id.short}) but it recorded {want:.10g}: "
                    "the run is not deterministic, or depends on what bisect does not vary "
                    "(the environment); bisect stops"
                )
        by_section = [
            [i for i, c in enumerate(self.changes) if c.section == s]
            for s in SECTIONS
            if any(c.section == s for c in self.changes)
        ]
        self.echo(
            f"narrowing by section: {', '.join(self.changes[g[0]].section for g in by_section)}"
        )
        groups = ddmin(by_section, self.first_b_like)
        items = [[i] for g in groups for i in g]
        if len(items) > 1:
            self.echo(
                f"narrowing within {', '.join(sorted({self.changes[i[0]].section for i in items}))}"
            )
            items = ddmin(items, self.first_b_like)
        return sorted(i for group in items for i in group)

    def first_b_like(self, candidates: Sequence[frozenset[int]]) -> int | None:
        """The index of the first candidate whose probe is B-like; probes run ``jobs`` at
        once, in order, so the answer is the same for any ``jobs``."""
        for start in range(0, len(candidates), self.jobs):
            batch = list(candidates[start : start + self.jobs])
            for k, res in enumerate(self.evaluate(batch)):
                if res.outcome == B_LIKE:
                    return start + k
        return None

    def evaluate(self, sets: list[frozenset[int]]) -> list[ProbeResult]:
        todo = [s for s in dict.fromkeys(sets) if s not in self.memo]
        probes = [self._mix(s) for s in todo]
        fresh = [p for p in probes if not self._reuse(p)]
        if fresh:
            with ThreadPoolExecutor(max_workers=min(self.jobs, len(fresh))) as pool:
                runs = list(pool.map(self._run, fresh))
            for p, run_id in zip(fresh, runs, strict=True):
                self._keep(p, run_id, reused=False)
        return [self.memo[s] for s in sets]

    def _mix(self, from_b: frozenset[int]) -> Probe:
        with writing(self.ctx.dir, self.ctx.store):
            probe = mix(self.ctx, self.a, self.b, self.changes, from_b)
            self.pins.enter_context(pin(self.ctx.layout, [probe.code, probe.data]))
        return probe

    def _reuse(self, probe: Probe) -> bool:
        rows = self.ctx.index.query(
            "SELECT t.run_id FROM tags t JOIN runs r ON r.id = t.run_id "
            f"WHERE t.key = '{PROBE_TAG}' AND t.value = '{probe.key}' AND r.status = 'finished' "
            "ORDER BY r.created"
        ).column("run_id")
        for run_id in rows.to_pylist():
            oid = ObjectId.parse(run_id)
            if self.metric in read_run(self.ctx.store, oid).metrics:
                self._keep(probe, oid, reused=True)
                return True
        return False

    def _run(self, probe: Probe) -> ObjectId:
        took = [self.changes[i].label for i in sorted(probe.from_b)]
        what = f"from B: {', '.join(took)}" if took else "A unchanged"
        if len(took) == len(self.changes):
            what = "B unchanged"
        message = f"bisect probe of {self.a.oid.short}..{self.b.oid.short} ({what})"
        tags = {**self.tags, PROBE_TAG: probe.key}
        return run_probe(self.ctx, self.a, self.b, probe, message, tags, self.echo)

    def _keep(self, probe: Probe, run_id: ObjectId, reused: bool) -> None:
        run = read_run(self.ctx.store, run_id)
        value = run.metrics.get(self.metric)
        if run.status != "finished" or value is None or not is_number(value):
            took = ", ".join(self.changes[i].label for i in sorted(probe.from_b)) or "none"
            why = (
                f"exited with code {run.exit_code}"
                if run.status != "finished"
                else f"wrote no value of {self.metric}"
            )
            raise ProbeFailed(
                f"probe {run_id.short} (from B: {took}) {why}; its output: "
                f"{probe_log(self.ctx, run_id)}"
            )
        value = float(value)
        outcome = (
            A_LIKE
            if _close(value, self.va, self.rtol)
            else B_LIKE
            if _close(value, self.vb, self.rtol)
            else NEITHER
        )
        res = ProbeResult(run_id, probe.from_b, value, outcome, reused)
        self.memo[probe.from_b] = res
        self.results.append(res)
        state = "reused" if reused else "ran"
        self.echo(f"probe {run_id.short} ({state}): {self.metric}={value:.10g} ({outcome}-like)")


def ddmin(
    items: list[list[int]], first_b_like: Callable[[Sequence[frozenset[int]]], int | None]
) -> list[list[int]]:
    """Zeller's ddmin: a 1-minimal sublist of ``items`` (groups of change indexes) whose
    union is B-like, given that the whole list is B-like and the empty one is not."""
    current = list(items)
    n = 2
    while len(current) >= 2:
        parts = _split(current, n)
        subsets = [frozenset(i for g in part for i in g) for part in parts]
        hit = first_b_like(subsets)
        if hit is not None:
            current, n = parts[hit], 2
            continue
        if n > 2:
            complements = [[g for p in parts if p is not part for g in p] for part in parts]
            hit = first_b_like([frozenset(i for g in c for i in g) for c in complements])
            if hit is not None:
                current, n = complements[hit], max(n - 1, 2)
                continue
        if n >= len(current):
            break
        n = min(2 * n, len(current))
    return current


def _split(items: list, n: int) -> list[list]:
    """``items`` in ``n`` contiguous parts of near-equal size."""
    size, extra = divmod(len(items), n)
    out, start = [], 0
    for k in range(n):
        end = start + size + (1 if k < extra else 0)
        out.append(items[start:end])
        start = end
    return out


def render_bisection(r: Bisection) -> list[str]:
    """The verdict for people: the metric's move, what caused it, what did not, and what
    could not be varied."""
    lines = [
        f"metric {r.metric}: {r.a_value:.10g} → {r.b_value:.10g} (A {r.a.short}, B {r.b.short})",
        "caused by " + _and([_describe(r, i) for i in r.culprits]),
    ]
    others = [i for i in range(len(r.changes)) if i not in r.culprits]
    if others:
        lines.append("not by " + ", ".join(_summaries(r, others)))
    if r.not_varied:
        lines.append(
            "not varied (probes run in the current environment): " + "; ".join(r.not_varied)
        )
    neither = sum(1 for p in r.probes if p.outcome == NEITHER)
    reused = len(r.probes) - r.reruns
    counts = f"{len(r.probes)} probes: {r.reruns} re-runs, {reused} reused"
    if neither:
        counts += (
            f"; {neither} gave a value near neither A's nor B's (counted as not B-like, so "
            "the culprits are what it takes to reach B's value)"
        )
    lines.append(counts)
    values = [f"{r.metric}={p.value:.10g}" for p in r.probes]
    width = max(map(len, values), default=0)
    for p, value in zip(r.probes, values, strict=True):
        took = ", ".join(f"{s} {side}" for s, side in r.sections_of(p.from_b).items())
        lines.append(f"  {p.run_id.short}  {value:<{width}}  {p.outcome:<7}  {took}")
    return lines


def _and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " together with " + parts[-1]


def _describe(r: Bisection, i: int) -> str:
    c = r.changes[i]
    if c.section in ("code", "data"):
        if c.a is None:
            return f"{c.section} {c.name} (added)"
        if c.b is None:
            return f"{c.section} {c.name} (removed)"
        hunks = r.hunks.get(i)
        if hunks:
            shown = ", ".join(hunks[:3]) + (" ..." if len(hunks) > 3 else "")
            return f"{c.section} {c.name} (hunk{'s' if len(hunks) > 1 else ''} {shown})"
        return f"{c.section} {c.name} (content differs)"
    if c.section == "params":
        return f"param {c.name} {_show(c.a)} → {_show(c.b)}"
    if c.section == "env":
        return f"env ${c.name} {_show(c.a)} → {_show(c.b)}"
    return f"command {_show(c.a)} → {_show(c.b)}"


def _summaries(r: Bisection, idx: list[int]) -> list[str]:
    """Per section, the changes that are not culprits: files counted, keys listed."""
    out = []
    for section in SECTIONS:
        mine = [r.changes[i] for i in idx if r.changes[i].section == section]
        if not mine:
            continue
        if section in ("code", "data"):
            kinds = {"added": 0, "removed": 0, "modified": 0}
            for c in mine:
                kinds["added" if c.a is None else "removed" if c.b is None else "modified"] += 1
            words = [f"{n} file{'s' if n > 1 else ''} {k}" for k, n in kinds.items() if n]
            out.append(f"{section} ({', '.join(words)})")
        else:
            shown = [f"{c.name} {_show(c.a)} → {_show(c.b)}" for c in mine[:4]]
            more = f", {len(mine) - 4} more" if len(mine) > 4 else ""
            out.append(f"{section} ({', '.join(shown)}{more})")
    return out
