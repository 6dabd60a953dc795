"""``mlvc reproduce``: re-execute a recorded run from its own record and judge the result.

Steps: check the run's code and data out into a fresh folder (every path the run recorded as
an output is left out, so nothing stale can pass for a result) → prepare the environment
(``recorded``: a virtualenv with exactly the recorded distributions, built with uv or pip
and cached by env id under .mlvc/cache/envs, mlvc.exec.envcache; ``current``: the
interpreter at hand, after reporting every difference from the recorded environment) → set
the recorded environment variables and ``MLVC_SEED`` (the recorded ``mlvc.seed``) → run the
recorded command with the recorded params (mlvc.exec.run) → record the result in the original
repository as a run with ``reproduces`` = the original and the original as parent (HEAD does
not move) → compare.

Verdicts:
    EXACT             every output byte-identical, every metric equal, same params and
                      exit code (the command's log is not an output and may differ).
    WITHIN TOLERANCE  only with ``rtol``/``atol``: outputs differ but every metric is on both
                      sides and ``|new - old| <= atol + rtol * |old|``; params, exit code and
                      the set of outputs are the same.
    DIFFERENT         anything else; the report names each output (old/new hashes) and
                      metric (old/new values) that differs, and the environment differences
                      that may explain it.
    NOTHING TO COMPARE  neither run has an output or a metric (and nothing else differs):
                      no evidence either way, so not a success (exit 15).

A temporary folder (no ``to``) is removed whatever happens: verdict, error or Ctrl-C. The
re-run's outputs are in its run; ``mlvc checkout RUN --to DIR`` brings them back.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.ids import ObjectId
from ..core.objects import Run, is_number
from ..diff.runs import diff_metrics, diff_params, diff_trees, env_lines
from ..errors import NothingToCompare, NotReproducible, ReproductionDiffers, UsageError
from ..events import emit
from ..exec.envcache import cache_folder, recorded_env
from ..exec.execute import Outcome, execute
from ..exec.interpreter import capture_for, find_interpreter, restore_variables
from ..exec.plan import Echo, Launch, child_environ
from ..runs.attached import SEED_ENV, SEED_PARAM
from ..store.typed import read_env, read_run, walk
from ..workspace.project import load_project

if TYPE_CHECKING:
    from ..workspace.context import RepoContext

EXACT, WITHIN, DIFFERENT = "EXACT", "WITHIN TOLERANCE", "DIFFERENT"
NOTHING = "NOTHING TO COMPARE"
ENV_MODES = ("current", "recorded")
# interpreter locations differ between any two virtualenvs and explain no result
PATH_FACTS = ("executable", "prefix", "base_prefix", "is_venv")


@dataclass
class Verdict:
    kind: str
    outputs: list[dict] = field(default_factory=list)  # {path, change, old_id, new_id, ...}
    metrics: dict[str, dict] = field(default_factory=dict)  # name -> {old, new, delta, within}
    params: dict = field(default_factory=dict)  # diff_params shape
    exit_code: tuple[int | None, int | None] | None = None
    env: list[str] = field(default_factory=list)  # env differences, one line each
    same_outputs: int = 0
    same_metrics: int = 0
    rtol: float | None = None
    atol: float | None = None

    @property
    def ok(self) -> bool:
        """Exit 0: EXACT, or WITHIN TOLERANCE (which exists only when tolerances are given)."""
        return self.kind in (EXACT, WITHIN)


@dataclass
class Reproduction:
    """A re-run and its verdict: ``original`` was re-run as ``run_id`` in ``workdir`` (which
    is gone afterwards unless ``kept``)."""

    original: ObjectId
    run_id: ObjectId
    verdict: Verdict
    workdir: Path
    env_mode: str
    kept: bool = True

    def to_dict(self) -> dict:
        """The verdict as plain data (what ``mlvc reproduce --json`` prints)."""
        v = self.verdict
        return {
            "verdict": v.kind,
            "original": self.original.hex,
            "reproduction": self.run_id.hex,
            "workdir": str(self.workdir) if self.kept else None,
            "outputs": v.outputs,
            "metrics": v.metrics,
            "params": v.params,
            "exit_code": v.exit_code,
            "env": v.env,
        }

    def check(self) -> None:
        """Raise ``NothingToCompare`` or ``ReproductionDiffers`` unless the verdict is a
        success (EXACT, or WITHIN TOLERANCE); the message says where the re-run's files are."""
        v = self.verdict
        where = (
            f"; its files are in {self.workdir}"
            if self.kept
            else f"; `mlvc checkout {self.run_id.short} --to DIR` brings its files back"
        )
        if v.kind == NOTHING:
            raise NothingToCompare(
                f"run {self.original.short} has no outputs and no metrics, so its re-run "
                f"{self.run_id.short} proves nothing{where}"
            )
        if not v.ok:
            raise ReproductionDiffers(
                f"run {self.original.short} did not reproduce ({v.kind}); the re-run is run "
                f"{self.run_id.short}{where}"
            )


