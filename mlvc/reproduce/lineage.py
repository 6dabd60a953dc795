"""Lineage: how runs descend from one another, and which runs reproduce which, as a text graph.

Every run names its parents (the HEAD run when it was recorded); a reproduction also names
the run it ``reproduces`` and has it as its parent. ``lineage`` reads these from the index;
``render_lineage`` draws them oldest first. A straight line of runs stays in one column,
reproductions hang off the run they reproduce, and only a run with several children (a
sweep, say) opens branches, so a long history stays narrow::

    * 1a2b3c4d5e  baseline  finished  python train.py --lr 0.1
    * 2b3c4d5e6f            finished  python train.py --lr 0.5
    ├─ 3c4d5e6f70  reproduces 2b3c4d5e6f: EXACT
    └─ 4d5e6f7081  reproduces 2b3c4d5e6f: DIFFERENT
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..core.ids import ObjectId


@dataclass
class Node:
    id: str
    short: str
    name: str
    status: str
    created: str
    message: str
    command: str
    parents: list[str]
    reproduces: str | None
    verdict: str = ""
    children: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Every field by name (one element of ``mlvc lineage --json``)."""
        return asdict(self)


def lineage(
    ctx, spec: str | None = None, verdicts: bool = True
) -> tuple[dict[str, Node], str | None]:
    """Every run as a Node (children filled in), or, for ``spec``, only its ancestors, its
    descendants and the reproductions of either; returns (nodes, focus id)."""
    table = ctx.index.query(
        "SELECT id, short_id, name, status, strftime(created, '%Y-%m-%d %H:%M') AS created, "
        "message, command, parents, reproduces FROM runs ORDER BY created, id"
    )
    nodes = {
        r["id"]: Node(
            r["id"],
            r["short_id"],
            r["name"] or "",
            r["status"] or "",
            r["created"] or "",
            r["message"] or "",
            r["command"] or "",
            list(r["parents"] or []),
            r["reproduces"],
        )
        for r in table.to_pylist()
    }
    focus = None
    if spec is not None:
        focus = ctx.resolve(spec).hex
        nodes = _around(nodes, focus)
    for n in nodes.values():
        first = next((p for p in n.parents if p in nodes), None)
        if first is not None:
            nodes[first].children.append(n.id)
    if verdicts:
        for n in nodes.values():
            if n.reproduces:
                n.verdict = _verdict(ctx, n)
    return nodes, focus


def _around(nodes: dict[str, Node], focus: str) -> dict[str, Node]:
    keep = set()
    here: str | None = focus
    while here in nodes and here not in keep:  # ancestors, first parents
        keep.add(here)
        here = next(iter(nodes[here].parents), None)
    kids: dict[str, list[str]] = {}
    for n in nodes.values():
        for p in n.parents[:1]:
            kids.setdefault(p, []).append(n.id)
    todo = [focus]
    while todo:  # descendants
        for k in kids.get(todo.pop(), []):
            if k not in keep:
                keep.add(k)
                todo.append(k)
    keep |= {n.id for n in nodes.values() if n.reproduces in keep}
    return {k: n for k, n in nodes.items() if k in keep}


def _verdict(ctx, n: Node) -> str:
    """The reproduction's verdict, judged again from the two records (tolerances included)."""
    from ..errors import MlvcError
    from ..store.typed import read_env, read_run
    from .run import judge

    try:
        new = read_run(ctx.store, ObjectId.parse(n.id))
        old = read_run(ctx.store, ObjectId.parse(n.reproduces))
        rep = new.extra.get("reproduction", {})
        old_env = read_env(ctx.store, old.env).facts if old.env else {}
        new_env = read_env(ctx.store, new.env).facts if new.env else {}
        return judge(ctx.store, old, new, rep.get("rtol"), rep.get("atol"), old_env, new_env).kind
    except MlvcError:
        return "unknown (original run unreadable)"


def render_lineage(
    nodes: dict[str, Node], focus: str | None = None, head: str | None = None
) -> list[str]:
    """The graph as lines, roots (runs without a shown parent) first, oldest first."""
    lines: list[str] = []
    shown = {c for n in nodes.values() for c in n.children}
    seen: set[str] = set()
    for root in (n for n in nodes.values() if n.id not in shown):
        _draw(nodes, root.id, "* ", "", lines, (focus, head), seen)
    return lines


def _draw(nodes, nid: str, first: str, rest: str, lines: list[str], marks, seen) -> None:
    """Draw ``nid`` (its own line starts with ``first``, all after it with ``rest``).

    Reproductions that nothing descends from hang off their run; if one other child
    remains, it continues the line in the same column; several each get a branch."""
    while nid not in seen:
        seen.add(nid)
        n = nodes[nid]
        lines.append(first + _label(n, nodes, *marks))
        hang = [k for k in n.children if nodes[k].reproduces and not nodes[k].children]
        rest_kids = [k for k in n.children if k not in hang]
        for i, k in enumerate(hang):
            last = i == len(hang) - 1 and not rest_kids
            lines.append(rest + ("└─ " if last else "├─ ") + _label(nodes[k], nodes, *marks))
            seen.add(k)
        if len(rest_kids) == 1:
            nid, first = rest_kids[0], rest + "* "
            continue
        for i, k in enumerate(rest_kids):
            last = i == len(rest_kids) - 1
            branch = rest + ("└─ " if last else "├─ ")
            _draw(nodes, k, branch, rest + ("   " if last else "│  "), lines, marks, seen)
        return


def _label(n: Node, nodes: dict[str, Node], focus: str | None, head: str | None) -> str:
    parts = [n.short]
    if n.name:
        parts.append(n.name)
    if n.reproduces:
        orig = nodes.get(n.reproduces)
        short = orig.short if orig else n.reproduces[:10]
        parts.append(f"reproduces {short}: {n.verdict}" if n.verdict else f"reproduces {short}")
    else:
        parts.append(n.status)
        what = n.message or n.command
        if what:
            parts.append(what if len(what) <= 60 else what[:57] + "...")
    if len(n.parents) > 1:
        parts.append("(merge of " + ", ".join(p[:10] for p in n.parents) + ")")
    if n.created:
        parts.append(n.created)
    decorations = [d for d, on in (("HEAD", n.id == head), ("<- this run", n.id == focus)) if on]
    return "  ".join(parts) + (
        "  " + " ".join(f"({d})" for d in decorations) if decorations else ""
    )
