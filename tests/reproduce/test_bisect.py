"""`mlvc bisect`: a regression planted in each section in turn (code, a data file, a param,
an environment variable the script reads) and in two changes that only matter together,
found by real probes (the script runs); probes recorded with lineage, reused, run in
parallel; and the errors. Checked through the library, the CLI and one real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlvc import Repo
from mlvc.cli import main
from mlvc.errors import NotDeterministic, NotReproducible, ProbeFailed, UsageError
from mlvc.reproduce.bisect import ddmin

BIN = Path(sys.executable).parent

TRAIN = """\
import json, os, sys
from pathlib import Path

scale, mode = float(sys.argv[1]), sys.argv[2]
values = [float(x) for x in Path("data/values.csv").read_text().split()]
acc = sum(values) / len(values) * scale
acc += float(os.environ.get("BIAS", "0"))
if mode == "strict" and Path("data/flag.txt").read_text().strip() == "on":
    acc -= 0.3
Path("metrics.json").write_text(json.dumps({"accuracy": round(acc, 6)}))
"""

TOML = """\
[env]
variables = ["BIAS"]

[entry_points.main]
command = "python train.py {scale} {mode} --log-every {log_every}"
metrics = ["metrics.json"]
data = ["data"]

[entry_points.main.params]
scale = { type = "float", default = 1.0 }
mode = { type = "str", default = "lenient" }
log_every = { type = "int", default = 10 }
"""


@pytest.fixture
def proj(project, monkeypatch) -> Path:
    """conftest's project (it ends with fsck) made a tiny trainer whose accuracy depends on
    its code, two data files, two params and the variable $BIAS."""
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv("BIAS", raising=False)
    (project / "train.py").write_text(TRAIN)
    (project / "helper.py").write_text("HELP = 1\n")
    (project / "mlvc.toml").write_text(TOML)
    (project / "data" / "values.csv").write_text("0.9\n0.98\n")
    (project / "data" / "flag.txt").write_text("off\n")
    return project


def record(repo: Repo, name: str, *params: str) -> str:
    (outcome,) = repo.run_entry("main", params, name=name, echo=lambda _: None)
    assert outcome.status == "finished", outcome
    return outcome.run_id.hex


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def plant_code(root, mp):
    edit(root / "train.py", "* scale\n", "* scale * 0.5\n")
    (root / "helper.py").write_text("HELP = 2\n")  # code that changes nothing
    return ["log_every=20"]


def plant_data(root, mp):
    (root / "data" / "values.csv").write_text("0.2\n0.3\n")
    edit(root / "train.py", "import json", "# a comment\nimport json")
    return []


def plant_param(root, mp):
    return ["scale=0.5", "log_every=20"]


def plant_env(root, mp):
    mp.setenv("BIAS", "-0.25")
    (root / "helper.py").write_text("HELP = 3\n")
    return ["log_every=5"]


def plant_together(root, mp):
    (root / "data" / "flag.txt").write_text("on\n")  # matters only with mode=strict
    return ["mode=strict", "log_every=20"]


CASES = {
    "code": (plant_code, [("code", "train.py")], "hunk @@"),
    "data": (plant_data, [("data", "data/values.csv")], "data data/values.csv"),
    "param": (plant_param, [("params", "scale")], "param scale 1.0 → 0.5"),
    "env": (plant_env, [("env", "BIAS")], "env $BIAS (unset) → -0.25"),
    "together": (
        plant_together,
        [("data", "data/flag.txt"), ("params", "mode")],
        "together with param mode lenient → strict",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_planted_change_is_named(proj, monkeypatch, case):
    plant, want, phrase = CASES[case]
    repo = Repo(proj)
    a = record(repo, "A")
    b = record(repo, "B", *plant(proj, monkeypatch))
    monkeypatch.delenv("BIAS", raising=False)  # probes set variables from the records
    res = repo.bisect("A", "B", "accuracy", echo=lambda _: None)
    doc = res.to_dict()
    got = [(c["section"], c.get("path") or c.get("key")) for c in doc["culprits"]]
    assert got == want
    assert doc["a"] == {"run": a, "value": 0.94} and doc["b"]["run"] == b
    assert doc["reruns"] == len(doc["probes"]) >= 3
    # A and B re-ran to their own values, and every probe is A-like or B-like here
    assert doc["probes"][0]["metric"] == 0.94 and doc["probes"][0]["outcome"] == "A"
    assert doc["probes"][1]["outcome"] == "B"
    assert {p["outcome"] for p in doc["probes"]} <= {"A", "B"}
    from mlvc.reproduce.bisect import render_bisection

    text = "\n".join(render_bisection(res))
    assert text.startswith(f"metric accuracy: 0.94 → {doc['b']['value']:.10g}")
    assert phrase in text
    assert "not by " in text  # the harmless changes are named as innocent
    # every probe is a run whose parents are A and B, out of the way of HEAD
    for p in doc["probes"]:
        run = repo.run(p["id"])
        assert [x.hex for x in run.parents] == [a, b] and run.tags["bisect.a"] == a
    assert repo.resolve("HEAD").hex == b


def test_parallel_probes_then_a_second_bisect_reuses_them_all(proj, monkeypatch):
    repo = Repo(proj)
    record(repo, "A")
    record(repo, "B", *plant_together(proj, monkeypatch))
    first = repo.bisect("A", "B", "accuracy", jobs=2, echo=lambda _: None).to_dict()
    assert first["reruns"] == len(first["probes"])
    assert not list((proj / ".mlvc" / "worktrees").iterdir())  # scratch folders removed
    # the CLI, in this process: the same verdict, nothing run again
    done = CliRunner().invoke(main, ["bisect", "A", "B", "--metric", "accuracy", "--json"])
    assert done.exit_code == 0, done.output
    again = json.loads(done.stdout)  # probes' own output never reaches stdout
    assert again["reruns"] == 0 and all(p["reused"] for p in again["probes"])
    assert again["culprits"] == first["culprits"]
    assert {p["id"] for p in again["probes"]} <= {p["id"] for p in first["probes"]}
    lineage = CliRunner().invoke(main, ["lineage", "A"]).output
    assert lineage.count("bisect probe of") == len(first["probes"])


def test_errors_are_one_line(proj, monkeypatch):
    repo = Repo(proj)
    record(repo, "A")
    with pytest.raises(UsageError, match="metric accuracy is the same in both runs"):
        repo.bisect("A", "A", "accuracy")
    bare = repo.commit("no command", metrics={"accuracy": 0.5})
    with pytest.raises(NotReproducible, match=rf"run {bare[:10]} .*records no command"):
        repo.bisect("A", bare, "accuracy")
    record(repo, "B", "scale=0.5")
    with pytest.raises(UsageError, match="neither run .* has metric 'loss' .*accuracy"):
        repo.bisect("A", "B", "loss")
    with pytest.raises(UsageError, match="-j 0"):
        repo.bisect("A", "B", "accuracy", jobs=0)
    with pytest.raises(UsageError, match="--rtol -1"):
        repo.bisect("A", "B", "accuracy", rtol=-1)
    with pytest.raises(UsageError, match=r"the same in both runs \(0.94 and 0.47, within rtol 1\)"):
        repo.bisect("A", "B", "accuracy", rtol=1.0)  # 0.47 is within 100% of 0.94
    r = CliRunner().invoke(main, ["bisect", "A", "B", "--metric", "loss"])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "Traceback" not in r.output


def test_a_failing_probe_is_named_with_its_log(proj, monkeypatch):
    repo = Repo(proj)
    record(repo, "A")
    # B's code reads a data file that B added: code from B with data from A crashes
    edit(proj / "train.py", "acc = sum", 'Path("data/extra.csv").read_text()\nacc = 0.1 + sum')
    (proj / "data" / "extra.csv").write_text("1\n")
    record(repo, "B")
    with pytest.raises(
        ProbeFailed,
        match=r"probe \w{10} \(from B: code train.py\) exited with "
        r"code 1; its output: `mlvc show \w{10}:logs/main.log`",
    ) as e:
        repo.bisect("A", "B", "accuracy", echo=lambda _: None)
    probe = str(e.value).split()[1]
    log = b"".join(repo.cat(f"{probe}:logs/main.log")).decode()
    assert "FileNotFoundError" in log and "extra.csv" in log


def test_a_run_that_does_not_reproduce_its_metric_stops_bisect(proj, monkeypatch):
    repo = Repo(proj)
    edit(proj / "train.py", "acc = sum", "import time\nacc = time.time_ns() % 1000 / 1e4 + sum")
    record(repo, "A")
    record(repo, "B", "scale=0.5")
    with pytest.raises(
        NotDeterministic,
        match=r"re-running run \w{10} as recorded gave "
        r"accuracy=.* but it recorded .*not deterministic",
    ):
        repo.bisect("A", "B", "accuracy", echo=lambda _: None)


def test_end_to_end_in_a_real_process(proj, monkeypatch):
    repo = Repo(proj)
    record(repo, "A")
    record(repo, "B", *plant_param(proj, monkeypatch))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLVC_INDEX")}
    done = subprocess.run(
        [str(BIN / "mlvc"), "bisect", "A", "B", "--metric", "accuracy", "-j", "2"],
        cwd=proj, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("metric accuracy: 0.94 → 0.47")
    assert lines[1] == "caused by param scale 1.0 → 0.5"
    assert lines[2] == "not by params (log_every 10 → 20)"
    assert "probe " in done.stderr  # progress goes to stderr


def ddmin_with(bad: set[int], n: int, jobs: int = 1) -> list[int]:
    """ddmin over n single changes where a probe is B-like iff it holds every ``bad``."""
    calls = []

    def first_b_like(cands):
        for k, c in enumerate(cands):
            calls.append(c)
            if bad <= c:
                return k
        return None

    found = ddmin([[i] for i in range(n)], first_b_like)
    return sorted(i for g in found for i in g)


@pytest.mark.parametrize("bad", [{0}, {7}, {2, 9}, {0, 5, 11}, {3, 4}])
def test_ddmin_returns_exactly_the_interacting_set(bad):
    assert ddmin_with(bad, 12) == sorted(bad)


def test_changes_that_each_move_the_metric_part_way_are_both_named(proj, monkeypatch):
    repo = Repo(proj)
    record(repo, "A")
    (proj / "data" / "values.csv").write_text("0.5\n0.58\n")  # alone: 0.54, neither A nor B
    record(repo, "B", "scale=0.5")  # alone: 0.47; together: 0.27
    res = repo.bisect("A", "B", "accuracy", echo=lambda _: None)
    doc = res.to_dict()
    assert [(c["section"], c.get("path") or c.get("key")) for c in doc["culprits"]] == [
        ("data", "data/values.csv"),
        ("params", "scale"),
    ]
    assert {p["outcome"] for p in doc["probes"]} == {"A", "B", "neither"}
    from mlvc.reproduce.bisect import render_bisection

    assert "gave a value near neither A's nor B's" in "\n".join(render_bisection(res))


def test_what_probes_cannot_vary_is_reported(proj):
    from mlvc.core.ids import ObjectId
    from mlvc.core.objects import Run
    from mlvc.reproduce.bisect import _not_varied
    from mlvc.reproduce.probe import Side

    def side(packages, logged):
        run = Run(params={"lr": 0.1, **logged}, command=("python", "t.py"))
        facts = {"python": {"version": "3.11.7"}, "packages": packages, "variables": {"X": "1"}}
        return Side(ObjectId(bytes(32)), run, {}, {}, {"lr": 0.1}, "python t.py", (), {}, facts)

    lines = _not_varied(side({"numpy": "1.26.0"}, {"epochs_run": 3}),
                        side({"numpy": "2.0.1"}, {"epochs_run": 5}))  # fmt: skip
    assert any("numpy 1.26.0 → 2.0.1" in line for line in lines)
    assert "param epochs_run 3 → 5 (logged by the script)" in lines
    assert not any("$X" in line or "lr" in line for line in lines)  # varied, or unchanged


def test_a_run_without_a_template_is_bisected_by_its_whole_command(proj):
    repo = Repo(proj)
    record(repo, "A")  # from the entry point's template
    argv = ["python", "train.py", "0.5", "lenient"]
    subprocess.run(argv, cwd=proj, check=True)
    value = json.loads((proj / "metrics.json").read_text())["accuracy"]
    (proj / "helper.py").write_text("HELP = 9\n")
    repo.commit("by hand", name="B", command=argv, metrics={"accuracy": value}, data=["data"])
    doc = repo.bisect("A", "B", "accuracy", echo=lambda _: None).to_dict()
    assert doc["culprits"] == [
        {
            "section": "command",
            "key": "argv",
            "a": ["python", "train.py", "1.0", "lenient", "--log-every", "10"],
            "b": argv,
        }
    ]
    # `mlvc run` set PYTHONHASHSEED=0 and `mlvc commit` did not: a change, and innocent
    innocent = [(c["section"], c.get("path") or c.get("key")) for c in doc["not_culprits"]]
    assert innocent == [("code", "helper.py"), ("env", "PYTHONHASHSEED")]


def test_two_bisects_at_once_then_one_killed_and_run_again(proj, monkeypatch):
    repo = Repo(proj)
    record(repo, "A")
    record(repo, "B", "scale=0.5")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLVC_INDEX")}

    def bisect_process(b: str, **kw) -> subprocess.Popen:
        cmd = [str(BIN / "mlvc"), "bisect", "A", b, "--metric", "accuracy", "--json"]
        return subprocess.Popen(cmd, cwd=proj, env=env, text=True, stderr=subprocess.PIPE, **kw)

    procs = [bisect_process("B", stdout=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    docs = [json.loads(o) for o, _ in outs]
    assert (
        docs[0]["culprits"]
        == docs[1]["culprits"]
        == [{"section": "params", "key": "scale", "a": 1.0, "b": 0.5}]
    )
    # kill -9 a bisect of other runs as soon as its first probe is recorded
    record(repo, "C", *plant_together(proj, monkeypatch))
    victim = bisect_process("C", stdout=subprocess.DEVNULL)
    for line in victim.stderr:
        if "(ran)" in line:
            victim.kill()
            break
    victim.wait()
    victim.stderr.close()
    res = repo.bisect("A", "C", "accuracy", echo=lambda _: None).to_dict()
    assert [c.get("path") or c.get("key") for c in res["culprits"]] == ["data/flag.txt", "mode"]
    assert res["reruns"] < len(res["probes"])  # what the killed one recorded is reused
    live = proj / ".mlvc" / "live"
    assert not [p for p in live.iterdir() if not p.name.startswith(".pin-")]  # none staged
    repo.gc()  # the killed process's pins (its probes' trees) go with it
    assert not list(live.iterdir())
