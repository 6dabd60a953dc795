"""``mlvc.autolog()``: training calls log themselves into the active run (one is started
for a call made outside any run, and ended after it), as MLflow's autolog does.

    scikit-learn   every estimator's ``fit``: its params, training metrics (score, and
                   accuracy/F1 or MSE/MAE/R² by kind), the model with its signature and an
                   input example (mlvc.models.log_model); only the outermost ``fit`` of a
                   meta-estimator logs
    XGBoost        ``xgboost.train`` (the sklearn wrappers too): params, a callback logging
                   each iteration's eval metrics, the booster as ``model/model.json``
    LightGBM       ``lightgbm.train``: the same, the booster as ``model/model.txt``
    Lightning, Keras, Hugging Face Trainer   a callback logging each epoch's (step's)
                   metrics, added to every trainer/fit while autolog is on

A framework that is not installed is skipped. ``autolog(disable=True)`` undoes it all.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

from ..errors import MlvcError

log = logging.getLogger("mlvc.autolog")
FRAMEWORKS = ("sklearn", "xgboost", "lightgbm", "lightning", "keras", "transformers")
_inside: ContextVar[bool] = ContextVar("mlvc_autolog_inside", default=False)
_patched: list[tuple[Any, str, Any]] = []  # (owner, attribute, original) to undo
_settings = {"log_models": True}


def autolog(frameworks: list[str] | None = None, log_models: bool = True,
            disable: bool = False) -> list[str]:  # fmt: skip
    """Turn autologging on for ``frameworks`` (default: every one installed); returns the
    frameworks it is on for."""
    _undo()
    if disable:
        return []
    _settings["log_models"] = log_models
    on = []
    for name in frameworks or FRAMEWORKS:
        if name not in FRAMEWORKS:
            raise MlvcError(f"autolog knows {', '.join(FRAMEWORKS)}, not {name!r}")
        try:
            if _SETUP[name]():
                on.append(name)
        except ImportError:
            continue
    return on


def _undo() -> None:
    while _patched:
        owner, attr, original = _patched.pop()
        setattr(owner, attr, original)


def _patch(owner: Any, attr: str, make: Callable[[Callable], Callable]) -> None:
    original = owner.__dict__.get(attr) if isinstance(owner, type) else None
    original = original or getattr(owner, attr)
    _patched.append((owner, attr, original))
    setattr(owner, attr, make(original))


@contextlib.contextmanager
def _run() -> Iterator[Any]:
    """The active run, or one started for this call and ended after it; None inside an
    autologged call (an inner fit of a meta-estimator or a booster)."""
    if _inside.get():
        yield None
        return
    from ..api import fluent

    token = _inside.set(True)
    own = fluent.active_run() is None
    run = fluent.start_run() if own else fluent.active_run()
    try:
        yield run
    except BaseException:
        if own:
            run.end("failed")
        raise
    else:
        if own:
            run.end("finished")
    finally:
        _inside.reset(token)


def _quietly(what: str, fn: Callable, *args) -> None:
    """Logging must not break training: a refusal (a param logged with another value in
    this run) is a warning."""
    try:
        fn(*args)
    except (MlvcError, TypeError, ValueError) as e:
        log.warning("autolog could not log %s: %s", what, e)


def _param_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return repr(value)[:500]


# -- scikit-learn ----------------------------------------------------------------------------


def _setup_sklearn() -> bool:
    import sklearn  # noqa: F401
    from sklearn.utils import all_estimators

    owners = set()  # where each estimator's fit is defined (GridSearchCV's: BaseSearchCV)
    for _name, cls in all_estimators():
        owners.update(_definer(cls, "fit"))
    for cls in sorted(owners, key=lambda c: (c.__module__, c.__qualname__)):
        _patch(cls, "fit", _sklearn_fit)
    return True


def _definer(cls: type, attr: str) -> tuple[type, ...]:
    for c in cls.__mro__:
        if attr in c.__dict__:
            return (c,)
    return ()


def _autologged(body: Callable) -> Callable[[Callable], Callable]:
    """A patch: ``body(run, original, *args, **kwargs)`` inside a run (see ``_run``), the
    original call alone inside another autologged call."""

    def make(original: Callable) -> Callable:
        @functools.wraps(original)
        def call(*args, **kwargs):
            with _run() as run:
                if run is None:
                    return original(*args, **kwargs)
                return body(run, original, *args, **kwargs)

        return call

    return make


def _fit_body(run, original: Callable, self, *args, **kwargs):
    X = args[0] if args else kwargs.get("X")
    y = args[1] if len(args) > 1 else kwargs.get("y")
    params = {k: _param_value(v) for k, v in self.get_params(deep=False).items()}
    _quietly("params", run.log_params, params)
    out = original(self, *args, **kwargs)
    if y is not None:
        _quietly("training metrics", run.log_metrics, _sklearn_metrics(self, X, y))
    if _settings["log_models"]:
        _quietly("the model", _log_sklearn_model, self, X, run)
    return out


_sklearn_fit = _autologged(_fit_body)


def _sklearn_metrics(model, X, y) -> dict[str, float]:
    from sklearn import base, metrics

    out: dict[str, float] = {}
    with contextlib.suppress(Exception):
        out["training_score"] = float(model.score(X, y))
    with contextlib.suppress(Exception):
        pred = model.predict(X)
        if base.is_classifier(model):
            out["training_accuracy_score"] = float(metrics.accuracy_score(y, pred))
            out["training_f1_score"] = float(metrics.f1_score(y, pred, average="weighted"))
        elif base.is_regressor(model):
            out["training_mean_squared_error"] = float(metrics.mean_squared_error(y, pred))
            out["training_mean_absolute_error"] = float(metrics.mean_absolute_error(y, pred))
            out["training_r2_score"] = float(metrics.r2_score(y, pred))
    return out


def _log_sklearn_model(model, X, run) -> None:
    if not hasattr(model, "predict"):
        return  # a transformer alone is not a model to serve
    from .api import log_model

    example = X[:5] if hasattr(X, "__getitem__") else None
    log_model(model, "model", input_example=example, run=run)


# -- XGBoost and LightGBM ----------------------------------------------------------------------


def _setup_xgboost() -> bool:
    import xgboost
    from xgboost import sklearn as xgb_sklearn
    from xgboost import training

    for owner in (xgboost, training, xgb_sklearn):
        if hasattr(owner, "train"):
            _patch(owner, "train", _booster_train("xgboost"))
    return True


def _setup_lightgbm() -> bool:
    import lightgbm
    from lightgbm import engine
    from lightgbm import sklearn as lgb_sklearn

    for owner in (lightgbm, engine, lgb_sklearn):
        if hasattr(owner, "train"):
            _patch(owner, "train", _booster_train("lightgbm"))
    return True


def _booster_train(kind: str) -> Callable[[Callable], Callable]:
    def body(run, original: Callable, params, *args, **kwargs):
        flat = {k: _param_value(v) for k, v in dict(params or {}).items()}
        _quietly("params", run.log_params, flat)
        callbacks = list(kwargs.get("callbacks") or [])
        callbacks.append(_xgb_callback(run) if kind == "xgboost" else _lgb_callback(run))
        kwargs["callbacks"] = callbacks
        booster = original(params, *args, **kwargs)
        if _settings["log_models"]:
            name = "model/model.json" if kind == "xgboost" else "model/model.txt"
            _quietly("the model", _log_booster, run, booster, name)
        return booster

    return _autologged(body)


def _xgb_callback(run):
    from xgboost.callback import TrainingCallback

    class MlvcCallback(TrainingCallback):
        def after_iteration(self, model, epoch, evals_log) -> bool:
            points = {f"{data}-{metric}": float(values[-1])
                      for data, by_metric in evals_log.items()
                      for metric, values in by_metric.items() if values}  # fmt: skip
            _quietly("metrics", run.log_metrics, points, epoch)
            return False

    return MlvcCallback()


def _lgb_callback(run):
    def callback(env) -> None:
        points = {f"{data}-{metric}": float(value)
                  for data, metric, value, *_ in env.evaluation_result_list or []}  # fmt: skip
        _quietly("metrics", run.log_metrics, points, env.iteration)

    callback.order = 100  # after LightGBM's own (early stopping)
    return callback


def _log_booster(run, booster, name: str) -> None:
    tmp_dir = run.ctx.layout.tmp
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, suffix=os.path.splitext(name)[1])
    os.close(fd)
    try:
        booster.save_model(tmp)
        run.log_artifact(tmp, name)
    finally:
        os.unlink(tmp)


# -- deep-learning trainers (guarded: each only when installed) -----------------------------


def _epoch_logger(run_of: Callable[[], Any]) -> Callable[[dict, int], None]:
    def log_epoch(logs: dict, step: int) -> None:
        points = {}
        for k, v in (logs or {}).items():
            with contextlib.suppress(TypeError, ValueError):
                points[str(k)] = float(v.item() if hasattr(v, "item") else v)
        run = run_of()
        if run is not None and points:
            _quietly("metrics", run.log_metrics, points, step)

    return log_epoch


def _active():
    from ..api import fluent

    return fluent.active_run_or_start()


def _setup_lightning() -> bool:
    try:
        import lightning.pytorch as pl
    except ImportError:
        import pytorch_lightning as pl
    log_epoch = _epoch_logger(_active)

    class MlvcCallback(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            log_epoch(dict(trainer.callback_metrics), trainer.current_epoch)

    def add(trainer, args, kwargs) -> None:
        if not any(isinstance(c, MlvcCallback) for c in trainer.callbacks):
            trainer.callbacks.append(MlvcCallback())

    _patch(pl.Trainer, "fit", _before(add))
    return True


def _before(add: Callable[[Any, tuple, dict], None]) -> Callable[[Callable], Callable]:
    """A patch that lets ``add(self, args, kwargs)`` put a callback in before the call."""

    def make(original: Callable) -> Callable:
        @functools.wraps(original)
        def call(self, *args, **kwargs):
            add(self, args, kwargs)
            return original(self, *args, **kwargs)

        return call

    return make


def _setup_keras() -> bool:
    import keras

    log_epoch = _epoch_logger(_active)

    class MlvcCallback(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None) -> None:
            log_epoch(logs or {}, epoch)

    def add(model, args, kwargs) -> None:
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), MlvcCallback()]

    _patch(keras.Model, "fit", _before(add))
    return True


def _setup_transformers() -> bool:
    import transformers

    log_step = _epoch_logger(_active)

    class MlvcCallback(transformers.TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs) -> None:
            log_step(logs or {}, state.global_step)

    def make(original):
        @functools.wraps(original)
        def init(self, *args, **kwargs):
            original(self, *args, **kwargs)
            self.add_callback(MlvcCallback())

        return init

    _patch(transformers.Trainer, "__init__", make)
    return True


_SETUP: dict[str, Callable[[], bool]] = {
    "sklearn": _setup_sklearn,
    "xgboost": _setup_xgboost,
    "lightgbm": _setup_lightgbm,
    "lightning": _setup_lightning,
    "keras": _setup_keras,
    "transformers": _setup_transformers,
}
