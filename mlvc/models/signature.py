"""Signatures: what a model reads and what it returns, each as an Arrow schema.

Two kinds of schema:
    columns  named, typed columns (a table): inferred from a DataFrame, a dict of columns,
             records (a list of dicts) or an Arrow table.
    tensor   one n-dimensional array: inferred from a numpy array (or a list of numbers).
             The schema has a single field ``tensor`` of the element type; its metadata
             holds the shape, ``-1`` standing for the batch dimension.

The manifest stores each schema twice: Arrow IPC bytes (base64; exact) and a readable JSON
form. ``enforce`` checks input against the input schema: missing columns, types that cannot
be cast without loss, wrong shapes are refused with a one-line ``SignatureError``.
"""

from __future__ import annotations

import base64
import json
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.typenames import type_name
from .errors import ModelError, SignatureError

if TYPE_CHECKING:
    import pyarrow as pa

KIND = b"mlvc.kind"
OPTIONAL = b"mlvc.optional"  # field metadata: the column may be absent (MLflow's required=false)
SHAPE = b"mlvc.shape"
TENSOR_FIELD = "tensor"
# The forms a model can take its input in; recorded at save time from the input example.
INPUT_KINDS = ("pandas", "arrow", "dict", "records", "numpy", "list")


def _pa():
    import pyarrow as pa

    return pa


def _np():
    import numpy as np

    return np


def is_dataframe(data) -> bool:
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(data, pd.DataFrame)


def is_series(data) -> bool:
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(data, pd.Series)


def kind_of(data) -> str | None:
    """Which of INPUT_KINDS ``data`` is, or None."""
    pa, np = _pa(), _np()
    if is_dataframe(data) or is_series(data):
        return "pandas"
    if isinstance(data, pa.Table | pa.RecordBatch):
        return "arrow"
    if isinstance(data, dict):
        return "dict"
    if isinstance(data, np.ndarray):
        return "numpy"
    if isinstance(data, list | tuple):
        return "records" if data and all(isinstance(r, dict) for r in data) else "list"
    return None


# -- schemas --------------------------------------------------------------------------------


def is_tensor(schema: pa.Schema) -> bool:
    return (schema.metadata or {}).get(KIND) == b"tensor"


def tensor_schema(value_type: pa.DataType, shape: list[int]) -> pa.Schema:
    pa = _pa()
    field = pa.field(TENSOR_FIELD, value_type, metadata={SHAPE: json.dumps(shape).encode()})
    return pa.schema([field], metadata={KIND: b"tensor"})


def columns_schema(schema: pa.Schema) -> pa.Schema:
    """A copy without pandas' metadata, marked as a columns schema."""
    pa = _pa()
    fields = [pa.field(f.name, f.type, f.nullable) for f in schema]
    return pa.schema(fields, metadata={KIND: b"columns"})


def tensor_shape(schema: pa.Schema) -> list[int]:
    return json.loads(schema.field(0).metadata[SHAPE])


def schema_to_dict(schema: pa.Schema | None) -> dict | None:
    """The manifest form: exact IPC bytes plus what a person (or another language) reads."""
    if schema is None:
        return None
    out: dict[str, Any] = {"arrow": base64.b64encode(schema.serialize().to_pybytes()).decode()}
    if is_tensor(schema):
        out["kind"] = "tensor"
        out["dtype"] = str(schema.field(0).type)
        out["shape"] = tensor_shape(schema)
    else:
        out["kind"] = "columns"
        out["columns"] = [
            {"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema
        ]
    return out


def schema_from_dict(value: dict | None) -> pa.Schema | None:
    if value is None:
        return None
    pa = _pa()
    try:
        return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(value["arrow"])))
    except (KeyError, TypeError, ValueError, pa.ArrowInvalid) as e:
        raise ModelError(f"the manifest's signature is unreadable: {e}") from None


