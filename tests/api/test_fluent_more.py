"""The rest of MLflow's fluent API in mlvc: experiments, artifacts from folders, figures,
images, tables, dataset inputs, search_runs, get_run, last_active_run, and run ids that
behave as text."""

from __future__ import annotations

import json
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

import mlvc
from mlvc.core.ids import ObjectId, RunId
from mlvc.errors import MlvcError


def _run(name, **metrics):
    with mlvc.start_run(name=name) as run:
        for k, v in metrics.items():
            mlvc.log_metric(k, v)
    return run.run_id


def test_experiments_group_runs_and_search_runs_filters_orders_and_formats(project, repo):
    _run("default-run", acc=0.5)
    assert mlvc.set_experiment("vision") == {"experiment_id": "1", "name": "vision"}
    with mlvc.start_run(name="a", params={"lr": 0.1}):
        mlvc.log_metric("acc", 0.91)
        with mlvc.start_run(name="a-child"):  # children stay in their parent's experiment
            mlvc.log_metric("acc", 0.2)
    _run("b", acc=0.97)
    df = mlvc.search_runs(filter_string="metrics.acc > 0.9", experiment_names=["vision"],
                          order_by=["metrics.acc DESC"])  # fmt: skip
    assert df["name"].tolist() == ["b", "a"]
    assert set(df["experiment_name"]) == {"vision"}
    every = mlvc.search_runs(output_format="arrow")
    assert sorted(every.column("name").to_pylist()) == ["a", "a-child", "b", "default-run"]
    default = mlvc.search_runs(experiment_names=["Default"])
    assert default["name"].tolist() == ["default-run"]
    assert mlvc.search_runs(filter_string="params.lr = '0.1'")["name"].tolist() == ["a"]
    by_sql = mlvc.search_runs(sql="SELECT name FROM runs WHERE experiment_id = '1' ORDER BY name",
                              output_format="arrow")  # fmt: skip
    assert by_sql.column("name").to_pylist() == ["a", "a-child", "b"]
    assert mlvc.set_experiment("vision")["experiment_id"] == "1"  # found, not made again


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"filter_string": "metrics.acc > 'x'"}, "compares with a number"),
        ({"filter_string": "metrics.acc > 1; DROP TABLE runs"}, "invalid filter"),
        ({"filter_string": "params.a = 'x' OR params.b = 'y'"}, "AND only"),
        ({"experiment_names": ["nope"]}, "no experiment named 'nope'; there are: Default"),
        ({"output_format": "csv"}, "output_format must be one of pandas, arrow"),
        ({"sql": "DELETE FROM runs"}, "DELETE statements are refused"),
        ({"sql": "SELECT 1", "filter_string": "metrics.a > 1"}, "not both"),
    ],
)
def test_bad_searches_are_refused_with_the_reason(project, kwargs, message):
    _run("r", a=1.0)
    with pytest.raises(MlvcError, match=message):
        mlvc.search_runs(**kwargs)
    assert len(mlvc.search_runs()) == 1  # nothing was dropped


def test_artifacts_figures_images_tables_and_inputs(project, repo):
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    (project / "out" / "sub").mkdir(parents=True)
    (project / "out" / "a.txt").write_text("a")
    (project / "out" / "sub" / "b.txt").write_text("b")
    frame = pd.DataFrame({"x": [1, 2, 3], "y": ["p", "q", "r"]})
    with mlvc.start_run(name="media") as run:
        assert mlvc.log_artifacts("out", "results") == ["results/a.txt", "results/sub"]
        mlvc.log_image(np.arange(12, dtype=np.uint8).reshape(2, 2, 3), "img/rgb.png")
        mlvc.log_image(np.linspace(0, 1, 6).reshape(2, 3), "img/gray.png")
        mlvc.log_table(frame, "tables/t.parquet")
        mlvc.log_table(pa.table({"k": [1.5]}), "tables/arrow.parquet")
        assert mlvc.load_table("tables/t.parquet").equals(frame)  # from the live run
        item = mlvc.log_input("data/train.csv", name="train", context="training")
        folder = mlvc.log_input("data")
    rid = run.run_id.hex
    shown = repo.show(rid)
    paths = {e["path"] for e in shown["artifacts"]["entries"]}
    assert {"results/a.txt", "results/sub/b.txt", "img/rgb.png", "tables/t.parquet"} <= paths
    png = b"".join(repo.cat(f"{rid}:artifacts/img/rgb.png"))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    idat = png[png.index(b"IDAT") + 4 : png.index(b"IEND") - 8]
    assert zlib.decompress(idat) == b"\x00" + bytes(range(6)) + b"\x00" + bytes(range(6, 12))
    assert mlvc.load_table("tables/t.parquet", run_id=rid).equals(frame)
    arrow = mlvc.load_table("tables/arrow.parquet", run_id=rid, output_format="arrow")
    assert arrow.column("k").to_pylist() == [1.5]
    import blake3

    data = (project / "data" / "train.csv").read_bytes()
    assert item["dataset"]["digest"] == blake3.blake3(data).hexdigest()  # b3sum's id
    assert item["dataset"]["source"] == "data/train.csv"
    assert len(folder["dataset"]["digest"]) == 64 and folder["dataset"]["name"] == "data"
    assert item["tags"] == [{"key": "mlflow.data.context", "value": "training"}]


