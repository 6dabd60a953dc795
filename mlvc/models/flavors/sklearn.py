"""The ``sklearn`` flavor: scikit-learn estimators and pipelines.

Saved with skops when it is installed and can hold the model: a skops file is data, not
code, so it loads from any source; types skops does not trust by default (a tree's
``Tree``, say) load only for a trusted model (see mlvc.models.trust). Models holding code
from ``__main__`` or the project's own modules (a FunctionTransformer around a local
function), which skops stores by reference, are pickled with cloudpickle instead, by value.
"""

from __future__ import annotations

import io
import json
import os
import sys
import zipfile
from pathlib import Path

from . import pyfunc

NAME = "sklearn"
PACKAGES = ("scikit-learn", "numpy", "scipy", "cloudpickle", "skops")
DATA = "model.pkl"
SKOPS = "model.skops"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # zip entries' time: equal models give equal bytes


def matches(model) -> bool:
    base = sys.modules.get("sklearn.base")
    return base is not None and isinstance(model, base.BaseEstimator)


def save(model, path: Path) -> dict:
    import sklearn

    data = skops_bytes(model)
    if data is not None:
        import skops

        (path / SKOPS).write_bytes(data)
        return {
            "pickled_model": SKOPS,
            "serialization_format": "skops",
            "sklearn_version": sklearn.__version__,
            "skops_version": skops.__version__,
        }
    pyfunc.dump(model, path / DATA)
    return {
        "pickled_model": DATA,
        "serialization_format": "cloudpickle",
        "sklearn_version": sklearn.__version__,
    }


def skops_bytes(model) -> bytes | None:
    """The model as a skops file, the same bytes for equal models; None when skops is not
    installed or cannot hold the model faithfully."""
    try:
        import skops.io as sio
    except ImportError:
        return None
    try:
        data = _canonical(sio.dumps(model))
        untrusted = sio.get_untrusted_types(data=data)
        if any(_local(t) for t in untrusted):
            return None  # skops would store this code by reference; cloudpickle by value
        sio.loads(data, trusted=untrusted or None)  # it must read back
    except Exception:  # whatever skops cannot represent, cloudpickle can
        return None
    return data


def _local(type_name: str) -> bool:
    """Whether a type (``module.Name``) comes from ``__main__`` or the project's own code."""
    parts = type_name.split(".")
    roots = pyfunc._installed_roots()
    for i in range(len(parts) - 1, 0, -1):
        mod = sys.modules.get(".".join(parts[:i]))
        if mod is not None:
            file = getattr(mod, "__file__", None)
            return (
                mod.__name__ == "__main__"
                or not file
                or not (os.path.realpath(file).startswith(roots))
            )
    return True


def _canonical(data: bytes) -> bytes:
    """A skops file rewritten without what changes from one save to the next: memory
    addresses (``__id__`` and array file names) become sequence numbers, zip times a
    constant."""
    src = zipfile.ZipFile(io.BytesIO(data))
    schema = json.loads(src.read("schema.json"))
    ids: dict[int, int] = {}
    files: dict[str, str] = {}
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("__id__"), int):
                node["__id__"] = ids.setdefault(node["__id__"], len(ids))
            if isinstance(node.get("file"), str):
                old = node["file"]
                node["file"] = files.setdefault(old, f"{len(files)}{Path(old).suffix}")
            stack.extend(reversed(list(node.values())))
        elif isinstance(node, list):
            stack.extend(reversed(node))
    if set(src.namelist()) != {*files, "schema.json"}:
        return data  # a layout this code does not know: keep skops' own bytes
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for old, new in sorted(files.items(), key=lambda kv: kv[1]):
            z.writestr(zipfile.ZipInfo(new, _EPOCH), src.read(old))
        z.writestr(zipfile.ZipInfo("schema.json", _EPOCH), json.dumps(schema, indent=2))
    return out.getvalue()


def load(path: Path, conf: dict, trusted: bool = False):
    fmt = conf.get("serialization_format", "cloudpickle")
    if fmt == "skops":  # ours by default, and MLflow 3's
        return _load_skops(path / conf.get("pickled_model", SKOPS), trusted)
    if fmt not in ("pickle", "cloudpickle"):
        from ..errors import ModelError

        raise ModelError(
            f"sklearn models serialized as {fmt!r} are not supported (pickle, cloudpickle, skops)"
        )
    from ..trust import unpickle

    return unpickle(path / conf.get("pickled_model", DATA), trusted)


def _reads_values_only(native) -> bool:
    """A scikit-learn estimator itself, not a pipeline or column selector (which may pick
    columns by name)."""
    module = type(native).__module__
    if not module.startswith("sklearn.") or module.startswith(
        ("sklearn.pipeline", "sklearn.compose")
    ):
        return False
    return not any(hasattr(native, a) for a in ("steps", "transformers", "transformer_list"))


def _load_skops(file: Path, trusted: bool):
    """Types skops trusts by default load from any source; others only for a trusted model
    (a list in the manifest, as MLflow writes, is the model author's word: not enough)."""
    try:
        import skops.io as sio
    except ImportError:
        from ..errors import MissingExtra

        raise MissingExtra(
            "this sklearn model is serialized with skops: pip install skops"
        ) from None
    untrusted = sio.get_untrusted_types(file=file)
    if untrusted and not trusted:
        from ..errors import UntrustedModel
        from ..trust import HOW

        shown = ", ".join(untrusted[:5]) + (
            f" and {len(untrusted) - 5} more" if len(untrusted) > 5 else ""
        )
        raise UntrustedModel(
            f"refusing to load {file}: it holds types skops does not trust by default "
            f"({shown}), and this model does not come from this repository; {HOW}"
        )
    return sio.load(file, trusted=untrusted or None)


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