def judge(
    store,
    old: Run,
    new: Run,
    rtol: float | None = None,
    atol: float | None = None,
    old_env: dict | None = None,
    new_env: dict | None = None,
) -> Verdict:
    """Compare a run with its re-execution (see the module docstring for the rules)."""
    logs = {old.extra.get("log"), new.extra.get("log")} - {None}
    files = diff_trees(store, old.artifacts, new.artifacts)
    outputs = [
        {"change": change, **item}
        for change in ("modified", "added", "removed")
        for item in files[change]
        if item["path"] not in logs
    ]
    outputs.sort(key=lambda o: o["path"])
    n_old = sum(1 for p, _ in walk(store, old.artifacts) if p not in logs) if old.artifacts else 0
    metrics_diff, same_metrics = diff_metrics(old.metrics, new.metrics)
    tol = rtol is not None or atol is not None
    r, a = rtol or 0.0, atol or 0.0
    metrics = {
        k: {**v, "within": tol and _within(v["old"], v["new"], r, a)}
        for k, v in metrics_diff.items()
    }
    params = diff_params(old.params, new.params)
    exit_code = None  # a run recorded by `mlvc commit --command` has no exit code to compare
    if old.exit_code is not None and old.exit_code != new.exit_code:
        exit_code = (old.exit_code, new.exit_code)
    env = _env_explanation(old_env or {}, new_env or {})
    same_params = not any(params.values())
    nothing = not n_old and not outputs and not old.metrics and not new.metrics
    if nothing and same_params and exit_code is None:
        kind = NOTHING
    elif not outputs and not metrics and same_params and exit_code is None:
        kind = EXACT
    elif (
        tol
        and same_params
        and exit_code is None
        and all(o["change"] == "modified" for o in outputs)
        and all(m["within"] for m in metrics.values())
        and (old.metrics or new.metrics)
    ):
        kind = WITHIN
    else:
        kind = DIFFERENT
    return Verdict(
        kind,
        outputs,
        metrics,
        params,
        exit_code,
        env,
        same_outputs=n_old - sum(1 for o in outputs if o["change"] != "added"),
        same_metrics=same_metrics,
        rtol=rtol,
        atol=atol,
    )


def _within(old: Any, new: Any, rtol: float, atol: float) -> bool:
    if not (is_number(old) and is_number(new)):
        return False
    if math.isnan(old) or math.isnan(new):
        return math.isnan(old) and math.isnan(new)
    if math.isinf(old) or math.isinf(new):
        return old == new
    return abs(new - old) <= atol + rtol * abs(old)


def _env_explanation(old: dict, new: dict) -> list[str]:
    from ..capture.env import env_diff

    if not old or not new:
        return ["(the environment of one of the runs was not captured)"] if old or new else []
    strip = [
        {**e, "python": {k: v for k, v in e.get("python", {}).items() if k not in PATH_FACTS}}
        for e in (old, new)
    ]
    return [line.strip() for line in env_lines(env_diff(*strip))]


# -- running a reproduction ------------------------------------------------------------------


def reproduce(
    ctx: RepoContext,
    spec: str,
    env: str = "current",
    to: str | os.PathLike | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    echo: Echo = print,
    rebuild_env: bool = False,
) -> Reproduction:
    """Re-run ``spec`` and judge it; see the module docstring. ``rebuild_env``: build the
    recorded environment anew instead of reusing its cached build."""
    if env not in ENV_MODES:
        raise UsageError(f"--env {env}: choose recorded or current")
    for name, value in (("--rtol", rtol), ("--atol", atol)):
        if value is not None and (not math.isfinite(value) or value < 0):
            raise UsageError(f"{name} {value}: a tolerance is a finite number >= 0")
    oid = ctx.resolve(spec)
    run = read_run(ctx.store, oid)
    if not run.command:
        raise NotReproducible(
            f"run {oid.short} records no command: it was made with `mlvc commit` from results "
            "produced elsewhere, so mlvc cannot re-run it; record runs with `mlvc run ENTRY` "
            "(or `mlvc commit --command CMD`) to make them reproducible"
        )
    if run.code is None:
        raise NotReproducible(f"run {oid.short} records no code to check out and re-run")
    facts = read_env(ctx.store, run.env).facts if run.env else {}
    if env == "recorded" and not facts:
        raise NotReproducible(
            f"run {oid.short} records no environment, so --env recorded has nothing to rebuild; "
            "use --env current"
        )
    dest, temporary = _workdir(ctx, oid, to)
    try:
        result = _reproduce_in(
            ctx, oid, run, facts, dest, env, rtol, atol, echo, temporary, rebuild_env
        )
        emit(ctx, "reproduce.verdict", {**result.to_dict(), "name": run.name})
        return result
    finally:
        if temporary:  # whatever happened (a verdict, an error, Ctrl-C): the run has it all
            shutil.rmtree(dest, ignore_errors=True)


