"""``walker``: run a test on both stat walks, the C one (mlvc._walk) and the pure-Python one
(what MLVC_PURE=1 selects); the C one is skipped only where it could not be built."""

from __future__ import annotations

import pytest

from mlvc.core import speedups


@pytest.fixture(params=["c", "pure"])
def walker(request, monkeypatch) -> str:
    if request.param == "c" and speedups.built("mlvc._walk") is None:
        pytest.skip("mlvc._walk is not built (no compiler)")
    monkeypatch.setattr(speedups, "PURE", request.param == "pure")
    monkeypatch.setenv("MLVC_PURE", "1" if request.param == "pure" else "0")  # processes
    return request.param
