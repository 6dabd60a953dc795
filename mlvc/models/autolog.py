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
distributed training only the first process logs (the trainer's own rank, and ``RANK``,
``LOCAL_RANK`` and ``NODE_RANK``), so that N processes training one model make one run.
Nothing autolog does stops a training: what it cannot log (a refused name, a model that
cannot be saved, no repository here) is a warning.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
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
_warned: set[str] = set()
PARAM_CHARS = 6000  # a string param longer is cut (MLflow's limit; mlvc refuses over 64 KiB)


def autolog(frameworks: list[str] | None = None, log_models: bool = True,
            disable: bool = False) -> list[str]:  # fmt: skip
    """Turn autologging on for ``frameworks`` (default: every one installed); returns the
    frameworks it is on for."""
    _undo()
    _warned.clear()
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


_INHERITED = object()  # an attribute patched on a class that only inherited it


def _undo() -> None:
    while _patched:
        owner, attr, original = _patched.pop()
        if original is _INHERITED:
            delattr(owner, attr)  # inherited again, as before (not a copy shadowing it)
        else:
            setattr(owner, attr, original)


def _patch(owner: Any, attr: str, make: Callable[[Callable], Callable]) -> None:
    own = attr in vars(owner)  # a module's, or a class's own (not one it inherits)
    original = vars(owner)[attr] if own else getattr(owner, attr)
    _patched.append((owner, attr, original if own else _INHERITED))
    setattr(owner, attr, make(original))


def _warn_once(key: str, message: str, *args) -> None:
    """A warning said once a process (a refused metric name would say it every epoch)."""
    if key not in _warned:
        _warned.add(key)
        log.warning(message, *args)


@contextlib.contextmanager
def _run() -> Iterator[Any]:
    """The active run, or one started for this call and ended after it (failed, or killed by
    Ctrl-C, with the error noted); None inside an autologged call (an inner fit of a
    meta-estimator or a booster), or outside any repository (said once: training goes on)."""
    if _inside.get():
        yield None
        return
    from ..api import fluent
    from ..errors import NotARepository

    token = _inside.set(True)
    try:
        own = fluent.active_run() is None
        try:
            run = fluent.start_run() if own else fluent.active_run()
        except Exception as e:  # noqa: BLE001 - no repository here, a tracking server down
            what = "no repository" if isinstance(e, NotARepository) else type(e).__name__
            _warn_once(what, "autolog: %s; training is not logged", e)
            run = None
        if run is None:
            yield None
            return
        try:
            yield run
        except BaseException as e:
            if own:
                _end(run, "killed" if _interrupted(e) else "failed", e)
            raise
        else:
            if own:
                _end(run, "finished")
    finally:
        _inside.reset(token)


def _interrupted(e: BaseException) -> bool:
    """Ctrl-C, or Lightning's exit(1) after catching it."""
    return isinstance(e, KeyboardInterrupt) or (
        isinstance(e, SystemExit) and isinstance(e.__context__, KeyboardInterrupt)
    )


def _end(run, status: str, error: BaseException | None = None) -> None:
    """End a run autolog started; if recording it fails (a full disk), a warning: the
    training's result (or its own error) still reaches the caller, and the run is set aside
    so that the next training does not log into it (the exit hook tries it again)."""
    from ..api import fluent

    try:
        run.end(status, error)
    except Exception as e:  # noqa: BLE001 - said; the caller gets the training's outcome
        log.warning("autolog could not record run %s (tried again at exit): %s", run.id, e)
        fluent.set_aside(run)


def _quietly(what: str, fn: Callable, *args) -> None:
    """Logging must not break training: whatever logging raises (a param logged with another
    value in this run, a model that cannot be saved) is a warning."""
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 - training goes on; said as a warning
        log.warning("autolog could not log %s: %s", what, e)


def _param_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return value[:PARAM_CHARS]  # as MLflow truncates; a longer one would be refused
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return repr(value)[:500]


def _log_params(run, params: dict[str, Any]) -> None:
    """``params`` in one write, or, if one is refused (its name, or another value already
    logged in this run), each alone: the others are kept, each refusal is a warning."""
    try:
        run.log_params(params)
    except Exception:  # noqa: BLE001 - told below, param by param
        for key, value in params.items():
            _quietly(f"param {key!r}", run.log_params, {key: value})


