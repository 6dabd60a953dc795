"""Models: the trust model for pickled code (issue 9, item 12), run URIs that outlive their
live run (item 16), and MLflow PythonModels with artifacts (item 18)."""

import json
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import mlvc
import mlvc.models as mm
import mlvc.store.typed
from mlvc.models.flavors.mlflow_pyfunc import PythonModel


class Plus:
    def __init__(self, k):
        self.k = k

    def predict(self, data):
        return [v + self.k for v in data["x"]]


# -- item 16: run:<live key>/... resolves to the recorded run, by an index lookup ------------


def test_live_key_uri_of_a_script_under_mlvc_run_resolves_after_the_run(
    cli, repo, project, tmp_path, monkeypatch
):
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "uri.txt"
    (project / "train.py").write_text(
        textwrap.dedent(f"""
            import mlvc, mlvc.models

            class Twice:
                def predict(self, data):
                    return [2 * v for v in data["x"]]

            with mlvc.start_run():
                info = mlvc.models.log_model(Twice(), "twice")
                open({str(out)!r}, "w").write(info.uri)
        """)
    )
    cli("run", "train.py")
    uri = out.read_text()
    key = uri[len("run:") :].split("/")[0]
    assert len(key) == 23  # the live key, not a run id: the script ended before its record
    for _ in range(20):  # other runs, so a scan would read many run objects
        cli("commit", "-m", "other")
    assert count_run_reads_of(lambda: mm.load(uri, repo=repo)) <= 2
    assert mm.load(uri, repo=repo).predict({"x": [1.0]}) == [2.0]


def count_run_reads_of(fn) -> int:
    calls = []
    real = mlvc.store.typed.read_run

    def spy(store, oid):
        calls.append(oid)
        return real(store, oid)

    mlvc.store.typed.read_run = spy
    try:
        fn()
    finally:
        mlvc.store.typed.read_run = real
    return len(calls)


def test_live_key_uri_of_start_run_resolves_by_index_lookup(repo, cli):
    with mlvc.start_run(repo=repo) as run:
        live_uri = mm.log_model(Plus(1), "plus").uri
    assert live_uri.startswith(f"run:{run.key}/")
    for _ in range(20):
        cli("commit", "-m", "other")
    assert count_run_reads_of(lambda: mm.load(live_uri, repo=repo)) <= 2
    assert mm.load(live_uri, repo=repo).predict({"x": [1.0]}) == [2.0]
    rows = repo.query(f"SELECT run_id FROM live_keys WHERE live_key = '{run.key}'")
    assert rows.column("run_id").to_pylist() == [run.id]


def test_unknown_live_key_is_a_clear_error(repo):
    with pytest.raises(mm.UnknownModel, match="no live or recorded run has the key"):
        mm.load("run:20990101000000-deadbeef/models/x", repo=repo)


# -- item 18: an MLflow PythonModel saved with artifacts= ------------------------------------


class Lookup(PythonModel):
    """An MLflow 2-style custom model reading an artifact in load_context and predict."""

    def load_context(self, context):
        with open(context.artifacts["table"]) as f:
            self.table = json.load(f)

    def predict(self, context, model_input):
        assert Path(context.artifacts["table"]).is_file()
        return [self.table[str(int(v))] for v in model_input["x"]]


def mlflow_pyfunc_with_artifacts(d: Path) -> Path:
    """A model folder as ``mlflow.pyfunc.save_model(python_model=..., artifacts={"table":
    ...})`` writes it: the artifact copied under artifacts/, recorded in the MLmodel's
    python_function flavor as ``artifacts: {table: {path: ..., uri: ...}}``."""
    import cloudpickle

    d.mkdir()
    (d / "artifacts").mkdir()
    (d / "artifacts" / "table.json").write_text(json.dumps({"1": "one", "2": "two"}))
    (d / "python_model.pkl").write_bytes(cloudpickle.dumps(Lookup()))
    (d / "MLmodel").write_text(
        textwrap.dedent(f"""\
            artifacts_path: null
            flavors:
              python_function:
                artifacts:
                  table:
                    path: artifacts/table.json
                    uri: /home/someone/work/table.json
                cloudpickle_version: {cloudpickle.__version__}
                code: null
                env:
                  conda: conda.yaml
                  virtualenv: python_env.yaml
                loader_module: mlflow.pyfunc.model
                python_model: python_model.pkl
                python_version: {".".join(map(str, sys.version_info[:3]))}
                streamable: false
            mlflow_version: 3.17.2
            model_uuid: 0f3a5ad1b0b54b2e9d1b4d43f3a2f1c0
            utc_time_created: '2026-11-28 03:14:44.087634'
        """)
    )
    return d


