"""mlvc: content-addressed versioning for machine-learning runs.

``Repo`` is the library API; ``start_run`` and the ``log_*`` functions track a live run
from a training script, like MLflow's fluent API; ``seed_everything`` seeds random, numpy
and torch and records the seed; ``mlvc.errors`` holds the errors raised.

Names are resolved on first use (PEP 562), so importing a low layer such as
``mlvc.core.ids`` runs nothing else of the library.
"""

from __future__ import annotations

import importlib

from ._version import __version__

TYPE_CHECKING = False  # typing's own costs ~2 ms of every `mlvc` command's start-up

__all__ = [
    "LiveRun",
    "MlvcError",
    "Repo",
    "__version__",
    "active_run",
    "autolog",
    "end_run",
    "get_run",
    "last_active_run",
    "load_table",
    "log_artifact",
    "log_artifacts",
    "log_dict",
    "log_figure",
    "log_image",
    "log_input",
    "log_metric",
    "log_metrics",
    "log_param",
    "log_params",
    "log_table",
    "log_text",
    "search_runs",
    "seed_everything",
    "set_experiment",
    "set_tag",
    "set_tags",
    "start_run",
]
_FLUENT = "mlvc.api.fluent"
_ELSEWHERE = {
    "MlvcError": "mlvc.errors",
    "Repo": "mlvc.api.repo",
    "seed_everything": "mlvc.api.seeding",
    "LiveRun": "mlvc.runs.live",
    "autolog": "mlvc.models.autolog",
}
# every public name but __version__ is resolved on first use: the fluent API unless noted
_EXPORTS = {n: _ELSEWHERE.get(n, _FLUENT) for n in __all__ if n != "__version__"}

if TYPE_CHECKING:  # for type checkers and editors; at run time __getattr__ resolves them
    from .api.fluent import (
        active_run,
        end_run,
        log_artifact,
        log_dict,
        log_metric,
        log_metrics,
        log_param,
        log_params,
        log_text,
        set_tag,
        set_tags,
        start_run,
    )
    from .api.repo import Repo
    from .api.seeding import seed_everything
    from .errors import MlvcError
    from .runs.live import LiveRun


def __getattr__(name: str):
    if name == "models":  # imported on first use: ``mlvc.models.load(...)``
        return importlib.import_module(".models", __name__)
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mlvc' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS, "models"])
