"""Repo.table_page, the runs table of the web UI: paging is stable whatever the order and
filter (every run once, none twice), tag columns join, and bad input is refused in one line."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlvc.errors import QueryError, UsageError

SORTABLE = ["name", "status", "params.lr", "params.opt", "metrics.acc", "tags.team", "created"]
WHERE = ["", "\"params.lr\" > 0.2", "\"tags.team\" = 'a'", "\"metrics.acc\" IS NULL",
         "name LIKE 'r1%' -- a comment"]  # fmt: skip


@pytest.fixture
def table_repo(repo):
    for i in range(24):
        repo.commit(
            f"run {i}",
            name=f"r{i}",
            params={"lr": round((i % 5) / 10, 1), "opt": "sgd" if i % 3 else "adam"},
            metrics={"acc": i / 24} if i % 4 else {},  # some runs lack the metric: NULLs
            tags={"team": "ab"[i % 2]} if i % 5 else {},
            capture_code=False,
            capture_env=False,
        )
    return repo


def test_pages_cover_every_run_once_in_any_order(table_repo):
    table_repo.index.keep_readers()  # one open connection, as the server has

    @settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        order=st.lists(
            st.tuples(st.sampled_from(SORTABLE), st.booleans()),
            max_size=3,
            unique_by=lambda t: t[0],
        ),  # fmt: skip
        where=st.sampled_from(WHERE),
        size=st.integers(2, 9),
        group=st.sampled_from(["", "experiment"]),
    )
    def check(order, where, size, group):
        keys = [("-" if desc else "") + col for col, desc in order]
        whole = table_repo.table_page(where, keys, ["name"], 0, 1000, group)
        seen, offset = [], 0
        while offset < whole["total"]:
            page = table_repo.table_page(where, keys, ["name"], offset, size, group)
            assert page["total"] == whole["total"]
            seen += page["ids"]
            offset += size
        assert seen == whole["ids"] and len(set(seen)) == whole["total"]
        if group:
            assert sum(g["count"] for g in whole["groups"]) == whole["total"]

    try:
        check()
    finally:
        table_repo.index.release_idle(0.0)


def test_filters_sorts_and_tag_columns(table_repo):
    got = table_repo.table_page(
        "\"tags.team\" = 'a' AND \"params.opt\" = 'adam'", ["-params.lr", "name"],
        ["name", "params.lr", "tags.team"],
    )  # fmt: skip
    # team a: even i not a multiple of 5; adam: multiples of 3; so 6, 12 and 18
    assert got["rows"] == [["r18", 0.3, "a"], ["r12", 0.2, "a"], ["r6", 0.1, "a"]]
    assert [c["family"] for c in got["columns"]] == ["run", "params", "tags"]
    assert table_repo.table_page(limit=0)["total"] == 24
    cols = {c["name"]: c["family"] for c in table_repo.table_columns()}
    assert cols["tags.team"] == "tags" and cols["metrics.acc"] == "metrics"


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(columns=["nope"]), UsageError, "unknown column 'nope'"),
        (dict(order=['x"; DROP TABLE runs; --']), UsageError, "unknown column"),
        (dict(group="team"), UsageError, "unknown grouping"),
        (dict(limit=5000), UsageError, "limit must be"),
        (dict(where="x" * 20_000), UsageError, "over 10000 characters"),
        (dict(where="1=1; DELETE FROM runs"), QueryError, "syntax error"),
        (dict(where="no_such > 1"), QueryError, "no_such"),
        (dict(where="1=1) UNION ALL (SELECT 1"), QueryError, ""),
        (dict(where="nonsense =="), QueryError, "the filter is not a valid SQL condition"),
    ],
)
def test_bad_input_is_one_line_error(table_repo, kwargs, error, words):
    with pytest.raises(error) as e:
        table_repo.table_page(**kwargs)
    assert words in str(e.value) and "\n" not in str(e.value)
    assert table_repo.table_page(limit=1)["total"] == 24  # nothing was changed


def test_keys_past_runs_wide_columns_are_offered_shown_sorted_and_filtered(repo, monkeypatch):
    """runs_wide holds MAX_WIDE_KEYS columns per family (1,000): a repository with more
    metric and param keys (the issue's 1,500) still shows, sorts and filters every one."""
    from mlvc.index import wide

    monkeypatch.setattr(wide, "MAX_WIDE_KEYS", 3)
    for i in range(6):
        repo.commit(
            f"run {i}",
            name=f"r{i}",
            params={f"p{k}": f"v{i}" for k in range(5)},
            metrics={f"m{k}": i * 10 + k for k in range(5)} if i != 2 else {"m0": 1.0},
            capture_code=False,
            capture_env=False,
        )
    cols = {c["name"]: c for c in repo.table_columns()}
    in_wide = {n for n in cols if n.startswith("metrics.") and n in _wide_names(repo)}
    assert in_wide == {"metrics.m0", "metrics.m1", "metrics.m2"}
    assert {f"metrics.m{k}" for k in range(5)} <= set(cols)  # m3, m4 joined
    assert cols["metrics.m4"]["type"] == "DOUBLE" and cols["params.p4"]["type"] == "VARCHAR"
    page = repo.table_page(
        where='"metrics.m4" >= 14 AND "Params.P3" <> \'v5\'',
        order=["-metrics.m3"],
        columns=["name", "metrics.m4", "params.p4", "metrics.m0"],
    )
    assert [r[0] for r in page["rows"]] == ["r4", "r3", "r1"]  # r2 lacks m4; r5 filtered
    assert page["rows"][0] == ["r4", 44.0, "v4", 40.0] and page["total"] == 3
    assert [c["name"] for c in page["columns"]] == ["name", "metrics.m4", "params.p4",
                                                    "metrics.m0"]  # fmt: skip
    with pytest.raises(UsageError, match="unknown column 'metrics.m9'"):
        repo.table_page(columns=["metrics.m9"])
    assert repo.fsck() == []


def _wide_names(repo) -> set[str]:
    return set(repo.query("DESCRIBE runs_wide").column("column_name").to_pylist())


def test_joined_columns_of_a_page_match_the_whole_table_and_counting_is_optional(repo, monkeypatch):
    """Keys past runs_wide's columns, and tags, shown but neither sorted nor filtered on, are
    read for the page's runs only (pivoted from long rows): every page's values are those
    the join over every run gives (sorting by a column takes that path), in the page's order,
    with NULLs where a run lacks the key. ``count=False`` skips the count; ``limit=0`` the rows."""
    from mlvc.index import wide

    monkeypatch.setattr(wide, "MAX_WIDE_KEYS", 2)
    for i in range(7):
        repo.commit(
            f"run {i}",
            name=f"r{i}",
            params={f"p{k}": f"v{i}.{k}" for k in range(4) if (i + k) % 3},
            metrics={f"m{k}": i * 10 + k for k in range(4) if (i * k) % 4 != 1},
            tags={"team": "ab"[i % 2], "stage": f"s{i}"} if i != 3 else {},
            capture_code=False,
            capture_env=False,
        )
    late = ["metrics.m3", "params.p3", "tags.team", "metrics.m2", "params.p2"]
    cols = ["name", *late]
    # sorted by a late column, the whole table takes the join over every run
    whole = repo.table_page(order=["-name"], columns=cols, limit=100)
    for col in late:
        joined = repo.table_page(order=[col, "-name"], columns=cols, limit=100)
        assert sorted(map(repr, joined["rows"])) == sorted(map(repr, whole["rows"]))
    by_name = {r[0]: r for r in whole["rows"]}
    assert by_name["r3"][3] is None and by_name["r1"][1] == 13.0  # no tag; a metric
    assert by_name["r3"][1] is None and by_name["r0"][2] is None  # r3 lacks m3, r0 p3
    assert by_name["r4"][2:4] == ["v4.3", "a"] and by_name["r5"][5] == "v5.2"
    seen = []
    for offset in range(0, 7, 3):
        page = repo.table_page(order=["-name"], columns=cols, offset=offset, limit=3, count=False)
        assert page["total"] is None and page["columns"] == whole["columns"]
        seen += page["rows"]
    assert seen == whole["rows"]
    # a key no run of the page has is looked up (it exists: NULLs; it does not: an error)
    only = repo.table_page(where="name = 'r3'", columns=["name", "metrics.m3", "tags.team"])
    assert only["rows"] == [["r3", None, None]]
    with pytest.raises(UsageError, match="unknown column 'metrics.nope'"):
        repo.table_page(columns=["name", "metrics.nope"])
    with pytest.raises(UsageError, match="unknown column 'tags.nope'"):
        repo.table_page(columns=["tags.nope"], limit=0)
    twice = repo.table_page(columns=["name", "name", "tags.team", "tags.team"], limit=2)
    assert [c["name"] for c in twice["columns"]] == ["name", "tags.team"]  # was a KeyError
    head = repo.table_page(where="\"tags.team\" = 'a'", columns=cols, limit=0)
    assert head["rows"] == [] and head["ids"] == [] and head["total"] == 4
    assert repo.fsck() == []


def test_a_table_page_imports_neither_pandas_nor_pyarrow_compute(table_repo):
    """A fresh server's first page paid pyarrow's conversion of timestamps, which imports
    pandas (0.3 s quiet, over 1 s loaded); the page's times are the same datetimes."""
    import os
    import subprocess
    import sys
    import time

    from mlvc.index.journal import settle_ns

    # the named refs settled first: a fingerprint taken within settle_ns of the last
    # commit is re-read once they settle, and the ingest doing that (between the two reads
    # below, when the boundary fell there: CI, loaded) may import anything
    refs = table_repo.root / ".mlvc" / "refs"
    newest = max(os.stat(refs / ns).st_mtime_ns for ns in ("names", "tags"))
    window = settle_ns(table_repo.root / ".mlvc")
    time.sleep(max(0, newest + window - time.time_ns()) / 1e9 + 0.1)
    code = (  # the index brought up to date first (an ingest may import anything)
        "import sys, json; from mlvc import Repo\n"
        f"repo = Repo({str(table_repo.root)!r}); repo.query('SELECT 1')\n"
        "before = {m for m in ('pandas', 'pyarrow.compute') if m in sys.modules}\n"
        "page = repo.table_page(columns=['name', 'created'], limit=3)\n"
        "print(json.dumps([sorted(m for m in ('pandas', 'pyarrow.compute') if m in sys.modules"
        " and m not in before), [r[1].isoformat() for r in page['rows']]]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    imported, times = json.loads(out.stdout)
    assert imported == []
    expected = table_repo.query("SELECT created FROM runs_wide ORDER BY created DESC, id LIMIT 3")
    assert times == [t.isoformat() for t in expected.column("created").to_pylist()]
    assert times[0].endswith("+00:00")
