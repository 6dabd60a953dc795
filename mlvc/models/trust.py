"""Which model files mlvc may unpickle: the trust model (docs/models.md, "Security").

Unpickling a file runs whatever code its author put in it. mlvc unpickles a model's files
only when the model is *trusted*:

    from this repository  a run recorded here (``run:RUN/...``, a live run's key included),
                          or a registered version whose source is such a run or that was
                          registered with ``trust=True``
    by an explicit opt-in ``trust=True`` (Python), ``--trust`` (CLI) or MLVC_TRUST_PICKLE=1

Anything else (a folder on disk, an MLflow model folder, a version registered from one) is
untrusted: formats that hold no code still load (ONNX; skops with only the types skops
trusts by default), and a pickle is refused with ``UntrustedModel`` naming the file.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

from .errors import UntrustedModel

ENV = "MLVC_TRUST_PICKLE"
HOW = f"pass --trust (Python: trust=True, or set {ENV}=1) if you trust where it came from"


def from_env(environ=os.environ) -> bool:
    """The opt-in of MLVC_TRUST_PICKLE (``1``, ``true``, ``yes``)."""
    return environ.get(ENV, "").strip().lower() in ("1", "true", "yes")


def require(file: Path, trusted: bool, what: str = "a pickle") -> None:
    """Refuse to go on unless the model is trusted: ``file`` would run code when loaded."""
    if not trusted:
        raise UntrustedModel(
            f"refusing to load {file}: it is {what}, so loading it runs code it holds, and "
            f"this model does not come from this repository; {HOW}"
        )


def unpickle(file: Path, trusted: bool, opener=open):
    """The object pickled in ``file``, once ``require`` allows it: the one place where
    mlvc unpickles a model."""
    require(file, trusted)
    import cloudpickle  # noqa: F401  (pickles of by-value code need it importable)

    with opener(file, "rb") as f:
        return pickle.load(f)
