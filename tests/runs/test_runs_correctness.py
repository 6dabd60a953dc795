"""Issue 9 (live runs, params, tracked files, reproduce): what is refused at entry, what is
never lost at commit or reap, and what reproduce says. Each test failed before its fix."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import mlvc
from mlvc import Repo
from mlvc.core.params import MAX_PARAM_BYTES
from mlvc.errors import UsageError

BIN = Path(sys.executable).parent
BIG = 2**100  # a 128-bit-style seed


def _env(**more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLVC_", "PYTHONHASHSEED"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        MLVC_AUTHOR="Test Author <test@example.com>",
        MLVC_INDEX_SYNC="inline",
        GIT_CONFIG_NOSYSTEM="1",
    )
    env.update(more)
    return env


def _py(root: Path, code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=root,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _mlvc(root: Path, *args: str, code: int = 0, **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(BIN / "mlvc"), *args], cwd=root, env=_env(**env), capture_output=True, text=True
    )
    assert done.returncode == code, f"mlvc {' '.join(args)}: {done.returncode}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done


def _one_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("mlvc: error: "), result.output
    return lines[0]


def _live_dir(repo: Repo) -> list[str]:
    base = repo.layout.live
    return sorted(p.name for p in base.iterdir()) if base.is_dir() else []


def _store_files(repo: Repo) -> set[str]:
    return {str(p.relative_to(repo.dir)) for p in (repo.dir / "objects").rglob("*") if p.is_file()}


# -- 3. ints that cannot be stored -----------------------------------------------------------


def test_log_param_refuses_an_int_outside_int64_and_the_run_goes_on(repo):
    with mlvc.start_run(repo=repo, name="seeded") as run:
        with pytest.raises(UsageError) as err:
            run.log_param("seed", BIG)
        assert "\n" not in str(err.value)
        assert "'seed'" in str(err.value) and "64-bit" in str(err.value)
        run.log_param("seed", str(BIG))  # what the message suggests
        run.log_param("small", 2**63 - 1)
        run.log_metric("loss", 0.5)
    rec = repo.run(run.id)
    assert rec.status == "finished"
    assert rec.params == {"seed": str(BIG), "small": 2**63 - 1}
    assert repo.fsck() == []


def test_a_staged_run_whose_meta_holds_unstorable_values_is_recorded_not_lost(repo):
    run = mlvc.start_run(repo=repo, name="odd")
    run.log_metric("loss", 0.25)
    # what an older mlvc (or a hand edit) may have staged: none of it can be stored as is
    run.staged.meta["params"] = {
        "seed": BIG,
        "neg": -(2**70),
        "": 1,
        "bad\x1bkey": 2,
        "LR": 0.1,
        "lr": 0.2,
        "blob": "x" * (MAX_PARAM_BYTES + 10),
        "nested": {"a": [1, 2]},
    }
    run.staged.meta["tags"] = {"ok": "yes", "t": BIG}
    run.staged.save()
    oid = run.end()
    rec = repo.run(oid)
    assert rec.status == "finished" and rec.name == "odd"
    assert rec.params["seed"] == str(BIG) and rec.params["neg"] == str(-(2**70))
    assert rec.params["LR"] == 0.1 and "lr" not in rec.params
    assert len(rec.params["blob"].encode()) <= MAX_PARAM_BYTES
    assert rec.params["nested"] == json.dumps({"a": [1, 2]}, sort_keys=True)
    assert rec.tags["t"] == str(BIG)
    notes = rec.extra["unstorable"]
    assert {"seed", "neg", "lr", "blob"} <= set(notes["params"])
    assert {repr(""), repr("bad\x1bkey")} <= set(notes["dropped_params"])
    assert rec.metrics == {"loss": 0.25}
    assert _live_dir(repo) == []
    assert repo.fsck() == []


KILLED_WITH_BIG = """
    import json, os, signal
    import mlvc
    run = mlvc.start_run(name="big-seed")
    run.log_metric("loss", 0.5)
    run.flush()
    meta = run.dir / "meta.json"
    data = json.loads(meta.read_text())
    data["params"] = {"seed": 2**100}
    meta.write_text(json.dumps(data))
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_reaper_records_a_dead_run_with_an_unstorable_param(project, repo):
    done = _py(project, KILLED_WITH_BIG)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert repo.log() == []  # a read records nothing
    repo.reap()
    runs = repo.log()
    assert [r["status"] for r in runs] == ["killed"]
    rec = repo.run(runs[0]["id"])
    assert rec.params == {"seed": str(BIG)} and rec.metrics == {"loss": 0.5}
    assert "seed" in rec.extra["unstorable"]["params"]
    assert _live_dir(repo) == []
    assert repo.fsck() == []


