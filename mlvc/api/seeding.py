"""Determinism help: seed every random number generator a training script is likely to use.

``seed_everything(seed)`` seeds Python's ``random``, numpy's global generator and torch (CPU
and every CUDA device) when they are installed, sets ``PYTHONHASHSEED`` for the processes the
script starts (a running interpreter cannot change its own hash seed; ``mlvc run`` sets it
for the script itself), and records the seed as the int param ``mlvc.seed`` of the run:

- the active live run (``mlvc.start_run``), or
- the run ``mlvc run`` is recording, when the script runs under it, or
- the next top-level run the script starts (only that one).

A run records its first seed; seeding again with another one warns and keeps the first.

Called without a seed it uses ``$MLVC_SEED`` if set, else a fresh random one. ``mlvc
reproduce`` sets ``MLVC_SEED`` to the recorded ``mlvc.seed``, so even a run that drew its
seed at random is re-run with the same one. torch is imported only if it is installed, and
numpy only if importable; neither is ever required.
"""

from __future__ import annotations

import importlib.util
import os
import random
import warnings

from ..runs.attached import SEED_ENV, SEED_PARAM, stage_param
from . import fluent


def seed_everything(seed: int | None = None, deterministic_torch: bool = False) -> int:
    """Seed random, numpy and torch; record the seed in the run; return it.

    ``deterministic_torch`` also asks torch for deterministic algorithms (slower; some ops
    then raise) and sets ``CUBLAS_WORKSPACE_CONFIG`` as CUDA requires for that.
    """
    if seed is None:
        env = os.environ.get(SEED_ENV, "").strip()
        seed = int(env) if env.lstrip("-").isdigit() else random.SystemRandom().randrange(2**31)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    seed = int(seed) % 2**32  # numpy accepts 0..2**32-1
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    if importlib.util.find_spec("numpy") is not None:
        import numpy

        numpy.random.seed(seed)
    if importlib.util.find_spec("torch") is not None:
        _seed_torch(seed, deterministic_torch)
    _record(seed)
    return seed


def _seed_torch(seed: int, deterministic: bool) -> None:
    import torch

    torch.manual_seed(seed)  # seeds CPU and every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        if hasattr(torch.backends, "cudnn"):
            torch.backends.cudnn.benchmark = False


def _record(seed: int) -> None:
    from ..errors import UsageError

    run = fluent.active_run()
    try:
        if run is not None:
            run.log_param(SEED_PARAM, seed)
        elif not stage_param(SEED_PARAM, seed):
            fluent.record_seed(seed)
    except UsageError:  # seeded twice with different seeds: the run keeps the first
        warnings.warn(
            f"this run already recorded another {SEED_PARAM}; keeping the first",
            stacklevel=3,
        )
