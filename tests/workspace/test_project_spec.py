"""Projects: entry points, typed params and their errors, command rendering, MLproject."""

from __future__ import annotations

import sys

import pytest

from mlvc.errors import UsageError
from mlvc.workspace.project_spec import EntryPoint, Environment, ParamSpec, command_argv, load_spec

TOML = """
[environment]
python = "3"
requirements = ["envs/requirements.txt"]

[entry_points.train]
command = "python train.py --lr {lr} --epochs {epochs} --opt {opt} --data {data} --fast {fast}"
outputs = ["model", "metrics.json"]
metrics = ["metrics.json"]
data = ["data"]

[entry_points.train.params]
lr = { type = "float", default = 0.01 }
epochs = 10
opt = { type = "choice", choices = ["adam", "sgd"], default = "adam" }
data = { type = "path" }
fast = false
note = { type = "str", required = false }
"""


@pytest.fixture
def spec(tmp_path):
    (tmp_path / "mlvc.toml").write_text(TOML)
    return load_spec(tmp_path)


def test_toml_entry_points_and_environment(spec):
    ep = spec.entry("train")
    assert ep.outputs == ("model", "metrics.json") and ep.metrics == ("metrics.json",)
    assert ep.data == ("data",)
    assert ep.params["epochs"] == ParamSpec("epochs", "int", 10, False)
    assert ep.params["data"].required and ep.params["data"].default is None
    assert not ep.params["note"].required
    assert spec.environment == Environment("3", ("envs/requirements.txt",))


def test_params_are_typed_and_defaults_filled(spec):
    ep = spec.entry("train")
    values = ep.resolve({"lr": "1e-3", "data": "data/train.csv", "fast": "yes", "opt": "sgd"})
    assert values == {
        "lr": 0.001,
        "epochs": 10,
        "opt": "sgd",
        "data": "data/train.csv",
        "fast": True,
    }
    assert ep.render(values) == (
        "python",
        "train.py",
        "--lr",
        "0.001",
        "--epochs",
        "10",
        "--opt",
        "sgd",
        "--data",
        "data/train.csv",
        "--fast",
        "true",
    )


@pytest.mark.parametrize(
    "given, message",
    [
        ({"data": "x", "lrr": "1"}, "entry point 'train' has no param 'lrr' (its params: lr,"),
        ({}, "entry point 'train' needs param 'data' (path); pass -P data=VALUE"),
        ({"data": "x", "epochs": "ten"}, "param epochs=ten is not a valid int; expected e.g."),
        ({"data": "x", "epochs": "2.5"}, "param epochs=2.5 is not a valid int"),
        ({"data": "x", "lr": "fast"}, "param lr=fast is not a valid float"),
        ({"data": "x", "fast": "maybe"}, "param fast=maybe is not a valid bool"),
        ({"data": "x", "opt": "rmsprop"}, "param opt=rmsprop is not one of the choices: adam, sgd"),
    ],
)
def test_param_errors_are_one_clear_line(spec, given, message):
    with pytest.raises(UsageError) as err:
        spec.entry("train").resolve(given)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_values_are_shell_quoted_and_shell_templates_use_sh():
    ep = EntryPoint("e", "python t.py --name {name}", {"name": ParamSpec("name", "str", "x")})
    argv = ep.render({"name": "a b; rm -rf /"})
    assert argv == ("python", "t.py", "--name", "a b; rm -rf /")
    piped = EntryPoint("e", "python t.py {n} | tee out.txt", {"n": ParamSpec("n", "int", 1)})
    assert piped.render({"n": 3}) == ("sh", "-c", "python t.py 3 | tee out.txt")
    assert command_argv("OMP_NUM_THREADS=1 python t.py")[:2] == ("sh", "-c")
    assert command_argv("python t.py 'quoted arg'") == ("python", "t.py", "quoted arg")