def describe(schema: pa.Schema | None) -> str:
    """One line for people: ``x: float, y: integer`` or ``tensor float (-1, 4)``."""
    if schema is None:
        return "(none)"
    if is_tensor(schema):
        shape = ", ".join(str(d) for d in tensor_shape(schema))
        return f"tensor {type_name(schema.field(0).type)} ({shape})"
    return ", ".join(f"{f.name}: {type_name(f.type)}" for f in schema)


@dataclass(frozen=True)
class Signature:
    """The input and output schemas of a model; either may be None (unknown)."""

    inputs: Any = None  # pa.Schema
    outputs: Any = None  # pa.Schema

    def to_dict(self) -> dict:
        return {"inputs": schema_to_dict(self.inputs), "outputs": schema_to_dict(self.outputs)}

    @classmethod
    def from_dict(cls, value: dict | None) -> Signature | None:
        if not value:
            return None
        return cls(schema_from_dict(value.get("inputs")), schema_from_dict(value.get("outputs")))

    def __str__(self) -> str:
        return f"inputs: {describe(self.inputs)}; outputs: {describe(self.outputs)}"


def as_signature(value) -> Signature | None:
    """A Signature from what users pass: a Signature, an input schema, or None."""
    pa = _pa()
    if value is None or isinstance(value, Signature):
        return value
    if isinstance(value, pa.Schema):
        return Signature(value if is_tensor(value) else columns_schema(value))
    raise ModelError(
        f"signature must be an mlvc.models.Signature or a pyarrow.Schema, not "
        f"{type(value).__name__}; or pass input_example= to infer one"
    )


# -- inference ------------------------------------------------------------------------------


def infer_schema(data) -> pa.Schema:
    """The schema of an example input or output."""
    pa, np = _pa(), _np()
    kind = kind_of(data)
    if kind in ("numpy", "list"):
        arr = np.asarray(data)
        if arr.ndim == 0:
            raise ModelError("cannot infer a signature from a scalar; pass an array or a table")
        if arr.dtype.kind in "US":
            value_type = pa.string()
        elif arr.dtype.kind == "O":
            raise ModelError(
                "cannot infer a signature from an array of Python objects; "
                "pass a typed array or a table"
            )
        else:
            value_type = pa.from_numpy_dtype(arr.dtype)
        return tensor_schema(value_type, [-1, *arr.shape[1:]])
    if kind is None:
        raise ModelError(
            f"cannot infer a signature from a {type(data).__name__}; use a DataFrame, "
            "pyarrow Table, numpy array, dict of columns or list of records"
        )
    return columns_schema(to_table(data).schema)


def infer_signature(model_input, model_output=None) -> Signature:
    """A signature from an example input (and, when given, the model's output on it)."""
    outputs = None
    if model_output is not None:
        try:
            outputs = infer_schema(model_output)
        except ModelError:
            outputs = None
    return Signature(infer_schema(model_input), outputs)


# -- conversion to a table ------------------------------------------------------------------


def _column(name: str, values):
    pa, np = _pa(), _np()
    try:
        if isinstance(values, pa.Array | pa.ChunkedArray):
            return values
        if is_series(values):
            return pa.Array.from_pandas(values)
        if isinstance(values, np.ndarray):
            if values.ndim != 1:
                raise SignatureError(
                    f"column {name!r} is a {values.ndim}-D array; a column must be 1-D"
                )
            return pa.array(values)
        if isinstance(values, list | tuple):
            return pa.array(values)
        return pa.array([values])  # a scalar: one row
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as e:
        raise SignatureError(f"column {name!r} cannot be read: {_first(e)}") from None


