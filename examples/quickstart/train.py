"""Train a tiny logistic-regression classifier with numpy, deterministically.

Reads params.json, writes model/weights.npz and metrics.json. Same params, same bytes.
"""

import json
from pathlib import Path

import numpy as np

params = json.loads(Path("params.json").read_text())
rng = np.random.default_rng(params["seed"])

data = np.loadtxt("data/points.csv", delimiter=",", skiprows=1)
x, y = data[:, :2], data[:, 2]
x = (x - x.mean(axis=0)) / x.std(axis=0)
x = np.hstack([x, np.ones((len(x), 1))])

w = rng.normal(scale=0.01, size=3)
for _ in range(params["epochs"]):
    p = 1 / (1 + np.exp(-x @ w))
    w -= params["lr"] * x.T @ (p - y) / len(y) + params["l2"] * w

p = 1 / (1 + np.exp(-x @ w))
eps = 1e-12
metrics = {
    "accuracy": float(((p > 0.5) == y).mean()),
    "loss": float(-(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps)).mean()),
}
Path("model").mkdir(exist_ok=True)
np.savez(Path("model") / "weights.npz", w=w)
Path("metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
print(f"lr={params['lr']} epochs={params['epochs']} -> accuracy={metrics['accuracy']:.3f} loss={metrics['loss']:.4f}")
