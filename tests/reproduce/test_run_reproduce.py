"""End to end, as a user would: `mlvc run` and `mlvc reproduce` as real processes in
temporary projects, checked through the library."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from mlvc import Repo
from mlvc.capture import capture_env
from mlvc.core.objects import Env
from mlvc.runs.record import capture_inputs
from mlvc.store.typed import read_env, write_object

BIN = Path(sys.executable).parent

TRAIN = """
import argparse, json, random
from pathlib import Path
import mlvc
p = argparse.ArgumentParser()
p.add_argument("--lr", type=float, required=True)
p.add_argument("--epochs", type=int, required=True)
p.add_argument("--seed", type=int, required=True)
a = p.parse_args()
mlvc.seed_everything(a.seed)
w = [random.gauss(0, 1) for _ in range(4)]
for epoch in range(a.epochs):
    w = [x - a.lr * x for x in w]
    print(f"epoch {epoch} loss {sum(x * x for x in w):.6f}")
Path("model").mkdir(exist_ok=True)
Path("model/weights.json").write_text(json.dumps(w))
Path("metrics.json").write_text(json.dumps({"loss": sum(x * x for x in w)}))
"""

STAMP = """
import time
from pathlib import Path
Path("stamp.txt").write_text(f"trained at {time.time_ns()}\\n")
Path("model").mkdir(exist_ok=True)
Path("model/weights.json").write_text("[1, 2, 3]\\n")
"""

LIVE = """
import sys
from pathlib import Path
import mlvc
with mlvc.start_run(params={"arch": "mlp"}) as run:
    for i in range(int(sys.argv[1])):
        mlvc.log_metric("loss", 1.0 / (i + 1), step=i)
    Path("out.txt").write_text("done\\n")
    run.log_text("notes", "notes.txt")
    with mlvc.start_run(name="child-eval") as child:
        child.log_metric("acc", 0.5)
    import mlvc.models
    mlvc.models.log_model(lambda d: d, "ident", registered_model_name="ident")
"""

TOML = """
[entry_points.train]
command = "python train.py --lr {lr} --epochs {epochs} --seed {seed}"
outputs = ["model"]
metrics = ["metrics.json"]

[entry_points.train.params]
lr = { type = "float", default = 0.1 }
epochs = { type = "int", default = 3 }
seed = 0

[entry_points.stamp]
command = "python stamp.py"
outputs = ["stamp.txt", "model"]

[entry_points.live]
command = "python live.py {steps}"
outputs = ["out.txt"]
params = { steps = 5 }