def to_table(data, names: list[str] | None = None) -> pa.Table:
    """Any supported input as an Arrow table. ``names`` maps a 2-D array or list of rows
    positionally when it has exactly that many columns."""
    pa, np = _pa(), _np()
    kind = kind_of(data)
    try:
        if kind == "arrow":
            return data if isinstance(data, pa.Table) else pa.Table.from_batches([data])
        if kind == "pandas":
            if is_series(data):
                return pa.table({str(data.name if data.name is not None else 0): data})
            return pa.Table.from_pandas(data, preserve_index=False)
        if kind == "records":
            return pa.Table.from_pylist(list(data))
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as e:
        raise SignatureError(f"the input cannot be read as a table: {_first(e)}") from None
    if kind == "dict":
        cols = {str(k): _column(str(k), v) for k, v in data.items()}
        lengths = {len(c) for c in cols.values()}
        if len(lengths) > 1:
            raise SignatureError(
                "the input's columns have different lengths: "
                + ", ".join(f"{k}={len(c)}" for k, c in cols.items())
            )
        return pa.table(cols)
    if kind in ("numpy", "list"):
        arr = np.asarray(data) if kind == "list" else data
        if arr.ndim == 1 and names is not None and len(names) == 1:
            return pa.table({names[0]: _column(names[0], arr)})
        if arr.ndim == 2 and names is not None and arr.shape[1] == len(names):
            return pa.table({n: _column(n, arr[:, i]) for i, n in enumerate(names)})
        want = f" for the model's columns {', '.join(names)}" if names else ""
        raise SignatureError(
            f"a {arr.ndim}-D array of shape {tuple(arr.shape)} cannot be read as a table{want}; "
            "send a table (DataFrame, dict of columns, records) with named columns"
        )
    raise SignatureError(
        f"cannot read a {type(data).__name__} as model input; use a pandas DataFrame, "
        "pyarrow Table, numpy array, dict of columns or list of records"
    )


