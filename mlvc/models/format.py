"""The model directory: the flavor's files plus ``mlvc-model.json``, the manifest.

    mlvc-model.json      format version, mlvc version, flavors (the native one and the
                         ``python_function`` face naming its loader), input kind,
                         signature (Arrow IPC base64 + readable), input example, requirements
    requirements.txt     the pinned requirements, one a line (for ``pip install -r``)
    input_example.arrow  the example as an Arrow IPC file (tables), or .npy (arrays)
    code/                files given as ``code_paths``, put on ``sys.path`` when loading
    <flavor files>       model.pkl, python_model.pkl, model.onnx, model.pth...

Stored in a run or the registry, the directory is one tree: equal models are one object.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from importlib import metadata
from pathlib import Path

from .._version import __version__
from . import flavors
from .errors import ModelError
from .signature import Signature, as_signature, infer_schema, kind_of, to_table

MANIFEST = "mlvc-model.json"
MLFLOW_MANIFEST = "MLmodel"
FORMAT = 1
REQUIREMENTS = "requirements.txt"
CODE = "code"


def pin(names) -> list[str]:
    """``name==version`` for each installed distribution; other names and specifiers as given."""
    out = []
    for name in names:
        name = str(name).strip()
        if not name:
            continue
        if any(c in name for c in "<>=!~@ ;["):
            out.append(name)
            continue
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(name)
    return out


def _requirements(flavor_mod, input_kind: str | None, extra) -> list[str]:
    names = list(flavor_mod.PACKAGES)
    if input_kind == "pandas":
        names.append("pandas")
    names.append("pyarrow")
    pinned = pin(dict.fromkeys(names))
    pinned = [p for p in pinned if "==" in p]  # the flavor's optional helpers may be absent
    given = pin(extra or ())
    seen = {_dist(p) for p in given}
    return [f"mlvc=={__version__}"] + [p for p in pinned if _dist(p) not in seen] + given


def _dist(req: str) -> str:
    for i, c in enumerate(req):
        if c in "<>=!~@ ;[":
            return req[:i].lower()
    return req.lower()


def save(
    model,
    path: str | os.PathLike,
    flavor: str | None = None,
    signature=None,
    input_example=None,
    requirements=None,
    code_paths=(),
) -> dict:
    """Write ``model`` as a model directory at ``path`` (which must not exist or be empty).

    Args:
        model: an estimator, module, ONNX graph, object with ``predict``, or a callable.
        flavor: force a flavor (default: the most specific that fits).
        signature: a ``Signature`` or input ``pyarrow.Schema``; inferred from
            ``input_example`` (inputs, and outputs by predicting on it) when not given.
        input_example: a DataFrame, Arrow table, dict of columns, records or array.
        requirements: extra requirements; bare names are pinned to the installed version.
        code_paths: files or folders copied into ``code/`` and importable at load.

    Returns the manifest written.
    """
    dest = Path(path)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ModelError(f"cannot save a model to {dest}: it exists and is not an empty folder")
    name = flavor or flavors.detect(model)
    mod = flavors.get(name)
    if flavor and not mod.matches(model):
        raise ModelError(f"a {type(model).__name__} cannot be saved with the {name} flavor")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        return _write(model, dest, mod, signature, input_example, requirements, code_paths)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def _write(model, dest: Path, mod, signature, input_example, requirements, code_paths) -> dict:
    conf = mod.save(model, dest)
    input_kind = kind_of(input_example) if input_example is not None else None
    sig = as_signature(signature)
    if sig is None and input_example is not None:
        sig = _infer(mod, model, input_example, input_kind)
    elif sig is None and hasattr(mod, "infer"):
        sig = mod.infer(mod.load(dest, conf, trusted=True))  # just written here
    example = _save_example(dest, input_example) if input_example is not None else None
    for src in code_paths:
        src = Path(src)
        target = dest / CODE / src.name
        target.parent.mkdir(exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, target)
    reqs = _requirements(mod, input_kind, requirements)
    manifest = {
        "mlvc_model": FORMAT,
        "mlvc_version": __version__,
        "flavor": mod.NAME,
        "flavors": {
            mod.NAME: conf,
            flavors.PYFUNC: {
                "loader": mod.NAME,
                "python_version": platform.python_version(),
                **({"code": CODE} if code_paths else {}),
            },
        },
        "input_kind": input_kind,
        "signature": sig.to_dict() if sig else None,
        "input_example": example,
        "requirements": reqs,
    }
    if mod.NAME == flavors.PYFUNC:
        manifest["flavors"][flavors.PYFUNC].update(conf)
    (dest / REQUIREMENTS).write_text("".join(r + "\n" for r in reqs))
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _infer(mod, model, example, kind) -> Signature:
    """Inputs from the example; outputs from the model's prediction on it, when it works."""
    inputs = infer_schema(example)
    outputs = None
    try:
        outputs = infer_schema(mod.predict(model, example, kind))
    except Exception:  # the output is only a hint: a model that fails here fails loudly later
        outputs = None
    return Signature(inputs, outputs)


def _save_example(dest: Path, example) -> dict:
    kind = kind_of(example)
    if kind in ("numpy", "list"):
        import numpy as np

        arr = np.asarray(example)
        if arr.dtype.kind == "O":
            raise ModelError("an input example array must have a numeric or string dtype")
        np.save(dest / "input_example.npy", arr, allow_pickle=False)
        return {"path": "input_example.npy", "kind": kind}
    import pyarrow as pa

    table = to_table(example)
    with (
        pa.OSFile(str(dest / "input_example.arrow"), "wb") as sink,
        pa.ipc.new_file(sink, table.schema) as writer,
    ):
        writer.write_table(table)
    return {"path": "input_example.arrow", "kind": kind}


def load_example(path: Path, info: dict | None):
    """The input example in the form it was given, or None."""
    if not info:
        return None
    from .signature import to_kind

    file = path / info["path"]
    if file.suffix == ".npy":
        import numpy as np

        arr = np.load(file, allow_pickle=False)
        return arr.tolist() if info.get("kind") == "list" else arr
    import pyarrow as pa

    table = pa.ipc.open_file(pa.memory_map(str(file))).read_all()
    return to_kind(table, info.get("kind"))


def read_manifest(path: Path) -> dict:
    """The manifest of an mlvc model directory."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise ModelError(f"{path} is not a model directory: it has no {MANIFEST}") from None
    except ValueError as e:
        raise ModelError(f"{path / MANIFEST} is not valid JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("mlvc_model") != FORMAT:
        raise ModelError(
            f"{path / MANIFEST} has model format {manifest.get('mlvc_model')!r}; "
            f"this mlvc reads format {FORMAT}"
        )
    return manifest


def is_model_dir(path: Path) -> bool:
    return (path / MANIFEST).is_file() or (path / MLFLOW_MANIFEST).is_file()
