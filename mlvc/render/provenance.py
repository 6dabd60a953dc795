"""``mlvc which`` for people: the file, then who produced it, who consumed it, and models."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .text import aligned, human_size

if TYPE_CHECKING:
    from ..api.which import Provenance


def render_provenance(p: Provenance) -> list[str]:
    """Report lines: the id (and file), the first producer, every producer and consumer with
    the path the file had there, and the registered model versions that contain it."""
    where = f"{p.path} " if p.path else ""
    size = f", {human_size(p.size)}" if p.size is not None else ""
    lines = [f"{where}id {p.object_id}{size}"]
    if not p.found:
        lines.append("no run consumed or produced this file, and no registered model holds it")
        return lines
    first = p.first_producer
    if first:
        lines.append(f"first produced by run {_run(first)} as {first['path']}")
    else:
        lines.append("no run produced it: it came from outside the runs")
    runs = [("produced", r) for r in p.produced] + [("consumed", r) for r in p.consumed]
    if runs:
        n_p, n_c = len(p.produced), len(p.consumed)
        lines.append(f"{_count(len(runs))}: {n_p} produced it, {n_c} consumed it")
        rows = [
            [r["short"], r["name"], _when(r), role, r["section"], r["path"]] for role, r in runs
        ]
        table = aligned(["run", "name", "started", "role", "section", "path"], rows, 80)
        lines += [f"  {line}" for line in table.splitlines()]
    if p.models:
        lines.append("in registered models:")
        lines += [
            f"  {m['name']} v{m['version']}  {m['path']}"
            + (f"  (from run {m['run'][:10]})" if m["run"] else "")
            for m in p.models
        ]
    return lines


def _count(n: int) -> str:
    return f"{n} run{'' if n == 1 else 's'}"


def _when(r: dict) -> str:
    return r["started"][:19].replace("T", " ") if r["started"] else ""


def _run(r: dict) -> str:
    name = f" ({r['name']})" if r["name"] else ""
    return f"{r['short']}{name} {_when(r)}".rstrip()
