"""Reading model directories written by MLflow (an ``MLmodel`` YAML file).

The MLmodel file becomes an in-memory mlvc manifest, so such a model loads, enforces its
signature, registers and serves like one of ours:
    sklearn flavor (or python_function with ``loader_module: mlflow.sklearn``) → ``sklearn``
    python_function with ``loader_module: mlflow.pyfunc.model`` → ``mlflow_pyfunc``
    any other loader → ``mlflow_native`` (needs MLflow installed)
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import MissingExtra, ModelError
from .format import FORMAT, MLFLOW_MANIFEST
from .signature import Signature, tensor_schema

MLFLOW_TYPES = {
    "boolean": "bool_",
    "integer": "int32",
    "long": "int64",
    "float": "float32",
    "double": "float64",
    "string": "string",
    "binary": "binary",
}


def read_mlmodel(path: Path) -> dict:
    """An mlvc manifest for the MLflow model at ``path``."""
    try:
        import yaml
    except ImportError:
        raise MissingExtra(
            "reading an MLflow model (its MLmodel file is YAML) needs PyYAML: "
            "pip install 'mlvc[yaml]'"
        ) from None
    try:
        doc = yaml.safe_load((path / MLFLOW_MANIFEST).read_text())
    except yaml.YAMLError as e:
        raise ModelError(f"{path / MLFLOW_MANIFEST} is not valid YAML: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("flavors"), dict):
        raise ModelError(f"{path / MLFLOW_MANIFEST} has no flavors; is it an MLflow model?")
    name, conf = _flavor(doc["flavors"], path)
    pyfunc = doc["flavors"].get("python_function") or {}
    sig = _signature(doc.get("signature") or {})
    return {
        "mlvc_model": FORMAT,
        "source_format": "mlflow",
        "mlflow_version": doc.get("mlflow_version"),
        "flavor": name,
        "flavors": {
            name: conf,
            "python_function": {
                "loader": name,
                "python_version": pyfunc.get("python_version"),
                **({"code": pyfunc["code"]} if pyfunc.get("code") else {}),
            },
        },
        "input_kind": "numpy" if sig and _is_tensor(sig) else "pandas",
        "signature": sig.to_dict() if sig else None,
        "input_example": None,
        "mlflow_input_example": doc.get("saved_input_example_info"),
        "requirements": _requirements(path),
        "created": doc.get("utc_time_created"),
    }


def _flavor(flavors: dict, path: Path) -> tuple[str, dict]:
    pyfunc = flavors.get("python_function") or {}
    loader = pyfunc.get("loader_module")
    if "sklearn" in flavors and loader in (None, "mlflow.sklearn"):
        conf = dict(flavors["sklearn"])
        conf.setdefault("pickled_model", pyfunc.get("model_path", "model.pkl"))
        conf["predict_fn"] = pyfunc.get("predict_fn", "predict")
        return "sklearn", conf
    if loader == "mlflow.sklearn":
        return "sklearn", {"pickled_model": pyfunc.get("model_path", "model.pkl"),
                           "predict_fn": pyfunc.get("predict_fn", "predict")}  # fmt: skip
    if loader == "mlflow.pyfunc.model":
        return "mlflow_pyfunc", dict(pyfunc)
    try:
        import mlflow  # noqa: F401
    except ImportError:
        kinds = ", ".join(sorted(flavors)) or "none"
        raise ModelError(
            f"the MLflow model at {path} (flavors: {kinds}; loader {loader}) needs MLflow to "
            "load: pip install mlflow; mlvc reads sklearn and custom python_function models alone"
        ) from None
    return "mlflow_native", dict(pyfunc)


def _is_tensor(sig: Signature) -> bool:
    from .signature import is_tensor

    return sig.inputs is not None and is_tensor(sig.inputs)


def _signature(doc: dict) -> Signature | None:
    inputs = schema_from_mlflow(doc.get("inputs"))
    if inputs is None:
        return None
    return Signature(inputs, schema_from_mlflow(doc.get("outputs")))


def schema_from_mlflow(text):
    """An Arrow schema from MLflow's JSON schema, or None for what mlvc cannot enforce
    (named tensors, arrays, objects, maps)."""
    import numpy as np
    import pyarrow as pa

    if not text:
        return None
    try:
        specs = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return None
    if not isinstance(specs, list) or not specs:
        return None
    if len(specs) == 1 and specs[0].get("type") == "tensor" and "name" not in specs[0]:
        ts = specs[0].get("tensor-spec") or {}
        try:
            return tensor_schema(pa.from_numpy_dtype(np.dtype(ts["dtype"])), list(ts["shape"]))
        except (KeyError, TypeError, pa.ArrowNotImplementedError):
            return None
    fields = []
    for i, spec in enumerate(specs):
        kind = MLFLOW_TYPES.get(spec.get("type")) if isinstance(spec, dict) else None
        if kind is None:
            return None
        meta = None if spec.get("required", True) else {b"mlvc.optional": b"1"}
        fields.append(pa.field(str(spec.get("name", i)), getattr(pa, kind)(), True, meta))
    return pa.schema(fields, metadata={b"mlvc.kind": b"columns"})


def _requirements(path: Path) -> list[str]:
    try:
        lines = (path / "requirements.txt").read_text().splitlines()
    except OSError:
        return []
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith(("#", "-"))]


def load_example(path: Path, info: dict | None):
    """MLflow's saved input example (a split-orient DataFrame or an ndarray), or None."""
    if not info or not info.get("artifact_path"):
        return None
    try:
        doc = json.loads((path / info["artifact_path"]).read_text())
    except (OSError, ValueError):
        return None
    if info.get("type") == "ndarray":
        import numpy as np

        return np.asarray(doc.get("inputs", doc))
    if info.get("type") == "dataframe" and isinstance(doc, dict) and "columns" in doc:
        from .payload import split_table
        from .signature import to_kind

        return to_kind(split_table(doc), "pandas")
    return None