def _log_points(run, points: dict[str, float], step: int) -> None:
    """Each metric alone, so that a name mlvc refuses costs only that metric (said once)."""
    for key, value in points.items():
        try:
            run.log_metric(key, value, step)
        except Exception as e:  # noqa: BLE001 - training goes on
            _warn_once(f"metric {key}", "autolog could not log metric %r: %s", key, e)


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


def _autologged(
    body: Callable, rank: Callable[[tuple], int] | None = None
) -> Callable[[Callable], Callable]:
    """A patch: ``body(run, original, *args, **kwargs)`` inside a run (see ``_run``), the
    original call alone inside another autologged call, or in a process of a distributed
    training that is not its first (``rank(args)``, the trainer's own word, else
    ``_env_rank``)."""

    def make(original: Callable) -> Callable:
        @functools.wraps(original)
        def call(*args, **kwargs):
            if not _rank_zero(rank(args) if rank is not None else _env_rank()):
                return original(*args, **kwargs)
            with _run() as run:
                if run is None:
                    return original(*args, **kwargs)
                return body(run, original, *args, **kwargs)

        return call

    return make


RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK")  # torchrun's, accelerate's, Lightning's


def _env_rank() -> int:
    """This process's rank in a distributed training, as its launcher's variables say: the
    highest of them (a node's second process has LOCAL_RANK 1 and RANK 1, the next node's
    first NODE_RANK 1); 0 when none is set. A value that is not a number, or -1 (a common
    "not distributed"), counts as 0: logging is never turned off by a stray variable."""
    rank = 0
    for name in RANK_VARIABLES:
        with contextlib.suppress(ValueError):
            rank = max(rank, int(os.environ.get(name, "0").strip() or 0))
    return rank


def _rank_zero(rank: int) -> bool:
    """Whether this process logs: the first of a distributed training, or the only one; the
    others log nothing (said once), so that N processes training one model make one run, as
    MLflow's rank-zero rule does."""
    if rank > 0:
        _warn_once("rank", "autolog: process of rank %d in a distributed training: only "
                   "rank 0 logs", rank)  # fmt: skip
    return rank <= 0


def _fit_body(run, original: Callable, self, *args, **kwargs):
    X = args[0] if args else kwargs.get("X")
    y = args[1] if len(args) > 1 else kwargs.get("y")
    params = {k: _param_value(v) for k, v in self.get_params(deep=False).items()}
    _log_params(run, params)
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
        _log_params(run, flat)
        callbacks = list(kwargs.get("callbacks") or [])
        callbacks.append(_xgb_callback(run) if kind == "xgboost" else _lgb_callback(run))
        kwargs["callbacks"] = callbacks
        booster = original(params, *args, **kwargs)
        if _settings["log_models"]:
            name = "model/model.json" if kind == "xgboost" else "model/model.txt"
            _quietly("the model", _log_file_model, run, booster.save_model, name)
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


# -- deep-learning trainers (guarded: each only when installed) -----------------------------
#
# Each trainer's entry point (Lightning's ``Trainer.fit``, Keras's ``Model.fit``, Hugging
# Face's ``Trainer.train``) runs inside a run as scikit-learn's ``fit`` does: the active one,
# or one started for the call and ended after it (failed if training raised). The call's
# hyperparameters are logged as params before training, a callback logs each epoch's (each
# logging step's) metrics, and the trained model is logged after it unless log_models=False.
# Nothing autolog does may stop a training: what it cannot log is a warning.


def _points(logs: dict) -> dict[str, float]:
    """The numbers of a trainer's logs (tensors and numpy scalars included)."""
    points = {}
    for k, v in (logs or {}).items():
        with contextlib.suppress(Exception):  # not a number: not a metric
            points[str(k)] = float(v.item() if hasattr(v, "item") else v)
    return points


def _scalars(mapping: Any, prefix: str = "", float32: bool = False) -> dict[str, Any]:
    """Params from a mapping's scalar entries (bools, numbers, strings); the rest (None, a
    tensor, a list of layers) is not a setting to compare runs by. ``float32``: a float that
    is a float32 (Keras's settings) is its shortest float32 text: ``learning_rate=0.001``,
    not 0.0010000000474974513, so that a query finds it."""
    out = {}
    for k, v in dict(mapping or {}).items():
        if float32 and isinstance(v, float) and math.isfinite(v):
            v = _float32_text(v)
        if isinstance(v, bool | int | float | str):
            out[f"{prefix}{k}"] = _param_value(v)
    return out


