"""The importer's latest metric values from rows the SQL store hands back in (key, step)
order (mlvc.importers.mlflow.write._last_values ``presorted``) must be the point MLflow's
``latest_metrics`` keeps — the same as sorting every point again — whatever the ties."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

points = st.lists(
    st.tuples(
        st.sampled_from(["loss", "acc", "a/b"]),
        st.integers(0, 4),  # few steps: ties on the highest step are common
        st.integers(0, 3),
        st.one_of(st.floats(allow_nan=False), st.just(math.inf), st.just(-math.inf)),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(points)
def test_latest_from_sorted_rows_is_the_latest_of_all(rows):
    import pyarrow as pa

    from mlvc.importers.mlflow.write import _last_values

    rows = sorted(rows, key=lambda r: (r[0], r[1]))  # stable: ties stay in any order
    table = pa.table({
        "key": [r[0] for r in rows], "step": [r[1] for r in rows],
        "timestamp": [r[2] for r in rows], "value": [r[3] for r in rows],
    })  # fmt: skip
    expected = {}
    for key, step, ts, value in rows:  # MLflow: highest step, then time, then value
        if key not in expected or (step, ts, value) > expected[key][:3]:
            expected[key] = (step, ts, value)
    assert _last_values(table, presorted=True) == {k: v[2] for k, v in expected.items()}
    assert _last_values(table, presorted=False) == _last_values(table, presorted=True)
