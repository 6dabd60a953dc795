"""Scoring payloads: request bodies in, predictions out (the server's and ``predict``'s I/O).

Requests (MLflow's scoring formats, plus CSV and Arrow):
    application/json   one of ``{"dataframe_split": {"columns": [...], "data": [[...]]}}``,
                       ``{"dataframe_records": [{...}, ...]}``, ``{"instances": ...}``,
                       ``{"inputs": ...}`` (a list of rows, a dict of columns, or records)
    text/csv           a header line, then rows
    application/vnd.apache.arrow.stream (or .file)   an Arrow IPC stream (or file)
Responses: ``{"predictions": ...}`` as JSON, or an Arrow IPC stream when asked for one.
Anything unreadable raises ``BadPayload`` (HTTP 400) saying what is wrong: JSON nested deeper
than MAX_DEPTH and integers beyond 64 bits are refused before any model sees them.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import PurePath
from typing import Any

from .errors import BadPayload, UnsupportedMediaType
from .signature import is_dataframe, is_series, is_tensor

JSON = "application/json"
CSV = "text/csv"
ARROW = "application/vnd.apache.arrow.stream"
ARROW_FILE = "application/vnd.apache.arrow.file"
CONTENT_TYPES = (JSON, CSV, ARROW, ARROW_FILE)
JSON_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
MAX_DEPTH = 32  # a scoring payload needs 4 levels, a tensor one more per dimension
INT64 = (-(1 << 63), (1 << 63) - 1)
CHUNK_ROWS = 65536  # predictions are encoded this many rows at a time (each call is short)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_LONG_DIGITS = re.compile(rb"\d{19}")


def media_type(header: str | None) -> str:
    """``text/csv; charset=utf-8`` → ``text/csv``; a missing header means JSON."""
    return (header or JSON).split(";", 1)[0].strip().lower() or JSON


_TYPE_WORDS = {"json": JSON, "csv": CSV, "arrow": ARROW}  # mlvc models predict -t WORD
_EXTENSIONS = {**_TYPE_WORDS, "arrows": ARROW, "feather": ARROW}


def content_type_of(path: str, given: str | None = None) -> str:
    """The media type of a scoring input file: ``given`` (json, csv or arrow), else from the
    file's extension; no extension (``-``, stdin) means JSON. Anything else is returned as
    it is, for ``parse`` to refuse by name."""
    if given:
        return _TYPE_WORDS.get(given, given)
    ext = PurePath(path).suffix[1:].lower() or "json"
    return _EXTENSIONS.get(ext, ext)


def parse(body: bytes, content_type: str | None, schema=None):
    """The model input in a request body; ``schema`` (the signature's inputs) guides types."""
    kind = media_type(content_type)
    if kind == JSON:
        data = parse_json(load_json(body), schema)
    elif kind == CSV:
        data = parse_csv(body, schema)
    elif kind in (ARROW, ARROW_FILE):
        data = parse_arrow(body, kind)
    else:
        raise UnsupportedMediaType(
            f"content type {kind!r} is not supported; send one of {', '.join(CONTENT_TYPES)}"
        )
    if _rows(data) == 0:
        raise BadPayload("the input has no rows")
    return data


def load_json(body: bytes):
    """``json.loads`` with the limits a server needs: depth and 64-bit integers."""
    depth = json_depth(body)
    if depth > MAX_DEPTH:
        raise BadPayload(
            f"the JSON body is nested too deeply ({depth} levels; at most {MAX_DEPTH})"
        )
    hook = {"parse_int": _int64} if _LONG_DIGITS.search(body) else {}
    try:
        return json.loads(body, **hook)
    except RecursionError:
        raise BadPayload("the JSON body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise BadPayload(f"the body is not valid JSON: {e}") from None


def json_depth(body: bytes) -> int:
    """How deep arrays and objects nest in a JSON text, without parsing it (brackets in
    strings do not count); fast on megabytes."""
    import numpy as np

    brackets = _STRING.sub(b'""', body).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1).astype(np.int32)
    return int(np.cumsum(steps).max())


def _int64(text: str) -> int:
    value = int(text)
    if not INT64[0] <= value <= INT64[1]:
        shown = text if len(text) <= 24 else text[:20] + "..."
        raise BadPayload(
            f"the number {shown} is too big for a 64-bit integer; send it as a string or float"
        )
    return value


def _rows(data) -> int | None:
    try:
        return len(data)
    except TypeError:
        return None


def parse_json(doc: Any, schema=None):
    if not isinstance(doc, dict):
        raise BadPayload(
            f"the JSON body must be an object with one of the keys {', '.join(JSON_FORMATS)}"
        )
    keys = [k for k in JSON_FORMATS if k in doc]
    unknown = sorted(set(doc) - set(JSON_FORMATS))
    if len(keys) != 1 or unknown:
        found = ", ".join(sorted(doc)) or "none"
        raise BadPayload(
            f"the JSON body must have exactly one of the keys {', '.join(JSON_FORMATS)} "
            f"(found: {found})"
        )
    value = doc[keys[0]]
    if keys[0] == "dataframe_split":
        return split_table(value, schema)
    if keys[0] == "dataframe_records":
        if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
            raise BadPayload("dataframe_records must be a list of objects, one per row")
        return _records(value)
    return _instances(value, schema)


def split_table(value, schema=None):
    """A table from pandas' split orient: ``{"columns": [...], "data": [[...], ...]}``."""
    import pyarrow as pa

    if not isinstance(value, dict) or not isinstance(value.get("data"), list):
        raise BadPayload('dataframe_split must be an object {"columns": [...], "data": [[...]]}')
    rows = value["data"]
    columns = value.get("columns")
    if columns is None:
        width = len(rows[0]) if rows and isinstance(rows[0], list) else 0
        names = list(schema.names) if schema is not None and not is_tensor(schema) else []
        columns = names if len(names) == width else [str(i) for i in range(width)]
    if not isinstance(columns, list):
        raise BadPayload("dataframe_split's columns must be a list of names")
    columns = [str(c) for c in columns]
    if len(set(columns)) != len(columns):
        raise BadPayload("dataframe_split names a column twice")
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(columns):
            raise BadPayload(
                f"row {i} of dataframe_split has {len(row) if isinstance(row, list) else 'no'} "
                f"values; there are {len(columns)} columns"
            )
    cols = list(zip(*rows, strict=True)) if rows else [() for _ in columns]
    arrays = {}
    for name, values in zip(columns, cols, strict=True):
        arrays[name] = _array(name, list(values))
    return pa.table(arrays) if arrays else pa.table({})


def _array(name: str, values: list):
    import pyarrow as pa

    try:
        return pa.array(values)
    except OverflowError:
        raise BadPayload(f"column {name!r} has a number too big for a 64-bit integer") from None
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise BadPayload(f"column {name!r} mixes types or has bad values: {e}") from None


def _records(rows: list):
    import pyarrow as pa

    try:
        return pa.Table.from_pylist(rows)
    except OverflowError:
        raise BadPayload("the records have a number too big for a 64-bit integer") from None
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise BadPayload(f"the records do not form a table: {e}") from None


def _instances(value, schema=None):
    """``instances``/``inputs``: a dict of columns, records, or an array (list of rows)."""
    import numpy as np
    import pyarrow as pa

    if isinstance(value, dict):
        arrays = {}
        for name, col in value.items():
            arrays[str(name)] = _array(name, col if isinstance(col, list) else [col])
        lengths = {len(a) for a in arrays.values()}
        if len(lengths) > 1:
            raise BadPayload("the columns given as inputs have different lengths")
        return pa.table(arrays)
    if not isinstance(value, list):
        raise BadPayload("instances/inputs must be a list of rows, a list of objects or an object")
    if value and all(isinstance(r, dict) for r in value):
        return _records(value)
    try:
        arr = np.asarray(value)
    except ValueError as e:
        raise BadPayload(f"instances/inputs is not a regular array: {e}") from None
    if arr.dtype.kind == "O":
        raise BadPayload("instances/inputs mixes lists of different lengths or types")
    return arr


def parse_csv(body: bytes, schema=None):
    import pyarrow as pa
    import pyarrow.csv as csv

    types = {}
    if schema is not None and not is_tensor(schema):
        types = {f.name: f.type for f in schema}
    try:
        return csv.read_csv(
            pa.py_buffer(body), convert_options=csv.ConvertOptions(column_types=types)
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise BadPayload(f"the CSV body cannot be read: {str(e).strip().splitlines()[0]}") from None


def parse_arrow(body: bytes, kind: str = ARROW):
    """The table of an Arrow IPC stream or file body (compressed buffers refused: see
    mlvc.core.ipc)."""
    from ..core.ipc import IpcRefused, read_ipc

    what = f"the body is not an Arrow IPC {kind.rsplit('.', 1)[-1]}"
    if kind == ARROW_FILE and body[:6] != b"ARROW1":
        raise BadPayload(f"{what}: it does not start with ARROW1")
    try:
        return read_ipc(body)
    except IpcRefused as e:
        raise BadPayload(f"{what}: {e}") from None


# -- predictions out ------------------------------------------------------------------------


def jsonable(value):
    """Predictions as JSON values: arrays as lists, tables as records, NaN as null."""
    import numpy as np
    import pyarrow as pa

    if isinstance(value, np.ndarray):
        return _clean(value.tolist()) if value.dtype.kind in "fcO" else value.tolist()
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if is_dataframe(value):
        return _clean(value.to_dict(orient="records"))
    if is_series(value):
        return _clean(value.tolist())
    if isinstance(value, pa.Table | pa.RecordBatch):
        return _clean(value.to_pylist())
    if isinstance(value, pa.Array | pa.ChunkedArray):
        return _clean(value.to_pylist())
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _clean(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return jsonable(value) if not isinstance(value, str | int | bool | type(None)) else value


def predictions_json(pred) -> bytes:
    """``{"predictions": ...}``; long predictions are encoded CHUNK_ROWS rows at a time, so
    a server's other threads (its event loop) are not held up by one long encoder call."""
    n = _rows(pred) if not isinstance(pred, dict | str) else None
    if n is None or n <= CHUNK_ROWS:
        return json.dumps({"predictions": jsonable(pred)}, separators=(",", ":")).encode()
    parts = []
    for start in range(0, n, CHUNK_ROWS):
        text = json.dumps(jsonable(_slice(pred, start, start + CHUNK_ROWS)), separators=(",", ":"))
        parts.append(text[1:-1])  # each slice is a JSON list
    return ('{"predictions":[' + ",".join(p for p in parts if p) + "]}").encode()


def _slice(pred, start: int, stop: int):
    if is_dataframe(pred) or is_series(pred):
        return pred.iloc[start:stop]
    return pred[start:stop] if not hasattr(pred, "slice") else pred.slice(start, stop - start)


def missing_values(data) -> str | None:
    """Where model input (an Arrow table or array) holds missing or non-finite values, as
    ``column 'x' has 2``; None when it holds none."""
    import numpy as np
    import pyarrow as pa

    if isinstance(data, pa.Table):
        import pyarrow.compute as pc

        for name, col in zip(data.column_names, data.columns, strict=True):
            n = col.null_count
            if pa.types.is_floating(col.type):
                n += pc.sum(pc.invert(pc.is_finite(col))).as_py() or 0
            if n:
                return f"column {name!r} has {n}"
        return None
    if isinstance(data, np.ndarray) and data.dtype.kind in "fc":
        n = int(np.count_nonzero(~np.isfinite(data)))
        return f"the array has {n}" if n else None
    return None


def predictions_table(pred):
    """Predictions as an Arrow table (for Arrow responses)."""
    import numpy as np
    import pyarrow as pa

    from .signature import to_table

    if isinstance(pred, pa.Table):
        return pred
    if is_dataframe(pred) or isinstance(pred, dict):
        return to_table(pred)
    arr = np.asarray(pred)
    if arr.ndim == 1:
        return pa.table({"predictions": arr})
    if arr.ndim == 2:
        return pa.table({str(i): arr[:, i] for i in range(arr.shape[1])})
    raise BadPayload(f"predictions of shape {arr.shape} cannot be sent as an Arrow table")


def predictions_arrow(pred) -> bytes:
    import pyarrow as pa

    table = predictions_table(pred)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()
