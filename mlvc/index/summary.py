"""metric_summary rows computed in the decoder, with numpy, from the arrays it holds.

``SUMMARY_SQL`` is the definition (a test holds the two equal on series with ties, NaN,
infinities, missing steps, timestamps and values, in any order). Computing it in DuckDB
over each inserted batch cost the rebuilding process 0.4 s of CPU at 10,000 runs, and the
anti-join dropping final metrics whose key has a series 0.2 s more: both run here instead,
in the decode workers, in parallel.
"""

from __future__ import annotations

# "last" is the value at the highest step; later timestamps, then larger values break ties,
# so the result never depends on scan order. A row with no value is no candidate for "last".
SUMMARY_SQL = """
    SELECT run_id, key, arg_max(value, (step, timestamp, value)) AS last,
           min(value) FILTER (WHERE NOT isnan(value)) AS min,
           max(value) FILTER (WHERE NOT isnan(value)) AS max, count(*) AS count,
           max(step) AS last_step
    FROM {source} GROUP BY run_id, key"""


def summarize(rids: list[str], lengths, points, schema):
    """metric_summary rows (an Arrow table in ``schema``) of series ``points`` (key, step,
    value, timestamp as int64 µs): the first ``lengths[0]`` points are run ``rids[0]``'s,
    and so on."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(points)
    if not n:
        return schema.empty_table()
    keys = pc.dictionary_encode(points.column("key")).combine_chunks()
    nkeys = len(keys.dictionary) + 1  # a null key is a group of its own
    key_idx = keys.indices.fill_null(nkeys - 1).to_numpy().astype(np.int64)
    run_idx = np.repeat(np.arange(len(rids), dtype=np.int64), lengths)
    group = run_idx * nkeys + key_idx
    step, step_ok = _column(points.column("step"), np.int64)
    value, value_ok = _column(points.column("value"), np.float64)
    ts, ts_ok = _column(points.column("timestamp"), np.int64)
    if not _sorted_by_step(group, step, step_ok, value_ok):
        # the last row of a group is its arg_max: rows with a value after those without,
        # then by step, timestamp and value, a missing one (or NaN) the greatest, as DuckDB
        # compares the struct
        is_nan = np.isnan(value)
        order = np.lexsort((
            np.where(value_ok & ~is_nan, value, 0), value_ok & is_nan,
            np.where(ts_ok, ts, 0), ~ts_ok, np.where(step_ok, step, 0), ~step_ok,
            value_ok, group,
        ))  # fmt: skip
        group, step, step_ok = group[order], step[order], step_ok[order]
        value, value_ok = value[order], value_ok[order]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    lasts = np.r_[starts[1:], n] - 1
    finite = value_ok & ~np.isnan(value)
    n_finite = np.add.reduceat(finite.astype(np.int64), starts)
    lo = np.minimum.reduceat(np.where(finite, value, np.inf), starts)
    hi = np.maximum.reduceat(np.where(finite, value, -np.inf), starts)
    n_step = np.add.reduceat(step_ok.astype(np.int64), starts)
    top = np.maximum.reduceat(np.where(step_ok, step, np.iinfo(np.int64).min), starts)
    g = group[starts]
    key_of = g % nkeys
    key_col = pc.take(keys.dictionary, pa.array(key_of, mask=key_of == nkeys - 1))
    run_col = pa.DictionaryArray.from_arrays(pa.array(g // nkeys, pa.int32()), pa.array(rids))
    columns = {
        "run_id": run_col,
        "key": key_col,
        # + 0.0: DuckDB's arg_max answers -0.0 as 0.0
        "last": pa.array(value[lasts] + 0.0, mask=~value_ok[lasts]),
        "min": pa.array(lo, mask=n_finite == 0),
        "max": pa.array(hi, mask=n_finite == 0),
        "count": pa.array(np.diff(np.r_[starts, n])),
        "last_step": pa.array(top, mask=n_step == 0),
    }
    return pa.Table.from_arrays(
        [columns[f.name].cast(f.type) if f.name != "run_id" else run_col for f in schema],
        names=schema.names,
    )


def _column(array, dtype):
    """(values with nulls filled, a mask of the non-null ones) of an Arrow column."""
    import pyarrow.compute as pc

    ok = pc.is_valid(array).to_numpy(zero_copy_only=False)
    if hasattr(array, "combine_chunks"):
        array = array.combine_chunks()
    values = array.fill_null(0).to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    return values, ok


def _sorted_by_step(group, step, step_ok, value_ok) -> bool:
    """Whether each group's rows are together and in strictly increasing step, every row with
    a step and a value: then a group's last row is its arg_max (as series blobs are
    written), and no sort is needed."""
    import numpy as np

    if not (step_ok.all() and value_ok.all()):
        return False
    same = group[1:] == group[:-1]
    if not np.all(same | (group[1:] > group[:-1])):
        return False
    return bool(np.all(~same | (step[1:] > step[:-1])))
