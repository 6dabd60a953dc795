"""The commands about runs: init, commit, log, show, runs, status, diff, checkout, tag."""

from __future__ import annotations

import os
import shlex
import sys

import click

from ..core.ids import short
from ..core.params import parse_metrics, parse_params, parse_tags
from ..render.text import aligned, clean, echo, human_size
from ._common import emit, json_option, open_reader, open_repo, wants_json


@click.command()
@click.argument("path", default=".", type=click.Path(file_okay=False))
@click.option("-q", "--quiet", is_flag=True, help="Print nothing unless it fails.")
def init(path: str, quiet: bool) -> None:
    """Create an empty repository (.mlvc/) in PATH.

    Example: mlvc init my-project
    """
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise click.BadParameter(f"cannot create {clean(path)}: {e.strerror}") from None
    from ..api.repo import Repo

    r = Repo.init(path)
    if not quiet:
        echo(f"Initialized empty mlvc repository in {r.dir}")


@click.command()
@click.option("-m", "--message", default="", help="What this run is about.")
@click.option(
    "-n",
    "--name",
    default="",
    help="A name to address the run by (letters, digits, . _ - + =; not HEAD, not hex digits).",
)
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="A param (typed: int, float, bool, str). Repeatable.",
)
@click.option(
    "--params",
    "params_files",
    multiple=True,
    metavar="FILE",
    help="Params from a JSON/YAML/TOML file, nested keys joined with dots.",
)
@click.option(
    "-M",
    "--metric",
    "metrics",
    multiple=True,
    metavar="KEY=VALUE",
    help="A final metric (a number). Repeatable.",
)
@click.option(
    "--metrics", "metrics_files", multiple=True, metavar="FILE", help="Metrics from a JSON file."
)
@click.option("--data", multiple=True, metavar="PATH", help="A data file or folder. Repeatable.")
@click.option(
    "--artifacts",
    multiple=True,
    metavar="PATH",
    help="An output file or folder (model, plots). Repeatable.",
)
@click.option(
    "-t",
    "--tag",
    "tags",
    multiple=True,
    metavar="TAG[=VALUE]",
    help="A tag; a bare TAG also addresses the run. Repeatable.",
)
@click.option(
    "--command",
    "command",
    default="",
    metavar="CMD",
    help="The command that produced this run (for `mlvc reproduce`).",
)
@click.option("-q", "--quiet", is_flag=True, help="Print only the run id (no progress bar).")
@json_option("the run")
def commit(
    message: str,
    name: str,
    params: tuple[str, ...],
    params_files: tuple[str, ...],
    metrics: tuple[str, ...],
    metrics_files: tuple[str, ...],
    data: tuple[str, ...],
    artifacts: tuple[str, ...],
    tags: tuple[str, ...],
    command: str,
    quiet: bool,
) -> None:
    """Record a run: code, data, artifacts, environment, params and metrics.

    Example: mlvc commit -m "lr sweep" -p lr=0.01 -M acc=0.93 --data data/ --artifacts model.pkl
    """
    from ..core import progress

    progress.enable(not quiet)
    r = open_repo()
    oid = r.commit(
        message,
        name=name,
        params=parse_params(params),
        metrics=parse_metrics(metrics),
        params_files=params_files,
        metrics_files=metrics_files,
        data=data,
        artifacts=artifacts,
        tags=parse_tags(tags),
        command=tuple(shlex.split(command)),
    )
    if quiet and not wants_json():
        click.echo(oid.hex)
    else:
        emit(r.show(oid, files=False), _echo_recorded)


def _echo_recorded(s: dict) -> None:
    label = f" ({s['name']})" if s["name"] else ""
    echo(f"[{s['short_id']}]{label} {clean(s['message'])}".rstrip())
    parts = [
        f"{sec} {s[sec]['files']} files {human_size(s[sec]['size'])}"
        for sec in ("code", "data", "artifacts")
        if s[sec]["files"]
    ]
    parts += [f"{len(s['params'])} params", f"{len(s['metrics'])} metrics"]
    echo("  " + ", ".join(parts))


