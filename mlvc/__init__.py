"""mlvc: content-addressed versioning for machine-learning runs.

``Repo`` is the library API; ``start_run`` and the ``log_*`` functions track a live run
from a training script, like MLflow's fluent API; ``seed_everything`` seeds random, numpy
and torch and records the seed; ``mlvc.errors`` holds the errors raised.
"""

from .api.repo import Repo
from .api.seeding import seed_everything
from .errors import MlvcError
from .runs.live import (
    LiveRun,
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

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "models":  # imported on first use: ``mlvc.models.load(...)``
        import importlib

        return importlib.import_module(".models", __name__)
    raise AttributeError(f"module 'mlvc' has no attribute {name!r}")


__all__ = [
    "LiveRun",
    "MlvcError",
    "Repo",
    "__version__",
    "active_run",
    "end_run",
    "log_artifact",
    "log_dict",
    "log_metric",
    "log_metrics",
    "log_param",
    "log_params",
    "log_text",
    "seed_everything",
    "set_tag",
    "set_tags",
    "start_run",
]
