"""Models in runs and the registry: log_model, URIs, versions, aliases, SQL, CLI, concurrency."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import mlvc
import mlvc.models as mm
from mlvc import Repo
from mlvc.errors import PathNotInRun, UsageError


class Plus:
    def __init__(self, k):
        self.k = k

    def predict(self, data):
        return [v + self.k for v in data["x"]]


EXAMPLE = {"x": [1.0, 2.0]}


def test_log_model_in_a_run_and_load_by_every_uri(repo, project):
    with mlvc.start_run(name="train", repo=repo) as run:
        info = mm.log_model(Plus(1), "plus", input_example=EXAMPLE)
        live_uri = info.uri
        assert live_uri == f"run:{run.key}/models/plus" and info.run_id == run.key
        assert mm.load(live_uri, repo=repo).predict({"x": [1.0]}) == [2.0]  # while live
    assert info.uri == f"run:{run.id}/models/plus" and len(info.run_id) == 64
    for uri in (info.uri, live_uri, "run:train/models/plus", "run:HEAD/artifacts/models/plus",
                "run:HEAD/plus", "run:HEAD"):  # fmt: skip
        assert mm.load(uri, repo=repo).predict({"x": [1.0]}) == [2.0], uri
    rec = repo.run(run.id)
    assert rec.models["plus"]["path"] == "models/plus"
    assert rec.models["plus"]["tree"] == info.model_id
    assert rec.models["plus"]["signature"]["inputs"]["columns"][0]["name"] == "x"
    files = {e["path"] for e in repo.show(run.id)["artifacts"]["entries"]}
    assert "models/plus/mlvc-model.json" in files and "models/plus/python_model.pkl" in files
    with pytest.raises(PathNotInRun, match="logged models: plus"):
        mm.load("run:HEAD/models/nope", repo=repo)
    assert repo.fsck() == []


def test_logging_a_name_again_replaces_the_model(repo):
    with mlvc.start_run(repo=repo):
        mm.log_model(Plus(1), "m")
        info = mm.log_model(lambda d: d, "m")  # different flavor files
    files = {e["path"] for e in repo.show("HEAD")["artifacts"]["entries"]}
    assert files == {"models/m/mlvc-model.json", "models/m/python_model.pkl",
                     "models/m/requirements.txt"}  # fmt: skip
    assert mm.load(info.uri, repo=repo).predict([5]) == [5]


def test_registry_versions_aliases_and_history(repo, project):
    with mlvc.start_run(repo=repo):
        a = mm.log_model(Plus(1), "a", input_example=EXAMPLE)
        b = mm.log_model(Plus(2), "b", input_example=EXAMPLE)
    assert mm.register("adder", a.uri, repo=repo) == 1
    assert mm.register("adder", b.uri, repo=repo) == 2
    assert mm.register("adder", a.uri, repo=repo) == 3  # same tree again: a new version
    v1 = mm.get("adder", 1, repo=repo)
    assert v1.model_id == a.model_id and v1.source == a.uri and v1.run_id == a.run_id
    assert v1.registered_by == "Test Author <test@example.com>" and v1.registered_at
    mm.set_alias("adder", "champion", 1, repo=repo)
    mm.set_alias("adder", "champion", 2, repo=repo)
    mm.set_alias("adder", "challenger", "3", repo=repo)
    assert mm.load("models:/adder@champion", repo=repo).predict({"x": [1.0]}) == [3.0]
    assert mm.load("models:/adder/1", repo=repo).predict({"x": [1.0]}) == [2.0]
    assert mm.load("models:/adder/latest", repo=repo).predict({"x": [1.0]}) == [2.0]
    assert mm.get("adder@champion", repo=repo).version == 2
    assert mm.get("adder", repo=repo).version == 3
    assert mm.get("adder", 2, repo=repo).aliases == ("champion",)
    assert mm.delete_alias("adder", "challenger", repo=repo) == 3
    got = [(e.type, e.data.get("version"), e.data.get("alias"), e.data.get("previous"))
           for e in repo.events(types=["registered_model.*", "model_version*"])]  # fmt: skip
    assert got == [
        ("registered_model.created", None, None, None),
        ("model_version.created", 1, None, None),
        ("model_version.created", 2, None, None),
        ("model_version.created", 3, None, None),
        ("model_version_alias.created", 1, "champion", None),
        ("model_version_alias.created", 2, "champion", 1),
        ("model_version_alias.created", 3, "challenger", None),
        ("model_version_alias.deleted", 3, "challenger", None),
    ]
    assert repo.events(types=["model_version.created"]).__next__().data["uri"] == "models:/adder/1"
    [listed] = mm.list(repo=repo)
    assert listed["name"] == "adder" and listed["versions"] == 3 and listed["latest"] == 3
    assert listed["aliases"] == {"champion": 2}
    history = mm.alias_history("adder", repo=repo)
    assert [(h["alias"], h["action"], h["version"], h["previous"]) for h in history] == [
        ("champion", "set", 1, None),
        ("champion", "set", 2, 1),
        ("challenger", "set", 3, None),
        ("challenger", "delete", None, 3),
    ]
    assert all(h["by"] == "Test Author <test@example.com>" and h["at"] for h in history)
    assert repo.fsck() == []


def test_registry_errors(repo, tmp_path):
    with mlvc.start_run(repo=repo):
        info = mm.log_model(Plus(1), "a")
    mm.register("m", info.uri, repo=repo)
    cases = [
        (lambda: mm.get("nope", repo=repo), mm.UnknownModel, "no registered model 'nope'"),
        (lambda: mm.get("mm", repo=repo), mm.UnknownModel, "did you mean: m"),
        (lambda: mm.get("m", 5, repo=repo), mm.UnknownModel, "has no version 5 (versions 1 to 1)"),
        (lambda: mm.get("m", "x", repo=repo), UsageError, "invalid version 'x'"),
        (lambda: mm.load("models:/m@gold", repo=repo), mm.UnknownModel, "no alias 'gold'"),
        (lambda: mm.set_alias("m", "7", 1, repo=repo), UsageError, "cannot be a number"),
        (lambda: mm.set_alias("m", "a/b", 1, repo=repo), UsageError, "invalid alias"),
        (lambda: mm.register("bad/name", info.uri, repo=repo), UsageError, "invalid model name"),
        (lambda: mm.delete_alias("m", "gold", repo=repo), mm.UnknownModel, "no alias 'gold'"),
        (lambda: mm.load("models:/m", repo=repo), mm.UnknownModel, "bad model URI"),
        (lambda: mm.register("m", str(tmp_path), repo=repo), mm.ModelError, "not a model dir"),
    ]
    for call, kind, needle in cases:
        with pytest.raises(kind) as e:
            call()
        assert needle in str(e.value), str(e.value)


def test_register_a_folder_and_an_mlflow_dir(repo, tmp_path):
    mm.save(Plus(5), tmp_path / "folder")
    assert mm.register("f", str(tmp_path / "folder"), repo=repo, trust=True) == 1
    v = mm.get("f", 1, repo=repo)
    assert v.source == str(tmp_path / "folder") and v.run_id is None
    import shutil

    shutil.rmtree(tmp_path / "folder")  # the registry holds its own copy
    assert mm.load("models:/f/1", repo=repo).predict({"x": [1]}) == [6]
    assert mm.register("f2", "models:/f/1", repo=repo) == 1
    assert mm.get("f2", repo=repo).model_id == v.model_id


def test_registry_in_sql_and_rebuilt_from_refs(repo):
    with mlvc.start_run(repo=repo):
        info = mm.log_model(Plus(1), "a", input_example=EXAMPLE, registered_model_name="sq")
    assert info.registered_version == 1
    mm.register("sq", info.uri, repo=repo)
    mm.set_alias("sq", "prod", 2, repo=repo)
    mm.set_alias("sq", "prod", 1, repo=repo)
    rows = repo.query(
        "SELECT name, version, model_id, run_id, flavor, flavors, registered_by "
        "FROM model_versions ORDER BY version"
    ).to_pylist()
    assert [r["version"] for r in rows] == [1, 2]
    assert all(r["run_id"] == info.run_id for r in rows)  # v1 learnt it when the run ended
    assert rows[0]["flavor"] == "python_function" and rows[0]["flavors"] == ["python_function"]
    sig = repo.query("SELECT signature FROM model_versions WHERE version = 1").to_pylist()[0]
    assert json.loads(sig["signature"])["inputs"]["columns"][0]["name"] == "x"
    aliases = repo.query("SELECT name, alias, version, set_by FROM model_aliases").to_pylist()
    assert aliases == [
        {"name": "sq", "alias": "prod", "version": 1, "set_by": "Test Author <test@example.com>"}
    ]
    log = repo.query(
        "SELECT action, version, previous FROM model_alias_log ORDER BY changed_at"
    ).to_pylist()
    assert log == [
        {"action": "set", "version": 2, "previous": None},
        {"action": "set", "version": 1, "previous": 2},
    ]
    tables = ("model_versions", "model_aliases", "model_alias_log")
    before = {t: repo.query(f"SELECT * FROM {t} ORDER BY ALL").to_pylist() for t in tables}
    (repo.dir / "index.duckdb").unlink()
    after = {t: repo.query(f"SELECT * FROM {t} ORDER BY ALL").to_pylist() for t in tables}
    assert before == after


def test_concurrent_registers_never_share_a_version(repo, project):
    with mlvc.start_run(repo=repo):
        info = mm.log_model(Plus(1), "a")
    script = textwrap.dedent(
        f"""
        import sys
        import mlvc.models as mm
        from mlvc import Repo
        repo = Repo({str(project)!r})
        print(" ".join(str(mm.register("race", {info.uri!r}, repo=repo)) for _ in range(5)))
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    got = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        got += [int(v) for v in out.split()]
    assert sorted(got) == list(range(1, 21))
    assert mm.list(repo=repo)[0]["versions"] == 20
    assert repo.fsck() == []


