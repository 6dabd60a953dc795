"""Repositories with runs worth exporting, and comparisons of an export with ``mlvc query``."""

from __future__ import annotations

import math

import mlvc
from mlvc import Repo
from mlvc.core.objects import Run
from mlvc.store.typed import write_object

# what every export test compares: each table of the export against the local index
TABLES = {
    "runs": "SELECT * FROM runs",
    "params": "SELECT * FROM params",
    "metrics": "SELECT * FROM metrics",
    "metric_summary": "SELECT * FROM metric_summary",
    "tags": "SELECT * FROM tags",
    "refs": "SELECT * FROM refs",
    "files": "SELECT * FROM files",
    "packages": "SELECT * FROM packages",
}


def live_runs(repo: Repo, n: int, offset: int = 0) -> None:
    """``n`` runs logged live: params of every type, a loss curve with NaN and inf, tags."""
    for i in range(offset, offset + n):
        params = {"lr": 0.01 * (i + 1), "epochs": i, "opt": "adam", "fast": i % 2 == 0}
        with mlvc.start_run(name=f"run{i}", params=params, repo=repo) as run:
            for step in range(6):
                value = float("nan") if step == 2 else 1.0 / (step + 1 + i)
                run.log_metric("loss", value, step)
            run.log_metric("acc", float("inf") if i == 0 else 0.5 + i / 100, 0)
            run.set_tag("team", "vision")
            run.set_tag("note", f"run 'quoted' {i}")


def old_run(repo: Repo, i: int, started_us: int) -> str:
    """A run recorded as started at ``started_us`` (another month's partition)."""
    run = Run(
        name=f"old{i}",
        message=f"an old run {i}",
        author="archive",
        started=started_us,
        ended=started_us + 1_000_000,
        params={"lr": 0.5, "layers": i},
        metrics={"acc": 0.25 * i},
    )
    oid = write_object(repo.store, run)
    repo.store.sync()
    repo.index.journal(oid)
    repo.refs.add_run(oid)
    repo.index.sync()
    return oid.hex


def build(repo: Repo) -> None:
    """Live runs this month, two runs of March 2024, a committed run with data, a tag."""
    live_runs(repo, 3)
    old_run(repo, 1, 1_709_900_000_000_000)  # 2024-03-08
    old_run(repo, 2, 1_710_000_000_000_000)
    repo.commit("with data", name="data-run", data=["data"], params={"p": None})
    repo.tag("run1", "best")


def norm(value):
    """A value comparable across readers: NaN equal to NaN, timestamps and lists as they are."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, list):
        return tuple(norm(v) for v in value)
    return value


def rows(table, drop=("month",)) -> list[tuple]:
    """A pyarrow table's rows as sorted tuples of its columns in name order (minus ``drop``)."""
    names = sorted(c for c in table.column_names if c not in drop)
    data = table.select(names).to_pylist()
    return sorted((tuple(norm(r[c]) for c in names) for r in data), key=repr)