def _reproduce_in(
    ctx: RepoContext, oid, run, facts, dest, env, rtol, atol, echo, temporary, rebuild_env
) -> Reproduction:
    echo(f"reproducing run {oid.short}: {' '.join(run.command)}")
    echo(f"  in {dest} (environment: {env})")
    _checkout_inputs(ctx, run, dest)
    cfg = load_project(dest)
    environ, changes = restore_variables(
        child_environ(os.environ, hashseed=False), facts.get("variables", {}), cfg.env_variables
    )
    if isinstance(run.params.get(SEED_PARAM), int):
        environ[SEED_ENV] = str(run.params[SEED_PARAM])
    argv = relocate(tuple(run.command), ctx.root, dest)
    if env == "recorded":
        folder = cache_folder(ctx.layout.cache_envs)
        venv = recorded_env(folder, run.env, facts, oid.short, echo, rebuild=rebuild_env)
        python = str(venv / "bin" / "python")
        environ["PATH"] = f"{venv / 'bin'}{os.pathsep}{environ.get('PATH', '')}"
        environ["VIRTUAL_ENV"] = str(venv)
        if "/" in argv[0] and find_interpreter(argv[:1], environ, dest):
            argv = (python, *argv[1:])
    else:
        _report_current(run, facts, dest, environ, argv, cfg, echo)
    for line in changes:
        echo(f"  restoring {line}")
    outcome = _rerun(ctx, oid, run, dest, environ, argv, env, rtol, atol, echo)
    new = read_run(ctx.store, outcome.run_id)
    new_facts = read_env(ctx.store, new.env).facts if new.env else {}
    verdict = judge(ctx.store, run, new, rtol, atol, facts, new_facts)
    return Reproduction(oid, outcome.run_id, verdict, dest, env, kept=not temporary)


def _workdir(ctx: RepoContext, oid: ObjectId, to) -> tuple[Path, bool]:
    if to is None:
        return Path(tempfile.mkdtemp(prefix=f"mlvc-reproduce-{oid.short}-")).resolve(), True
    dest = Path(to).resolve()
    if dest in (ctx.root, ctx.dir) or ctx.dir in dest.parents:
        raise UsageError(f"--to {to} is the project or inside .mlvc; choose a new folder")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UsageError(f"--to {to} is not empty; reproduce into a new or empty folder")
    dest.mkdir(parents=True, exist_ok=True)
    return dest, False


def relocate(argv: tuple[str, ...], root: Path, dest: Path) -> tuple[str, ...]:
    """Absolute paths into the project (``python /home/me/proj/train.py``) point into the
    checkout instead, so the re-run never reads the project's current files."""
    out = []
    for word in argv:
        p = Path(word)
        if p.is_absolute() and (p == root or root in p.parents):
            word = str(dest / p.relative_to(root))
        out.append(word)
    return tuple(out)


def _checkout_inputs(ctx: RepoContext, run: Run, dest: Path) -> None:
    """The run's code and data, minus every path it recorded as an output."""
    from ..workspace.checkout import checkout

    checkout(ctx.store, run, dest, ("code", "data"))
    outputs = set(run.extra.get("paths", {}).get("artifacts", ()))
    ep = run.extra.get("entry_point", {})
    outputs |= {*ep.get("outputs", ()), *ep.get("metrics", ())}
    if run.artifacts is not None:
        outputs |= {p for p, _ in walk(ctx.store, run.artifacts)}
    remove_paths(dest, outputs)


def remove_paths(dest: Path, rels) -> None:
    """Remove each of these project-relative paths (file or folder) under ``dest``."""
    for rel in sorted(rels):
        path = dest / rel
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif os.path.lexists(path):
            path.unlink()


def _report_current(run, facts, dest, environ, argv, cfg, echo: Echo) -> None:
    """Every difference between the recorded environment and the one about to be used."""
    from ..capture.env import env_diff

    if not facts:
        echo("the run recorded no environment; running in the current one")
        return
    python = find_interpreter(argv, environ, dest / run.cwd)
    now = capture_for(python, dest, environ, cfg.env_variables, cfg.env_files)
    now["variables"] = facts.get("variables", {})  # they are restored below, reported there
    lines = env_lines(env_diff(facts, now))
    if not lines:
        echo("environment: the same as recorded")
        return
    echo(f"environment differences from the recorded run ({len(lines)}):")
    for line in lines:
        echo(f"  {line.strip()}")