def test_cli_models_commands(cli, repo):
    with mlvc.start_run(repo=repo, name="trained"):
        mm.log_model(Plus(1), "clf", input_example=EXAMPLE)
    out = cli("models", "register", "adder", "run:trained/models/clf").output
    assert out.startswith("registered adder version 1 [")
    assert "version 2" in cli("models", "register", "adder", "run:HEAD/models/clf").output
    assert cli("models", "alias", "adder", "champion", "1").output.startswith(
        "adder@champion -> version 1"
    )
    cli("models", "alias", "adder", "champion", "2")
    listed = cli("models", "list").output
    assert "adder" in listed and "champion=2" in listed
    assert json.loads(cli("models", "list", "--json").output)[0]["latest"] == 2
    shown = cli("models", "show", "adder@champion").output
    assert "model adder version 2" in shown and "Inputs:     x: float" in shown
    assert "champion -> 2 (was 1)" in shown
    d = json.loads(cli("models", "show", "adder/1", "--json").output)
    assert d["version"]["version"] == 1 and d["flavor"] == "python_function"
    assert "Flavor:     python_function" in cli("models", "show", "run:HEAD/models/clf").output
    assert cli("models", "alias", "adder", "champion", "--delete").output.startswith(
        "deleted adder@champion (was version 2)"
    )
    r = cli("models", "show", "nope", ok=False)
    assert r.exit_code == 4 and r.output.strip() == "mlvc: error: no registered model 'nope'"
    r = cli("models", "alias", "adder", "gold", ok=False)
    assert r.exit_code == 2 and "give the VERSION" in r.output