def _float32_text(v: float) -> float:
    """``v`` as the shortest decimal that reads back as the same float32, if ``v`` is one."""
    if _as_float32(v) != v:
        return v
    for digits in range(1, 10):
        short = float(f"{v:.{digits}g}")
        if _as_float32(short) == v:
            return short
    return v


def _as_float32(v: float) -> float:
    return struct.unpack("<f", struct.pack("<f", v))[0]


def _bound(original: Callable, args: tuple, kwargs: dict):
    """The call's arguments by name (``self`` first), its defaults applied."""
    import inspect

    bound = inspect.signature(original).bind(*args, **kwargs)
    bound.apply_defaults()
    return bound


def _setup_lightning() -> bool:
    """Both packages' ``Trainer.fit`` where both are installed (``lightning.pytorch`` and
    the older ``pytorch_lightning`` are two copies of the same code, classes apart)."""
    patched = False
    for name in ("lightning.pytorch", "pytorch_lightning"):
        try:
            pl = importlib.import_module(name)
        except ImportError:
            continue
        _patch(pl.Trainer, "fit", _autologged(_lightning_fit(pl), rank=_lightning_rank))
        patched = True
    if not patched:
        raise ImportError("neither lightning nor pytorch_lightning is installed")
    return True


def _lightning_rank(args: tuple) -> int:
    """The trainer's global rank (from the cluster's variables: SLURM's, torchrun's, ...) or
    the launcher's variables, whichever says a later process (a process Lightning's own
    launcher started may not know its rank until the fit sets it up)."""
    rank = getattr(args[0], "global_rank", None) if args else None
    return max(rank if isinstance(rank, int) else 0, _env_rank())


def _lightning_fit(pl) -> Callable:
    class MlvcCallback(pl.Callback):
        """Logs an epoch's ``callback_metrics`` once the epoch has ended, at the next hook:
        Lightning calls a callback's ``on_train_epoch_end`` before the module's, so what the
        module logs there (its epoch aggregates) is not in them yet. A metric whose value is
        the one already logged (a validation that did not run this epoch) is not logged
        again. In a copy of it in another process (``ddp_spawn`` pickles it; ``ddp_fork``
        forks it) it does nothing: the launching process logs what the trainer brings back."""

        def __init__(self, run):
            self.run, self.pid = run, os.getpid()
            self.pending: int | None = None  # the epoch whose metrics are to be logged
            self.seen: dict = {}  # metric -> the value object last logged
            self.epochs = 0  # epochs logged

        def __reduce__(self):
            return (pl.Callback, ())  # not the run: a spawned process logs nothing

        def on_train_start(self, trainer, pl_module) -> None:
            if os.getpid() != self.pid:
                return
            params = {}
            for i, opt in enumerate(trainer.optimizers or []):
                prefix = "optimizer" if i == 0 else f"optimizer_{i}"
                params[f"{prefix}_name"] = type(opt).__name__
                groups = getattr(opt, "param_groups", None) or [{}]
                params.update(_scalars(groups[0], f"{prefix}_"))
            _log_params(self.run, params)

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self.pending = trainer.current_epoch

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.flush(trainer)

        def on_train_end(self, trainer, pl_module) -> None:
            self.flush(trainer)

        def on_exception(self, trainer, pl_module, exception) -> None:
            self.flush(trainer)

        def flush(self, trainer, epoch: int | None = None) -> None:
            epoch = self.pending if epoch is None else epoch
            if epoch is None or os.getpid() != self.pid:
                return
            self.pending = None
            metrics = dict(trainer.callback_metrics)
            fresh = {k: v for k, v in metrics.items() if self.seen.get(k) is not v}
            self.seen.update(metrics)
            _log_points(self.run, _points(fresh), epoch)
            self.epochs += 1

    def body(run, original: Callable, *args, **kwargs):
        bound = _bound(original, args, kwargs)
        trainer, module = args[0], bound.arguments.get("model")
        params = _scalars(getattr(module, "hparams", None))
        for key, value in {"epochs": trainer.max_epochs, "max_steps": trainer.max_steps}.items():
            if params.get(key, value) != value:  # the trainer's setting is what was trained
                log.warning("autolog: the module's hparam %s=%r is not logged: the trainer's "
                            "is %r", key, params[key], value)  # fmt: skip
            params[key] = value
        _log_params(run, params)
        callback = MlvcCallback(run)
        trainer.callbacks.append(callback)
        try:
            out = original(*args, **kwargs)
        finally:
            with contextlib.suppress(ValueError):
                trainer.callbacks.remove(callback)
        if not callback.epochs:  # trained in other processes: the last epoch's metrics
            callback.flush(trainer, max(trainer.current_epoch - 1, 0))
        if _settings["log_models"] and module is not None:
            from .api import log_model

            _quietly("the model", functools.partial(log_model, module, "model", run=run))
        return out

    return body