def _first(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


# -- enforcement ----------------------------------------------------------------------------


def enforce(schema: pa.Schema, data):
    """Check and cast input to the schema: an Arrow table (columns) or ndarray (tensor)."""
    if is_tensor(schema):
        return _enforce_tensor(schema, data)
    return _enforce_columns(schema, data)


def _castable(src: pa.DataType, dst: pa.DataType) -> bool:
    """Whether a cast may be tried: same family, numbers to numbers (checked for loss)."""
    pa = _pa()
    t = pa.types
    if src == dst or t.is_null(src):
        return True
    if t.is_dictionary(src):
        return _castable(src.value_type, dst) or src.value_type == dst
    numeric = (t.is_integer, t.is_floating, t.is_decimal)
    if any(f(src) for f in numeric) and any(f(dst) for f in numeric):
        return True
    families = (
        lambda x: t.is_string(x) or t.is_large_string(x) or t.is_string_view(x),
        lambda x: t.is_binary(x) or t.is_large_binary(x) or t.is_fixed_size_binary(x),
        t.is_timestamp,
        t.is_date,
        lambda x: t.is_list(x) or t.is_large_list(x) or t.is_fixed_size_list(x),
        t.is_boolean,
    )
    if t.is_dictionary(dst):
        return _castable(src, dst.value_type)
    return any(f(src) and f(dst) for f in families)


def _enforce_columns(schema: pa.Schema, data) -> pa.Table:
    pa = _pa()
    table = to_table(data, names=schema.names)
    have = set(table.column_names)
    missing = [f.name for f in schema if f.name not in have and not _optional(f)]
    if missing:
        shown = ", ".join(repr(m) for m in missing)
        raise SignatureError(
            f"missing column{'s' if len(missing) > 1 else ''} {shown}: the model expects "
            f"{describe(schema)}"
        )
    columns = []
    for field in schema:
        if field.name not in have:
            columns.append(pa.nulls(table.num_rows, field.type))
            continue
        col = table.column(field.name)
        if col.type != field.type:
            if not _castable(col.type, field.type):
                raise SignatureError(
                    f"column {field.name!r} has type {type_name(col.type)}; "
                    f"the model expects {type_name(field.type)}"
                )
            try:
                col = col.cast(field.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise SignatureError(
                    f"column {field.name!r} ({type_name(col.type)}) has values that do not "
                    f"fit {type_name(field.type)}: {_first(e).split(' converting to ')[0]}"
                ) from None
        if not field.nullable and col.null_count:
            raise SignatureError(
                f"column {field.name!r} has {col.null_count} missing value(s); "
                "the model needs every value"
            )
        columns.append(col)
    return pa.Table.from_arrays(
        columns, schema=pa.schema([pa.field(f.name, f.type) for f in schema])
    )


def _optional(field) -> bool:
    return (field.metadata or {}).get(OPTIONAL) == b"1"


def _enforce_tensor(schema: pa.Schema, data):
    np = _np()
    field = schema.field(0)
    shape = tensor_shape(schema)
    kind = kind_of(data)
    if kind in ("pandas", "arrow", "dict", "records"):
        table = to_table(data)
        try:
            arr = np.column_stack([c.to_numpy(zero_copy_only=False) for c in table.columns])
        except ValueError as e:
            raise SignatureError(f"the input cannot be read as an array: {_first(e)}") from None
        if len(shape) == 1 and arr.shape[1] == 1:
            arr = arr[:, 0]
    elif kind in ("numpy", "list"):
        try:
            arr = np.asarray(data)
        except ValueError as e:  # ragged nested lists
            raise SignatureError(f"the input is not a regular array: {_first(e)}") from None
    else:
        raise SignatureError(
            f"cannot read a {type(data).__name__} as an array; the model expects {describe(schema)}"
        )
    want = _numpy_dtype(field.type)
    got = arr.dtype
    if want.kind in "US":
        if got.kind not in "USO" or (
            got.kind == "O" and not all(isinstance(x, str) for x in arr.flat)
        ):
            raise SignatureError(f"the input has type {got}; the model expects strings")
        arr = arr.astype(str)
    elif not _numbers_fit(got, want, arr):
        raise SignatureError(f"the input has type {got}; the model expects {type_name(field.type)}")
    else:
        arr = arr.astype(want, copy=False)
    if arr.ndim != len(shape) or any(
        w not in (-1, g) for w, g in zip(shape, arr.shape, strict=True)
    ):
        expected = "(" + ", ".join("N" if d == -1 else str(d) for d in shape) + ")"
        raise SignatureError(
            f"the input has shape {tuple(arr.shape)}; the model expects {expected}"
        )
    return arr


def _numpy_dtype(value_type):
    np = _np()
    pa = _pa()
    if pa.types.is_string(value_type) or pa.types.is_large_string(value_type):
        return np.dtype(str)
    return np.dtype(value_type.to_pandas_dtype())


def _numbers_fit(got, want, arr) -> bool:
    """Booleans only as booleans; numbers as numbers, floats as ints only when whole."""
    np = _np()
    if want.kind == "b" or got.kind == "b":
        return want.kind == got.kind
    if got.kind not in "iuf" or want.kind not in "iuf":
        return False
    if got.kind == "f" and want.kind in "iu":
        return bool(np.all(np.isfinite(arr)) and np.all(np.mod(arr, 1) == 0))
    return True


# -- conversion to what the model reads -----------------------------------------------------


def to_kind(table: pa.Table, kind: str | None):
    """An enforced table in the form the model was given its example in."""
    np = _np()
    if kind == "arrow":
        return table
    if kind == "dict":
        return {
            n: c.to_numpy(zero_copy_only=False)
            for n, c in zip(table.column_names, table.columns, strict=True)
        }
    if kind == "records":
        return table.to_pylist()
    if kind in ("numpy", "list"):
        arr = np.column_stack([c.to_numpy(zero_copy_only=False) for c in table.columns])
        return arr.tolist() if kind == "list" else arr
    try:
        import pandas  # noqa: F401
    except ImportError:
        return table  # no pandas here: the model gets the Arrow table
    return table.to_pandas()
