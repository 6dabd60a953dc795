"""The ``torch`` flavor: a ``torch.nn.Module``, saved whole with cloudpickle as the pickle
module (classes from ``__main__`` by value), loaded on the CPU in eval mode; input is
converted to a tensor and output back to numpy."""

from __future__ import annotations

import sys
from pathlib import Path

NAME = "torch"
PACKAGES = ("torch", "numpy", "cloudpickle")
DATA = "model.pth"


def matches(model) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def save(model, path: Path) -> dict:
    import cloudpickle
    import torch

    torch.save(model, path / DATA, pickle_module=cloudpickle)
    return {"model_data": DATA, "pytorch_version": torch.__version__}


def load(path: Path, conf: dict, trusted: bool = False):
    import torch

    from ..trust import require

    file = path / conf.get("model_data", DATA)
    require(file, trusted, "a whole pickled torch module (its class is pickled code)")
    model = torch.load(file, map_location="cpu", weights_only=False)
    model.eval()
    return model


def predict(native, data, kind, conf=None):
    import numpy as np
    import torch

    from ..signature import kind_of, to_kind, to_table

    if kind_of(data) in ("arrow", "dict", "records", "pandas"):
        data = to_kind(to_table(data), "numpy")
    arr = np.asarray(data)
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)  # torch modules default to float32 weights
    with torch.no_grad():
        out = native(torch.from_numpy(np.ascontiguousarray(arr)))
    if isinstance(out, tuple | list):
        return [o.detach().cpu().numpy() for o in out]
    return out.detach().cpu().numpy()