@click.command()
@click.option("-n", "limit", type=click.IntRange(min=0), default=None, help="Show at most N runs.")
@click.option("-l", "--long", "long_", is_flag=True, help="Show params and metrics of each run.")
@json_option("the runs")
def log(limit: int | None, long_: bool) -> None:
    """List runs, newest first.

    Example: mlvc log -n 10 -l
    """
    r = open_reader()
    emit(r.log(limit), lambda runs: _echo_log(r, runs, long_))


def _echo_log(r, runs: list[dict], long_: bool) -> None:
    if not runs:
        echo("no runs yet: record one with `mlvc commit`")
        return
    head = r.head()
    if not long_:
        rows = [
            [
                ("* " if head and x["id"] == head.hex else "  ") + x["short_id"],
                x["name"],
                x["status"],
                x["created"],
                x["message"],
            ]
            for x in runs
        ]
        echo(aligned(["  run", "name", "status", "created", "message"], rows))
        return
    for x in runs:
        s = r.show(x["id"], files=False)
        _echo_run_header(s)
        echo()


def _echo_run_header(s: dict) -> None:
    head = " (HEAD)" if s["head"] else ""
    echo(f"run {s['id']}{head}", fg="yellow")
    for label, key in (
        ("Name", "name"),
        ("Author", "author"),
        ("Date", "started"),
        ("Status", "status"),
    ):
        if s[key]:
            echo(f"{label + ':':9}{clean(s[key])}")
    if s["message"]:  # shown as written, indented, like git
        body = "\n".join("    " + line for line in s["message"].splitlines())
        echo(f"\n{body}\n")
    if s["params"]:
        echo("Params:  " + ", ".join(f"{clean(k)}={clean(v)}" for k, v in s["params"].items()))
    if s["metrics"]:
        echo(
            "Metrics: "
            + ", ".join(
                f"{clean(k)}={v:.6g}" if isinstance(v, float) else f"{clean(k)}={clean(v)}"
                for k, v in s["metrics"].items()
            )
        )


@click.command()
@click.argument("spec", metavar="RUN[:PATH]", default="HEAD")
@json_option("the run")
@click.option("--files/--no-files", default=True, help="List each section's files.")
def show(spec: str, files: bool) -> None:
    """Show every section of a run, or print a stored file with RUN:PATH.

    PATH is as `mlvc show RUN` lists it, optionally after its section:
    best:model.pkl and best:artifacts/model.pkl name the same artifact.

    Example: mlvc show HEAD~1 ; mlvc show best:artifacts/model.pkl > model.pkl
    """
    r = open_reader()
    if ":" in spec:
        out = sys.stdout.buffer
        for block in r.cat(spec):
            out.write(block)
        out.flush()
        return
    emit(r.show(spec, files=files), _echo_show)


def _echo_show(s: dict) -> None:
    if "key" in s and "id" not in s:  # a live run (Repo.show)
        _echo_live([s])
        if s["status"] != "running":
            echo("its process is gone; `mlvc runs` (or any commit) records it as killed")
        return
    _echo_run_header(s)
    for label, key in (("Parents", "parents"), ("Command", "command"), ("Tags", "tags")):
        if s[key]:
            if key == "command":
                value = shlex.join(s[key])
            elif key == "tags":
                value = ", ".join(f"{k}={v}" if v else k for k, v in s[key].items())
            else:
                value = " ".join(s[key])
            echo(f"{label + ':':9}{clean(value)}")
    if s.get("exit_code") is not None:
        echo(f"Exit:    {s['exit_code']}")
    if s.get("reproduces"):
        echo(f"Reproduces: {short(s['reproduces'])} (`mlvc lineage {s['short_id']}`)")
    if s["git"]:
        g = s["git"]
        dirty = " (dirty)" if g.get("dirty") else ""
        where = clean(g.get("branch") or "(detached)")
        echo(f"Git:     {clean(str(g.get('commit', ''))[:12])} on {where}{dirty}")
    if s["env"]:
        e = s["env"]
        echo(
            f"Env:     {clean(e['python'])}, {clean(e['platform'])}, {e['packages']} packages "
            f"[{short(e['id'])}]"
        )
    for sec in ("code", "data", "artifacts"):
        info = s[sec]
        if not info["files"]:
            continue
        echo(f"\n{sec}: {info['files']} files, {human_size(info['size'])}")
        entries = info.get("entries", [])
        for e in entries[:50]:
            echo(f"  {short(e['id'])}  {human_size(e['size']):>9}  {clean(e['path'])}")
        if len(entries) > 50:
            echo(f"  ... and {len(entries) - 50} more (--json lists all)")


