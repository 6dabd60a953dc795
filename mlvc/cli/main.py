"""The ``mlvc`` command: a thin shell that parses, calls one ``Repo`` method, and renders.

Every ``MlvcError`` becomes one line on stderr and its documented exit code (docs/cli.md).
"""

from __future__ import annotations

import logging
import os
import shlex
import sys

import click

from .._version import __version__
from ..api.repo import Repo
from ..core.params import parse_metrics, parse_params, parse_tags
from ..errors import FsckFailed, MlvcError
from ..render.text import FORMATS, aligned, clean, echo, human_size, to_json, write_table


class MlvcGroup(click.Group):
    """Maps library errors to one-line messages and exit codes, and library warnings to one
    line each on stderr."""

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except click.ClickException as e:  # click prints it; what the user typed is in it
            e.message = clean(e.message)
            raise

    def invoke(self, ctx):
        handler = _WarningLines()
        logging.getLogger("mlvc").addHandler(handler)
        try:
            return super().invoke(ctx)
        except click.ClickException as e:
            e.message = clean(e.message)
            raise
        except MlvcError as e:
            echo(f"mlvc: error: {clean(e)}", err=True)
            ctx.exit(e.exit_code)
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(1)
        except KeyboardInterrupt:
            echo("mlvc: interrupted", err=True)
            ctx.exit(130)
        except Exception as e:  # DuckDB stopped on Ctrl-C and said so in its own way
            if "duckdb" not in sys.modules or not _interruption(e):
                raise
            echo("mlvc: interrupted", err=True)
            ctx.exit(130)
        finally:
            logging.getLogger("mlvc").removeHandler(handler)


def _interruption(e: BaseException) -> bool:
    from ..index.user_sql import is_interruption

    return is_interruption(e)