def test_cli_predict_reads_json_csv_and_arrow(cli, repo, project):
    import pyarrow as pa

    with mlvc.start_run(repo=repo):
        mm.log_model(Plus(1), "clf", input_example=EXAMPLE, registered_model_name="p")
    (project / "in.json").write_text(json.dumps({"inputs": {"x": [1.0, 2.0]}}))
    (project / "in.csv").write_text("x\n3\n")
    schema = pa.schema([("x", pa.float64())])
    with pa.OSFile(str(project / "in.arrow"), "wb") as sink, pa.ipc.new_stream(sink, schema) as w:
        w.write_table(pa.table({"x": [4.0]}))
    assert json.loads(cli("models", "predict", "p", "-i", "in.json").output) == {
        "predictions": [2.0, 3.0]
    }
    assert json.loads(cli("models", "predict", "p/1", "-i", "in.csv").output)["predictions"] == [
        4.0
    ]
    assert json.loads(cli("models", "predict", "models:/p/1", "-i", "in.arrow").output)[
        "predictions"
    ] == [5.0]


def test_models_are_deduplicated_in_the_store(repo):
    with mlvc.start_run(repo=repo):
        a = mm.log_model(Plus(1), "a")
        b = mm.log_model(Plus(1), "b")
    assert a.model_id == b.model_id


def test_import_mlvc_stays_light():
    code = (
        "import sys, mlvc, mlvc.models, mlvc.cli; "
        "print(sorted(m for m in ('pandas', 'sklearn', 'starlette', 'uvicorn', 'pyarrow', "
        "'numpy', 'cloudpickle') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_models_attribute_on_the_package():
    assert mlvc.models.load is mm.load
    assert isinstance(np.zeros(1), np.ndarray)
    assert Repo  # the fixture-free smoke: mlvc exposes models lazily


def test_documented_model_queries_run(repo):
    """Every ```sql block of docs/models.md runs and finds rows on a small registry."""
    import re
    from pathlib import Path

    for c in (1.0, 0.1):
        with mlvc.start_run(repo=repo, params={"C": c}) as run:
            run.log_metric("acc", 0.9)
            info = mm.log_model(Plus(c), "clf")
        mm.register("iris", info.uri, repo=repo)
    mm.set_alias("iris", "champion", 1, repo=repo)
    mm.set_alias("iris", "champion", 2, repo=repo)
    doc = (Path(__file__).parents[2] / "docs" / "models.md").read_text()
    queries = re.findall(r"```sql\n(.*?)```", doc, re.S)
    assert len(queries) >= 2
    for q in queries:
        assert repo.query(q).num_rows > 0, q
