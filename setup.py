"""Optional C speedups (plain CPython C API), built by setuptools beside pyproject.toml's
metadata. Each is ``optional=True``: without a compiler the install still succeeds and mlvc
runs its pure-Python fallback, with identical results (``MLVC_PURE=1`` forces that fallback;
mlvc/core/speedups.py)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        # the stat walk of data folders (mlvc/_walk.c; fallback mlvc.runs.record.walk_data)
        Extension("mlvc._walk", ["mlvc/_walk.c"], optional=True),
        # a live run's metric buffer: log_metric without a Python frame (runs/metricbuf.py)
        Extension("mlvc._metricbuf", ["mlvc/_metricbuf.c"], optional=True),
        # a batch of ids looked up in one pack index (mlvc/_packfind.c; fallback
        # mlvc.store.pack.index.PackIndex.find_many's loop)
        Extension("mlvc._packfind", ["mlvc/_packfind.c"], optional=True),
        # the page headers of a Parquet column chunk summed before pyarrow inflates them
        # (mlvc/_pqpages.c; fallback mlvc.core.parquet._walk_py)
        Extension("mlvc._pqpages", ["mlvc/_pqpages.c"], optional=True),
    ]
)
