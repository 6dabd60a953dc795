"""The ``python_function`` flavor: any object with ``predict(data)``, or a callable.

The object is serialized with cloudpickle, which stores classes and functions defined in
``__main__`` or a notebook by value, so the model loads in another process (the serving
one included) without the script that defined it. Classes from the project's own modules
(any module outside site-packages and the standard library) are stored by value too.
"""

from __future__ import annotations

import contextlib
import os
import sys
import sysconfig
from pathlib import Path

NAME = "python_function"
PACKAGES = ("cloudpickle",)
DATA = "python_model.pkl"


def matches(model) -> bool:
    return callable(getattr(model, "predict", None)) or callable(model)


def dump(model, path: Path) -> None:
    import cloudpickle

    with _by_value(_local_modules(model)), open(path, "wb") as f:
        cloudpickle.dump(model, f)


def _installed_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots |= {sys.prefix, sys.base_prefix, sys.exec_prefix}
    return tuple(os.path.realpath(r) + os.sep for r in roots)


def _local_modules(model) -> list:
    """Modules outside installed packages that define the model's classes or functions:
    the project's own code, which another process (a server) could not import."""
    objs = [model, type(model)]
    get_params = getattr(model, "get_params", None)
    if callable(get_params):
        with contextlib.suppress(Exception):
            objs += [type(v) for v in get_params(deep=True).values()]
    roots, out = _installed_roots(), []
    for obj in objs:
        name = getattr(obj, "__module__", None) or ""
        mod = sys.modules.get(name)
        file = getattr(mod, "__file__", None)
        if not file or name == "__main__" or name.split(".")[0] == "mlvc" or mod in out:
            continue
        if not os.path.realpath(file).startswith(roots):
            out.append(mod)
    return out


@contextlib.contextmanager
def _by_value(modules):
    import cloudpickle

    for mod in modules:
        cloudpickle.register_pickle_by_value(mod)
    try:
        yield
    finally:
        for mod in modules:
            cloudpickle.unregister_pickle_by_value(mod)


def save(model, path: Path) -> dict:
    import cloudpickle

    dump(model, path / DATA)
    return {
        "data": DATA,
        "serialization": "cloudpickle",
        "cloudpickle_version": cloudpickle.__version__,
    }


def load(path: Path, conf: dict, trusted: bool = False):
    from ..trust import unpickle

    return unpickle(path / conf.get("data", DATA), trusted)


def predict(native, data, kind, conf=None):
    from ..signature import to_kind

    if _is_table(data):
        data = to_kind(data, kind)
    fn = getattr(native, "predict", None)
    return fn(data) if callable(fn) else native(data)


def _is_table(data) -> bool:
    import pyarrow as pa

    return isinstance(data, pa.Table)