def _setup_keras() -> bool:
    import keras

    class MlvcCallback(keras.callbacks.Callback):
        def __init__(self, run):
            super().__init__()
            self.run = run

        def on_epoch_end(self, epoch, logs=None) -> None:
            _log_points(self.run, _points(logs), epoch)

    fit_params = ("epochs", "batch_size", "initial_epoch", "steps_per_epoch",
                  "validation_split", "validation_steps", "validation_freq", "shuffle")  # fmt: skip

    def body(run, original: Callable, *args, **kwargs):
        bound = _bound(original, args, kwargs)
        model = args[0]
        params = _scalars({k: bound.arguments.get(k) for k in fit_params})
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None:
            params["optimizer_name"] = type(optimizer).__name__
            with contextlib.suppress(Exception):  # a custom optimizer's config may not say
                config = optimizer.get_config()
                config.pop("name", None)
                params.update(_scalars(config, "optimizer_", float32=True))
        _log_params(run, params)
        callback = MlvcCallback(run)
        given = bound.arguments.get("callbacks")
        if isinstance(given, keras.callbacks.CallbackList):  # the caller's own list object
            given.callbacks.append(callback)
        else:  # a list given by name or by position, or none
            bound.arguments["callbacks"] = [*(given or []), callback]
        try:
            out = original(*bound.args, **bound.kwargs)
        finally:
            if isinstance(given, keras.callbacks.CallbackList):
                with contextlib.suppress(ValueError):
                    given.callbacks.remove(callback)
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
            self.last: dict[str, tuple] = {}  # metric -> (step, value) last logged

        def on_log(self, args, state, control, logs=None, **kwargs) -> None:
            # the Trainer logs ``epoch`` with every log: once with the step's loss, again with
            # an evaluation or the training's summary at the same step; a point once
            step = state.global_step
            points = {k: v for k, v in _points(logs).items() if self.last.get(k) != (step, v)}
            self.last.update((k, (step, v)) for k, v in points.items())
            _log_points(self.run, points, step)

    def save(trainer, path: str) -> None:
        # an internal call: no push to the Hub (push_to_hub=True pushes on the caller's own
        # saves); and without training_args.bin, a pickle of the arguments that holds the
        # Hub token in clear (the params hold the arguments, the token masked)
        trainer.save_model(path, _internal_call=True)
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(path, "training_args.bin"))

    def body(run, original: Callable, *args, **kwargs):
        trainer = args[0]
        params = _scalars(trainer.args.to_dict())
        params["model_class"] = type(trainer.model).__name__
        _log_params(run, params)
        callback = MlvcCallback(run)
        trainer.add_callback(callback)
        try:
            out = original(*args, **kwargs)
        finally:
            trainer.remove_callback(callback)
        if _settings["log_models"]:
            _quietly("the model", _log_file_model, run, functools.partial(save, trainer), "model")
        return out

    def rank(args: tuple) -> int:
        zero = getattr(args[0], "is_world_process_zero", None) if args else None
        return max(0 if not callable(zero) or zero() else 1, _env_rank())

    _patch(transformers.Trainer, "train", _autologged(body, rank=rank))
    return True


_SETUP: dict[str, Callable[[], bool]] = {
    "sklearn": _setup_sklearn,
    "xgboost": _setup_xgboost,
    "lightgbm": _setup_lightgbm,
    "lightning": _setup_lightning,
    "keras": _setup_keras,
    "transformers": _setup_transformers,
}
