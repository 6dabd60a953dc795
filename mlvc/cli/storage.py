"""The storage commands: ``mlvc gc``, ``mlvc du`` and ``mlvc fsck``."""

from __future__ import annotations

import click

from ..core.ids import short
from ..maintenance import GRACE_S
from ..render.text import aligned, clean, echo, human_size
from ._common import emit, json_option, open_repo


@click.command()
@click.option("-n", "--dry-run", is_flag=True, help="Only say what would be removed.")
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=GRACE_S,
    show_default=True,
    metavar="SECONDS",
    help="Keep unreachable objects younger than this (commits in flight).",
)
@json_option("the report")
def gc(dry_run: bool, grace: float) -> None:
    """Remove objects that no ref, reflog, journal entry or live run reaches.

    Packs that are mostly garbage are rewritten; anything younger than the grace period
    is kept. Example: mlvc gc --dry-run
    """
    emit(open_repo().gc(dry_run=dry_run, grace=grace), _echo_gc)


def _echo_gc(rep) -> None:
    verb = "would free" if rep.dry_run else "freed"
    echo(
        f"{verb} {human_size(rep.freed)}: {rep.removed} objects, {rep.packs_removed} packs "
        f"removed, {rep.packs_repacked} repacked, {rep.cache_files} link-cache files, "
        f"{rep.cache_envs} cached environments; "
        f"{rep.reachable} objects reachable, {rep.kept_young} unreachable kept (younger "
        "than the grace period)"
    )


@click.command()
@click.argument("runs", nargs=-1, metavar="[RUN]...")
@json_option("the sizes")
def du(runs: tuple[str, ...]) -> None:
    """Show logical size, stored size and dedup ratio per run and for the store.

    `new` is what a run added that no earlier run had. Example: mlvc du
    """
    emit(open_repo().du(list(runs) or None), _echo_du)


def _ratio(x: float | None) -> str:
    return f"{x:.2f}x" if x else "-"


def _echo_du(d: dict) -> None:
    rows = [
        [
            short(r["id"]),
            r["name"],
            r["files"],
            human_size(r["logical"]),
            human_size(r["stored"]),
            human_size(r["new"]),
            _ratio(r["ratio"]),
        ]
        for r in d["runs"]
    ]
    echo(aligned(["run", "name", "files", "logical", "stored", "new", "dedup"], rows))
    s = d["store"]
    echo(
        f"store: {s['runs']} runs, {human_size(s['logical'])} logical, "
        f"{human_size(s['stored'])} on disk in {s['packs']} packs, dedup {_ratio(s['ratio'])}"
        + (f"; link cache {human_size(s['link_cache'])}" if s["link_cache"] else "")
    )


@click.command()
@click.option(
    "--remote",
    "remote_name",
    metavar="NAME",
    help="Check the remote NAME instead of this repository (through its transport).",
)
@click.option(
    "--prune-orphans",
    is_flag=True,
    help="With --remote: delete packs an interrupted push left without an index, "
    "once older than --orphan-grace.",
)
@click.option(
    "--orphan-grace",
    type=click.FloatRange(min=0),
    default=86400.0,
    show_default=True,
    metavar="SECONDS",
    help="With --prune-orphans: keep orphan packs younger than this (a push in flight).",
)
@json_option("the problems and what was repaired")
def fsck(remote_name: str | None, prune_orphans: bool, orphan_grace: float) -> None:
    """Re-hash every object and follow every ref; list every problem.

    What it can repair without loss it repairs and names: a pack whose index is damaged
    or missing is indexed anew from the pack, a damaged stat cache is removed, a damaged
    index.duckdb (every table is read through) is rebuilt. It never deletes a pack.

    With --remote NAME it checks a remote instead: every index file, every pack record
    re-hashed (read by bounded ranged reads), every run of its runs files with all it
    reaches, every refs.json target; packs left without an index by an interrupted push
    are listed (and deleted with --prune-orphans). Example: mlvc fsck --remote origin
    """
    from ..errors import FsckFailed, UsageError

    if remote_name is None:
        if prune_orphans:
            raise UsageError("--prune-orphans needs --remote NAME")
        notes: list[str] = []
        problems = open_repo().fsck(notes)
        emit({"problems": problems, "repaired": notes}, _echo_fsck)
    else:
        from ..api import sync

        rep = sync.fsck_remote(open_repo(), remote_name, prune_orphans, orphan_grace)
        emit(rep, _echo_fsck_remote)
        problems = rep.problems
    if problems:
        raise FsckFailed(f"{len(problems)} problem(s) found")


def _echo_fsck(report: dict) -> None:
    for n in report["repaired"]:
        click.echo(f"repaired: {n}")
    for p in report["problems"]:
        echo(clean(p))
    if not report["problems"]:
        echo("ok: no problems found")


def _echo_fsck_remote(rep) -> None:
    for o in rep.orphans:
        age = "" if o["age_s"] is None else f", {_age(o['age_s'])} old"
        what = "pruned" if o["pruned"] else "orphan pack (interrupted push)"
        kept = f" (not pruned: {o['kept']})" if o.get("kept") else ""
        echo(clean(f"{what}: {o['pack']}, {o['bytes']} bytes{age}{kept}"))
    for p in rep.problems:
        echo(clean(p))
    s = "" if rep.requests == 1 else "s"
    echo(
        f"remote {rep.remote}: {rep.objects} objects in {rep.packs} packs "
        f"({human_size(rep.bytes_checked)} checked), {rep.indexes} indexes, {rep.runs} runs, "
        f"{rep.refs} refs ({rep.requests} request{s})"
    )
    if not rep.problems:
        echo("ok: no problems found")


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


COMMANDS = (gc, du, fsck)