@pytest.mark.parametrize(
    "args, what",
    [
        (["-p", "seed=18446744073709551616"], "'seed'"),
        (["-p", "seed=9223372036854775808"], "'seed'"),
        (["-p", "seed=-9223372036854775809"], "'seed'"),
        (["-M", "acc=" + "9" * 400], "'acc'"),
        (["-M", "acc=1e400"], "'acc'"),  # overflows to inf: write inf when inf is meant
        (["-M", "acc=" + "9" * 5000], "'acc'"),  # past Python's 4,300-digit int limit
        (["-p", "seed=" + "9" * 5000], "'seed'"),
    ],
)
def test_cli_numbers_out_of_range_are_one_line_errors(cli, repo, args, what):
    result = cli("commit", "-m", "x", *args, ok=False)
    line = _one_line_error(result)
    assert len(line) < 300
    assert what in line
    assert repo.head() is None


def test_nested_params_from_the_api_are_flattened_like_files(repo):
    oid = repo.commit("nested", params={"opt": {"lr": 0.1, "betas": [0.9, 0.99]}})
    assert repo.run(oid).params == {"opt.lr": 0.1, "opt.betas": "[0.9, 0.99]"}
    with pytest.raises(UsageError, match="'seed'"):
        repo.commit("big", params={"seed": BIG})


def test_int64_bounds_are_accepted(cli, repo):
    cli("commit", "-p", f"hi={2**63 - 1}", "-p", f"lo={-(2**63)}")
    assert repo.run("HEAD").params == {"hi": 2**63 - 1, "lo": -(2**63)}
    rows = repo.query("SELECT key, value FROM params ORDER BY key").to_pylist()
    assert rows == [{"key": "hi", "value": str(2**63 - 1)}, {"key": "lo", "value": str(-(2**63))}]


def test_params_files_and_metrics_files_are_checked_like_the_cli(cli, repo, project):
    (project / "p.json").write_text(json.dumps({"model": {"seed": 2**64}}))
    line = _one_line_error(cli("commit", "--params", "p.json", ok=False))
    assert "p.json" in line and "'model.seed'" in line
    (project / "m.json").write_text('{"acc": ' + "9" * 400 + "}")
    line = _one_line_error(cli("commit", "--metrics", "m.json", ok=False))
    assert "m.json" in line and "'acc'" in line
    assert repo.head() is None


def test_mlvc_run_param_out_of_range_is_refused_before_running(cli, repo, project):
    (project / "mlvc.toml").write_text(
        '[entry_points.go]\ncommand = "python -c pass"\n[entry_points.go.params]\nseed = 0\n'
    )
    line = _one_line_error(cli("run", "go", "-P", f"seed={2**64}", ok=False))
    assert "'seed'" in line
    line = _one_line_error(cli("run", "train.py", "-P", f"extra={2**64}", ok=False))
    assert "'extra'" in line
    assert repo.head() is None


def test_log_metric_refuses_what_cannot_be_a_point(repo):
    with mlvc.start_run(repo=repo) as run:
        for bad in (
            lambda: run.log_metric("loss", 10**400),
            lambda: run.log_metric("loss", "high"),
            lambda: run.log_metric("loss", 1.0, step=2**63),
            lambda: run.log_metric("loss", 1.0, timestamp=1e300),
        ):
            with pytest.raises(UsageError):
                bad()
        run.log_metric("loss", 0.5, step=3)
    assert repo.run(run.id).metrics == {"loss": 0.5}
    assert repo.fsck() == []


def test_a_millisecond_timestamp_comes_back_the_same_millisecond(repo):
    # MLflow sends integer milliseconds; seconds as a float times 1e9 truncated one short
    stamps = [1764547200.123, 1764547200.999, 1700000000.001, 1764547200.011, 1764547200]
    stamps += [ms / 1000 for ms in range(1764547200000, 1764547200400)]
    with mlvc.start_run(repo=repo) as run:
        for i, ts in enumerate(stamps):
            run.log_metric("loss", 0.5, step=i, timestamp=ts)
    rows = repo.query(
        "SELECT epoch_us(timestamp) AS us FROM metrics WHERE key = 'loss' ORDER BY step"
    )
    assert rows.column("us").to_pylist() == [round(ts * 1000) * 1000 for ts in stamps]


