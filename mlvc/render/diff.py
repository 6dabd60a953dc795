"""``mlvc diff`` as text: a git-like report of a ``RunDiff``, optionally in colour."""

from __future__ import annotations

from typing import Any

import click

from ..diff.runs import FILE_SECTIONS, RunDiff, env_change_lines
from .text import clean, human_size

_COLORS = {"+": "green", "-": "red", "M": "yellow", "@": "cyan"}


def render_diff(d: RunDiff, color: bool = False) -> str:
    """A git-like report of a RunDiff (no trailing newline, ready for ``click.echo``).

    ``color`` paints added lines green, removed red, modified yellow, headers bold.
    """
    lines = [("#", f"diff {d.a[:10]} {d.b[:10]}")]
    if d.is_empty():
        lines.append(("", "  (no differences)"))
    for name, body in [
        ("params", _params_lines(d.params)),
        ("metrics", _metrics_lines(d.metrics, d.unchanged_metrics)),
        *[(s, _files_lines(getattr(d, s))) for s in FILE_SECTIONS],
        ("env", env_change_lines(d.env)),
    ]:
        if body:
            lines += [("#", name), *body]
    # run data (keys, values, paths, file content) is cleaned before colour is added
    return "\n".join(_paint(kind, clean(text, keep="\t"), color) for kind, text in lines)


def _paint(kind: str, text: str, color: bool) -> str:
    if not color:
        return text
    if kind == "#":
        return click.style(text, bold=True)
    return click.style(text, fg=_COLORS[kind]) if kind in _COLORS else text


def _params_lines(p: dict) -> list[tuple[str, str]]:
    return [
        *[("M", f"  {k}: {_val(old)} → {_val(new)}") for k, (old, new) in p["changed"].items()],
        *[("+", f"+ {k}: {_val(v)}") for k, v in p["added"].items()],
        *[("-", f"- {k}: {_val(v)}") for k, v in p["removed"].items()],
    ]


def _val(v: Any) -> str:
    """Strings quoted so that 1, 1.0 and "1" read differently."""
    return f'"{v}"' if isinstance(v, str) else repr(v)


def _metrics_lines(m: dict, unchanged: int) -> list[tuple[str, str]]:
    if not m:
        return []
    rows = [["metric", "old", "new", "delta", "%"]]
    kinds = [""]
    for k, v in m.items():
        kind = "+" if v["old"] is None else "-" if v["new"] is None else "M"
        pct = "-" if v["pct"] is None else f"{v['pct']:+.1f}%"
        delta = "-" if v["delta"] is None else f"{v['delta']:+.6g}"
        rows.append([k, _num(v["old"]), _num(v["new"]), delta, pct])
        kinds.append(kind)
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    out = []
    for kind, row in zip(kinds, rows, strict=True):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        mark = kind if kind in ("+", "-") else " "
        out.append((kind, f"{mark} " + "  ".join(cells).rstrip()))
    if unchanged:
        out.append(("", f"  ({unchanged} unchanged)"))
    return out


def _num(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _files_lines(f: dict) -> list[tuple[str, str]]:
    items = [("M", i) for i in f["modified"]] + [("+", i) for i in f["added"]]
    items += [("-", i) for i in f["removed"]]
    out = []
    for kind, item in sorted(items, key=lambda ki: ki[1]["path"]):
        out.append((kind, _file_line(kind, item)))
        out += _patch_lines(item.get("patch"))
    return out


def _file_line(kind: str, item: dict) -> str:
    path = item["path"]
    if kind == "+":
        return f"  A {path} ({human_size(item['size'])})"
    if kind == "-":
        return f"  D {path}"
    note = f"{human_size(item['old_size'])} → {human_size(item['new_size'])}"
    if item["old_kind"] != item["new_kind"]:
        note += f", {item['old_kind']} → {item['new_kind']}"
    return f"  M {path} ({note})"


def _patch_lines(patch: str | None) -> list[tuple[str, str]]:
    if not patch:
        return []
    out = []
    for ln in patch.splitlines():
        kind = ln[:1] if ln[:1] in ("+", "-", "@") and not ln.startswith(("+++", "---")) else ""
        out.append((kind, "    " + ln))
    return out
