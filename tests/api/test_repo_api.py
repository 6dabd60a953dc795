"""``Repo``'s signatures are what they say: ``commit`` names its keywords (LAYOUT §5.6),
so users and type checkers see them, and a misspelt one is refused by name."""

from __future__ import annotations

import inspect

import pytest

from mlvc import Repo
from mlvc.runs.record import capture_inputs


def test_commit_names_every_keyword_it_takes():
    params = inspect.signature(Repo.commit).parameters
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    assert {
        "message", "name", "params", "metrics", "params_files", "metrics_files", "data",
        "artifacts", "tags", "command", "cwd", "capture_code", "capture_env", "inputs",
    } <= set(params)  # fmt: skip


def test_commit_keywords_work_and_a_misspelt_one_is_refused(repo, project):
    bare = repo.run(repo.commit("bare", capture_code=False, capture_env=False))
    assert bare.code is None and bare.env is None
    inputs = capture_inputs(repo.ctx, data=["data"], env=False)
    again = repo.run(repo.commit("again", inputs=inputs))
    assert again.data == inputs.data and again.code == inputs.code
    with pytest.raises(TypeError, match="captur_env"):
        repo.commit("typo", captur_env=False)
    assert repo.fsck() == []


def test_a_parquet_preview_reads_the_head_and_refuses_a_bomb(repo, project):
    """The preview (the web UI's, run by the server for anyone) of a pushed Parquet
    artifact: a table's head; a 300 KB file of 8M rows of zeros, its head (the preview
    inflates only the pages its rows are in: the whole row group was once refused); and the
    same zeros in one page a column, refused before pyarrow inflates it (core/parquet.py
    walks its pages first)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlvc.errors import UsageError

    out = project / "out"
    out.mkdir()
    pq.write_table(pa.table({"x": [1, 2, 3], "name": ["a", "b", "c"]}), out / "table.parquet")
    n = 8 << 20
    zeros = pa.table({c: np.zeros(n, dtype=np.int64) for c in ("a", "b", "c", "d")})
    options = {"compression": "zstd", "use_dictionary": False, "row_group_size": n}
    pq.write_table(zeros, out / "zeros.parquet", **options)
    pages = {"data_page_size": 1 << 30, "max_rows_per_page": n}
    pq.write_table(zeros, out / "bomb.parquet", **pages, **options)
    del zeros
    run = repo.commit("tables", artifacts=["out"], capture_code=False, capture_env=False)
    head = repo.preview(run, "artifacts/out/table.parquet", rows=2)
    assert head["columns"] == ["x", "name"] and head["rows"] == [[1, "a"], [2, "b"]]
    assert head["total_rows"] == 3 and head["truncated"]
    head = repo.preview(run, "artifacts/out/zeros.parquet", rows=3)
    assert head["rows"] == [[0, 0, 0, 0]] * 3 and head["total_rows"] == n
    with pytest.raises(UsageError, match="cannot preview this Parquet file: it could decode"):
        repo.preview(run, "artifacts/out/bomb.parquet")
