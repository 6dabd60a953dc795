"""Any other MLflow model, loaded by MLflow itself when it is installed
(``mlflow.pyfunc.load_model``); mlvc then adds its URIs, registry and server around it."""

from __future__ import annotations

from pathlib import Path

NAME = "mlflow_native"
PACKAGES = ("mlflow",)


def matches(model) -> bool:
    return False


def load(path: Path, conf: dict, trusted: bool = False):
    from ..trust import require

    require(path / "MLmodel", trusted, "an MLflow model that MLflow itself loads (with pickle)")
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(str(path))


def predict(native, data, kind, conf=None):
    import pyarrow as pa

    from ..signature import to_kind

    if isinstance(data, pa.Table):
        data = to_kind(data, "pandas")
    return native.predict(data)
