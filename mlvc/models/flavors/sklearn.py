"""The ``sklearn`` flavor: scikit-learn estimators and pipelines, pickled with cloudpickle
(so a FunctionTransformer around a function from ``__main__`` still loads elsewhere)."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

from . import pyfunc

NAME = "sklearn"
PACKAGES = ("scikit-learn", "numpy", "scipy", "cloudpickle")
DATA = "model.pkl"


def matches(model) -> bool:
    base = sys.modules.get("sklearn.base")
    return base is not None and isinstance(model, base.BaseEstimator)


def save(model, path: Path) -> dict:
    import sklearn

    pyfunc.dump(model, path / DATA)
    return {
        "pickled_model": DATA,
        "serialization_format": "cloudpickle",
        "sklearn_version": sklearn.__version__,
    }


def load(path: Path, conf: dict):
    fmt = conf.get("serialization_format", "cloudpickle")
    if fmt == "skops":  # MLflow 3's default: a safer format than pickle
        return _load_skops(path / conf.get("pickled_model", "model.skops"), conf)
    if fmt not in ("pickle", "cloudpickle"):
        from ..errors import ModelError

        raise ModelError(
            f"sklearn models serialized as {fmt!r} are not supported (pickle, cloudpickle, skops)"
        )
    import cloudpickle  # noqa: F401

    with open(path / conf.get("pickled_model", DATA), "rb") as f:
        return pickle.load(f)


def _reads_values_only(native) -> bool:
    """A scikit-learn estimator itself, not a pipeline or column selector (which may pick
    columns by name)."""
    module = type(native).__module__
    if not module.startswith("sklearn.") or module.startswith(
        ("sklearn.pipeline", "sklearn.compose")
    ):
        return False
    return not any(hasattr(native, a) for a in ("steps", "transformers", "transformer_list"))


def _load_skops(file: Path, conf: dict):
    try:
        import skops.io as sio
    except ImportError:
        from ..errors import MissingExtra

        raise MissingExtra(
            "this sklearn model is serialized with skops (MLflow's default): pip install skops"
        ) from None
    trusted = conf.get("skops_trusted_types")
    untrusted = [t for t in sio.get_untrusted_types(file=file) if t not in (trusted or [])]
    if untrusted:
        from ..errors import ModelError

        raise ModelError(
            f"{file} holds types skops does not trust by default: {', '.join(untrusted)}; "
            "list them in the MLmodel's skops_trusted_types if you trust this model"
        )
    return sio.load(file, trusted=trusted or None)


def predict(native, data, kind, conf=None):
    """Tables go in as DataFrames when the estimator was fitted on named columns.

    When serving (``conf["serving"]``), a plain scikit-learn estimator whose fitted column
    names are exactly the table's, in order, gets the array instead: it reads only the
    values, and sklearn's DataFrame checks cost several times the prediction itself.
    """
    from ..signature import kind_of, to_kind, to_table

    if kind_of(data) in ("arrow", "dict", "records"):
        table = to_table(data)
        names = getattr(native, "feature_names_in_", None)
        serving = (conf or {}).get("serving") and names is not None
        if serving and _reads_values_only(native) and list(names) == table.column_names:
            return getattr(native, conf.get("predict_fn") or "predict")(to_kind(table, "numpy"))
        data = to_kind(table, "pandas" if names is not None or kind == "pandas" else "numpy")
    return getattr(native, (conf or {}).get("predict_fn") or "predict")(data)