@pytest.mark.parametrize(
    "body, message",
    [
        ('[entry_points.a]\ncommand = "python {x}"\n', "uses {x}, which is not a declared param"),
        ("[entry_points.a]\nouts = 1\ncommand = 'x'\n", "unknown key 'outs'"),
        ("[entry_points.a]\ncommand = 'x'\nparams = { p = { type = 'tensor' } }\n", "unknown type"),
        (
            "[entry_points.a]\ncommand = 'x'\nparams = { p = { type = 'choice' } }\n",
            "needs choices",
        ),
        (
            "[entry_points.a]\ncommand = 'x'\nparams = { p = { type = 'int', default = 'a' } }\n",
            "bad default",
        ),
        ("[entry_points.a]\n", "command must be a string"),
        ("[entry_points.a]\ncommand = 'x'\noutputs = ['../up']\n", "must be a path inside"),
        ("[entry_points.a]\ncommand = 'x'\noutputs = ['/abs']\n", "must be a path inside"),
    ],
)
def test_bad_project_files_name_the_problem(tmp_path, body, message):
    (tmp_path / "mlvc.toml").write_text(body)
    with pytest.raises(UsageError) as err:
        load_spec(tmp_path)
    assert message in str(err.value) and "mlvc.toml" in str(err.value)


def test_unknown_entry_point_lists_the_known_ones_and_scripts_run_as_entries(spec, tmp_path):
    with pytest.raises(UsageError, match=r"no entry point 'tran' \(entry points: train\)"):
        spec.entry("tran", tmp_path)
    (tmp_path / "go.py").write_text("")
    ep = spec.entry("go.py", tmp_path)
    assert ep.render(ep.resolve({"k": "2"})) == ("python", "go.py", "--k", "2")


MLPROJECT = """
name: tutorial
python_env: python_env.yaml
entry_points:
  main:
    parameters:
      alpha: {type: float, default: 0.5}
      l1_ratio: {type: float, default: 0.1}
      data: path
    command: "python train.py {alpha} {l1_ratio} --data {data}"
  validate:
    parameters:
      name: string
    command: "python validate.py {name}"
"""


def test_mlproject_files_are_read(tmp_path):
    (tmp_path / "MLproject").write_text(MLPROJECT)
    (tmp_path / "python_env.yaml").write_text("python: '3.11'\ndependencies: [numpy]\n")
    spec = load_spec(tmp_path)
    main = spec.entry("main")
    assert main.params["alpha"] == ParamSpec("alpha", "float", 0.5, False)
    assert main.params["data"].required
    values = main.resolve({"data": "d.csv", "extra": "7"})  # MLflow appends unknown params
    assert main.render(values) == (
        "python", "train.py", "0.5", "0.1", "--data", "d.csv", "--extra", "7",
    )  # fmt: skip
    assert spec.environment == Environment("3.11", ("python_env.yaml",))
    assert spec.entry("validate").params["name"].type == "str"


def test_mlproject_without_pyyaml_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "MLproject").write_text(MLPROJECT)
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(UsageError, match=r"PyYAML is not installed; `pip install pyyaml`"):
        load_spec(tmp_path)


def test_toml_entry_points_win_over_mlproject(tmp_path):
    (tmp_path / "MLproject").write_text(MLPROJECT)
    (tmp_path / "mlvc.toml").write_text('[entry_points.main]\ncommand = "python other.py"\n')
    spec = load_spec(tmp_path)
    assert spec.entry("main").command == "python other.py"
    assert "validate" in spec.entry_points


@pytest.mark.parametrize(
    "want, version, ok",
    [("3.11", "3.11.7", True), ("3.11", "3.1.0", False), ("3", "3.12.0", True),
     (">=3.10", "3.11.7", True), ("<3.10", "3.11.7", False), ("", "3.11.7", True)],
)  # fmt: skip
def test_python_version_check(want, version, ok):
    why = Environment(want).python_mismatch(version)
    assert (why == "") is ok
    if not ok:
        assert f"asks for python {want}, but python is {version}" in why
