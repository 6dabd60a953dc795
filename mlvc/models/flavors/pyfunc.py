"""The ``python_function`` flavor: any object with ``predict(data)``, or a callable.

The object is serialized with cloudpickle, which stores classes and functions defined in
``__main__`` or a notebook by value, so the model loads in another process (the serving
one included) without the script that defined it.
"""

from __future__ import annotations

import pickle
from pathlib import Path

NAME = "python_function"
PACKAGES = ("cloudpickle",)
DATA = "python_model.pkl"


def matches(model) -> bool:
    return callable(getattr(model, "predict", None)) or callable(model)


def dump(model, path: Path) -> None:
    import cloudpickle

    with open(path, "wb") as f:
        cloudpickle.dump(model, f)


def save(model, path: Path) -> dict:
    import cloudpickle

    dump(model, path / DATA)
    return {
        "data": DATA,
        "serialization": "cloudpickle",
        "cloudpickle_version": cloudpickle.__version__,
    }


def load(path: Path, conf: dict):
    import cloudpickle  # noqa: F401  (pickles of by-value code need it importable)

    with open(path / conf.get("data", DATA), "rb") as f:
        return pickle.load(f)


def predict(native, data, kind, conf=None):
    from ..signature import to_kind

    if _is_table(data):
        data = to_kind(data, kind)
    fn = getattr(native, "predict", None)
    return fn(data) if callable(fn) else native(data)


def _is_table(data) -> bool:
    import pyarrow as pa

    return isinstance(data, pa.Table)
