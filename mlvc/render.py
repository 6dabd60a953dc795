"""Turning results into text for people (aligned tables, sizes) and files for programs."""

from __future__ import annotations

import json
import math
import sys
from datetime import date, datetime
from typing import IO, Any

from .errors import UsageError

FORMATS = ("table", "csv", "json", "parquet")


def human_size(n: int | float | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.6g}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, list | dict):
        return json.dumps(value, default=str)
    return str(value)


def aligned(columns: list[str], rows: list[list[Any]], max_width: int = 60) -> str:
    """A plain aligned table; numbers right-aligned, long cells cut with '…'."""
    text = [[_cut(cell(v), max_width) for v in row] for row in rows]
    widths = [len(c) for c in columns]
    for row in text:
        widths = [max(w, len(v)) for w, v in zip(widths, row, strict=True)]
    numeric = [
        all(isinstance(r[i], int | float) or r[i] is None for r in rows) and rows
        for i in range(len(columns))
    ]

    def line(vals):
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(vals, widths, numeric, strict=True)
        ).rstrip()

    out = [line(columns), line(["-" * w for w in widths])]
    out += [line(r) for r in text]
    return "\n".join(out)


def _cut(s: str, width: int) -> str:
    s = s.replace("\n", " ")
    return s if len(s) <= width else s[: width - 1] + "…"


def _json_default(v):
    if isinstance(v, datetime | date):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.hex()
    return str(v)


def to_json(value: Any) -> str:
    from .show import jsonable

    return json.dumps(jsonable(value), indent=2, default=_json_default, allow_nan=False)


def write_table(table, fmt: str, out: str | None = None, stream: IO | None = None) -> None:
    """Write a pyarrow Table as an aligned table, CSV, JSON (records) or Parquet."""
    stream = stream or sys.stdout
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}: choose from {', '.join(FORMATS)}")
    if fmt == "parquet":
        import pyarrow.parquet as pq

        if out is None:
            raise UsageError("--format parquet needs -o FILE (Parquet is binary)")
        pq.write_table(table, out)
        return
    if fmt == "csv":
        import pyarrow.csv as pacsv

        if out is not None:
            pacsv.write_csv(table, out)
            return
        import io

        buf = io.BytesIO()
        pacsv.write_csv(table, buf)
        text = buf.getvalue().decode()
    elif fmt == "json":
        text = to_json(table.to_pylist()) + "\n"
    else:
        rows = [list(r.values()) for r in table.to_pylist()]
        text = (
            aligned(table.column_names, rows)
            + f"\n({table.num_rows} row{'s' * (table.num_rows != 1)})\n"
        )
    if out is not None:
        with open(out, "w") as f:
            f.write(text)
    else:
        stream.write(text)
