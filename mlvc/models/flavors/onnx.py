"""The ``onnx`` flavor: an ``onnx.ModelProto``, run with onnxruntime on the CPU.

One-input graphs take an array (cast to the input's element type); graphs with several
inputs take a table or dict whose columns are named after them.
"""

from __future__ import annotations

import sys
from pathlib import Path

NAME = "onnx"
PACKAGES = ("onnx", "onnxruntime", "numpy")
DATA = "model.onnx"
ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
    "tensor(string)": "str",
    "tensor(float16)": "float16",
}


def matches(model) -> bool:
    onnx = sys.modules.get("onnx")
    return onnx is not None and isinstance(model, onnx.ModelProto)


def save(model, path: Path) -> dict:
    import onnx

    onnx.save_model(model, str(path / DATA))
    return {"data": DATA, "onnx_version": onnx.__version__, "providers": ["CPUExecutionProvider"]}


def load(path: Path, conf: dict, trusted: bool = False):
    """An ONNX graph holds no Python code: it loads whatever its source."""
    try:
        import onnxruntime as ort
    except ImportError:
        from ..errors import MissingExtra

        raise MissingExtra(
            "loading an onnx model needs onnxruntime: pip install onnxruntime"
        ) from None
    return ort.InferenceSession(
        str(path / conf.get("data", DATA)), providers=["CPUExecutionProvider"]
    )


def predict(native, data, kind, conf=None):
    import numpy as np

    from ..signature import kind_of, to_kind, to_table

    inputs = native.get_inputs()
    if len(inputs) == 1:
        if kind_of(data) in ("arrow", "dict", "records", "pandas"):
            data = to_kind(to_table(data), "numpy")
        feed = {inputs[0].name: _cast(np.asarray(data), inputs[0].type)}
    else:
        table = to_table(data)
        feed = {
            i.name: _cast(
                table.column(i.name).to_numpy(zero_copy_only=False).reshape(-1, 1), i.type
            )
            for i in inputs
        }
    outs = native.run(None, feed)
    names = [o.name for o in native.get_outputs()]
    return outs[0] if len(outs) == 1 else dict(zip(names, outs, strict=True))


def _cast(arr, ort_type: str):
    dtype = ORT_TYPES.get(ort_type)
    return arr.astype(dtype, copy=False) if dtype and dtype != "str" else arr


def infer(native):
    """The graph's own signature when it has one input and one output."""
    import pyarrow as pa

    from ..signature import Signature, tensor_schema

    def schema(args):
        if len(args) != 1 or ORT_TYPES.get(args[0].type) in (None, "str"):
            return None
        shape = [d if isinstance(d, int) and d > 0 else -1 for d in args[0].shape]
        return tensor_schema(pa.from_numpy_dtype(ORT_TYPES[args[0].type]), shape)

    return Signature(schema(native.get_inputs()), schema(native.get_outputs()))