def test_mlflow_python_model_with_artifacts_gets_their_paths(tmp_path):
    pytest.importorskip("yaml")
    d = mlflow_pyfunc_with_artifacts(tmp_path / "mlflow_model")
    model = mm.load(d, trust=True)
    assert model.predict({"x": [1, 2]}) == ["one", "two"]
    native, context = model.unwrap(), model._native[1]
    assert native.table == {"1": "one", "2": "two"}
    assert context.artifacts == {"table": str(d.resolve() / "artifacts" / "table.json")}


# -- item 12: pickles from outside this repository need an explicit opt-in ------------------


class Planted:
    """A pickle that runs code when loaded: it writes a marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def planted_folder(tmp_path: Path) -> tuple[Path, Path]:
    """A model folder from elsewhere whose pickle runs code; and the file that code writes."""
    import cloudpickle

    d, marker = tmp_path / "downloaded", tmp_path / "marker"
    mm.save(Plus(1), d)
    (d / "python_model.pkl").write_bytes(cloudpickle.dumps(Planted(marker)))
    return d, marker


def test_a_folder_pickle_is_not_loaded_without_trust(tmp_path, monkeypatch):
    monkeypatch.delenv("MLVC_TRUST_PICKLE", raising=False)
    d, marker = planted_folder(tmp_path)
    with pytest.raises(mm.UntrustedModel) as e:
        mm.load(d)
    assert not marker.exists()
    msg = str(e.value)
    assert str(d / "python_model.pkl") in msg and "--trust" in msg and "\n" not in msg
    assert e.value.exit_code == 16
    mm.load(d, trust=True)  # the opt-in does unpickle (and so runs the planted code)
    assert marker.read_text() == "ran"
    marker.unlink()
    monkeypatch.setenv("MLVC_TRUST_PICKLE", "1")
    mm.load(d)
    assert marker.exists()
    with pytest.raises(mm.UntrustedModel):
        mm.load(d, trust=False)  # an explicit False wins over the environment


def test_cli_predict_and_serve_refuse_a_folder_pickle_without_trust(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("MLVC_TRUST_PICKLE", raising=False)
    d, marker = planted_folder(tmp_path)
    (tmp_path / "in.json").write_text(json.dumps({"inputs": {"x": [1.0]}}))
    for args in (["predict", str(d), "-i", str(tmp_path / "in.json")], ["serve", str(d)]):
        r = cli("models", *args, ok=False)
        assert r.exit_code == 16, r.output
        assert r.output.startswith("mlvc: error: refusing to load ") and "--trust" in r.output
        assert r.output.count("\n") == 1 and "Traceback" not in r.output
        assert not marker.exists()
    r = cli("models", "predict", str(d), "-i", str(tmp_path / "in.json"), "--trust", ok=False)
    assert marker.exists()  # unpickled: the planted code ran (then predict had no model)


def test_models_from_this_repository_load_without_an_opt_in(repo, cli, tmp_path, monkeypatch):
    monkeypatch.delenv("MLVC_TRUST_PICKLE", raising=False)
    with mlvc.start_run(repo=repo, name="trained") as run:
        info = mm.log_model(Plus(1), "plus", input_example={"x": [1.0]})
        assert mm.load(info.uri, repo=repo).predict({"x": [1.0]}) == [2.0]  # live
    mm.register("p", info.uri, repo=repo)
    for uri in (info.uri, f"run:{run.key}/models/plus", "run:trained/plus", "models:/p/1"):
        assert mm.load(uri, repo=repo).predict({"x": [1.0]}) == [2.0], uri
    assert mm.get("p", 1, repo=repo).trusted
    assert "Trusted:    yes" in cli("models", "show", "p/1").output
    # the same kind of folder from elsewhere, registered: its version is not trusted...
    d, marker = planted_folder(tmp_path)
    mm.register("outside", str(d), repo=repo)
    assert not mm.get("outside", repo=repo).trusted
    assert "its pickles load only with --trust" in cli("models", "show", "outside").output
    with pytest.raises(mm.UntrustedModel, match="python_model.pkl"):
        mm.load("models:/outside/1", repo=repo)
    r = cli("models", "serve", "outside", ok=False)
    assert r.exit_code == 16 and not marker.exists()
    # ...unless it was registered with trust=True (--trust): then it is
    mm.save(Plus(2), tmp_path / "mine")
    cli("models", "register", "mine", str(tmp_path / "mine"), "--trust")
    assert mm.get("mine", repo=repo).trusted
    assert mm.load("models:/mine/1", repo=repo).predict({"x": [1.0]}) == [3.0]


def test_mlflow_folders_with_pickles_need_trust(tmp_path, iris):
    pytest.importorskip("yaml")
    import cloudpickle

    clf, X, _ = iris
    d = tmp_path / "mlflow_sklearn"
    d.mkdir()
    (d / "MLmodel").write_text(
        "flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n"
        "    model_path: model.pkl\n  sklearn:\n    pickled_model: model.pkl\n"
        "    serialization_format: cloudpickle\n"
    )
    (d / "model.pkl").write_bytes(cloudpickle.dumps(clf))
    with pytest.raises(mm.UntrustedModel, match="model.pkl"):
        mm.load(d)
    assert mm.load(d, trust=True).predict(X.head(3)).tolist() == clf.predict(X.head(3)).tolist()
    custom = mlflow_pyfunc_with_artifacts(tmp_path / "custom")
    with pytest.raises(mm.UntrustedModel, match="python_model.pkl"):
        mm.load(custom)


@pytest.fixture
def iris():
    pytest.importorskip("pandas")
    sk = pytest.importorskip("sklearn.linear_model")
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True, as_frame=True)
    return sk.LogisticRegression(max_iter=500).fit(X, y), X, y


def test_sklearn_saves_with_skops_which_loads_from_anywhere(tmp_path, iris):
    pytest.importorskip("skops")
    clf, X, _ = iris
    manifest = mm.save(clf, tmp_path / "a", input_example=X.head(3))
    conf = manifest["flavors"]["sklearn"]
    assert conf["serialization_format"] == "skops" and conf["pickled_model"] == "model.skops"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "input_example.arrow", "mlvc-model.json", "model.skops", "requirements.txt"
    ]  # fmt: skip
    model = mm.load(tmp_path / "a")  # no pickle: no opt-in needed
    assert model.predict(X.head(10)).tolist() == clf.predict(X.head(10)).tolist()
    # equal models give equal bytes, so the store keeps one copy
    mm.save(clf, tmp_path / "b", input_example=X.head(3))
    assert (tmp_path / "a" / "model.skops").read_bytes() == (
        tmp_path / "b" / "model.skops"
    ).read_bytes()


def test_skops_types_beyond_the_defaults_need_trust(tmp_path, iris, repo):
    pytest.importorskip("skops")
    from sklearn.tree import DecisionTreeClassifier

    _, X, y = iris
    tree = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y)
    mm.save(tree, tmp_path / "t")
    with pytest.raises(mm.UntrustedModel, match=r"sklearn\.tree\._tree\.Tree"):
        mm.load(tmp_path / "t")
    want = tree.predict(X.head(5)).tolist()
    assert mm.load(tmp_path / "t", trust=True).predict(X.head(5)).tolist() == want
    with mlvc.start_run(repo=repo):  # logged here: trusted
        info = mm.log_model(tree, "tree")
    assert mm.load(info.uri, repo=repo).predict(X.head(5)).tolist() == want
    # An MLflow folder listing the types as trusted is its author's word, not the user's.
    d = tmp_path / "mlflow_tree"
    d.mkdir()
    (d / "model.skops").write_bytes((tmp_path / "t" / "model.skops").read_bytes())
    (d / "MLmodel").write_text(
        "flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n"
        "    model_path: model.skops\n  sklearn:\n    pickled_model: model.skops\n"
        "    serialization_format: skops\n"
        "    skops_trusted_types: ['sklearn.tree._tree.Tree']\n"
    )
    with pytest.raises(mm.UntrustedModel, match="does not trust by default"):
        mm.load(d)


def local_function(x):
    return x


def test_sklearn_with_local_code_falls_back_to_cloudpickle(tmp_path, iris, repo):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    clf, X, y = iris
    pipe = make_pipeline(FunctionTransformer(local_function), type(clf)(max_iter=500)).fit(X, y)
    conf = mm.save(pipe, tmp_path / "p")["flavors"]["sklearn"]
    assert conf["serialization_format"] == "cloudpickle"  # skops would store it by reference
    with pytest.raises(mm.UntrustedModel, match="model.pkl"):
        mm.load(tmp_path / "p")
    want = pipe.predict(X.head(4)).tolist()
    assert mm.load(tmp_path / "p", trust=True).predict(X.head(4)).tolist() == want


def test_code_of_an_untrusted_model_is_not_put_on_sys_path(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    src = tmp_path / "shadow"
    src.mkdir()
    (src / "shadowed_module_x.py").write_text("RAN = True\n")
    mm.save(proto, tmp_path / "m", code_paths=[src / "shadowed_module_x.py"])
    model = mm.load(tmp_path / "m")  # ONNX holds no code: it loads untrusted...
    assert model.predict(np.ones((1, 2), np.float32)).tolist() == [[1.0, 1.0]]
    assert str(tmp_path / "m" / "code") not in sys.path  # ...but its code/ is not importable
    mm.load(tmp_path / "m", trust=True)
    assert str(tmp_path / "m" / "code") in sys.path
    sys.path.remove(str(tmp_path / "m" / "code"))
