"""Storage commands: ``mlvc gc`` and ``mlvc du`` (registered at the end of cli.py)."""

from __future__ import annotations

import click

from ..render.text import aligned, echo, human_size, to_json


def _repo():
    from ..api.repo import Repo

    return Repo()


@click.command()
@click.option("-n", "--dry-run", is_flag=True, help="Only say what would be removed.")
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=3600.0,
    show_default=True,
    metavar="SECONDS",
    help="Keep unreachable objects younger than this (commits in flight).",
)
@click.option("--json", "as_json", is_flag=True)
def gc(dry_run, grace, as_json):
    """Remove objects that no ref, reflog, journal entry or live run reaches.

    Packs that are mostly garbage are rewritten; anything younger than the grace period
    is kept. Example: mlvc gc --dry-run
    """
    rep = _repo().gc(dry_run=dry_run, grace=grace)
    if as_json:
        click.echo(to_json(rep.__dict__))
        return
    verb = "would free" if dry_run else "freed"
    echo(
        f"{verb} {human_size(rep.freed)}: {rep.removed} objects, {rep.packs_removed} packs "
        f"removed, {rep.packs_repacked} repacked, {rep.cache_files} link-cache files; "
        f"{rep.reachable} objects reachable, {rep.kept_young} unreachable kept (younger "
        "than the grace period)"
    )


@click.command()
@click.argument("runs", nargs=-1, metavar="[RUN]...")
@click.option("--json", "as_json", is_flag=True)
def du(runs, as_json):
    """Show logical size, stored size and dedup ratio per run and for the store.

    `new` is what a run added that no earlier run had. Example: mlvc du
    """
    d = _repo().du(list(runs) or None)
    if as_json:
        click.echo(to_json(d))
        return

    def ratio(x):
        return f"{x:.2f}x" if x else "-"

    rows = [
        [
            r["id"][:10],
            r["name"],
            r["files"],
            human_size(r["logical"]),
            human_size(r["stored"]),
            human_size(r["new"]),
            ratio(r["ratio"]),
        ]
        for r in d["runs"]
    ]
    echo(aligned(["run", "name", "files", "logical", "stored", "new", "dedup"], rows))
    s = d["store"]
    echo(
        f"store: {s['runs']} runs, {human_size(s['logical'])} logical, "
        f"{human_size(s['stored'])} on disk in {s['packs']} packs, dedup {ratio(s['ratio'])}"
        + (f"; link cache {human_size(s['link_cache'])}" if s["link_cache"] else "")
    )
