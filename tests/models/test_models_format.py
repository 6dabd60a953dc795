"""Model format: save and load per flavor, signatures (inference, enforcement), MLflow dirs."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import mlvc.models as mm
from mlvc.models.errors import ModelError, SignatureError

pd = pytest.importorskip("pandas")
FIXTURES = Path(__file__).parents[1] / "fixtures"


class Doubler:
    def predict(self, data):
        return np.asarray(data["x"]) * 2


def frame(n=4):
    return pd.DataFrame({"x": np.arange(n, dtype=float), "y": np.arange(n, dtype=np.int64)})


@pytest.fixture
def iris():
    sk = pytest.importorskip("sklearn.linear_model")
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True, as_frame=True)
    return sk.LogisticRegression(max_iter=500).fit(X, y), X, y


def test_pyfunc_object_round_trip_with_manifest(tmp_path):
    m = mm.save(Doubler(), tmp_path / "m", input_example=frame(3), requirements=["numpy"])
    assert m["flavor"] == "python_function" and m["input_kind"] == "pandas"
    on_disk = json.loads((tmp_path / "m" / "mlvc-model.json").read_text())
    assert on_disk == m and on_disk["mlvc_model"] == 1 and on_disk["mlvc_version"]
    cols = on_disk["signature"]["inputs"]["columns"]
    assert [(c["name"], c["type"]) for c in cols] == [("x", "double"), ("y", "int64")]
    assert on_disk["signature"]["outputs"]["kind"] == "tensor"
    assert f"numpy=={np.__version__}" in m["requirements"]
    assert m["requirements"][0].startswith("mlvc==")
    assert (tmp_path / "m" / "requirements.txt").read_text().splitlines() == m["requirements"]
    model = mm.load(tmp_path / "m", trust=True)
    assert model.predict(frame(3)).tolist() == [0.0, 2.0, 4.0]
    assert isinstance(model.input_example, pd.DataFrame)
    sig = mm.Signature.from_dict(m["signature"])
    assert sig.inputs.field("x").type == pa.float64()


def test_every_input_form_reaches_the_model_as_its_example_kind(tmp_path):
    class Spy:
        def predict(self, data):
            return [type(data).__name__] * len(data)

    mm.save(Spy(), tmp_path / "m", input_example=frame(2))
    model = mm.load(tmp_path / "m", trust=True)
    inputs = [
        frame(2),
        pa.table({"x": [1.0, 2.0], "y": [1, 2]}),
        {"x": [1.0, 2.0], "y": [1, 2]},
        [{"x": 1.0, "y": 1}, {"x": 2.0, "y": 2}],
        np.array([[1.0, 1], [2.0, 2]]),  # positional: as many columns as the signature
    ]
    for data in inputs:
        assert model.predict(data) == ["DataFrame", "DataFrame"]


def test_signature_errors_are_one_clear_line(tmp_path):
    mm.save(Doubler(), tmp_path / "m", input_example=frame(2))
    model = mm.load(tmp_path / "m", trust=True)
    cases = [
        (pd.DataFrame({"x": [1.0]}), "missing column 'y'"),
        (pd.DataFrame({"x": ["a"], "y": [1]}), "column 'x' has type"),
        (
            {"x": [1.5], "y": [2.5]},
            "column 'y' (float) has values that do not fit integer: Float value 2.5",
        ),
        ({"x": [1.0, 2.0], "y": [1]}, "different lengths"),
        (np.zeros((2, 5)), "cannot be read as a table for the model's columns x, y"),
        ("text", "cannot read a str as model input"),
    ]
    for data, needle in cases:
        with pytest.raises(SignatureError) as e:
            model.predict(data)
        assert needle in str(e.value) and "\n" not in str(e.value)
    # widening is fine: ints into a double column, whole floats into an int column
    assert model.predict({"x": [1, 2], "y": [1.0, 2.0]}).tolist() == [2, 4]
    assert model.predict(frame(2).assign(extra="ignored")).tolist() == [0, 2]


def test_tensor_signature_from_numpy(tmp_path):
    mm.save(lambda a: a.sum(axis=1), tmp_path / "m", input_example=np.ones((2, 3), np.float32))
    model = mm.load(tmp_path / "m", trust=True)
    assert model.flavor == "python_function"
    assert mm.describe(str(tmp_path / "m"))["signature"]["inputs"] == {
        "kind": "tensor",
        "dtype": "float",
        "shape": [-1, 3],
    }
    out = model.predict([[1, 2, 3], [4, 5, 6]])  # ints cast to float32
    assert out.dtype == np.float32 and out.tolist() == [6, 15]
    assert model.predict(pd.DataFrame({"a": [1.0], "b": [2.0], "c": [3.0]})).tolist() == [6]
    with pytest.raises(SignatureError, match=r"shape \(2, 2\); the model expects \(N, 3\)"):
        model.predict(np.ones((2, 2)))
    with pytest.raises(SignatureError, match="type <U1; the model expects float"):
        model.predict(np.array([["a", "b", "c"]]))
    assert isinstance(model.input_example, np.ndarray)


def test_no_signature_passes_input_through(tmp_path):
    mm.save(lambda d: sorted(d), tmp_path / "m")
    model = mm.load(tmp_path / "m", trust=True)
    assert model.signature is None or model.signature.inputs is None
    assert model.predict([3, 1, 2]) == [1, 2, 3]


def test_explicit_signature_and_bad_targets(tmp_path):
    schema = pa.schema([("x", pa.float64())])
    mm.save(Doubler(), tmp_path / "m", signature=schema)
    assert mm.load(tmp_path / "m", trust=True).predict({"x": [1]}).tolist() == [2.0]
    with pytest.raises(ModelError, match="exists and is not an empty folder"):
        mm.save(Doubler(), tmp_path / "m")
    with pytest.raises(ModelError, match="no predict method and is not callable"):
        mm.save(object(), tmp_path / "n")
    assert not (tmp_path / "n").exists()
    with pytest.raises(ModelError, match="signature must be"):
        mm.save(Doubler(), tmp_path / "o", signature="x: double")
    with pytest.raises(mm.UnknownModel, match="no model at"):
        mm.load(tmp_path / "missing")
    with pytest.raises(ModelError, match="not a model directory"):
        mm.load(tmp_path)


def test_model_from_main_loads_in_another_process(tmp_path):
    """A class defined in a script's __main__ is pickled by value (cloudpickle)."""
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            import mlvc.models

            class Scaler:
                factor = 3

                def predict(self, data):
                    return [v * self.factor for v in data["x"]]

            mlvc.models.save(Scaler(), sys.argv[1], input_example={"x": [1.0, 2.0]})
            """
        )
    )
    subprocess.run([sys.executable, str(script), str(tmp_path / "m")], check=True)
    loader = f"import mlvc.models as m; print(m.load({str(tmp_path / 'm')!r}, trust=True).predict({{'x': [2.0]}}))"
    out = subprocess.run(
        [sys.executable, "-c", loader], check=True, capture_output=True, text=True, cwd="/"
    )
    assert out.stdout.strip() in ("[6.0]", "[np.float64(6.0)]")


def test_code_paths_are_importable_at_load(tmp_path):
    pkg = tmp_path / "src" / "mymodels"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "class Neg:\n    def predict(self, d):\n        return [-v for v in d]\n"
    )
    sys.path.insert(0, str(tmp_path / "src"))
    try:
        import mymodels

        mm.save(mymodels.Neg(), tmp_path / "m", code_paths=[pkg])
    finally:
        sys.path.remove(str(tmp_path / "src"))
        sys.modules.pop("mymodels", None)
    shutil.rmtree(tmp_path / "src")
    code = f"import mlvc.models as m; print(m.load({str(tmp_path / 'm')!r}, trust=True).predict([1, 2]))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[-1, -2]"


def test_sklearn_flavor(tmp_path, iris):
    clf, X, y = iris
    m = mm.save(clf, tmp_path / "m", input_example=X.head(5))
    assert m["flavor"] == "sklearn" and set(m["flavors"]) == {"sklearn", "python_function"}
    assert any(r.startswith("scikit-learn==") for r in m["requirements"])
    model = mm.load(tmp_path / "m")
    want = clf.predict(X.head(10)).tolist()
    assert model.predict(X.head(10)).tolist() == want
    assert model.predict(pa.Table.from_pandas(X.head(10))).tolist() == want
    assert model.predict(X.head(10).to_numpy()).tolist() == want
    assert model.predict(X.head(10).to_dict(orient="list")).tolist() == want
    assert type(model.unwrap()).__name__ == "LogisticRegression"
    with pytest.raises(SignatureError, match="missing column 'petal width"):
        model.predict(X.head(2).drop(columns=["petal width (cm)"]))


def test_sklearn_fitted_on_arrays(tmp_path, iris):
    clf, X, y = iris
    clf = type(clf)(max_iter=500).fit(X.to_numpy(), y)
    mm.save(clf, tmp_path / "m", input_example=X.to_numpy()[:3])
    model = mm.load(tmp_path / "m")
    assert model.predict(X.to_numpy()[:4]).tolist() == clf.predict(X.to_numpy()[:4]).tolist()


def test_onnx_flavor(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])
    w = helper.make_tensor("w", TensorProto.FLOAT, [2], [2.0, 3.0])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"])], "mul", [x], [y], [w])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    m = mm.save(proto, tmp_path / "m")
    assert m["flavor"] == "onnx"
    assert m["signature"]["inputs"]["shape"] == [-1, 2]  # read from the graph itself
    model = mm.load(tmp_path / "m")
    assert model.predict([[1.0, 1.0], [2.0, 0.5]]).tolist() == [[2.0, 3.0], [4.0, 1.5]]
    assert onnx.__version__ in json.dumps(m)


def test_torch_flavor(tmp_path):
    torch = pytest.importorskip("torch")
    net = torch.nn.Linear(3, 1)
    mm.save(net, tmp_path / "m", input_example=np.ones((2, 3), np.float32))
    out = mm.load(tmp_path / "m", trust=True).predict(np.ones((4, 3), np.float32))
    assert out.shape == (4, 1)


# -- MLflow model directories ---------------------------------------------------------------

SKLEARN_MLMODEL = """\
flavors:
  python_function:
    env:
      conda: conda.yaml
      virtualenv: python_env.yaml
    loader_module: mlflow.sklearn
    model_path: model.pkl
    predict_fn: predict
    python_version: 3.11.7
  sklearn:
    code: null
    pickled_model: model.pkl
    serialization_format: cloudpickle
    sklearn_version: 1.5.0
