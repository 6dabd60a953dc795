"""``mlvc.autolog()``: training calls log themselves into the active run (one is started
for a call made outside any run, and ended after it), as MLflow's autolog does.

    scikit-learn   every estimator's ``fit``: its params, training metrics (score, and
                   accuracy/F1 or MSE/MAE/R² by kind), the model with its signature and an
                   input example (mlvc.models.log_model); only the outermost ``fit`` of a
                   meta-estimator logs
    XGBoost        ``xgboost.train`` (the sklearn wrappers too): params, a callback logging
                   each iteration's eval metrics, the booster as ``model/model.json``
    LightGBM       ``lightgbm.train``: the same, the booster as ``model/model.txt``
    Lightning      ``Trainer.fit``: max epochs and steps, the module's ``hparams``, the
                   optimizer's name and settings (lr, ...), each epoch's metrics
                   (``callback_metrics``), the module as a ``torch`` model
    Keras          ``Model.fit``: epochs, batch size and the other fit settings, the
                   optimizer's name and config, each epoch's logs, ``model/model.keras``
    Hugging Face   ``Trainer.train``: the TrainingArguments' scalar entries and the model's
                   class, each logging step's logs (at ``global_step``), the saved model
                   (``Trainer.save_model``) in ``model/``

A framework that is not installed is skipped. ``autolog(disable=True)`` undoes it all. In a
distributed training only the first process logs (``RANK``, ``LOCAL_RANK`` and
``NODE_RANK`` 0 or unset), so that N processes training one model make one run.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import struct
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
            if not _rank_zero():
                return original(*args, **kwargs)
            with _run() as run:
                if run is None:
                    return original(*args, **kwargs)
                return body(run, original, *args, **kwargs)

        return call

    return make


def _rank_zero() -> bool:
    """Whether this process is the first of a distributed training (or the only one): the
    others (torchrun's RANK, Lightning's LOCAL_RANK and NODE_RANK) log nothing, so that N
    processes training one model make one run, as MLflow's rank-zero rule does."""
    return all(os.environ.get(k, "0") in ("", "0") for k in ("RANK", "LOCAL_RANK", "NODE_RANK"))


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
#
# Each trainer's entry point (Lightning's ``Trainer.fit``, Keras's ``Model.fit``, Hugging
# Face's ``Trainer.train``) runs inside a run as scikit-learn's ``fit`` does: the active one,
# or one started for the call and ended after it (failed if training raised). The call's
# hyperparameters are logged as params before training, a callback logs each epoch's (each
# logging step's) metrics, and the trained model is logged after it unless log_models=False.


def _points(logs: dict) -> dict[str, float]:
    """The numbers of a trainer's logs (tensors and numpy scalars included)."""
    points = {}
    for k, v in (logs or {}).items():
        with contextlib.suppress(TypeError, ValueError, RuntimeError, AttributeError):
            points[str(k)] = float(v.item() if hasattr(v, "item") else v)
    return points


def _log_epoch(run, logs: dict, step: int) -> None:
    points = _points(logs)
    if points:
        _quietly("metrics", run.log_metrics, points, int(step))


def _scalars(mapping: Any, prefix: str = "", nones: bool = True) -> dict[str, Any]:
    """Params from a mapping's scalar entries (bools, numbers, strings, and None unless not
    ``nones``); the rest, a tensor or a list of layers, is not a hyperparameter to compare
    runs by. A float that is a float32 (Keras's settings) is its shortest float32 text:
    ``learning_rate=0.001``, not 0.0010000000474974513, so that a query finds it."""
    out = {}
    for k, v in dict(mapping or {}).items():
        if isinstance(v, float) and math.isfinite(v):
            v = _float32_text(v)
        if (v is None and nones) or isinstance(v, bool | int | float | str):
            out[f"{prefix}{k}"] = _param_value(v)
    return out


def _float32_text(v: float) -> float:
    """``v`` as the shortest decimal that reads back as the same float32, if ``v`` is one."""
    as32 = struct.unpack("<f", struct.pack("<f", v))[0]
    if as32 != v:
        return v
    for digits in range(1, 10):
        short = float(f"{v:.{digits}g}")
        if struct.unpack("<f", struct.pack("<f", short))[0] == as32:
            return short
    return v


def _bound(original: Callable, args: tuple, kwargs: dict):
    """The call's arguments by name (``self`` first), its defaults applied."""
    import inspect

    bound = inspect.signature(original).bind(*args, **kwargs)
    bound.apply_defaults()
    return bound