class _WarningLines(logging.Handler):
    """Library warnings as ``mlvc: warning: ...``, one line each, each said once; other
    records as they are."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno != logging.WARNING:
            echo(message, err=True)
        elif message not in self.seen:
            self.seen.add(message)
            echo(f"mlvc: warning: {clean(message)}", err=True)


def repo() -> Repo:
    return Repo()


@click.group(cls=MlvcGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlvc")
@click.option("-C", "chdir", metavar="DIR", help="Run as if mlvc was started in DIR.")
def main(chdir):
    """mlvc: version every ML run — code, data, environment, params, metrics, artifacts.

    \b
    Typical session:
      mlvc init
      python train.py && mlvc commit -m "baseline" -p lr=0.01 -M acc=0.91 --artifacts model.pkl
      mlvc diff HEAD~1 HEAD
      mlvc query "SELECT id, \\"params.lr\\", \\"metrics.acc\\" FROM runs_wide"
      mlvc checkout HEAD~1 --to /tmp/replay
    """
    if chdir:
        try:
            os.chdir(chdir)
        except OSError as e:
            raise click.BadParameter(
                f"cannot enter {chdir}: {e.strerror}", param_hint="-C"
            ) from None


@main.command()
@click.argument("path", default=".", type=click.Path(file_okay=False))
def init(path):
    """Create an empty repository (.mlvc/) in PATH.

    Example: mlvc init my-project
    """
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise click.BadParameter(f"cannot create {clean(path)}: {e.strerror}") from None
    r = Repo.init(path)
    echo(f"Initialized empty mlvc repository in {r.dir}")


@main.command()
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
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
def commit(
    message,
    name,
    params,
    params_files,
    metrics,
    metrics_files,
    data,
    artifacts,
    tags,
    command,
    quiet,
    as_json,
):
    """Record a run: code, data, artifacts, environment, params and metrics.

    Example: mlvc commit -m "lr sweep" -p lr=0.01 -M acc=0.93 --data data/ --artifacts model.pkl
    """
    from ..core import progress

    progress.enable(not quiet)
    r = repo()
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
    if as_json:
        click.echo(to_json(r.show(oid, files=False)))
    elif quiet:
        click.echo(oid.hex)
    else:
        s = r.show(oid, files=False)
        label = f" ({s['name']})" if s["name"] else ""
        echo(f"[{oid.short}]{label} {clean(s['message'])}".rstrip())
        parts = [
            f"{sec} {s[sec]['files']} files {human_size(s[sec]['size'])}"
            for sec in ("code", "data", "artifacts")
            if s[sec]["files"]
        ]
        parts += [f"{len(s['params'])} params", f"{len(s['metrics'])} metrics"]
        echo("  " + ", ".join(parts))


@main.command()
@click.option("-n", "limit", type=click.IntRange(min=0), default=None, help="Show at most N runs.")
@click.option("-l", "--long", "long_", is_flag=True, help="Show params and metrics of each run.")
@click.option("--json", "as_json", is_flag=True)
def log(limit, long_, as_json):
    """List runs, newest first.

    Example: mlvc log -n 10 -l
    """
    r = repo()
    runs = r.log(limit)
    if as_json:
        click.echo(to_json(runs))
        return
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


@main.command()
@click.argument("spec", metavar="RUN[:PATH]", default="HEAD")
@click.option("--json", "as_json", is_flag=True)
@click.option("--files/--no-files", default=True, help="List each section's files.")
def show(spec, as_json, files):
    """Show every section of a run, or print a stored file with RUN:PATH.

    PATH is as `mlvc show RUN` lists it, optionally after its section:
    best:model.pkl and best:artifacts/model.pkl name the same artifact.

    Example: mlvc show HEAD~1 ; mlvc show best:artifacts/model.pkl > model.pkl
    """
    r = repo()
    if ":" in spec:
        out = sys.stdout.buffer
        for block in r.cat(spec):
            out.write(block)
        out.flush()
        return
    s = r.show(spec, files=files)
    if as_json:
        click.echo(to_json(s))
        return
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
        echo(f"Reproduces: {s['reproduces'][:10]} (`mlvc lineage {s['short_id']}`)")
    if s["git"]:
        g = s["git"]
        dirty = " (dirty)" if g.get("dirty") else ""
        where = clean(g.get("branch") or "(detached)")
        echo(f"Git:     {clean(str(g.get('commit', ''))[:12])} on {where}{dirty}")
    if s["env"]:
        e = s["env"]
        echo(
            f"Env:     {clean(e['python'])}, {clean(e['platform'])}, {e['packages']} packages "
            f"[{e['id'][:10]}]"
        )
    for sec in ("code", "data", "artifacts"):
        info = s[sec]
        if not info["files"]:
            continue
        echo(f"\n{sec}: {info['files']} files, {human_size(info['size'])}")
        entries = info.get("entries", [])
        for e in entries[:50]:
            echo(f"  {e['id'][:10]}  {human_size(e['size']):>9}  {clean(e['path'])}")
        if len(entries) > 50:
            echo(f"  ... and {len(entries) - 50} more (--json lists all)")


@main.command()
@click.option("--json", "as_json", is_flag=True)
def runs(as_json):
    """List live runs (in progress) with their latest metrics.

    Runs whose process died are recorded as `killed` first. Example: mlvc runs
    """
    live = repo().live_runs()
    if as_json:
        click.echo(to_json(live))
    elif not live:
        echo("no live runs")
    else:
        _echo_live(live)


def _echo_live(live: list[dict]) -> None:
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


@main.command()
@click.option("--json", "as_json", is_flag=True)
def status(as_json):
    """Compare the working tree with the HEAD run.

    Example: mlvc status
    """
    st = repo().status()
    if as_json:
        click.echo(to_json(st))
        return
    echo(f"HEAD: {st['head'][:10] if st['head'] else '(no runs yet)'}")
    unchanged = True
    for sec in ("code", "data", "artifacts"):
        changes = st[sec]
        for mark, key in (("M", "modified"), ("A", "added"), ("D", "removed")):
            for p in changes[key]:
                unchanged = False
                echo(f"  {mark} {sec}: {clean(p)}")
    if unchanged:
        echo("nothing changed since HEAD")


@main.command()
@click.argument("a", metavar="RUN1")
@click.argument("b", metavar="RUN2", required=False)
@click.option("--patch", is_flag=True, help="Unified diffs of changed text files in code.")
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--color/--no-color", default=None, help="Colour the report (default: on a terminal)."
)
def diff(a, b, patch, as_json, color):
    """Compare two runs: params, metrics, code, data, artifacts, environment.

    With one run, compares it with HEAD. Example: mlvc diff HEAD~1 HEAD --patch
    """
    from ..render.diff import render_diff

    d = repo().diff(a, b or "HEAD", patch=patch)
    if as_json:
        click.echo(to_json(d.to_dict()))
        return
    if color is None:
        color = sys.stdout.isatty()
    click.echo(render_diff(d, color=color), color=color)  # cleaned, then coloured


@main.command()
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
def checkout(spec, to, only, force, link, quiet):
    """Materialize a run's files exactly (verified against their hashes).

    Example: mlvc checkout baseline --to /tmp/baseline
    """
    from ..core import progress

    progress.enable(not quiet)
    r = repo()
    res = r.checkout(spec, to=to, only=only, force=force, link=link)
    if not quiet:
        where = f" into {clean(res.target)}" if to else ""
        echo(
            f"checked out {res.run_id.short}{where}: {len(res.written)} written, "
            f"{res.unchanged} unchanged, {len(res.removed)} removed"
        )


@main.command()
@click.argument("sql")
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=None,
    help="Output format (default: from the -o file's extension, else table).",
)
@click.option(
    "-o",
    "--output",
    default=None,
    type=click.Path(dir_okay=False),
    help="Write the result to a file (.csv, .json, .parquet: that format).",
)
def query(sql, fmt, output):
    """Run read-only SQL over the run index (tables: docs/sql-schema.md).

    Only reads run: SELECT, WITH, FROM, VALUES, SHOW, DESCRIBE, SUMMARIZE, PIVOT, EXPLAIN and
    the PRAGMAs that list tables. Ctrl-C stops a long query.

    Example: mlvc query "SELECT id, \\"metrics.acc\\" FROM runs_wide ORDER BY 2 DESC LIMIT 5"
    """
    from ..render.text import table_format

    table_format(fmt, output)  # a contradiction is refused before the query runs
    write_table(repo().query(sql), fmt, output)


@main.command()
@click.option("--json", "as_json", is_flag=True)
def fsck(as_json):
    """Re-hash every object and follow every ref; list every problem.

    What it can repair without loss it repairs and names: a pack whose index is damaged
    or missing is indexed anew from the pack, a damaged stat cache is removed, a damaged
    index.duckdb (every table is read through) is rebuilt. It never deletes a pack.
    Example: mlvc fsck
    """
    notes: list[str] = []
    problems = repo().fsck(notes)
    if as_json:
        click.echo(to_json({"problems": problems, "repaired": notes}))
    else:
        for n in notes:
            click.echo(f"repaired: {n}")
        for p in problems:
            echo(clean(p))
        if not problems:
            echo("ok: no problems found")
    if problems:
        raise FsckFailed(f"{len(problems)} problem(s) found")


@main.command()
@click.argument("spec", metavar="RUN")
@click.argument("tag")
def tag(spec, tag):
    """Point TAG at a run (moves it if it exists).

    TAG then addresses the run, so it cannot be HEAD nor 4-64 hex digits (an id prefix).
    Example: mlvc tag HEAD best
    """
    oid = repo().tag(spec, tag)
    echo(f"{tag} -> {oid.short}")


@main.group()
def index():
    """Manage the DuckDB index (a cache rebuilt from objects and refs)."""


@index.command("rebuild")
def index_rebuild():
    """Rebuild the index from objects and refs.

    Example: mlvc index rebuild
    """
    n = repo().rebuild_index()
    echo(f"index rebuilt: {n} runs")


from .exec import COMMANDS as _REPRODUCE_COMMANDS  # noqa: E402  (docs/reproduce.md)
from .models import models  # noqa: E402  (the models command group, docs/models.md)

main.add_command(models)
for _cmd in _REPRODUCE_COMMANDS:
    main.add_command(_cmd)

# -- storage commands (issue 4) -----------------------------------------------------------
from .storage import du as _du  # noqa: E402
from .storage import gc as _gc  # noqa: E402

main.add_command(_gc)
main.add_command(_du)

if __name__ == "__main__":  # pragma: no cover
    main()