# -- 4. a reaper killed while it works -------------------------------------------------------

DEAD_RUN = """
    import os, signal
    import mlvc
    run = mlvc.start_run(name="victim", params={"lr": 0.1})
    for i in range(10):
        run.log_metric("loss", 1.0 / (i + 1))
    run.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""

REAP = "from mlvc import Repo; Repo().reap()"


def _dead_run(project: Path) -> None:
    done = _py(project, DEAD_RUN)
    assert done.returncode == -signal.SIGKILL, done.stderr


def _recorded(repo: Repo) -> list[dict]:
    return [r for r in repo.log() if r["name"] == "victim"]


def _check_one_victim(repo: Repo) -> None:
    repo.reap()  # what the next command that writes does
    runs = _recorded(repo)
    assert len(runs) == 1, runs
    rec = repo.run(runs[0]["id"])
    assert rec.status == "killed" and rec.params == {"lr": 0.1}
    n = repo.query("SELECT count(*) AS n FROM metrics WHERE key = 'loss'").to_pylist()[0]["n"]
    assert n == 10
    assert _live_dir(repo) == []
    assert repo.fsck() == []


def test_a_claim_left_by_a_dead_reaper_is_finished_by_the_next(project, repo):
    _dead_run(project)
    (key,) = _live_dir(repo)
    # what a reaper killed right after its claim leaves (pid 2**22 + 1 cannot be running)
    os.rename(repo.layout.live / key, repo.layout.live / f".reaping-{key}-{2**22 + 1}")
    _check_one_victim(repo)


@pytest.mark.parametrize("point", ["reap-claimed", "reap-stored", "reap-published"])
def test_a_reaper_killed_at_any_point_loses_nothing_and_records_once(project, repo, point):
    _dead_run(project)
    done = _py(project, REAP, MLVC_FAULT=point)
    assert done.returncode == -signal.SIGKILL, (point, done.stderr)
    _check_one_victim(repo)
    assert len(repo.log()) == 1


END_KILLED = """
    import mlvc
    with mlvc.start_run(name="victim", params={"lr": 0.1}) as run:
        for i in range(10):
            run.log_metric("loss", 1.0 / (i + 1))