def test_figures_from_matplotlib(project, repo):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2, 3])
    with mlvc.start_run() as run:
        mlvc.log_figure(fig, "plots/line.png")
        mlvc.log_figure(fig, "plots/line.svg")
    plt.close(fig)
    rid = run.run_id.hex
    assert b"".join(repo.cat(f"{rid}:artifacts/plots/line.png")).startswith(b"\x89PNG")
    assert b"<svg" in b"".join(repo.cat(f"{rid}:artifacts/plots/line.svg"))


def test_a_run_object_logs_images_tables_and_figures_itself(project, repo):
    """``with mlvc.start_run() as run: run.log_image(...)``, as on an MLflow run's client:
    the run object has what the module-level functions do (it once had only log_bytes)."""
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots()
    ax.plot([1, 2, 3])
    with mlvc.start_run() as run:
        run.log_image(np.zeros((4, 6, 3), np.uint8), "images/black.png")
        run.log_table({"epoch": [1, 2], "acc": [0.5, 0.75]}, "tables/acc.parquet")
        run.log_figure(fig, "plots/line.svg")
    plt.close(fig)
    rid = run.run_id.hex
    png = b"".join(repo.cat(f"{rid}:artifacts/images/black.png"))
    assert png.startswith(b"\x89PNG") and png[16:24] == (6).to_bytes(4, "big") + (4).to_bytes(
        4, "big"
    )
    table = mlvc.load_table("tables/acc.parquet", run_id=rid, output_format="arrow")
    assert table.to_pydict() == {"epoch": [1, 2], "acc": [0.5, 0.75]}
    assert b"<svg" in b"".join(repo.cat(f"{rid}:artifacts/plots/line.svg"))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: mlvc.log_image([[300]], "x.png"), r"\[0, 255\]"),
        (lambda: mlvc.log_image([[[1, 2]]], "x.png"), "H×W"),
        (lambda: mlvc.log_table([1, 2], "t.parquet"), "takes a pandas DataFrame"),
        (lambda: mlvc.log_figure(object(), "f.png"), "matplotlib or plotly"),
        (lambda: mlvc.log_input("missing.csv"), "neither a file, a folder nor a content id"),
        (lambda: mlvc.log_input("0" * 64), "no stored content has id"),
        (lambda: mlvc.log_artifacts("nope"), "is not a folder"),
        (lambda: mlvc.log_table({"a": [1]}, "../up.parquet"), "leaves the project"),
    ],
)
def test_bad_values_are_refused_and_the_run_goes_on(project, repo, call, message):
    with mlvc.start_run() as run:
        with pytest.raises(MlvcError, match=message):
            call()
        mlvc.log_metric("still", 1.0)
    assert repo.show(run.run_id.hex)["metrics"] == {"still": 1.0}
    assert repo.show(run.run_id.hex)["artifacts"]["entries"] == []


def test_get_run_and_last_active_run(project):
    assert mlvc.last_active_run() is None or isinstance(mlvc.last_active_run(), dict)
    with mlvc.start_run(name="x") as run:
        assert mlvc.last_active_run() is run
        mlvc.log_param("p", 1)
    last = mlvc.last_active_run()
    assert last["id"] == run.run_id and last["params"] == {"p": 1}
    assert mlvc.get_run(last["id"][:10])["name"] == "x"
    assert mlvc.get_run("x")["id"] == last["id"]
    with mlvc.start_run():
        pass
    assert isinstance(mlvc.end_run(), type(None))  # nothing active: None, as MLflow


def test_end_run_returns_a_run_id_that_is_text(project):
    mlvc.start_run(name="t")
    rid = mlvc.end_run()
    assert isinstance(rid, RunId) and isinstance(rid, str)
    assert rid == rid.oid and len(rid) == 64
    assert json.loads(json.dumps({"id": rid})) == {"id": str(rid)}


@given(st.binary(min_size=32, max_size=32))
def test_run_ids_behave_as_their_hex_text(raw):
    oid = ObjectId(raw)
    rid = RunId(oid)
    text = raw.hex()
    assert rid == text and text == rid and str(rid) == text and f"{rid}" == text
    assert rid[:10] == text[:10] and rid.short == text[:10]
    assert json.dumps(rid) == json.dumps(text)
    assert hash(rid) == hash(text) and {rid: 1}[text] == 1
    assert rid == oid and rid.oid == oid and RunId(text) == rid
    assert rid != text[:-1] + ("0" if text[-1] != "0" else "1")


def test_a_script_that_ends_right_after_reading_a_table_exits_cleanly(project, repo):
    """Regression: tables and metric series were read through Arrow's pre-buffering
    scanner, whose I/O threads could still hold the bytes at interpreter exit; three of four
    scripts ending right after such a read aborted ("terminate called without an active
    exception", -6; seen in CI as an MLflow script dying after its run was recorded)."""
    import subprocess
    import sys

    code = (
        "import mlvc.runs.media as m\n"
        "data = m.table_bytes({'x': list(range(2000))})\n"
        "assert m.read_table(data, 'arrow').num_rows == 2000\n"
    )
    for _ in range(8):  # each exit aborted with p = 3/4 before the fix
        out = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True,
                             text=True, timeout=120)  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
