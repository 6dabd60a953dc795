"""Custom MLflow models (``loader_module: mlflow.pyfunc.model``): a pickled subclass of
``mlflow.pyfunc.PythonModel`` with ``predict(context, model_input, params=None)``.

Without MLflow installed, a stand-in ``mlflow.pyfunc.model`` module provides the base
classes while the pickle loads, so such models run with mlvc alone.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import inspect
import lzma
import sys
import types
from pathlib import Path

from ..errors import ModelError

NAME = "mlflow_pyfunc"
PACKAGES = ("cloudpickle",)
# MLflow's python_model_compression: how python_model.pkl was compressed
COMPRESSION = {"lzma": lzma.open, "bzip2": bz2.open, "gzip": gzip.open}


def matches(model) -> bool:
    return False  # mlvc never saves in this flavor; it only reads MLflow's


class PythonModel:
    """Stand-in for ``mlflow.pyfunc.PythonModel`` when MLflow is absent."""

    def load_context(self, context):
        pass


PythonModel.__module__ = "mlflow.pyfunc.model"  # pickles refer to the base class by this path


class PythonModelContext:
    def __init__(self, artifacts: dict, model_config: dict | None = None):
        self.artifacts = artifacts
        self.model_config = model_config or {}


class _TypeHints:
    """Stand-in for MLflow 3's type-hint record, which its predict wrapper refers to."""

    def __init__(self, input=None, output=None):
        self.input = input
        self.output = output


# What pickles of MLflow 2 and 3 custom models refer to by name (MLflow 3 wraps predict in
# a function of mlflow.pyfunc.utils.data_validation, pickled by value).
STAND_IN_MODULES = (
    "mlflow",
    "mlflow.models",
    "mlflow.models.signature",
    "mlflow.pyfunc",
    "mlflow.pyfunc.model",
    "mlflow.pyfunc.utils",
    "mlflow.pyfunc.utils.data_validation",
)


@contextlib.contextmanager
def _stand_in():
    try:
        import mlflow.pyfunc.model  # noqa: F401

        yield
        return
    except ImportError:
        pass
    saved = {n: sys.modules.get(n) for n in STAND_IN_MODULES}
    mods = {n: types.ModuleType(n) for n in STAND_IN_MODULES}
    for name, mod in mods.items():  # each package holds its submodules as attributes
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(mods[parent], child, mod)
            mods[parent].__path__ = []
    for mod in (mods["mlflow.pyfunc"], mods["mlflow.pyfunc.model"]):
        mod.PythonModel = PythonModel
        mod.PythonModelContext = PythonModelContext
    mods["mlflow.models.signature"]._TypeHints = _TypeHints
    sys.modules.update(mods)
    try:
        yield
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def load(path: Path, conf: dict, trusted: bool = False):
    from ..trust import unpickle

    opener = COMPRESSION.get(conf.get("python_model_compression") or "", open)
    with _stand_in():
        model = unpickle(path / conf.get("python_model", "python_model.pkl"), trusted, opener)
    context = _context(artifacts(path, conf), conf.get("model_config"))
    if hasattr(model, "load_context"):
        model.load_context(context)
    return model, context


def artifacts(path: Path, conf: dict) -> dict[str, str]:
    """``context.artifacts``: each artifact's name → its file in the model folder. MLflow
    records them as ``artifacts: {name: {path: artifacts/file, uri: where it came from}}``."""
    out = {}
    for name, info in (conf.get("artifacts") or {}).items():
        rel = info.get("path") if isinstance(info, dict) else info
        if not isinstance(rel, str) or not rel:
            raise ModelError(f"the MLmodel's artifact {name!r} has no path")
        if not (path / rel).resolve().is_relative_to(path.resolve()):
            raise ModelError(f"the MLmodel's artifact {name!r} ({rel}) is outside {path}")
        out[str(name)] = str(path / rel)
    return out


def _context(artifacts, model_config):
    try:
        from mlflow.pyfunc import PythonModelContext as Ctx  # type: ignore
    except ImportError:
        return PythonModelContext(artifacts, model_config)
    try:
        return Ctx(artifacts, model_config)
    except TypeError:
        return Ctx(artifacts)


def predict(native, data, kind, conf=None):
    from ..signature import to_kind

    model, context = native
    if _is_table(data):
        data = to_kind(data, kind or "pandas")
    names = [p for p in inspect.signature(model.predict).parameters if p != "params"]
    if len(names) >= 2:  # MLflow 2 style: predict(self, context, model_input)
        return model.predict(context, data)
    return model.predict(data)


def _is_table(data) -> bool:
    import pyarrow as pa

    return isinstance(data, pa.Table)
