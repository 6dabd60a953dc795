"""Write data/points.csv: two noisy Gaussian blobs (generated, so nothing is downloaded)."""

from pathlib import Path

import numpy as np

rng = np.random.default_rng(0)
a = rng.normal([-1.0, -1.0], 1.2, size=(500, 2))
b = rng.normal([1.0, 1.0], 1.2, size=(500, 2))
rows = np.vstack([np.hstack([a, np.zeros((500, 1))]), np.hstack([b, np.ones((500, 1))])])
Path("data").mkdir(exist_ok=True)
np.savetxt("data/points.csv", rows, delimiter=",", header="x1,x2,label", comments="", fmt="%.6f")
