"""Custom MLflow models (``loader_module: mlflow.pyfunc.model``): a pickled subclass of
``mlflow.pyfunc.PythonModel`` with ``predict(context, model_input, params=None)``.

Without MLflow installed, a stand-in ``mlflow.pyfunc.model`` module provides the base
classes while the pickle loads, so such models run with mlvc alone.
"""

from __future__ import annotations

import contextlib
import inspect
import pickle
import sys
import types
from pathlib import Path

NAME = "mlflow_pyfunc"
PACKAGES = ("cloudpickle",)


def matches(model) -> bool:
    return False  # mlvc never saves in this flavor; it only reads MLflow's


class PythonModel:
    """Stand-in for ``mlflow.pyfunc.PythonModel`` when MLflow is absent."""

    def load_context(self, context):
        pass


class PythonModelContext:
    def __init__(self, artifacts: dict, model_config: dict | None = None):
        self.artifacts = artifacts
        self.model_config = model_config or {}


@contextlib.contextmanager
def _stand_in():
    try:
        import mlflow.pyfunc.model  # noqa: F401

        yield
        return
    except ImportError:
        pass
    names = ("mlflow", "mlflow.pyfunc", "mlflow.pyfunc.model")
    saved = {n: sys.modules.get(n) for n in names}
    mods = {n: types.ModuleType(n) for n in names}
    mods["mlflow"].pyfunc = mods["mlflow.pyfunc"]
    mods["mlflow.pyfunc"].model = mods["mlflow.pyfunc.model"]
    for mod in (mods["mlflow.pyfunc"], mods["mlflow.pyfunc.model"]):
        mod.PythonModel = PythonModel
        mod.PythonModelContext = PythonModelContext
    sys.modules.update(mods)
    try:
        yield
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def load(path: Path, conf: dict):
    import cloudpickle  # noqa: F401

    with _stand_in(), open(path / conf.get("python_model", "python_model.pkl"), "rb") as f:
        model = pickle.load(f)
    artifacts = {k: str(path / v) for k, v in (conf.get("artifacts") or {}).items()}
    context = _context(artifacts, conf.get("model_config"))
    if hasattr(model, "load_context"):
        model.load_context(context)
    return model, context


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