def _rerun(ctx: RepoContext, oid, run: Run, dest, environ, argv, env, rtol, atol, echo) -> Outcome:
    ep = dict(run.extra.get("entry_point", {}))
    paths = run.extra.get("paths", {})
    launch = Launch(
        argv=argv,
        params=ep.get("params", {}),
        base_params=dict(run.params),
        entry=ep.get("name", ""),
        outputs=tuple(ep.get("outputs") or paths.get("artifacts", ())),
        metrics_files=tuple(ep.get("metrics", ())),
        data=tuple(p for p in paths.get("data", ()) if os.path.lexists(dest / p)),
        message=f"reproduction of {oid.short}" + (f" ({run.name})" if run.name else ""),
        environ=environ,
        cwd=run.cwd,
        parents=(oid,),
        reproduces=oid,
        move_head=False,
        log_name=run.extra.get("log", "logs/command.log"),
        extra={
            **({"entry_point": ep} if ep else {}),
            "reproduction": {"of": oid.hex, "env": env, "rtol": rtol, "atol": atol},
        },
    )
    echo("--- output ---")
    outcome = execute(ctx.with_worktree(dest), launch, echo=echo)
    echo(f"--- exit code {outcome.exit_code}; recorded as run {outcome.run_id.short} ---")
    return outcome


# -- the report ------------------------------------------------------------------------------


def render_verdict(v: Verdict) -> list[str]:
    """The verdict as report lines: the headline, then each difference with its evidence."""
    lines = [_headline(v)]
    if v.exit_code is not None:
        lines.append(f"  exit code: {v.exit_code[0]} -> {v.exit_code[1]}")
    for o in v.outputs:
        if o["change"] == "modified":
            lines += [
                f"  output {o['path']} differs",
                f"    old {o['old_id']} ({o['old_size']} bytes)",
                f"    new {o['new_id']} ({o['new_size']} bytes)",
            ]
        elif o["change"] == "removed":
            lines.append(f"  output {o['path']} is missing (old {o['id']}, {o['size']} bytes)")
        else:
            lines.append(f"  output {o['path']} is new ({o['id']}, {o['size']} bytes)")
    for k, m in v.metrics.items():
        delta = "" if m["delta"] is None else f" (delta {m['delta']:+.6g})"
        mark = " within tolerance" if m["within"] else ""
        lines.append(f"  metric {k}: {_num(m['old'])} -> {_num(m['new'])}{delta}{mark}")
    for k, (old, new) in v.params["changed"].items():
        lines.append(f"  param {k}: {old!r} -> {new!r}")
    for k, new in v.params["added"].items():
        lines.append(f"  param {k}: (none) -> {new!r}")
    for k, old in v.params["removed"].items():
        lines.append(f"  param {k}: {old!r} -> (none)")
    if v.kind not in (EXACT, NOTHING):
        if v.env:
            lines.append("environment differences that may explain it:")
            lines += [f"  {line}" for line in v.env]
        else:
            lines.append("environment: no difference (look for clocks, randomness, threads)")
    return lines


def _headline(v: Verdict) -> str:
    if v.kind == NOTHING:
        return (
            "NOTHING TO COMPARE: the run and its re-run have no outputs and no metrics "
            "(params and exit code are the same); declare outputs or metrics files so it "
            "can be checked"
        )
    if v.kind == EXACT:
        return (
            f"EXACT: all {v.same_outputs} outputs byte-identical, "
            f"all {v.same_metrics} metrics equal"
        )
    if v.kind == WITHIN:
        return (
            f"WITHIN TOLERANCE: {_count(len(v.outputs), 'output')} differ, every metric within "
            f"rtol={v.rtol or 0:g} atol={v.atol or 0:g}"
        )
    off = sum(1 for m in v.metrics.values() if not m["within"])
    parts = [_count(len(v.outputs), "output"), _count(off, "metric")]
    if any(v.params.values()):
        parts.append("params")
    if v.exit_code is not None:
        parts.append("the exit code")
    note = ""
    if (v.rtol is not None or v.atol is not None) and not v.metrics and not v.same_metrics:
        note = " (tolerances apply to metrics, and this run has none)"
    return f"DIFFERENT: {', '.join(parts)} differ{note}"


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _num(v: Any) -> str:
    if v is None:
        return "(none)"
    return f"{v:.10g}" if isinstance(v, float) else str(v)
