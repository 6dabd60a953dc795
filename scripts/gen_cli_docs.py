"""Write docs/cli.md from the click commands themselves, so the reference cannot drift.

Usage: python scripts/gen_cli_docs.py [--check]
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mlvc.cli import main
from mlvc.errors import EXIT_CODES

OUT = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def commands(group: click.Group, prefix: str):
    for name in sorted(group.commands):
        cmd = group.commands[name]
        if isinstance(cmd, click.Group):
            yield from commands(cmd, f"{prefix} {name}")
        else:
            yield f"{prefix} {name}", cmd


def render() -> str:
    lines = [
        "# CLI reference",
        "",
        "Generated from the commands' own help by `scripts/gen_cli_docs.py`; a test fails when",
        "it is out of date. Every command accepts `-h/--help`. Global option: `-C DIR` runs as",
        "if mlvc was started in DIR.",
        "",
    ]
    for full, cmd in commands(main, "mlvc"):
        ctx = click.Context(cmd, info_name=full, terminal_width=100, max_content_width=100)
        lines += [f"## `{full}`", "", "```", cmd.get_help(ctx), "```", ""]
    lines += ["## Exit codes", "", "| code | meaning |", "|---|---|"]
    lines += [f"| {code} | {meaning} |" for code, meaning in sorted(EXIT_CODES.items())]
    lines += [
        "",
        "Errors print one line, `mlvc: error: ...`, on stderr; a traceback is always a bug.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if OUT.read_text() == text else 1)
    OUT.write_text(text)
    print(f"wrote {OUT}")
