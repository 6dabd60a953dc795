"""Remotes: ``mlvc remote add|list|remove``, ``push``, ``fetch``, ``pull`` and ``clone``.

A thin shell over ``mlvc.remotes.config`` and ``mlvc.api.sync`` (docs/remotes.md).
"""

from __future__ import annotations

import click

from ..render.text import aligned, clean, echo, human_size
from ._common import emit, json_option, open_repo, wants_json

QUIET = click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary.")


def _progress(quiet: bool) -> None:
    from ..core import progress

    progress.enable(not quiet)


@click.group()
def remote() -> None:
    """Remotes: where runs are pushed to and pulled from.

    \b
    A remote is a folder, s3://bucket/prefix (query parameters such as
    endpoint_override, scheme and region are passed to pyarrow), gs://, abfs://,
    hdfs://, or an mlvc server (http(s)://). Credentials come from the environment,
    never from the URL. Example:
      mlvc remote add origin s3://team-bucket/mlvc
      mlvc push
    """


@remote.command("add")
@click.argument("name")
@click.argument("url")
@click.option(
    "--token-env",
    metavar="VAR",
    help="For an mlvc server: the environment variable holding its token (its name is "
    "stored, never the token).",
)
def remote_add(name: str, url: str, token_env: str | None) -> None:
    """Add a remote NAME at URL.

    Example: mlvc remote add origin s3://team-bucket/mlvc?region=eu-west-1
    """
    from ..remotes import config

    r = config.add(open_repo().layout, name, url, token_env)
    echo(f"remote {r.name}: {clean(r.url)}")


@remote.command("list")
@json_option("the remotes")
def remote_list() -> None:
    """List the remotes.

    Example: mlvc remote list
    """
    from ..remotes import config

    found = [
        {"name": r.name, "url": r.url, "token_env": r.token_env}
        for r in config.list_remotes(open_repo().layout)
    ]
    emit(found, lambda rows: echo(aligned(["name", "url"], [[r["name"], r["url"]] for r in rows])))


@remote.command("remove")
@click.argument("name")
def remote_remove(name: str) -> None:
    """Forget the remote NAME (its bucket is left as it is).

    Example: mlvc remote remove origin
    """
    import shutil

    from ..remotes import config

    repo = open_repo()
    r = config.remove(repo.layout, name)
    shutil.rmtree(repo.layout.remote(r.name), ignore_errors=True)
    echo(f"removed remote {r.name} ({clean(r.url)})")


def _requests(rep) -> str:
    return f"{rep.requests} request{'s' if rep.requests != 1 else ''}"


@click.command()
@click.argument("remote_name", metavar="[REMOTE]", required=False)
@click.argument("runs", nargs=-1, metavar="[RUN]...")
@click.option("--all", "all_runs", is_flag=True, help="Push every recorded run.")
@click.option("--force", is_flag=True, help="Set refs even if the remote moved them.")
@QUIET
@json_option("a summary")
def push(remote_name: str | None, runs: tuple[str, ...], all_runs: bool, force: bool,
         quiet: bool) -> None:  # fmt: skip
    """Send a remote (default origin) the runs it lacks, then the refs.

    Without RUN: HEAD's run and every run or model version a name, tag or model ref
    names, with their ancestors. Only missing objects travel, in packs; refs move by
    compare-and-swap, and a ref someone else moved since your last fetch is refused
    (exit 6) unless --force.

    \b
    Example:
      mlvc push                 # to origin
      mlvc push backup --all
    """
    from ..api import sync

    _progress(quiet)
    rep = sync.push(open_repo(), remote_name, runs, all_runs, force)
    if not quiet or wants_json():
        emit(rep, _echo_push)


def _echo_push(rep) -> None:
    if not rep.objects and not rep.refs and not rep.runs:
        echo(f"{rep.remote}: up to date ({_requests(rep)})")
        return
    refs = f", refs {', '.join(sorted(rep.refs))}" if rep.refs else ""
    echo(
        f"{rep.remote}: sent {rep.objects} objects in {rep.packs} packs "
        f"({human_size(rep.bytes_sent)}), {rep.runs} runs{refs} ({_requests(rep)})"
    )


@click.command()
@click.argument("remote_name", metavar="[REMOTE]", required=False)
@QUIET
@json_option("a summary")
def fetch(remote_name: str | None, quiet: bool) -> None:
    """Bring the runs a remote (default origin) has and this repository lacks.

    Every object is checked against its id before it is stored; local names and tags are
    not moved (that is `mlvc pull`).

    Example: mlvc fetch origin
    """
    from ..api import sync

    _progress(quiet)
    rep = sync.fetch(open_repo(), remote_name)
    if not quiet or wants_json():
        emit(rep, _echo_fetch)


def _echo_fetch(rep) -> None:
    if not rep.runs and not rep.objects:
        echo(f"{rep.remote}: up to date ({_requests(rep)})")
        return
    promised = f", {rep.promised} large files left on the remote" if rep.promised else ""
    echo(
        f"{rep.remote}: {len(rep.runs)} new runs, {rep.objects} objects "
        f"({human_size(rep.bytes_received)} received, {_requests(rep)}){promised}"
    )


@click.command()
@click.argument("remote_name", metavar="[REMOTE]", required=False)
@click.argument("runs", nargs=-1, metavar="[RUN]...")
@QUIET
@json_option("a summary")
def pull(remote_name: str | None, runs: tuple[str, ...], quiet: bool) -> None:
    """Fetch from a remote (default origin), then move local refs it moved.

    A name, tag or model ref moves only if it did not change here since the last
    pull or push; one changed on both sides is reported and kept. RUN: only these
    runs (id, prefix, name or tag on the remote). Checkout stays a separate step.

    \b
    Example:
      mlvc pull
      mlvc pull origin baseline && mlvc checkout baseline
    """
    from ..api import sync

    _progress(quiet)
    rep = sync.pull(open_repo(), remote_name, runs)
    if not quiet or wants_json():
        emit(rep, _echo_pull)


def _echo_pull(rep) -> None:
    _echo_fetch(rep.fetch)
    for key, value in sorted(rep.updated.items()):
        echo(f"  {key} -> {value[:10] if not value.startswith('ref: ') else value}")
    for line in rep.conflicts:
        echo(f"  conflict: {clean(line)}")


@click.command()
@click.argument("url")
@click.argument("directory", metavar="DIR")
@click.option(
    "--lazy",
    is_flag=True,
    help="Fetch runs, trees, params, metrics and files under 1 MiB now; larger files "
    "when first read (checkout, model load, show RUN:PATH).",
)
@QUIET
@json_option("a summary")
def clone(url: str, directory: str, lazy: bool, quiet: bool) -> None:
    """Make DIR a new repository with URL as its remote origin, and pull everything.

    \b
    Example:
      mlvc clone s3://team-bucket/mlvc?region=eu-west-1 project
      mlvc clone --lazy /mnt/team/mlvc project   # big files arrive when read
    """
    from ..api import sync

    _progress(quiet)
    _repo, rep = sync.clone(url, directory, lazy=lazy)
    if not quiet or wants_json():
        emit(rep, _echo_pull)


COMMANDS = (remote, push, fetch, pull, clone)