[entry_points.fail]
command = "python -c 'import sys; print(\\"boom\\"); sys.exit(3)'"
outputs = ["model"]
metrics = ["metrics.json"]
"""


@pytest.fixture
def proj(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PATH", environ()["PATH"])  # `python` is this venv's, in process too
    root = tmp_path / "proj"
    root.mkdir()
    for name, text in (("train.py", TRAIN), ("stamp.py", STAMP), ("live.py", LIVE)):
        (root / name).write_text(text)
    (root / "mlvc.toml").write_text(TOML)
    Repo.init(root)
    return root


def environ(**more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLVC_", "PYTHONHASHSEED"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        MLVC_AUTHOR="Test Author <test@example.com>",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CEILING_DIRECTORIES=str(Path.cwd().anchor),
    )
    env.update(more)
    return env


def mlvc(root: Path, *args: str, code: int = 0, **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(BIN / "mlvc"), *args], cwd=root, env=environ(**env), capture_output=True, text=True
    )
    assert done.returncode == code, f"mlvc {' '.join(args)}: {done.returncode}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done


def inproc(root: Path, *args: str, code: int = 0):
    """The same command in this process (click's runner): for checks that run nothing."""
    from click.testing import CliRunner

    from mlvc.cli import main

    done = CliRunner().invoke(main, ["-C", str(root), *args])
    assert done.exit_code == code, f"mlvc {' '.join(args)}: {done.exit_code}\n{done.output}"
    assert done.exception is None or isinstance(done.exception, SystemExit), done.exception
    return done


def files(repo: Repo, spec: str, section: str = "artifacts") -> dict[str, str]:
    return {e["path"]: e["id"] for e in repo.show(spec)[section]["entries"]}


# -- mlvc run --------------------------------------------------------------------------------


def test_run_records_command_params_outputs_log_and_exit_code(proj):
    done = mlvc(proj, "run", "train", "-P", "lr=0.5", "-m", "first")
    assert "epoch 2 loss" in done.stdout
    repo = Repo(proj)
    run = repo.run("HEAD")
    assert run.command == ("python", "train.py", "--lr", "0.5", "--epochs", "3", "--seed", "0")
    assert run.params == {"lr": 0.5, "epochs": 3, "seed": 0, "mlvc.seed": 0}
    assert run.exit_code == 0 and run.status == "finished" and run.message == "first"
    assert set(files(repo, "HEAD")) == {"model/weights.json", "metrics.json", "logs/train.log"}
    assert b"".join(repo.cat("HEAD:logs/train.log")).decode() == done.stdout
    assert set(run.metrics) == {"loss"} and run.metrics["loss"] > 0
    assert {"train.py", "mlvc.toml"} <= set(files(repo, "HEAD", "code"))
    assert "model/weights.json" not in files(repo, "HEAD", "code")
    env = read_env(repo.store, run.env).facts
    assert env["variables"]["PYTHONHASHSEED"] == "0"  # set by mlvc run
    assert run.extra["entry_point"]["name"] == "train"
    inproc(proj, "run", "train", "-P", "epochs=1", "--no-hashseed")
    second = repo.run("HEAD")
    assert second.parents == (repo.resolve("HEAD~1"),)
    assert "PYTHONHASHSEED" not in read_env(repo.store, second.env).facts["variables"]
    assert repo.fsck() == []


def test_failing_command_is_recorded_and_exits_10(proj):
    (proj / "model").mkdir()
    (proj / "model" / "old.bin").write_text("from an earlier run")
    (proj / "metrics.json").write_text('{"acc": 0.99}')
    done = mlvc(proj, "run", "fail", code=10)
    assert "boom" in done.stdout
    assert "the command exited with code 3" in done.stderr
    assert "model is unchanged since before the run, so not recorded" in done.stderr
    run = Repo(proj).run("HEAD")
    assert run.status == "failed" and run.exit_code == 3
    assert run.metrics == {}  # the stale metrics file is not this run's
    assert set(files(Repo(proj), "HEAD")) == {"logs/fail.log"}
    assert b"boom" in b"".join(Repo(proj).cat("HEAD:logs/fail.log"))


def test_sweep_runs_the_grid_in_parallel_each_a_run(proj):
    repo = Repo(proj)
    head = repo.commit("before the sweep")
    done = mlvc(proj, "run", "train", "--sweep", "lr=0.1,0.2", "--sweep", "epochs=1,2", "-j", "2")
    assert "[epochs=2 lr=0.2] epoch 1 loss" in done.stdout  # parallel output is labelled
    runs = [repo.run(r["id"]) for r in repo.log() if r["id"] != head.hex]
    assert sorted((r.params["lr"], r.params["epochs"]) for r in runs) == [
        (0.1, 1), (0.1, 2), (0.2, 1), (0.2, 2),
    ]  # fmt: skip
    assert all(r.parents == (head,) for r in runs)
    assert repo.head() == head  # parallel outputs are not in the project: HEAD stays
    assert len({r.tags["sweep"] for r in runs}) == 1
    assert len({r.artifacts for r in runs}) == 4  # each its own outputs, none overwritten
    assert not list((proj / ".mlvc" / "worktrees").iterdir())
    assert not [p for p in (proj / ".mlvc" / "live").iterdir()]


def test_a_scripts_live_run_joins_the_run_mlvc_run_records(proj):
    repo = Repo(proj)
    mlvc(proj, "run", "live", "-P", "steps=4")
    run = repo.run("HEAD")
    assert run.params == {"steps": 4, "arch": "mlp"}
    assert run.metrics == {"loss": 0.25}
    assert run.series is not None and run.exit_code == 0
    assert {"out.txt", "notes.txt", "logs/live.log"} <= set(files(repo, "HEAD"))
    (child,) = run.extra["children"]
    assert repo.run(child).name == "child-eval"
    assert len(repo.log()) == 2  # the run and its nested child, nothing else
    assert set(run.models) == {"ident"}  # a model the script logged, registered...
    from mlvc.refs import registry

    assert registry.get(repo.refs, "ident", 1).run_id == repo.head().hex  # ...knows its run


def test_mlproject_runs_unchanged(proj):
    (proj / "MLproject").write_text(
        "name: demo\npython_env: python_env.yaml\nentry_points:\n  main:\n"
        "    parameters:\n      alpha: {type: float, default: 0.5}\n      data: path\n"
        '    command: "python fit.py --alpha {alpha} --data {data}"\n'
    )
    (proj / "python_env.yaml").write_text("python: '3'\ndependencies: []\n")
    (proj / "fit.py").write_text("import sys; open('fit.txt', 'w').write(' '.join(sys.argv))\n")
    mlvc(proj, "run", "-P", "data=my data.csv")
    repo = Repo(proj)
    run = repo.run("HEAD")
    assert run.params == {"alpha": 0.5, "data": "my data.csv"}
    assert run.command == ("python", "fit.py", "--alpha", "0.5", "--data", "my data.csv")
    env = read_env(repo.store, run.env).facts
    assert "python_env.yaml" in env["requirements"]


# -- mlvc reproduce --------------------------------------------------------------------------


def test_deterministic_run_reproduces_exact(proj, tmp_path):
    mlvc(proj, "run", "train", "-P", "seed=7", "-n", "base")
    repo = Repo(proj)
    orig = repo.resolve("base")
    done = mlvc(proj, "reproduce", "base", "--to", str(tmp_path / "again"))
    assert "\nEXACT: all 2 outputs byte-identical, all 1 metrics equal\n" in done.stdout
    assert "environment: the same as recorded" in done.stderr
    new = repo.run(repo.log()[0]["id"])
    assert new.reproduces == orig and new.parents == (orig,)
    assert repo.head() == orig  # a reproduction does not move HEAD
    [verdict] = repo.events(types=["reproduce.verdict"])
    assert verdict.data["verdict"] == "EXACT" and verdict.data["original"] == orig.hex
    assert verdict.data["reproduction"] == str(repo.log()[0]["id"])
    runs = [e.type for e in repo.events(types=["run.*"])]
    assert runs == ["run.started", "run.finished"] * 2  # mlvc run, then the reproduction
    assert files(repo, new.reproduces) == {
        **files(repo, repo.log()[0]["id"]),
        "logs/train.log": files(repo, "base")["logs/train.log"],
    }
    weights = (tmp_path / "again" / "model" / "weights.json").read_text()
    assert weights == (proj / "model" / "weights.json").read_text()
    graph = inproc(proj, "lineage", "base").stdout
    assert f"reproduces {orig.short}: EXACT" in graph and "(HEAD)" in graph
    assert repo.fsck() == []


def test_clock_in_an_output_reproduces_different_and_names_the_file(proj):
    mlvc(proj, "run", "stamp")
    repo = Repo(proj)
    old = files(repo, "HEAD")
    done = mlvc(proj, "reproduce", "HEAD", code=11)
    out = done.stdout
    assert out.startswith("DIFFERENT: 1 output, 0 metrics differ")
    assert "output stamp.txt differs" in out and f"old {old['stamp.txt']}" in out
    assert "model/weights.json" not in out  # identical outputs are not named
    assert "did not reproduce (DIFFERENT)" in done.stderr
    assert f"`mlvc checkout {repo.log()[0]['short_id']} --to DIR` brings its files back" in (
        done.stderr
    )  # the temporary folder is gone: the re-run's files are in its run


def test_a_run_without_a_command_says_so(proj):
    Repo(proj).commit("by hand")
    done = inproc(proj, "reproduce", "HEAD", code=12)
    assert "records no command: it was made with `mlvc commit`" in done.stderr


def test_package_versions_that_differ_are_named(proj):
    """A run recorded with click 0.0.1, re-run where click is newer: the report says so."""
    (proj / "check.py").write_text(
        "from importlib.metadata import version\n"
        "open('out.txt', 'w').write('click ' + version('click'))\n"
    )
    (proj / "out.txt").write_text("click 0.0.1")
    repo = Repo(proj)
    facts = capture_env(proj)
    facts["packages"]["click"] = "0.0.1"
    inputs = capture_inputs(repo, artifacts=["out.txt"], cwd=proj, env=False)
    inputs = replace(inputs, env=write_object(repo.store, Env(facts)))
    oid = repo.commit("old click", command=("python", "check.py"), inputs=inputs)
    done = mlvc(proj, "reproduce", oid.hex, code=11)
    assert "environment differences from the recorded run" in done.stderr
    assert "click 0.0.1 →" in done.stderr  # reported before the re-run
    assert "output out.txt differs" in done.stdout
    explained = done.stdout.split("environment differences that may explain it:")[1]
    assert "click 0.0.1 →" in explained and "(upgraded)" in explained


# -- --env recorded --------------------------------------------------------------------------


def make_wheel(folder: Path, name: str, version: str) -> Path:
    """A minimal pure-Python wheel, so pip can install it with no network and no index."""
    dist = f"{name}-{version}.dist-info"
    content = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = ""
    for path, text in content.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record += f"{path},sha256={digest.decode()},{len(text.encode())}\n"
    content[f"{dist}/RECORD"] = record + f"{dist}/RECORD,,\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in content.items():
            z.writestr(path, text)
    return wheel


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_env_recorded_builds_a_virtualenv_from_the_record_offline(proj, tmp_path, installer):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "mlvctinypkg", "1.0")
    make_wheel(wheels, "mlvctinypkg", "2.0")  # pip must pick the recorded one, not the newest
    (proj / "check.py").write_text(
        "import mlvctinypkg\nopen('out.txt', 'w').write(mlvctinypkg.VERSION)\n"
    )
    (proj / "out.txt").write_text("1.0")
    repo = Repo(proj)
    facts = capture_env(proj)
    inputs = capture_inputs(repo, artifacts=["out.txt"], cwd=proj, env=False)
    ids = {}
    for version in ("1.0", "9.9"):
        facts.update(packages={"mlvctinypkg": version}, package_sources={}, installers={})
        env_id = write_object(repo.store, Env(facts))
        ids[version] = repo.commit(
            version, command=("python", "check.py"), inputs=replace(inputs, env=env_id)
        )
    offline = {
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheels),
        "MLVC_ENV_INSTALLER": installer,
    }
    done = mlvc(
        proj, "reproduce", ids["1.0"].hex, "--env", "recorded", "--to", str(tmp_path / "r"),
        **offline,
    )  # fmt: skip
    assert "\nEXACT" in "\n" + done.stdout, done.stdout + done.stderr
    assert f"installing 1 recorded packages with {installer}" in done.stderr
    new = repo.run(repo.log()[0]["id"])
    got = read_env(repo.store, new.env).facts
    assert got["packages"]["mlvctinypkg"] == "1.0"
    cached = proj / ".mlvc" / "cache" / "envs" / repo.run(ids["1.0"]).env.hex
    assert got["python"]["executable"].startswith(str(cached))
    assert json.loads((cached / "mlvc-env.json").read_text())["installer"] == installer

    bad = mlvc(proj, "reproduce", ids["9.9"].hex, "--env", "recorded", code=13, **offline)
    assert "cannot install mlvctinypkg==9.9" in bad.stderr
    assert len(bad.stderr.strip().splitlines()[-1]) < 300  # one line, no pip dump


def test_reproduce_input_errors(proj, tmp_path):
    Repo(proj).commit("x", command=("python", "stamp.py"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    done = inproc(proj, "reproduce", "HEAD", "--to", str(tmp_path / "full"), code=2)
    assert "is not empty" in done.stderr
    assert "unknown run 'nope'" in inproc(proj, "reproduce", "nope", code=4).stderr
    assert "tolerance" in inproc(proj, "reproduce", "HEAD", "--rtol", "-1", code=2).stderr


def test_run_errors_are_one_line_before_anything_runs(proj):
    done = inproc(proj, "run", "train", "-P", "lr=fast", code=2)
    assert done.stderr == "mlvc: error: param lr=fast is not a valid float; expected e.g. lr=0.01\n"
    done = inproc(proj, "run", "train", "--sweep", "epochs=1,x", code=2)
    assert "param epochs=x is not a valid int" in done.stderr
    assert Repo(proj).log() == []  # nothing ran: every sweep point is checked first
    assert json.loads(inproc(proj, "lineage", "--json").stdout) == []
