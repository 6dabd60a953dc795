"""Flavors: the ways mlvc saves and loads a kind of model.

Each flavor is a module with:
    NAME        its name in the manifest (``sklearn``, ``torch``, ``onnx``, ``python_function``)
    PACKAGES    the distributions it needs, pinned into the model's requirements at save
    matches(model) -> bool                  whether it can save this object (never imports
                                            a framework the caller has not imported)
    save(model, path) -> dict               write the model's files; returns its manifest entry
    load(path, conf, trusted) -> native     read them back; a file that would run code when
                                            read (a pickle) only when ``trusted`` (see
                                            mlvc.models.trust)
    predict(native, data, kind) -> output   score enforced input (an Arrow table or ndarray)
                                            or, without a signature, what the caller gave
    infer(native) -> Signature | None       optional: a signature the model itself declares
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import ModelError

MODULES = {
    "python_function": "mlvc.models.flavors.pyfunc",
    "sklearn": "mlvc.models.flavors.sklearn",
    "torch": "mlvc.models.flavors.torch",
    "onnx": "mlvc.models.flavors.onnx",
    "mlflow_pyfunc": "mlvc.models.flavors.mlflow_pyfunc",
}
# Most specific first: a torch module also has a __call__, a pipeline also has predict.
DETECT_ORDER = ("torch", "onnx", "sklearn", "python_function")
PYFUNC = "python_function"


def get(name: str) -> ModuleType:
    """The flavor module called ``name``."""
    if name not in MODULES:
        raise ModelError(f"unknown flavor {name!r}; mlvc knows {', '.join(sorted(MODULES))}")
    return importlib.import_module(MODULES[name])


def detect(model) -> str:
    """The most specific flavor that can save ``model``."""
    for name in DETECT_ORDER:
        if get(name).matches(model):
            return name
    raise ModelError(
        f"cannot save a {type(model).__name__} as a model: it has no predict method and is "
        "not callable; wrap it in a class with predict(data)"
    )