mlflow_version: 2.14.1
model_uuid: 0f1e2d3c4b5a69788796a5b4c3d2e1f0
saved_input_example_info:
  artifact_path: input_example.json
  pandas_orient: split
  type: dataframe
signature:
  inputs: '[{"type": "double", "name": "sepal length (cm)", "required": true}, {"type":
    "double", "name": "sepal width (cm)", "required": true}, {"type": "double", "name":
    "petal length (cm)", "required": true}, {"type": "double", "name": "petal width
    (cm)", "required": true}]'
  outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}]'
  params: null
utc_time_created: '2024-06-01 10:00:00.000000'
"""


def test_mlflow_sklearn_dir_loads(tmp_path, iris):
    """MLflow 2's MLmodel for a cloudpickled sklearn model, as `mlflow.sklearn.save_model`
    writes it."""
    import cloudpickle

    clf, X, y = iris
    d = tmp_path / "mlflow_model"
    d.mkdir()
    (d / "MLmodel").write_text(SKLEARN_MLMODEL)
    (d / "model.pkl").write_bytes(cloudpickle.dumps(clf))
    (d / "input_example.json").write_text(
        json.dumps(json.loads(X.head(2).to_json(orient="split")) | {"index": None})
    )
    model = mm.load(d, trust=True)
    assert model.flavor == "sklearn" and model.metadata["source_format"] == "mlflow"
    assert model.predict(X.head(5)).tolist() == clf.predict(X.head(5)).tolist()
    with pytest.raises(SignatureError, match="missing column 'petal width"):
        model.predict(X.head(2).drop(columns=["petal width (cm)"]))
    assert list(model.input_example.columns) == list(X.columns)


def test_mlflow3_skops_dir_loads(tmp_path, iris):
    """MLflow 3 saves sklearn models with skops by default (this MLmodel is MLflow 3.17's)."""
    sio = pytest.importorskip("skops.io")
    clf, X, y = iris
    d = tmp_path / "sk"
    d.mkdir()
    (d / "MLmodel").write_text((FIXTURES / "mlflow3_sklearn_MLmodel").read_text())
    sio.dump(clf, d / "model.skops")
    model = mm.load(d)
    assert model.predict(X.head(5)).tolist() == clf.predict(X.head(5)).tolist()


def test_mlflow3_custom_python_model_loads_without_mlflow():
    """A custom mlflow.pyfunc.PythonModel written by MLflow 3.17 (its pickle refers into
    mlflow, which stand-in modules provide while it loads)."""
    d = FIXTURES / "mlflow3_custom_pyfunc"
    if sys.version_info[:2] != (3, 11):
        pytest.skip("the fixture's pickle holds Python 3.11 code")
    model = mm.load(d, trust=True)
    X = pd.DataFrame(
        [[5.1, 3.5, 1.4, 0.2]],
        columns=["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"],
    )
    assert model.predict(X).tolist() == [pytest.approx(11.2)]
    assert "mlflow" not in sys.modules or hasattr(sys.modules["mlflow"], "__version__")


def test_mlflow_dir_with_unknown_loader_needs_mlflow(tmp_path):
    pytest.importorskip("yaml")
    if "mlflow" in sys.modules:
        pytest.skip("MLflow is installed here")
    (tmp_path / "MLmodel").write_text(
        "flavors:\n  python_function:\n    loader_module: mlflow.pytorch\n  pytorch: {}\n"
    )
    with pytest.raises(ModelError, match="needs MLflow to load: pip install mlflow"):
        mm.load(tmp_path)


@pytest.mark.filterwarnings("ignore:X does not have valid feature names")
def test_serving_shortcut_gives_the_same_predictions(tmp_path, iris):
    """Serving hands plain estimators an array; pipelines that select columns by name still
    get a DataFrame."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf, X, y = iris
    cols = ["petal length (cm)", "petal width (cm)"]
    pipe = make_pipeline(
        ColumnTransformer([("s", StandardScaler(), cols)]), type(clf)(max_iter=500)
    ).fit(X, y)
    for name, est in (("plain", clf), ("pipe", pipe)):
        mm.save(est, tmp_path / name, input_example=X.head(3))
        served = mm.load(tmp_path / name).for_serving()
        table = pa.Table.from_pandas(X, preserve_index=False)
        assert served.predict(table).tolist() == est.predict(X).tolist(), name
