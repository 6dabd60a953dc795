"""``mlvc which`` for people: the file, then who produced it, who consumed it, and models."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .text import human_size

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
        lines.append("produced by no run: it came from outside (an input only)")
    for title, rows in (("produced by", p.produced), ("consumed by", p.consumed)):
        if rows:
            lines.append(f"{title} {len(rows)} run{'s' if len(rows) != 1 else ''}:")
            lines += [f"  {_run(r)}  {r['section']:<9} {r['path']}" for r in rows]
    if p.models:
        lines.append("in registered models:")
        lines += [
            f"  {m['name']} v{m['version']}  {m['path']}"
            + (f"  (from run {m['run'][:10]})" if m["run"] else "")
            for m in p.models
        ]
    return lines


def _run(r: dict) -> str:
    name = f" ({r['name']})" if r["name"] else ""
    when = f" {r['started'][:19].replace('T', ' ')}" if r["started"] else ""
    return f"{r['short']}{name}{when}"
