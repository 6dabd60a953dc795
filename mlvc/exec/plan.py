"""Planning ``mlvc run``: the Launch of each run, from an entry point and its params.

Everything is checked before the first command runs: the entry point, every ``-P`` value
and every point of a ``--sweep`` grid. A Launch says what to run and what its record should
say; the child environment is the caller's, with PYTHONHASHSEED fixed and Python unbuffered.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..core.ids import ObjectId
from ..core.params import check_key, check_params
from ..errors import UsageError
from ..runs.attached import REPO_ENV, RUN_ENV, WORKTREE_ENV
from ..runs.staging import new_key
from ..workspace.project_spec import EntryPoint, load_spec

if TYPE_CHECKING:
    from ..workspace.context import RepoContext

Echo = Callable[[str], None]


@dataclass
class Launch:
    """One command to run and record, and everything the record should say about it."""

    argv: tuple[str, ...]
    params: Mapping[str, Any] = field(default_factory=dict)  # staged before it starts
    base_params: Mapping[str, Any] = field(default_factory=dict)  # under all others
    entry: str = ""
    outputs: tuple[str, ...] = ()
    metrics_files: tuple[str, ...] = ()
    data: tuple[str, ...] = ()
    name: str = ""
    message: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    environ: Mapping[str, str] | None = None
    cwd: str = ""  # project-relative folder to run in
    parents: tuple[ObjectId, ...] | None = None
    reproduces: ObjectId | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    move_head: bool = True
    label: str = ""  # prefixes every output line when runs share the terminal
    env_files: tuple[str, ...] = ()
    python_wanted: str = ""  # [environment] python
    docker_image: str = ""  # MLproject docker_env: not used, said so before the run
    log_name: str = ""
    show_output: bool = True  # False: the command's output goes to its log only (bisect probes)


def parse_given(tokens: Iterable[str], what: str = "-P") -> dict[str, str]:
    """``KEY=VALUE`` tokens as key -> text (typing is the entry point's job)."""
    out: dict[str, str] = {}
    for tok in tokens:
        key, sep, value = tok.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"bad {what} {tok!r}: expected KEY=VALUE, e.g. lr=0.01")
        out[check_key(key.strip(), tok)] = value
    return out


def grid(given: Mapping[str, str], sweeps: Iterable[str]) -> list[dict[str, str]]:
    """Every combination of ``--sweep KEY=a,b,c`` values on top of the fixed params."""
    axes: dict[str, list[str]] = {}
    for tok in sweeps:
        key, values = next(iter(parse_given([tok], "--sweep").items()))
        if key in given or key in axes:
            raise UsageError(f"param {key!r} is given twice (-P and --sweep); give it once")
        vals = [v.strip() for v in values.split(",")]
        if not all(vals):
            raise UsageError(f"--sweep {tok!r} has an empty value; use KEY=a,b,c")
        axes[key] = vals
    combos = itertools.product(*axes.values()) if axes else [()]
    return [{**given, **dict(zip(axes, combo, strict=True))} for combo in combos]


def plan(
    ctx: RepoContext,
    entry: str,
    params: Iterable[str] = (),
    sweeps: Iterable[str] = (),
    hashseed: bool = True,
    name: str = "",
    message: str = "",
    tags: Mapping[str, str] | None = None,
) -> list[Launch]:
    """Validate everything and build one Launch per run, before anything runs."""
    spec = load_spec(ctx.root)
    ep = spec.entry(entry, ctx.root)
    points = grid(parse_given(params), list(sweeps))
    # every point is checked before the first runs
    values = [check_params(ep.resolve(p), f" of entry point {ep.name!r}") for p in points]
    environ = child_environ(os.environ, hashseed)
    sweep_tags = {"sweep": new_key()} if len(values) > 1 else {}
    head = ctx.head()
    launches = []
    for i, vals in enumerate(values):
        label = " ".join(f"{k}={vals[k]}" for k in sorted(points[i]) if k in vals)
        launches.append(
            Launch(
                argv=ep.render(vals),
                params=vals,
                entry=ep.name,
                outputs=ep.outputs,
                metrics_files=ep.metrics,
                data=ep.data,
                name=f"{name}-{i + 1}" if name and len(values) > 1 else name,
                message=message,
                tags={**(tags or {}), **sweep_tags},
                environ=environ,
                parents=(head,) if head and len(values) > 1 else None,
                label=label if len(values) > 1 else "",
                env_files=spec.environment.requirements,
                python_wanted=spec.environment.python,
                docker_image=spec.environment.docker,
                extra={"entry_point": _entry_record(ep, vals, hashseed)},
            )
        )
    return launches


def _entry_record(ep: EntryPoint, values: Mapping[str, Any], hashseed: bool) -> dict:
    return {
        "name": ep.name,
        "source": ep.source,
        "template": ep.command,
        "params": dict(values),
        "outputs": list(ep.outputs),
        "metrics": list(ep.metrics),
        "data": list(ep.data),
        "hashseed": hashseed,
    }


def child_environ(base: Mapping[str, str], hashseed: bool = True) -> dict[str, str]:
    """The environment commands get: PYTHONHASHSEED=0 unless set or ``hashseed`` is off,
    and unbuffered Python output so the log keeps up with the terminal."""
    env = {k: v for k, v in base.items() if k not in (RUN_ENV, REPO_ENV, WORKTREE_ENV)}
    if hashseed:
        env.setdefault("PYTHONHASHSEED", "0")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _safe(name: str) -> str:
    """An entry point's name as a file name (mlvc.workspace.project._entry_outputs does the same)."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name).lstrip(".") or "command"


def log_name(launch: Launch) -> str:
    """Where the command's output is kept in the run's artifacts."""
    return launch.log_name or f"logs/{_safe(launch.entry or 'command')}.log"