"""


@pytest.mark.parametrize("point", ["end-stored", "end-published"])
def test_a_run_killed_while_it_records_itself_is_recorded_once(project, repo, point):
    done = _py(project, END_KILLED, MLVC_FAULT=point)
    assert done.returncode == -signal.SIGKILL, (point, done.stderr)
    repo.reap()  # what the next command that writes does
    runs = _recorded(repo)
    assert len(runs) == 1, runs
    assert runs[0]["status"] == "finished"  # it had finished: the record says so
    assert _live_dir(repo) == []
    assert len(repo.log()) == 1
    assert repo.fsck() == []


@pytest.mark.parametrize("point", ["run-stored", "run-published"])
def test_mlvc_run_killed_while_it_records_is_recorded_once(project, repo, point):
    (project / "mlvc.toml").write_text('[entry_points.go]\ncommand = "python -c pass"\n')
    done = _mlvc(project, "run", "go", "-n", "victim", code=-signal.SIGKILL, MLVC_FAULT=point)
    assert done.returncode == -signal.SIGKILL
    repo.reap()  # what the next command that writes does
    runs = repo.log()
    assert [(r["name"], r["status"]) for r in runs] == [("victim", "finished")]
    assert repo.run(runs[0]["id"]).exit_code == 0
    assert repo.head().hex == runs[0]["id"]
    assert _live_dir(repo) == []
    assert repo.fsck() == []


def test_a_half_removed_recorded_run_is_cleared_not_recorded_again(project, repo):
    with mlvc.start_run(repo=repo, name="done") as run:
        run.log_metric("loss", 1.0)
    leftover = repo.layout.live / f".unstaged-{run.key}-0000"  # its remover was killed
    (leftover / "series").mkdir(parents=True)
    (leftover / "meta.json").write_text(json.dumps({"pid": 2**22 + 1, "inputs": {}}))
    repo.reap()
    assert [r["name"] for r in repo.log()] == ["done"]
    assert _live_dir(repo) == []


# -- 5. tracked params and metrics files, whatever .gitignore says ---------------------------


def _tracked_project(project: Path) -> None:
    (project / "mlvc.toml").write_text('[track]\nparams = ["params.json"]\nmetrics = ["m.json"]\n')
    (project / ".gitignore").write_text("m.json\nparams.json\n")


def test_ignored_tracked_files_are_stored_restored_and_compared(cli, repo, project):
    _tracked_project(project)
    (project / "params.json").write_text('{"lr": 0.1}')
    (project / "m.json").write_text('{"acc": 0.5}')
    old = repo.commit("old")
    (project / "params.json").write_text('{"lr": 0.2}')
    (project / "m.json").write_text('{"acc": 0.9}')
    new = repo.commit("new")
    assert repo.run(new).metrics == {"acc": 0.9}
    repo.checkout(old.hex)
    assert json.loads((project / "m.json").read_text()) == {"acc": 0.5}
    assert json.loads((project / "params.json").read_text()) == {"lr": 0.1}
    st = repo.status()
    assert all(not any(st[s].values()) for s in ("code", "data", "artifacts")), st
    (project / "m.json").write_text('{"acc": 0.7}')
    (project / "params.json").write_text('{"lr": 0.3}')
    st = repo.status()
    assert st["artifacts"]["modified"] == ["m.json"]
    assert st["code"]["modified"] == ["params.json"]
    # (rewritten before committing: trusting what status cached is issue 9 item 1's subject)
    (project / "m.json").write_text('{"acc": 0.75}')
    (project / "params.json").write_text('{"lr": 0.35}')
    again = repo.commit("again")
    assert repo.run(again).metrics == {"acc": 0.75} and repo.run(again).params == {"lr": 0.35}
    assert repo.fsck() == []


def test_a_live_run_records_the_tracked_metrics_file_it_wrote(repo, project):
    _tracked_project(project)
    (project / "params.json").write_text('{"lr": 0.1}')
    assert not (project / "m.json").exists()  # written by the run, so not there at its start
    with mlvc.start_run(repo=repo) as run:
        (project / "m.json").write_text('{"acc": 0.5}')
    rec = repo.run(run.id)
    assert rec.metrics == {"acc": 0.5} and rec.params == {"lr": 0.1}
    shown = repo.show(run.id)
    assert [e["path"] for e in shown["artifacts"]["entries"]] == ["m.json"]
    assert "params.json" in [e["path"] for e in shown["code"]["entries"]]
    assert repo.fsck() == []


def test_a_run_whose_metrics_file_is_ignored_reproduces_exact(project, tmp_path):
    _tracked_project(project)
    (project / "params.json").write_text('{"lr": 0.1}')
    (project / "train.py").write_text(
        "import json\nlr = json.load(open('params.json'))['lr']\n"
        "json.dump({'acc': lr * 2}, open('m.json', 'w'))\n"
    )
    subprocess.run([sys.executable, "train.py"], cwd=project, check=True)
    _mlvc(project, "commit", "-m", "trained", "--command", "python train.py")
    done = _mlvc(project, "reproduce", "HEAD", "--to", str(tmp_path / "again"))
    assert done.stdout.startswith("EXACT: all 1 outputs byte-identical, all 1 metrics equal")


# -- 7. runs too big to read back ------------------------------------------------------------


def test_a_param_too_big_is_refused_before_anything_is_written(cli, repo, project):
    repo.commit("first")
    head, before = repo.head(), _store_files(repo)
    (project / "p.json").write_text(json.dumps({"vocab": "w" * (MAX_PARAM_BYTES + 1)}))
    line = _one_line_error(cli("commit", "-m", "big", "--params", "p.json", ok=False))
    assert "p.json" in line and "'vocab'" in line and str(MAX_PARAM_BYTES) in line
    assert repo.head() == head and _store_files(repo) == before
    (project / "p.json").write_text(json.dumps({"vocab": "w" * MAX_PARAM_BYTES}))
    cli("commit", "-m", "at the limit", "--params", "p.json")


def test_a_run_record_over_the_reader_limit_is_refused(repo, project, monkeypatch):
    from mlvc.core import objects

    monkeypatch.setattr(objects, "MAX_OBJECT_BYTES", 200_000)  # the reader's limit, smaller
    head = repo.commit("first")
    before = _store_files(repo)
    with pytest.raises(UsageError, match=r"run record .* over the .* limit.*message") as err:
        repo.commit("m" * 300_000)
    assert "\n" not in str(err.value)
    assert repo.head() == head and _store_files(repo) == before


def test_a_live_run_refuses_a_param_or_tag_too_big_when_logged(repo):
    with mlvc.start_run(repo=repo) as run:
        with pytest.raises(UsageError, match=str(MAX_PARAM_BYTES)):
            run.log_param("vocab", "w" * (MAX_PARAM_BYTES + 1))
        with pytest.raises(UsageError, match=str(MAX_PARAM_BYTES)):
            run.set_tag("note", "w" * (MAX_PARAM_BYTES + 1))
        run.log_param("ok", 1)
    assert repo.run(run.id).params == {"ok": 1}


# -- 13a. keys -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["", "a\x00b", "\x1b]0;pwned\x07", "lr\n", " lr", "1lr"])
def test_params_file_keys_get_the_cli_check(cli, repo, project, key):
    (project / "p.json").write_text(json.dumps({key: 1, "ok": 2}))
    line = _one_line_error(cli("commit", "--params", "p.json", ok=False))
    assert "p.json" in line and "\x1b" not in line and "\x00" not in line
    assert repo.head() is None


def test_keys_with_a_trailing_newline_are_refused_in_live_runs(repo):
    with mlvc.start_run(repo=repo) as run:
        for bad in (
            lambda: run.log_param("lr\n", 1),
            lambda: run.log_metric("loss\n", 1.0),
            lambda: run.set_tag("t\n", "x"),
        ):
            with pytest.raises(UsageError):
                bad()
        run.log_param("lr", 1)
    assert repo.run(run.id).params == {"lr": 1} and repo.run(run.id).metrics == {}


def test_start_run_refuses_bad_params_and_tags_before_the_run_exists(repo):
    for kw in (
        {"params": {"seed": BIG}},
        {"params": {"LR": 1, "lr": 2}},
        {"tags": {"a/b": "x"}},
        {"name": "no spaces"},
    ):
        with pytest.raises(UsageError):
            mlvc.start_run(repo=repo, **kw)
    assert _live_dir(repo) == []
    assert repo.log() == []  # nothing half-started for a reaper to record as killed


def test_a_tag_no_ref_can_hold_is_refused_when_set_not_lost_at_the_end(repo):
    with mlvc.start_run(repo=repo) as run:
        with pytest.raises(UsageError, match="tag"):
            run.set_tag("team/vision", "x")
        with pytest.raises(UsageError, match="name"):
            mlvc.start_run(repo=repo, name="bad name")
        run.log_metric("loss", 0.1)
    assert repo.run(run.id).status == "finished"


def test_keys_differing_only_in_case_are_refused(cli, repo, project):
    line = _one_line_error(cli("commit", "-p", "LR=1", "-p", "lr=2", ok=False))
    assert "'LR'" in line and "'lr'" in line
    (project / "p.yaml").write_text("LR: 1\nlr: 2\n")
    line = _one_line_error(cli("commit", "--params", "p.yaml", ok=False))
    assert "p.yaml" in line
    (project / "p.json").write_text('{"Lr": 1}')
    _one_line_error(cli("commit", "--params", "p.json", "-p", "lr=2", ok=False))
    (project / "m.json").write_text('{"ACC": 1, "acc": 2}')
    _one_line_error(cli("commit", "--metrics", "m.json", ok=False))
    (project / "n.json").write_text('{"a.b": 1, "a": {"b": 2}}')
    assert "'a.b'" in _one_line_error(cli("commit", "--params", "n.json", ok=False))
    assert repo.head() is None
    with mlvc.start_run(repo=repo) as run:
        run.log_param("LR", 1)
        with pytest.raises(UsageError, match="'LR'"):
            run.log_param("lr", 1)
        run.log_metric("Loss", 1.0)
        with pytest.raises(UsageError, match="'Loss'"):
            run.log_metric("loss", 1.0)
    assert repo.run(run.id).params == {"LR": 1}


# -- 15. nothing to compare ------------------------------------------------------------------


def test_a_run_with_nothing_to_compare_says_so(project, tmp_path):
    (project / "mlvc.toml").write_text('[entry_points.noop]\ncommand = "python -c pass"\n')
    _mlvc(project, "run", "noop")
    done = _mlvc(project, "reproduce", "HEAD", "--to", str(tmp_path / "r"), code=15)
    assert done.stdout.startswith("NOTHING TO COMPARE")
    assert "no outputs and no metrics" in done.stdout
    js = _mlvc(project, "reproduce", "HEAD", "--json", "--to", str(tmp_path / "s"), code=15)
    assert json.loads(js.stdout)["verdict"] == "NOTHING TO COMPARE"


def test_nothing_to_compare_is_a_verdict_of_judge(repo):
    from mlvc.core.objects import Run
    from mlvc.reproduce.run import DIFFERENT, NOTHING, judge

    assert judge(repo.store, Run(exit_code=0), Run(exit_code=0)).kind == NOTHING
    assert not judge(repo.store, Run(exit_code=0), Run(exit_code=0)).ok
    assert judge(repo.store, Run(exit_code=0), Run(exit_code=1)).kind == DIFFERENT


# -- 19. docker_env --------------------------------------------------------------------------


def test_mlproject_docker_env_is_not_run_silently(project):
    pytest.importorskip("yaml")
    (project / "MLproject").write_text(
        "name: d\ndocker_env:\n  image: mlflow-docker-example\n"
        'entry_points:\n  main:\n    command: "python -c pass"\n'
    )
    done = _mlvc(project, "run")
    assert "docker_env" in done.stderr and "mlflow-docker-example" in done.stderr
    assert "current environment" in done.stderr


# -- 23. reproduce's scratch folders ---------------------------------------------------------


def test_reproduce_removes_its_temporary_folder_whatever_the_verdict(project, tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    (project / "mlvc.toml").write_text(
        '[entry_points.stamp]\ncommand = "python stamp.py"\noutputs = ["stamp.txt"]\n'
    )
    (project / "stamp.py").write_text(
        "import time\nopen('stamp.txt', 'w').write(str(time.time_ns()))\n"
    )
    _mlvc(project, "run", "stamp")
    done = _mlvc(project, "reproduce", "HEAD", code=11, TMPDIR=str(scratch))
    assert "DIFFERENT" in done.stdout
    assert list(scratch.iterdir()) == []
    # a reproduction that fails before running: the recorded python cannot be found
    from dataclasses import replace

    from mlvc.capture import capture_env
    from mlvc.core.objects import Env
    from mlvc.runs.record import capture_inputs
    from mlvc.store.typed import write_object

    repo = Repo(project)
    facts = capture_env(project)
    facts["python"]["version"] = "2.1.0"
    inputs = capture_inputs(repo, cwd=project, env=False)
    old = repo.commit(
        "py2",
        command=("python", "stamp.py"),
        inputs=replace(inputs, env=write_object(repo.store, Env(facts))),
    )
    done = _mlvc(project, "reproduce", old.hex, "--env", "recorded", code=13, TMPDIR=str(scratch))
    assert "python2.1" in done.stderr
    assert list(scratch.iterdir()) == []


def test_reproduce_removes_its_temporary_folder_on_ctrl_c(project, tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    (project / "mlvc.toml").write_text(
        '[entry_points.slow]\ncommand = "python slow.py"\noutputs = ["out.txt"]\n'
    )
    (project / "slow.py").write_text(
        "import os, sys, time\nopen('out.txt', 'w').write('x')\n"
        "if os.environ.get('SLOW'):\n    print('started', flush=True)\n    time.sleep(60)\n"
    )
    _mlvc(project, "run", "slow")
    proc = subprocess.Popen(
        [str(BIN / "mlvc"), "reproduce", "HEAD"],
        cwd=project,
        env=_env(TMPDIR=str(scratch), SLOW="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    line = proc.stdout.readline()
    deadline = time.time() + 60
    while "started" not in line and time.time() < deadline:
        line = proc.stdout.readline()
    assert "started" in line
    assert [p.name.startswith("mlvc-reproduce-") for p in scratch.iterdir()] == [True]
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert list(scratch.iterdir()) == []


def test_a_zombie_run_process_counts_as_dead(project, repo):
    """A killed training process whose parent has not waited for it yet (a zombie) holds
    no more points: `mlvc runs` records it as killed instead of listing it as running."""
    import time

    script = project / "spin.py"
    script.write_text(
        "import mlvc, time\n"
        "run = mlvc.start_run(name='z')\n"
        "run.log_metric('loss', 1.0)\n"
        "run.flush()\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    p = subprocess.Popen([sys.executable, str(script)], cwd=project, stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline().strip() == b"ready"
        os.kill(p.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        stat = Path(f"/proc/{p.pid}/stat")
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert repo.live_runs() == []  # not waited for: still a zombie here
        assert [r["status"] for r in repo.log()] == ["killed"]
    finally:
        p.wait()