def _log_file_model(run, save: Callable[[str], None], name: str) -> None:
    """``save(path)`` into a temporary file or folder of the repository, logged as ``name``."""
    import shutil

    tmp_dir = run.ctx.layout.tmp
    tmp_dir.mkdir(parents=True, exist_ok=True)
    folder = tempfile.mkdtemp(dir=tmp_dir, prefix="autolog-")
    try:
        path = os.path.join(folder, os.path.basename(name))
        save(path)
        run.log_artifact(path, name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _setup_lightning() -> bool:
    try:
        import lightning.pytorch as pl
    except ImportError:
        import pytorch_lightning as pl

    class MlvcCallback(pl.Callback):
        def __init__(self, run):
            self.run = run

        def on_train_start(self, trainer, pl_module) -> None:
            params = {}
            for i, opt in enumerate(trainer.optimizers or []):
                prefix = "optimizer" if i == 0 else f"optimizer_{i}"
                params[f"{prefix}_name"] = type(opt).__name__
                groups = getattr(opt, "param_groups", None) or [{}]
                params.update(_scalars(groups[0], f"{prefix}_"))
            _quietly("params", self.run.log_params, params)

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            _log_epoch(self.run, dict(trainer.callback_metrics), trainer.current_epoch)

    def body(run, original: Callable, *args, **kwargs):
        bound = _bound(original, args, kwargs)
        trainer, module = args[0], bound.arguments.get("model")
        params = {"epochs": trainer.max_epochs, "max_steps": trainer.max_steps}
        params.update(_scalars(getattr(module, "hparams", None)))
        _quietly("params", run.log_params, params)
        callback = MlvcCallback(run)
        trainer.callbacks.append(callback)
        try:
            out = original(*args, **kwargs)
        finally:
            trainer.callbacks.remove(callback)
        if _settings["log_models"] and module is not None:
            from .api import log_model

            _quietly("the model", functools.partial(log_model, module, "model", run=run))
        return out

    _patch(pl.Trainer, "fit", _autologged(body))
    return True


def _setup_keras() -> bool:
    import keras

    class MlvcCallback(keras.callbacks.Callback):
        def __init__(self, run):
            super().__init__()
            self.run = run

        def on_epoch_end(self, epoch, logs=None) -> None:
            _log_epoch(self.run, logs or {}, epoch)

    fit_params = ("epochs", "batch_size", "initial_epoch", "steps_per_epoch",
                  "validation_split", "validation_steps", "validation_freq", "shuffle")  # fmt: skip

    def body(run, original: Callable, *args, **kwargs):
        bound = _bound(original, args, kwargs)
        model = args[0]
        params = {k: _param_value(bound.arguments.get(k)) for k in fit_params}
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None:
            params["optimizer_name"] = type(optimizer).__name__
            with contextlib.suppress(Exception):  # a custom optimizer's config may not say
                config = optimizer.get_config()
                config.pop("name", None)
                params.update(_scalars(config, "optimizer_"))
        _quietly("params", run.log_params, params)
        # the caller's callbacks, given by name or by position, then this run's
        bound.arguments["callbacks"] = [*(bound.arguments.get("callbacks") or []),
                                        MlvcCallback(run)]  # fmt: skip
        out = original(*bound.args, **bound.kwargs)
        if _settings["log_models"]:
            _quietly("the model", _log_file_model, run, model.save, "model/model.keras")
        return out

    _patch(keras.Model, "fit", _autologged(body))
    return True


def _setup_transformers() -> bool:
    import transformers

    class MlvcCallback(transformers.TrainerCallback):
        def __init__(self, run):
            self.run = run

        def on_log(self, args, state, control, logs=None, **kwargs) -> None:
            _log_epoch(self.run, logs or {}, state.global_step)

    def body(run, original: Callable, *args, **kwargs):
        trainer = args[0]
        params = _scalars(trainer.args.to_dict(), nones=False)  # ~60 of ~150 are None
        params["model_class"] = type(trainer.model).__name__
        _quietly("params", run.log_params, params)
        callback = MlvcCallback(run)
        trainer.add_callback(callback)
        try:
            out = original(*args, **kwargs)
        finally:
            trainer.remove_callback(callback)
        if _settings["log_models"]:
            _quietly("the model", _log_file_model, run, trainer.save_model, "model")
        return out

    _patch(transformers.Trainer, "train", _autologged(body))
    return True


_SETUP: dict[str, Callable[[], bool]] = {
    "sklearn": _setup_sklearn,
    "xgboost": _setup_xgboost,
    "lightgbm": _setup_lightgbm,
    "lightning": _setup_lightning,
    "keras": _setup_keras,
    "transformers": _setup_transformers,
}
