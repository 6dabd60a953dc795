"""Optional C speedups, built by setuptools beside pyproject.toml's metadata. Each is
``optional=True``: without a compiler the install still succeeds and mlvc runs its pure-Python
fallback (``MLVC_PURE=1`` forces that fallback; mlvc/core/speedups.py)."""

from setuptools import Extension, setup

ext_modules = [
    # a live run's metric buffer: log_metric without a Python frame (mlvc/runs/metricbuf.py)
    Extension("mlvc._metricbuf", ["mlvc/_metricbuf.c"], optional=True),
]

setup(ext_modules=ext_modules)
