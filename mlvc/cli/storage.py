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
        f"removed, {rep.packs_repacked} repacked, {rep.cache_files} link-cache files; "
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
@json_option("the problems and what was repaired")
def fsck() -> None:
    """Re-hash every object and follow every ref; list every problem.

    What it can repair without loss it repairs and names: a pack whose index is damaged
    or missing is indexed anew from the pack, a damaged stat cache is removed, a damaged
    index.duckdb (every table is read through) is rebuilt. It never deletes a pack.
    Example: mlvc fsck
    """
    from ..errors import FsckFailed

    notes: list[str] = []
    problems = open_repo().fsck(notes)
    emit({"problems": problems, "repaired": notes}, _echo_fsck)
    if problems:
        raise FsckFailed(f"{len(problems)} problem(s) found")


def _echo_fsck(report: dict) -> None:
    for n in report["repaired"]:
        click.echo(f"repaired: {n}")
    for p in report["problems"]:
        echo(clean(p))
    if not report["problems"]:
        echo("ok: no problems found")


COMMANDS = (gc, du, fsck)
