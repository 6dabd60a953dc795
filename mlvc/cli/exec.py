"""The ``mlvc run``, ``mlvc reproduce`` and ``mlvc lineage`` commands (thin shells)."""

from __future__ import annotations

import click

from ..core.params import parse_tags
from ..render.text import echo, to_json


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
def run(entry, params, sweeps, jobs, name, message, tags, no_hashseed, quiet):
    """Run an entry point of the project and record it as a run.

    ENTRY is an entry point of mlvc.toml or MLproject (default: main), or a .py/.sh file.
    The command's output is streamed and kept as the artifact logs/ENTRY.log; its declared
    outputs become the run's artifacts; the exit code is recorded. A script that calls
    mlvc.start_run() adds to this run (see docs/reproduce.md).

    Example: mlvc run train -P lr=0.01 --sweep epochs=10,20 -j 2
    """
    from ..exec.run import check
    from .main import repo

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

    outcomes = repo().run_entry(
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
    help="recorded: a new virtualenv with the recorded package versions; "
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
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
def reproduce(spec, env, to, rtol, atol, as_json):
    """Re-run a recorded run from its record and say whether it came out the same.

    Verdict: EXACT (outputs byte-identical, metrics equal), WITHIN TOLERANCE (outputs
    differ, metrics within --rtol/--atol), DIFFERENT (each differing output and metric is
    named, with the environment differences that may explain it) or NOTHING TO COMPARE
    (the run has no outputs and no metrics; exit 15). The re-run is recorded as a run
    that reproduces RUN. Exit code 0 only for EXACT or WITHIN TOLERANCE.

    Example: mlvc reproduce baseline --env recorded --rtol 1e-6
    """
    from ..errors import NothingToCompare, ReproductionDiffers
    from ..reproduce.run import NOTHING, render_verdict
    from .main import repo

    res = repo().reproduce(spec, env=env, to=to, rtol=rtol, atol=atol, echo=_status)
    v = res.verdict
    if as_json:
        click.echo(
            to_json(
                {
                    "verdict": v.kind,
                    "original": res.original.hex,
                    "reproduction": res.run_id.hex,
                    "workdir": str(res.workdir) if res.kept else None,
                    "outputs": v.outputs,
                    "metrics": v.metrics,
                    "params": v.params,
                    "exit_code": v.exit_code,
                    "env": v.env,
                }
            )
        )
    else:
        for line in render_verdict(v):
            echo(line)
    where = (
        f"; its files are in {res.workdir}"
        if res.kept
        else f"; `mlvc checkout {res.run_id.short} --to DIR` brings its files back"
    )
    if v.kind == NOTHING:
        raise NothingToCompare(
            f"run {res.original.short} has no outputs and no metrics, so its re-run "
            f"{res.run_id.short} proves nothing{where}"
        )
    if not v.ok:
        raise ReproductionDiffers(
            f"run {res.original.short} did not reproduce ({v.kind}); the re-run is run "
            f"{res.run_id.short}{where}"
        )


@click.command()
@click.argument("spec", metavar="RUN", required=False)
@click.option("--json", "as_json", is_flag=True)
def lineage(spec, as_json):
    """Show how runs descend from each other and which runs reproduce which.

    With RUN, only its ancestors, its descendants and their reproductions.

    Example: mlvc lineage baseline
    """
    from ..reproduce.lineage import render_lineage
    from .main import repo

    r = repo()
    nodes, focus = r.lineage(spec)
    if as_json:
        click.echo(to_json([vars(n) for n in nodes.values()]))
        return
    if not nodes:
        echo("no runs yet: record one with `mlvc run` or `mlvc commit`")
        return
    head = r.head()
    for line in render_lineage(nodes, focus, head.hex if head else None):
        echo(line)


COMMANDS = (run, reproduce, lineage)
