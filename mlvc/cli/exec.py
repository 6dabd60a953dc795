"""The commands that run things: ``mlvc run``, ``mlvc reproduce``, ``mlvc lineage`` and
``mlvc bisect``."""

from __future__ import annotations

import click

from ..core.params import parse_tags
from ..render.text import echo
from ._common import emit, json_option, open_repo


def _status(text: str) -> None:
    echo(f"mlvc: {text}", err=True, dim=True)


@click.command()
@click.argument("entry", default="main")
@click.option(
    "-P",
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="A param of the entry point, checked against its type. Repeatable.",
)
@click.option(
    "--sweep",
    "sweeps",
    multiple=True,
    metavar="KEY=A,B,C",
    help="Run once per value; several --sweep run the whole grid. Repeatable.",
)
@click.option(
    "-j", "--jobs", default=1, show_default=True, help="Runs at once (each in a scratch copy)."
)
@click.option("-n", "--name", default="", help="A name for the run (sweeps: NAME-1, NAME-2...).")
@click.option("-m", "--message", default="", help="What this run is about.")
@click.option(
    "-t", "--tag", "tags", multiple=True, metavar="TAG[=VALUE]", help="A tag. Repeatable."
)
@click.option(
    "--no-hashseed",
    is_flag=True,
    help="Do not set PYTHONHASHSEED=0 for the command (it is set unless already set).",
)
@click.option("-q", "--quiet", is_flag=True, help="Print only the run ids.")
def run(
    entry: str,
    params: tuple[str, ...],
    sweeps: tuple[str, ...],
    jobs: int,
    name: str,
    message: str,
    tags: tuple[str, ...],
    no_hashseed: bool,
    quiet: bool,
) -> None:
    """Run an entry point of the project and record it as a run.

    ENTRY is an entry point of mlvc.toml or MLproject (default: main), or a .py/.sh file.
    The command's output is streamed and kept as the artifact logs/ENTRY.log; its declared
    outputs become the run's artifacts; the exit code is recorded. A script that calls
    mlvc.start_run() adds to this run (see docs/reproduce.md); so does one that calls
    mlflow.start_run(): MLFLOW_TRACKING_URI is set to this repository unless it is set.

    Example: mlvc run train -P lr=0.01 --sweep epochs=10,20 -j 2
    """
    from ..exec.run import check

    def done(o):
        if quiet:
            click.echo(o.run_id.hex)
            return
        for w in o.warnings:
            _status(f"warning: {w}")
        label = f" {o.launch.label}" if o.launch.label else ""
        metrics = " ".join(f"{k}={v:.6g}" for k, v in sorted(o.metrics.items())[:6])
        _status(
            f"[{o.run_id.short}] {o.launch.entry}{label}: {o.status} (exit {o.exit_code}), "
            f"{len(o.outputs)} output{'' if len(o.outputs) == 1 else 's'}"
            + (f", {metrics}" if metrics else "")
        )

    outcomes = open_repo().run_entry(
        entry,
        params,
        sweeps,
        jobs=jobs,
        hashseed=not no_hashseed,
        name=name,
        message=message,
        tags=parse_tags(tags),
        echo=_status,
        on_done=done,
    )
    check(outcomes)


@click.command()
@click.argument("spec", metavar="RUN")
@click.option(
    "--env",
    "env",
    type=click.Choice(["current", "recorded"]),
    default="current",
    show_default=True,
    help="recorded: a virtualenv with the recorded package versions (built with uv, or "
    "pip without it; cached by environment, see --rebuild-env); "
    "current: this environment, after listing how it differs.",
)
@click.option(
    "--to",
    "to",
    type=click.Path(file_okay=False),
    default=None,
    help="Re-run in DIR (new or empty; kept). Default: a temporary folder, always "
    "removed (the re-run's files are in its run).",
)
@click.option("--rtol", type=float, default=None, help="Relative tolerance for metrics.")
@click.option("--atol", type=float, default=None, help="Absolute tolerance for metrics.")
@click.option(
    "--rebuild-env",
    is_flag=True,
    help="With --env recorded: build the environment anew instead of reusing the cached "
    "build (.mlvc/cache/envs; `mlvc gc` removes builds no run needs).",
)
@json_option("the verdict")
def reproduce(
    spec: str,
    env: str,
    to: str | None,
    rtol: float | None,
    atol: float | None,
    rebuild_env: bool,
) -> None:
    """Re-run a recorded run from its record and say whether it came out the same.

    Verdict: EXACT (outputs byte-identical, metrics equal), WITHIN TOLERANCE (outputs
    differ, metrics within --rtol/--atol), DIFFERENT (each differing output and metric is
    named, with the environment differences that may explain it) or NOTHING TO COMPARE
    (the run has no outputs and no metrics; exit 15). The re-run is recorded as a run
    that reproduces RUN. Exit code 0 only for EXACT or WITHIN TOLERANCE.

    Example: mlvc reproduce baseline --env recorded --rtol 1e-6
    """
    res = open_repo().reproduce(
        spec, env=env, to=to, rtol=rtol, atol=atol, echo=_status, rebuild_env=rebuild_env
    )
    emit(res, _echo_verdict)
    res.check()


def _echo_verdict(res) -> None:
    from ..reproduce.run import render_verdict

    for line in render_verdict(res.verdict):
        echo(line)


@click.command()
@click.argument("spec", metavar="RUN", required=False)
@json_option("the runs")
def lineage(spec: str | None) -> None:
    """Show how runs descend from each other and which runs reproduce which.

    With RUN, only its ancestors, its descendants and their reproductions.

    Example: mlvc lineage baseline
    """
    r = open_repo()
    nodes, focus = r.lineage(spec)
    emit([n.to_dict() for n in nodes.values()], lambda _: _echo_lineage(r, nodes, focus))


def _echo_lineage(r, nodes: dict, focus: str | None) -> None:
    from ..reproduce.lineage import render_lineage

    if not nodes:
        echo("no runs yet: record one with `mlvc run` or `mlvc commit`")
        return
    head = r.head()
    for line in render_lineage(nodes, focus, head.hex if head else None):
        echo(line)


@click.command()
@click.argument("a", metavar="A")
@click.argument("b", metavar="B")
@click.option("--metric", "-M", "metric", required=True, help="The metric that moved.")
@click.option(
    "--rtol",
    type=float,
    default=None,
    help="Relative tolerance: a probe within it of A's (B's) value is A-like (B-like) "
    "[default: 1e-6].",
)
@click.option("-j", "--jobs", default=1, show_default=True, help="Probes at once.")
@json_option("the verdict, culprits and probes")
def bisect(a: str, b: str, metric: str, rtol: float | None, jobs: int) -> None:
    """Find which change between runs A and B moved a metric.

    Re-runs probes that take some of the changes between A and B (code and data files,
    entry point params, captured environment variables) from B and the rest from A,
    narrowing by section, then by file or key, with delta debugging, to the smallest set of
    changes that moves the metric from A's value to B's. A and B are re-run first and must
    reproduce their own value. Each probe is recorded as a run with A and B as parents
    (see `mlvc lineage`); a probe with the same inputs is reused, not run again. The
    Python environment (interpreter, packages) is not varied: probes run in this one.

    Example: mlvc bisect baseline candidate --metric accuracy -j 2
    """
    res = open_repo().bisect(a, b, metric, rtol=rtol, jobs=jobs, echo=_status)
    emit(res, _echo_bisection)


def _echo_bisection(res) -> None:
    from ..reproduce.bisect import render_bisection

    for line in render_bisection(res):
        echo(line)


COMMANDS = (run, reproduce, lineage, bisect)
