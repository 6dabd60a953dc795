"""``mlvc.search_runs`` and ``mlvc.get_run``: runs found through the index, MLflow-shaped.

A filter string is MLflow's (mlvc.index.mlflow_filter, the translation ``mlvc server``'s
``runs/search`` uses); ``sql`` is any read-only query through the user-SQL path. Results
are ``runs_wide`` rows (one per run, ``params.*`` and ``metrics.*`` columns) with the
experiment's name, as a pandas DataFrame or an Arrow table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.ids import RunId
from ..errors import UsageError
from ..index.mlflow_filter import lit, parse_filter, parse_order, runs_sql
from ..runs import experiments

if TYPE_CHECKING:
    from .repo import Repo

FORMATS = ("pandas", "arrow")


def experiment_ids(repo: Repo, names: list[str] | None, ids: list[str] | None) -> list[str]:
    """The ids of the experiments named (all of them when none is named)."""
    known = experiments.load(repo.ctx)
    out = [str(i) for i in ids or []]
    for name in names or []:
        found = [eid for eid, exp in known.items() if exp["name"] == name]
        if not found:
            have = ", ".join(sorted(exp["name"] for exp in known.values()))
            raise UsageError(f"no experiment named {name!r}; there are: {have}")
        out += found
    if names or ids:
        return out
    rows = repo.query("SELECT DISTINCT experiment_id FROM runs").column(0).to_pylist()
    return sorted({*known, *(r for r in rows if r)})


def search_runs(
    repo: Repo,
    filter_string: str | None = None,
    sql: str | None = None,
    experiment_names: list[str] | None = None,
    experiment_ids_: list[str] | None = None,
    order_by: list[str] | None = None,
    max_results: int = 1000,
    output_format: str = "pandas",
) -> Any:
    if output_format not in FORMATS:
        raise UsageError(f"output_format must be one of {', '.join(FORMATS)}, not "
                         f"{output_format!r}")  # fmt: skip
    if sql is not None:
        if filter_string or experiment_names or experiment_ids_ or order_by:
            raise UsageError("search_runs takes sql= or a filter string, names and "
                             "order_by, not both")  # fmt: skip
        table = repo.query(sql)
    else:
        table = _filtered(repo, filter_string, experiment_names, experiment_ids_, order_by,
                          max_results)  # fmt: skip
    return table.to_pandas() if output_format == "pandas" else table


def _filtered(repo, filter_string, names, ids, order_by, max_results):
    import pyarrow as pa

    if not 1 <= int(max_results) <= 50_000:
        raise UsageError(f"max_results must be between 1 and 50000, not {max_results}")
    conds = parse_filter(filter_string)
    order = parse_order(list(order_by or [])) or [("attributes", "start_time", False)]
    eids = experiment_ids(repo, names, ids)
    if not eids:
        return repo.query("SELECT * FROM runs_wide LIMIT 0")
    oids = repo.query(runs_sql(conds, order, eids, "", int(max_results))).column(0).to_pylist()
    if not oids:
        return repo.query("SELECT * FROM runs_wide LIMIT 0")
    wide = repo.query(f"SELECT * FROM runs_wide WHERE id IN ({', '.join(map(lit, oids))})")
    where = {oid: i for i, oid in enumerate(wide.column("id").to_pylist())}
    wide = wide.take(pa.array([where[o] for o in oids if o in where], pa.int64()))
    known = experiments.load(repo.ctx)
    names_col = [
        known.get(e or "0", {}).get("name") for e in wide.column("experiment_id").to_pylist()
    ]
    return wide.append_column("experiment_name", pa.array(names_col, pa.string()))


def get_run(repo: Repo, run_id: str) -> dict:
    """A recorded run as ``mlvc show --json`` gives it; its ``id`` a ``RunId``."""
    shown = repo.show(run_id)
    shown["id"] = RunId(shown["id"])
    return shown
