"""Figures, images and tables as the bytes of an artifact: what ``mlvc.log_figure``,
``mlvc.log_image`` and ``mlvc.log_table`` store (MLflow's shapes: matplotlib or plotly
figures, numpy arrays or PIL images, pandas DataFrames or Arrow tables). The libraries are
imported only when a value of theirs is given."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

from ..errors import UsageError


def figure_bytes(figure: Any, name: str) -> bytes:
    """A matplotlib figure as PNG/SVG/PDF/JPG (by ``name``'s suffix), a plotly figure as
    HTML (``.html``) or an image (needs plotly's kaleido)."""
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if hasattr(figure, "savefig"):  # matplotlib
        buf = io.BytesIO()
        figure.savefig(buf, format=suffix or "png")
        return buf.getvalue()
    if hasattr(figure, "to_html") and hasattr(figure, "write_image"):  # plotly
        if suffix in ("html", "htm"):
            return figure.to_html(include_plotlyjs="cdn").encode()
        return figure.to_image(format=suffix or "png")
    raise UsageError(f"log_figure takes a matplotlib or plotly figure, not {type(figure).__name__}")


def image_bytes(image: Any) -> bytes:
    """A PIL image or a numpy array (H×W gray, H×W×1/3/4; uint8, or floats in [0, 1]) as
    PNG."""
    if hasattr(image, "save") and hasattr(image, "mode"):  # PIL
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()
    import numpy as np

    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or arr.ndim == 3 and arr.shape[2] not in (3, 4):
        raise UsageError(
            f"log_image takes an H×W or H×W×(1|3|4) array, not one of shape {arr.shape}"
        )
    if arr.dtype.kind == "f":
        if arr.size and (np.nanmin(arr) < 0 or np.nanmax(arr) > 1):
            raise UsageError("log_image: float pixels must lie in [0, 1]")
        arr = np.nan_to_num(arr * 255).round()
    elif arr.dtype.kind in "iub" and arr.size and (arr.min() < 0 or arr.max() > 255):
        raise UsageError("log_image: integer pixels must lie in [0, 255]")
    return png(np.ascontiguousarray(arr.astype(np.uint8)))


def png(arr) -> bytes:
    """A uint8 array (H×W, H×W×3 or H×W×4) as PNG bytes (no filter, zlib level 6)."""
    height, width = arr.shape[:2]
    color = {2: 0, 3: {3: 2, 4: 6}.get(arr.shape[-1], 0)}[arr.ndim]
    rows = b"".join(b"\x00" + arr[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b""))  # fmt: skip


def table_bytes(data: Any) -> bytes:
    """A pandas DataFrame, an Arrow table or a dict of columns as Parquet bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(data, pa.Table):
        table = data
    elif hasattr(data, "to_parquet") and hasattr(data, "columns"):  # pandas
        table = pa.Table.from_pandas(data, preserve_index=False)
    elif isinstance(data, dict):
        table = pa.table(data)
    else:
        raise UsageError(
            f"log_table takes a pandas DataFrame, an Arrow table or a dict of columns, "
            f"not {type(data).__name__}"
        )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def read_table(data: bytes, output_format: str = "pandas"):
    """Parquet bytes back as a pandas DataFrame or an Arrow table."""
    from ..core.parquet import read_parquet

    table = read_parquet(data)
    return table.to_pandas() if output_format == "pandas" else table
