"""The pieces behind `mlvc run` and `mlvc reproduce`, in process: verdicts, seeds, lineage,
environments and variables."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

import mlvc
from mlvc.api import fluent
from mlvc.core.objects import Run
from mlvc.errors import EnvironmentBuildFailed
from mlvc.exec.interpreter import find_interpreter, restore_variables, same_interpreter
from mlvc.exec.plan import child_environ, grid
from mlvc.exec.venv import base_python, requirement_lines
from mlvc.reproduce.lineage import Node, render_lineage
from mlvc.reproduce.run import DIFFERENT, EXACT, WITHIN, judge, render_verdict
from mlvc.workspace.trees import build_tree


@pytest.fixture(autouse=True)
def _restore_hash_seed(monkeypatch):
    """seed_everything sets PYTHONHASHSEED; put it back as it was after each test."""
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    yield
    fluent.take_pending_seed()  # a seed left for "the next run" must not reach another test


def _run(store, root: Path, files: dict[str, str], **kw) -> Run:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return Run(artifacts=build_tree(store, root, sorted(files)), **kw)


@pytest.fixture
def two(tmp_path, repo):
    """A run and a maker of re-runs that differ as asked."""
    old = _run(repo.store, tmp_path / "a", {"model.bin": "w=1", "logs/t.log": "x"},
               metrics={"acc": 0.9, "loss": 0.5}, exit_code=0, extra={"log": "logs/t.log"})  # fmt: skip

    def rerun(model="w=1", log="y", **kw):
        base = {
            "metrics": {"acc": 0.9, "loss": 0.5},
            "exit_code": 0,
            "extra": {"log": "logs/t.log"},
        }
        return _run(
            repo.store, tmp_path / "b", {"model.bin": model, "logs/t.log": log}, **{**base, **kw}
        )

    return repo.store, old, rerun


def test_identical_outputs_and_metrics_are_exact_whatever_the_log(two):
    store, old, rerun = two
    v = judge(store, old, rerun(log="other timing"))
    assert v.kind == EXACT and v.ok and v.same_outputs == 1 and v.same_metrics == 2
    assert render_verdict(v) == ["EXACT: all 1 outputs byte-identical, all 2 metrics equal"]


def test_tolerances_decide_within_or_different(two):
    store, old, rerun = two
    close = rerun(model="w=1.0000001", metrics={"acc": 0.9000001, "loss": 0.5})
    assert judge(store, old, close).kind == DIFFERENT  # no tolerance given: any change counts
    v = judge(store, old, close, rtol=1e-6)
    assert v.kind == WITHIN and v.ok
    assert "WITHIN TOLERANCE: 1 output differ" in render_verdict(v)[0]
    far = rerun(model="w=2", metrics={"acc": 0.8, "loss": 0.5})
    v = judge(store, old, far, rtol=1e-3, atol=1e-3)
    assert v.kind == DIFFERENT and not v.ok
    lines = render_verdict(v)
    assert lines[0] == "DIFFERENT: 1 output, 1 metric differ"
    assert "  metric acc: 0.9 -> 0.8 (delta -0.1)" in lines
    missing = rerun(metrics={"acc": 0.9})  # a metric that vanished is never within tolerance
    assert judge(store, old, missing, atol=1.0).kind == DIFFERENT


def test_exit_code_params_and_missing_outputs_are_differences(two, tmp_path, repo):
    store, old, rerun = two
    assert judge(store, old, rerun(exit_code=1)).exit_code == (0, 1)
    v = judge(store, old, rerun(params={"lr": 0.1}), rtol=1.0)
    assert v.kind == DIFFERENT and "  param lr: (none) -> 0.1" in render_verdict(v)
    gone = _run(store, tmp_path / "c", {"logs/t.log": "x"}, metrics=dict(old.metrics), exit_code=0)
    v = judge(store, old, gone, rtol=1.0)
    assert v.kind == DIFFERENT and v.outputs[0]["change"] == "removed"
    assert any("output model.bin is missing" in line for line in render_verdict(v))


def test_environment_differences_explain_a_difference(two):
    store, old, rerun = two
    facts = {"python": {"version": "3.11.7", "executable": "/a/bin/python"},
             "packages": {"numpy": "1.26.4", "torch": "2.1.0"}, "variables": {"OMP_NUM_THREADS": "4"}}  # fmt: skip
    now = {"python": {"version": "3.11.7", "executable": "/b/bin/python"},
           "packages": {"numpy": "2.0.0", "torch": "2.1.0"}, "variables": {}}  # fmt: skip
    v = judge(store, old, rerun(model="w=2"), old_env=facts, new_env=now)
    lines = render_verdict(v)
    assert "environment differences that may explain it:" in lines
    assert "  numpy 1.26.4 → 2.0.0 (upgraded)" in lines
    assert "  - $OMP_NUM_THREADS 4" in lines
    assert not any("executable" in line for line in lines)  # venv paths explain nothing


# -- seeds -----------------------------------------------------------------------------------


def test_seed_everything_seeds_random_numpy_and_sets_the_hash_seed(monkeypatch):
    np = pytest.importorskip("numpy")
    assert mlvc.seed_everything(123) == 123
    first = (random.random(), np.random.rand())
    mlvc.seed_everything(123)
    assert (random.random(), np.random.rand()) == first
    assert os.environ["PYTHONHASHSEED"] == "123"  # for the processes the script starts
    monkeypatch.setenv("MLVC_SEED", "77")
    assert mlvc.seed_everything() == 77  # what `mlvc reproduce` sets from the record
    monkeypatch.delenv("MLVC_SEED")
    assert 0 <= mlvc.seed_everything() < 2**32


def test_torch_is_seeded_when_installed_and_never_imported_when_not(monkeypatch):
    import importlib.machinery
    import importlib.util
    import types

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "torch" else real(n, *a)
    )
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    mlvc.seed_everything(1)
    assert "torch" not in sys.modules
    seeds = []
    fake = types.ModuleType("torch")
    fake.manual_seed = seeds.append
    monkeypatch.setitem(sys.modules, "torch", fake)
    spec = importlib.machinery.ModuleSpec("torch", None)
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: spec if n == "torch" else real(n, *a)
    )
    mlvc.seed_everything(3)
    assert seeds == [3]


def test_seed_is_recorded_in_the_live_run_and_before_it_starts(repo, project):
    with mlvc.start_run() as run:
        mlvc.seed_everything(5)
        with pytest.warns(UserWarning, match="keeping the first"):
            mlvc.seed_everything(6)
    assert repo.run(run.id).params["mlvc.seed"] == 5
    mlvc.seed_everything(9)  # before any run: the next top-level run records it
    with mlvc.start_run() as later:
        pass
    assert repo.run(later.id).params["mlvc.seed"] == 9
    with mlvc.start_run() as third:  # only the next run: this one's RNG was not reset
        pass
    assert "mlvc.seed" not in repo.run(third.id).params


# -- environments and variables --------------------------------------------------------------


def test_find_interpreter_follows_the_commands_path(tmp_path):
    env = {"PATH": f"{Path(sys.executable).parent}"}
    assert find_interpreter(["python", "t.py"], env, tmp_path) == str(
        Path(sys.executable).parent / "python"
    )
    assert find_interpreter(["sh", "-c", "OMP=1 python t.py | tee x"], env, tmp_path).endswith(
        "/python"
    )
    assert find_interpreter(["bash", "train.sh"], env, tmp_path) is None
    assert find_interpreter(["./venv/bin/python3", "t.py"], env, tmp_path) == str(
        tmp_path / "venv/bin/python3"
    )
    assert same_interpreter(sys.executable) and same_interpreter(None)
    assert not same_interpreter("/usr/bin/python3") or Path(sys.executable).parent == Path(
        "/usr/bin"
    )


def test_recorded_variables_are_restored_and_extra_ones_unset():
    now = {"OMP_NUM_THREADS": "8", "HOME": "/h", "API_TOKEN": "s", "MYAPP_X": "1", "TZ": "UTC"}
    env, changes = restore_variables(now, {"PYTHONHASHSEED": "0", "TZ": "UTC"}, ["MYAPP_*"])
    assert env == {"HOME": "/h", "API_TOKEN": "s", "PYTHONHASHSEED": "0", "TZ": "UTC"}
    assert changes == [
        "unset $MYAPP_X (run had it unset; now '1')",
        "unset $OMP_NUM_THREADS (run had it unset; now '8')",
        "$PYTHONHASHSEED=0 (now unset)",
    ]


def test_child_environ_sets_hash_seed_unless_told_or_set():
    assert child_environ({"MLVC_RUN": "x"})["PYTHONHASHSEED"] == "0"
    assert "MLVC_RUN" not in child_environ({"MLVC_RUN": "x"})  # never leaks into a new run
    assert "PYTHONHASHSEED" not in child_environ({}, hashseed=False)
    assert child_environ({"PYTHONHASHSEED": "5"})["PYTHONHASHSEED"] == "5"


def test_requirement_lines_pin_versions_and_sources(tmp_path):
    facts = {
        "packages": {"numpy": "2.0.0", "mine": "0.1", "lib": "1.2", "gone": "3"},
        "package_sources": {
            "mine": {"url": tmp_path.as_uri(), "editable": True},
            "lib": {"url": "https://github.com/o/lib.git", "vcs": "git", "commit": "abc"},
            "gone": {"url": "file:///nonexistent/gone-3.whl", "editable": False},
        },
    }
    assert requirement_lines(facts, "r1") == [
        "gone==3",
        "lib @ git+https://github.com/o/lib.git@abc",
        f"-e {tmp_path}",
        "numpy==2.0.0",
    ]
    facts["package_sources"]["mine"]["url"] = "file:///nonexistent/src"
    with pytest.raises(EnvironmentBuildFailed, match="installed editable from /nonexistent/src"):
        requirement_lines(facts, "r1")


def test_a_recorded_python_that_is_not_installed_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(EnvironmentBuildFailed, match=r"python 2\.7\.18.*no python2\.7 is on PATH"):
        base_python("2.7.18")
    assert base_python(".".join(map(str, sys.version_info[:3]))) == sys.executable


def test_grid_is_every_combination():
    assert grid({"a": "1"}, ["b=1,2", "c=x,y"]) == [
        {"a": "1", "b": "1", "c": "x"}, {"a": "1", "b": "1", "c": "y"},
        {"a": "1", "b": "2", "c": "x"}, {"a": "1", "b": "2", "c": "y"},
    ]  # fmt: skip


# -- lineage ---------------------------------------------------------------------------------


def _node(i: str, parents=(), reproduces=None, verdict="") -> Node:
    return Node(
        i * 10,
        i * 4,
        "",
        "finished",
        "",
        f"run {i}",
        "",
        list(parents),
        reproduces and reproduces * 10,
        verdict,
    )


def test_lineage_keeps_lines_straight_and_hangs_reproductions_off_them():
    runs = [
        _node("a"),
        _node("b", ["a" * 10]),
        _node("r", ["b" * 10], "b", "EXACT"),
        _node("c", ["b" * 10]),
        _node("x", ["c" * 10]),
        _node("y", ["c" * 10]),
        _node("z", ["y" * 10]),
        _node("w", ["x" * 10]),
    ]
    nodes = {n.id: n for n in runs}
    for n in runs:
        if n.parents:
            nodes[n.parents[0]].children.append(n.id)
    lines = render_lineage(nodes, focus="c" * 10, head="z" * 10)
    assert lines == [
        "* aaaa  finished  run a",
        "* bbbb  finished  run b",
        "├─ rrrr  reproduces bbbb: EXACT",
        "* cccc  finished  run c  (<- this run)",
        "├─ xxxx  finished  run x",
        "│  * wwww  finished  run w",
        "└─ yyyy  finished  run y",
        "   * zzzz  finished  run z  (HEAD)",
    ]
