"""What the web UI's run page shows of a run's files and relatives: the head of a table
(CSV, TSV, Parquet), the start of a text or JSON file, and the runs that descend from or
reproduce a run. Only reads; a file is read through ``Repo.cat`` (verified)."""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
from typing import Any

from ..errors import UsageError

HEAD_ROWS = 50
TEXT_BYTES = 64 * 1024
JSON_BYTES = 1024 * 1024
CSV_BYTES = 1024 * 1024
PARQUET_BYTES = 512 * 1024 * 1024  # copied whole to read its footer: larger ones are refused
# images by name, with the content type they are served as (mlvc.server.ui.data)
IMAGES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
          ".gif": "image/gif", ".webp": "image/webp"}  # fmt: skip
TEXTS = {".txt", ".log", ".md", ".py", ".yaml", ".yml", ".toml", ".cfg", ".ini", ".sh",
         ".out", ".err", ".rst", ".r", ".sql", ".ipynb", ".html", ".xml", ".svg", ""}  # fmt: skip
TABLES = {".csv": ",", ".tsv": "\t"}


def kind_of(path: str) -> str:
    """How a file is previewed, from its name: image, json, table, parquet, text or none.
    (The bytes route decides its content type from the same allow-list, never sniffing.)"""
    ext = os.path.splitext(path)[1].lower()
    if ext in IMAGES:
        return "image"
    if ext == ".json":
        return "json"
    if ext in TABLES:
        return "table"
    if ext == ".parquet":
        return "parquet"
    return "text" if ext in TEXTS else "none"


def _head(chunks, limit: int) -> tuple[bytes, bool]:
    data = bytearray()
    for chunk in chunks:
        data += chunk
        if len(data) > limit:
            return bytes(data[:limit]), True
    return bytes(data), False


def _text(data: bytes) -> str:
    return codecs.decode(data, "utf-8", "replace")


def preview(repo, spec: str, path: str, rows: int = HEAD_ROWS) -> dict[str, Any]:
    """``{"kind", "path", ...}``: ``text`` (and ``truncated``) for text and JSON,
    ``columns``/``rows`` (the first ``rows`` rows) for CSV, TSV and Parquet."""
    if not path or len(path) > 4096 or "\x00" in path:
        raise UsageError("path: name a file of the run (section/path)")
    kind = kind_of(path)
    out: dict[str, Any] = {"kind": kind, "path": path}
    if kind in ("none", "image"):
        return out
    chunks = repo.cat(f"{spec}:{path}")
    if kind == "parquet":
        return {**out, "kind": "table", **_parquet_head(repo, chunks, rows)}
    limit = {"json": JSON_BYTES, "table": CSV_BYTES}.get(kind, TEXT_BYTES)
    data, truncated = _head(chunks, limit)
    if kind == "json" and not truncated:
        try:
            return {**out, "text": json.dumps(json.loads(data), indent=2, ensure_ascii=False),
                    "truncated": False}  # fmt: skip
        except (ValueError, RecursionError):
            kind = "text"
    if kind == "table":
        reader = csv.reader(
            io.StringIO(_text(data)), delimiter=TABLES[os.path.splitext(path)[1].lower()]
        )
        try:
            table = [row for _, row in zip(range(rows + 1), reader, strict=False)]
        except csv.Error as e:
            return {**out, "kind": "text", "text": _text(data[:TEXT_BYTES]), "error": str(e),
                    "truncated": truncated or len(data) > TEXT_BYTES}  # fmt: skip
        head = table[0] if table else []
        return {
            **out,
            "columns": head,
            "rows": table[1:],
            "truncated": truncated or len(table) > rows,
        }
    return {**out, "kind": "text", "text": _text(data[:TEXT_BYTES]),
            "truncated": truncated or len(data) > TEXT_BYTES}  # fmt: skip


def _parquet_head(repo, chunks, rows: int) -> dict[str, Any]:
    """The first rows of a Parquet file (copied to the repository's scratch folder: its
    footer is at its end)."""
    import tempfile

    import pyarrow as pa

    from ..core.parquet import ParquetRefused, decoded_limit, read_head

    repo.layout.tmp.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=repo.layout.tmp, suffix=".parquet") as tmp:
        size = 0
        for chunk in chunks:
            size += len(chunk)
            if size > PARQUET_BYTES:
                raise UsageError(
                    f"this Parquet file is over {PARQUET_BYTES >> 20} MiB: too large to "
                    "preview; download it"
                )
            tmp.write(chunk)
        tmp.flush()
        try:  # anyone may have pushed it, and the preview runs in the server: bounded
            table, schema, meta = read_head(tmp.name, rows, decoded_limit(size))
        except ParquetRefused as e:
            raise UsageError(f"cannot preview this Parquet file: {e}; download it") from None
        except (pa.ArrowException, OSError) as e:
            raise UsageError(f"not a readable Parquet file: {e}") from None
        body = [] if table is None else [list(r.values()) for r in table.slice(0, rows).to_pylist()]
        return {"columns": schema.names, "rows": body, "truncated": meta.num_rows > rows,
                "total_rows": meta.num_rows}  # fmt: skip


def relatives(index, run_id: str) -> dict[str, list[dict]]:
    """The runs whose parents include ``run_id`` (children) and those that reproduce it."""
    from ..index.user_sql import lit

    cols = "id, short_id, name, status, created"
    children = index.query(
        f"SELECT {cols} FROM runs WHERE list_contains(parents, {lit(run_id)}) ORDER BY created"
    ).to_pylist()
    repros = index.query(
        f"SELECT {cols} FROM runs WHERE reproduces = {lit(run_id)} ORDER BY created"
    ).to_pylist()
    return {"children": children, "reproductions": repros}
