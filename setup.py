"""Optional C speedups (plain CPython C API); an install without a compiler still works:
each has a pure-Python fallback with identical results (mlvc/core/speedups.py)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        # the stat walk of data folders (mlvc/_walk.c; fallback mlvc.runs.record.walk_data)
        Extension("mlvc._walk", ["mlvc/_walk.c"], optional=True),
    ]
)
