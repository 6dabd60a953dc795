"""log_metric's fast path (a float value skips conversion) and its flush (columns converted
in bulk; a block of one key without per-point codes): what is recorded is what was logged."""

from __future__ import annotations

import math

import numpy as np
import pytest

import mlvc
from mlvc.errors import UsageError


def _points(repo, run_id: str) -> list[tuple]:
    sql = f"SELECT key, step, value FROM metrics WHERE run_id = '{run_id}' ORDER BY key, step"
    return [tuple(r.values()) for r in repo.query(sql).to_pylist()]


def test_values_of_every_accepted_type_and_mixed_keys_round_trip(repo):
    with mlvc.start_run(name="types", repo=repo) as run:
        run.log_metric("a", 1.5)
        run.log_metric("a", 2)  # int
        run.log_metric("a", np.float32(0.25))  # numpy scalar
        run.log_metric("a", "3.5")  # a numeric string, as float() reads it
        run.log_metric("a", True)
        run.log_metric("a", float("nan"))
        run.flush()  # a block of one key
        with pytest.raises(UsageError, match="not a number"):
            run.log_metric("a", "high")
        with pytest.raises(UsageError, match="not a number"):
            run.log_metric("b", None)
        for i in range(5):  # a block of two keys, interleaved
            run.log_metric("b", i * 0.5, step=10 + i)
            run.log_metric("a", -i * 1.0)
    got = _points(repo, run.id)
    a = [p for p in got if p[0] == "a"]
    assert [p[1] for p in a] == list(range(11))  # default steps continue per key
    assert [p[2] for p in a[:5]] == [1.5, 2.0, 0.25, 3.5, 1.0]
    assert math.isnan(a[5][2])
    assert [p[2] for p in a[6:]] == [0.0, -1.0, -2.0, -3.0, -4.0]
    assert [p[1:] for p in got if p[0] == "b"] == [(10 + i, i * 0.5) for i in range(5)]


def test_many_flushes_of_one_key_keep_every_point_in_order(repo):
    with mlvc.start_run(name="many", repo=repo) as run:
        for i in range(3000):
            run.log_metric("loss", i / 7)
            if i % 1000 == 999:
                run.flush()
    got = _points(repo, run.id)
    assert [p[1] for p in got] == list(range(3000))
    assert [p[2] for p in got] == [i / 7 for i in range(3000)]