@click.command()
@json_option("the live runs")
def runs() -> None:
    """List live runs (in progress) with their latest metrics.

    Runs whose process died are recorded as `killed` first. Example: mlvc runs
    """
    emit(open_repo().live_runs(), _echo_live)


def _echo_live(live: list[dict]) -> None:
    if not live:
        echo("no live runs")
        return
    rows = [
        [
            x["key"],
            x["name"],
            x["pid"],
            x["points"],
            ", ".join(f"{k}={v:.4g}" for k, v in sorted(x["metrics"].items())),
        ]
        for x in live
    ]
    echo(aligned(["live run", "name", "pid", "points", "latest metrics"], rows))


@click.command()
@json_option("the changes")
def status() -> None:
    """Compare the working tree with the HEAD run.

    Example: mlvc status
    """
    emit(open_repo().status(), _echo_status)


def _echo_status(st: dict) -> None:
    echo(f"HEAD: {short(st['head']) if st['head'] else '(no runs yet)'}")
    unchanged = True
    for sec in ("code", "data", "artifacts"):
        changes = st[sec]
        for mark, key in (("M", "modified"), ("A", "added"), ("D", "removed")):
            for p in changes[key]:
                unchanged = False
                echo(f"  {mark} {sec}: {clean(p)}")
    if unchanged:
        echo("nothing changed since HEAD")


@click.command()
@click.argument("a", metavar="RUN1")
@click.argument("b", metavar="RUN2", required=False)
@click.option("--patch", is_flag=True, help="Unified diffs of changed text files in code.")
@json_option("the differences")
@click.option(
    "--color/--no-color", default=None, help="Colour the report (default: on a terminal)."
)
def diff(a: str, b: str | None, patch: bool, color: bool | None) -> None:
    """Compare two runs: params, metrics, code, data, artifacts, environment.

    With one run, compares it with HEAD. Example: mlvc diff HEAD~1 HEAD --patch
    """
    emit(open_reader().diff(a, b or "HEAD", patch=patch), lambda d: _echo_diff(d, color))


def _echo_diff(d, color: bool | None) -> None:
    from ..render.diff import render_diff

    if color is None:
        color = sys.stdout.isatty()
    click.echo(render_diff(d, color=color), color=color)  # cleaned, then coloured


@click.command()
@click.argument("spec", metavar="RUN")
@click.option(
    "--to",
    "to",
    type=click.Path(file_okay=False),
    default=None,
    help="Write into DIR instead of the project (HEAD does not move).",
)
@click.option(
    "--only",
    default=None,
    metavar="SECTIONS",
    help="Comma-separated subset of code,data,artifacts; HEAD does not move.",
)
@click.option("-f", "--force", is_flag=True, help="Overwrite uncommitted changes.")
@click.option(
    "--link",
    type=click.Choice(["copy", "hardlink", "symlink"]),
    default="copy",
    help="Copy files (default), or link them to read-only verified copies in .mlvc/cache.",
)
@click.option("-q", "--quiet", is_flag=True, help="No summary and no progress bar.")
def checkout(
    spec: str, to: str | None, only: str | None, force: bool, link: str, quiet: bool
) -> None:
    """Materialize a run's files exactly (verified against their hashes).

    Example: mlvc checkout baseline --to /tmp/baseline
    """
    from ..core import progress

    progress.enable(not quiet)
    res = open_repo().checkout(spec, to=to, only=only, force=force, link=link)
    if not quiet:
        where = f" into {clean(res.target)}" if to else ""
        echo(
            f"checked out {res.run_id.short}{where}: {len(res.written)} written, "
            f"{res.unchanged} unchanged, {len(res.removed)} removed"
        )


@click.command()
@click.argument("spec", metavar="RUN")
@click.argument("tag")
def tag(spec: str, tag: str) -> None:
    """Point TAG at a run (moves it if it exists).

    TAG then addresses the run, so it cannot be HEAD nor 4-64 hex digits (an id prefix).
    Example: mlvc tag HEAD best
    """
    oid = open_repo().tag(spec, tag)
    echo(f"{tag} -> {oid.short}")


COMMANDS = (init, commit, log, show, runs, status, diff, checkout, tag)
