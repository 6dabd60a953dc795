"""Turning results into text for people (aligned tables, sizes) and files for programs.

Everything printed for people goes through ``clean`` (``echo`` and ``aligned`` call it): run
messages, names, params, paths and error messages are user data, and a terminal obeys the
control characters in them (an escape sequence can retitle or clear it). They are shown as
escapes instead (``\x1b``). Output for programs (``--json``, CSV, Parquet) stays exact.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any

from ..errors import UsageError

FORMATS = ("table", "csv", "json", "parquet")
# -o FILE's extension picks the format when -f is not given
EXTENSIONS = {".csv": "csv", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}

# C0 and C1 controls, DEL, and the Unicode marks that reorder text or break lines: what a
# terminal would act on rather than show; and the lone surrogates by which Python carries
# the bytes of a file name that is not UTF-8 (shown as \xNN, the byte, as git quotes them).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def clean(value: Any, keep: str = "") -> str:
    """``value`` as text safe to print: control characters as escapes, except those in ``keep``
    (``echo`` keeps newlines and tabs of multi-line text)."""
    text = value if isinstance(value, str) else str(value)
    if not _UNSAFE.search(text):
        return text
    return _UNSAFE.sub(lambda m: m.group() if m.group() in keep else _escape(m.group()), text)


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the undecodable byte itself
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def echo(text: Any = "", err: bool = False, **style) -> None:
    """Print text for people: cleaned (newlines and tabs kept), then styled (click.style)."""
    import click

    text = clean(text, keep="\n\t")
    click.echo(click.style(text, **style) if style else text, err=err)


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
    widths = [len(_cut(c, max_width)) for c in columns]
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

    out = [line([_cut(c, max_width) for c in columns]), line(["-" * w for w in widths])]
    out += [line(r) for r in text]
    return "\n".join(out)


def _cut(s: str, width: int) -> str:
    s = clean(s.replace("\n", " "))
    return s if len(s) <= width else s[: width - 1] + "…"


def _json_default(v):
    if isinstance(v, datetime | date):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.hex()
    return str(v)


def to_json(value: Any, indent: int | None = 2) -> str:
    """``value`` as JSON; ``indent=None``: on one line, without spaces."""
    from ..api.views import jsonable

    seps = (",", ":") if indent is None else None
    return json.dumps(jsonable(value), indent=indent, separators=seps, default=_json_default,
                      allow_nan=False)  # fmt: skip


def table_format(fmt: str | None, out: str | None) -> str:
    """The output format: ``fmt``, else the one ``out``'s extension names, else a table.

    A format that contradicts the file's extension (``-f csv -o x.parquet``) is refused."""
    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}: choose from {', '.join(FORMATS)}")
    implied = EXTENSIONS.get(Path(out).suffix.lower()) if out else None
    if fmt is not None and implied is not None and fmt != implied:
        raise UsageError(
            f"--format {fmt} does not match {clean(out)}, a .{implied} name; "
            f"drop --format or name the file .{fmt}"
        )
    if fmt == "parquet" and out is None:
        raise UsageError("--format parquet needs -o FILE (Parquet is binary)")
    return fmt or implied or "table"


def write_table(table, fmt: str | None, out: str | None = None, stream: IO | None = None) -> None:
    """Write a pyarrow Table as an aligned table, CSV, JSON (records) or Parquet.

    With ``out``, the file appears whole or not at all (temp file + rename); ``fmt`` None
    means: from the file's extension (see ``table_format``).
    """
    fmt = table_format(fmt, out)
    if out is None:
        (stream or sys.stdout).write(_text(table, fmt))
        return
    tmp = f"{out}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            _write(table, fmt, f)
        os.replace(tmp, out)
    except OSError as e:
        _unlink(tmp)
        raise UsageError(f"cannot write {clean(out)}: {e.strerror or e}") from None
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _write(table, fmt: str, f) -> None:
    """``table`` in ``fmt`` to the binary file ``f``."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, f)
    else:
        f.write(_text(table, fmt).encode())


def _flat(table):
    """``table`` with each list, struct or map column as JSON text (CSV has no nesting;
    pyarrow's writer refuses those types), other columns as they are."""
    import pyarrow as pa

    for i, field in enumerate(table.schema):
        if pa.types.is_nested(field.type):
            values = table.column(i).to_pylist()
            if pa.types.is_map(field.type):  # pairs to an object, as JSON readers expect
                values = [None if v is None else {str(k): x for k, x in v} for v in values]
            text = [None if v is None else to_json(v, indent=None) for v in values]
            table = table.set_column(i, field.name, pa.array(text, pa.string()))
    return table


def _text(table, fmt: str) -> str:
    if fmt == "csv":
        import io

        import pyarrow.csv as pacsv

        buf = io.BytesIO()
        pacsv.write_csv(_flat(table), buf)
        return buf.getvalue().decode()
    if fmt == "json":
        return to_json(table.to_pylist()) + "\n"
    rows = [list(r.values()) for r in table.to_pylist()]
    n = table.num_rows
    return aligned(table.column_names, rows) + f"\n({n} row{'s' * (n != 1)})\n"
