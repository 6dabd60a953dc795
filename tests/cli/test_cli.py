"""Every command through click's CliRunner, checked through the library."""

import json
import os

import pytest

from mlvc import Repo
from mlvc.core.ids import ObjectId
from mlvc.core.objects import Run


def test_init_creates_repository_found_from_subfolders(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from mlvc.cli import main

    r = CliRunner().invoke(main, ["init", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "p" / ".mlvc" / "config").read_text().count('hash = "blake3"') == 1
    (tmp_path / "p" / "a" / "b").mkdir(parents=True)
    assert Repo(tmp_path / "p" / "a" / "b").root == (tmp_path / "p").resolve()
    again = CliRunner().invoke(main, ["init", str(tmp_path / "p")])
    assert again.exit_code == 3 and "already an mlvc repository" in again.output
    quiet = CliRunner().invoke(main, ["init", "-q", str(tmp_path / "q")])
    assert quiet.exit_code == 0 and quiet.output == ""  # as `git init -q`, for scripts
    assert (tmp_path / "q" / ".mlvc" / "config").exists()
    loud = CliRunner().invoke(main, ["init", "--quiet", str(tmp_path / "q")])
    assert loud.exit_code == 3 and "already an mlvc repository" in loud.output  # errors still


def test_outside_a_repository_says_to_init(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from mlvc.cli import main

    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["log"])
    assert r.exit_code == 3
    assert "not an mlvc repository" in r.output and "mlvc init" in r.output
    assert "Traceback" not in r.output


def test_commit_records_everything(cli, repo, project):
    r = cli(
        "commit",
        "-m",
        "first",
        "-n",
        "base",
        "-p",
        "lr=0.01",
        "-p",
        "epochs=3",
        "-p",
        "opt=adam",
        "-p",
        "nesterov=true",
        "-M",
        "acc=0.91",
        "--data",
        "data",
        "-t",
        "baseline",
        "-t",
        "team=vision",
    )
    assert "base" in r.output and "first" in r.output
    run = repo.run("HEAD")
    assert run.message == "first" and run.name == "base"
    assert run.params == {"lr": 0.01, "epochs": 3, "opt": "adam", "nesterov": True}
    assert run.metrics == {"acc": 0.91}
    assert run.tags == {"baseline": "", "team": "vision"}
    shown = repo.show("HEAD")
    assert {e["path"] for e in shown["data"]["entries"]} == {"data/train.csv", "data/test.csv"}
    assert {e["path"] for e in shown["code"]["entries"]} == {"train.py", "src/model.py"}
    assert shown["env"]["packages"] > 5
    assert repo.resolve("baseline") == repo.resolve("base") == repo.resolve("HEAD")


def test_commit_params_and_metrics_files(cli, repo, project):
    (project / "params.yaml").write_text("model:\n  layers: 4\n  act: relu\nlr: 0.1\n")
    (project / "hp.toml").write_text("[optim]\nmomentum = 0.9\n")
    (project / "metrics.json").write_text(json.dumps({"val": {"loss": 0.25}, "acc": 1}))
    cli("commit", "--params", "params.yaml", "--params", "hp.toml", "--metrics", "metrics.json")
    run = repo.run("HEAD")
    assert run.params == {"model.layers": 4, "model.act": "relu", "lr": 0.1, "optim.momentum": 0.9}
    assert run.metrics == {"val.loss": 0.25, "acc": 1.0}


def test_mlvc_toml_gives_defaults(cli, repo, project):
    (project / "out").mkdir()
    (project / "out" / "model.bin").write_bytes(b"\x00weights")
    (project / "mlvc.toml").write_text('[track]\ndata = ["data"]\nartifacts = ["out"]\n')
    cli("commit", "-m", "defaults")
    s = repo.show("HEAD")
    assert s["data"]["files"] == 2 and s["artifacts"]["files"] == 1
    assert "out/model.bin" not in {e["path"] for e in s["code"]["entries"]}


@pytest.mark.parametrize(
    "args, needle",
    [
        (["-p", "oops"], "bad param 'oops'"),
        (["-p", "=3"], "bad param '=3'"),
        (["-M", "acc=high"], "metric 'acc'"),
        (["--data", "nope"], "path nope does not exist"),
        (["--params", "missing.json"], "cannot read"),
        (["-n", "bad name"], "invalid run name"),
    ],
)
def test_commit_bad_input_is_one_clear_line(cli, args, needle):
    r = cli("commit", *args, ok=False)
    assert r.exit_code == 2
    assert needle in r.output
    assert "Traceback" not in r.output and r.output.count("\n") == 1


def test_log_and_json(cli, repo):
    cli("commit", "-m", "one", "-q")
    cli("commit", "-m", "two", "-q")
    out = cli("log").output
    assert out.index("two") < out.index("one")
    runs = json.loads(cli("log", "--json").output)
    assert [r["message"] for r in runs] == ["two", "one"]
    assert len(json.loads(cli("log", "--json", "-n", "1").output)) == 1
    assert "Params" in cli("log", "-l").output or "two" in cli("log", "-l").output


def test_show_sections_and_cat(cli, repo, project):
    cli("commit", "-m", "x", "--data", "data", "-p", "lr=0.5")
    s = json.loads(cli("show", "HEAD", "--json").output)
    for key in ("id", "params", "metrics", "code", "data", "artifacts", "env", "git", "parents"):
        assert key in s
    assert s["params"] == {"lr": 0.5}
    assert cli("show", "HEAD:data/train.csv").output == "x,y\n1,2\n2,4\n"
    assert "data/train.csv" in cli("show").output
    missing = cli("show", "HEAD:nope.txt", ok=False)
    assert missing.exit_code == 4 and "no file 'nope.txt'" in missing.output


def test_status_shows_changes(cli, repo, project):
    cli("commit", "-q", "--data", "data")
    assert "nothing changed" in cli("status").output
    (project / "train.py").write_text("print('v2')\n")
    (project / "new.py").write_text("x = 1\n")
    (project / "data" / "test.csv").unlink()
    st = json.loads(cli("status", "--json").output)
    assert st["code"] == {"added": ["new.py"], "removed": [], "modified": ["train.py"]}
    assert st["data"]["removed"] == ["data/test.csv"]


def test_diff_json_has_every_section(cli, repo, project):
    cli("commit", "-q", "-p", "lr=0.1", "-M", "acc=0.5", "--data", "data")
    (project / "train.py").write_text("print('v2')\n")
    (project / "data" / "train.csv").write_text("x,y\n1,2\n")
    cli("commit", "-q", "-p", "lr=0.2", "-M", "acc=0.75", "--data", "data")
    d = json.loads(cli("diff", "HEAD~1", "HEAD", "--json").output)
    assert {"params", "metrics", "code", "data", "artifacts", "env"} <= set(d)
    assert d["params"]["changed"] == {"lr": [0.1, 0.2]}
    assert d["metrics"]["acc"]["delta"] == pytest.approx(0.25)
    assert [m["path"] for m in d["code"]["modified"]] == ["train.py"]
    assert [m["path"] for m in d["data"]["modified"]] == ["data/train.csv"]
    text = cli("diff", "HEAD~1", "HEAD", "--patch", "--no-color").output
    assert "lr" in text and "-print('training')" in text and "+print('v2')" in text
    same = json.loads(cli("diff", "HEAD", "HEAD", "--json").output)
    assert same["params"] == {"changed": {}, "added": {}, "removed": {}}


def test_checkout_to_dir_reproduces_bytes(cli, repo, project, tmp_path):
    (project / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(project / "run.sh", 0o755)
    os.symlink("train.py", project / "link.py")
    cli("commit", "-q", "--data", "data")
    first = repo.resolve("HEAD")
    (project / "train.py").write_text("changed\n")
    cli("commit", "-q", "--data", "data")
    out = tmp_path / "replay"
    cli("checkout", first.hex[:8], "--to", str(out))
    assert (out / "train.py").read_text() == "print('training')\n"
    assert (out / "data" / "train.csv").read_bytes() == (
        project / "data" / "train.csv"
    ).read_bytes()
    assert os.access(out / "run.sh", os.X_OK)
    assert os.readlink(out / "link.py") == "train.py"
    assert repo.head() != first  # --to does not move HEAD
    only = tmp_path / "only-data"
    cli("checkout", "HEAD", "--to", str(only), "--only", "data")
    assert sorted(p.name for p in only.rglob("*") if p.is_file()) == ["test.csv", "train.csv"]


def test_checkout_in_place_protects_uncommitted_changes(cli, repo, project):
    cli("commit", "-q", "--data", "data")
    first = repo.resolve("HEAD")
    (project / "train.py").write_text("v2\n")
    (project / "extra.py").write_text("new file\n")
    cli("commit", "-q", "--data", "data")
    (project / "train.py").write_text("v3 not committed\n")
    r = cli("checkout", first.hex, ok=False)
    assert r.exit_code == 6 and "train.py" in r.output and "--force" in r.output
    assert (project / "train.py").read_text() == "v3 not committed\n"
    cli("checkout", first.hex, "--force")
    assert (project / "train.py").read_text() == "print('training')\n"
    assert not (project / "extra.py").exists()  # recorded by HEAD, absent from target
    assert repo.head() == first


def test_query_formats(cli, repo, project, tmp_path):
    cli("commit", "-q", "-n", "a", "-p", "lr=0.1", "-M", "acc=0.5")
    cli("commit", "-q", "-n", "b", "-p", "lr=0.2", "-M", "acc=0.7")
    sql = 'SELECT name, "params.lr", "metrics.acc" FROM runs_wide ORDER BY name'
    table = cli("query", sql).output
    assert "params.lr" in table and "(2 rows)" in table
    rows = json.loads(cli("query", sql, "--format", "json").output)
    assert rows == [
        {"name": "a", "params.lr": 0.1, "metrics.acc": 0.5},
        {"name": "b", "params.lr": 0.2, "metrics.acc": 0.7},
    ]
    csv = cli("query", sql, "-f", "csv").output.splitlines()
    assert csv[0].replace('"', "") == "name,params.lr,metrics.acc" and len(csv) == 3
    out = tmp_path / "r.parquet"
    cli("query", sql, "-f", "parquet", "-o", str(out))
    import pyarrow.parquet as pq

    assert pq.read_table(out).num_rows == 2
    bad = cli("query", "SELEC nonsense", ok=False)
    assert bad.exit_code == 7 and "Traceback" not in bad.output
    write = cli("query", "DELETE FROM runs", ok=False)
    assert write.exit_code == 7
    assert repo.query("SELECT count(*) AS n FROM runs").to_pylist() == [{"n": 2}]


def test_deleted_index_is_rebuilt_identically(cli, repo, project):
    for i in range(3):
        cli("commit", "-q", "-p", f"i={i}", "-M", f"m={i / 2}", "--data", "data")
    sql = "SELECT * FROM runs_wide ORDER BY id"
    before = repo.query(sql)
    files_before = repo.query("SELECT * FROM files ORDER BY run_id, section, path")
    os.unlink(project / ".mlvc" / "index.duckdb")
    fresh = Repo(project)
    assert fresh.query(sql).equals(before)
    assert fresh.query("SELECT * FROM files ORDER BY run_id, section, path").equals(files_before)
    assert "3 runs" in cli("index", "rebuild").output
    assert fresh.query(sql).equals(before)


@pytest.mark.damages_repo
def test_fsck_finds_flipped_byte(cli, repo, project):
    cli("commit", "-q", "--data", "data")
    assert cli("fsck").output.startswith("ok")
    entry = repo.show("HEAD")["data"]["entries"][0]
    path, offset, length = repo.store.location(ObjectId.parse(entry["id"]))
    os.chmod(path, 0o644)
    raw = bytearray(path.read_bytes())
    raw[offset + length - 1] ^= 1
    path.write_bytes(bytes(raw))
    r = cli("fsck", ok=False)
    assert r.exit_code == 9 and entry["id"] in r.output
    co = cli("checkout", "HEAD", "--to", str(project.parent / "out"), ok=False)
    assert co.exit_code == 5 and "corrupt object" in co.output
    assert not (project.parent / "out" / entry["path"]).exists()


def test_run_addressing(cli, repo, project):
    ids = []
    for i in range(3):
        (project / "train.py").write_text(f"v{i}\n")
        cli("commit", "-q", "-n", f"r{i}")
        ids.append(repo.resolve("HEAD"))
    assert repo.resolve("HEAD~2") == repo.resolve("r0") == ids[0]
    assert repo.resolve("HEAD^") == repo.resolve("r2~1") == ids[1]
    assert repo.resolve(ids[1].hex[:12]) == ids[1]
    cli("tag", "r1", "best")
    assert repo.resolve("best") == ids[1]
    r = cli("show", "r9", ok=False)
    assert r.exit_code == 4 and "unknown run 'r9'" in r.output and "r0" in r.output


@pytest.mark.damages_repo
def test_ambiguous_prefix_lists_candidates(repo, project):
    from mlvc.core.ids import ObjectId
    from mlvc.errors import AmbiguousRun

    a, b = (
        ObjectId(bytes.fromhex("abcd01" + "0" * 58)),
        ObjectId(bytes.fromhex("abcd02" + "0" * 58)),
    )
    repo.refs.add_run(a)
    repo.refs.add_run(b)
    with pytest.raises(AmbiguousRun) as err:
        repo.resolve("abcd")
    assert err.value.candidates == [a.short, b.short]
    assert "ambiguous" in str(err.value) and a.short in str(err.value)


def test_version_and_help_fast_paths():
    from click.testing import CliRunner

    from mlvc.cli import main

    assert "mlvc" in CliRunner().invoke(main, ["--version"]).output
    assert "commit" in CliRunner().invoke(main, ["--help"]).output


def test_cli_reference_is_current():
    import subprocess
    import sys
    from pathlib import Path

    top = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "scripts/gen_cli_docs.py", "--check"], cwd=top)
    assert r.returncode == 0, "docs/cli.md is stale: run python scripts/gen_cli_docs.py"


def test_run_object_is_the_record(repo, project):
    oid = repo.commit("api", params={"a": 1}, metrics={"m": 2.5})
    run = repo.run(oid)
    assert isinstance(run, Run) and run.params == {"a": 1} and run.metrics == {"m": 2.5}
    assert repo.fsck() == []


def test_checkout_relative_spec_in_place_reports_the_target(cli, repo, project):
    cli("commit", "-q")
    first = repo.resolve("HEAD")
    (project / "train.py").write_text("v2\n")
    cli("commit", "-q")
    out = cli("checkout", "HEAD~1").output
    assert out.startswith(f"checked out {first.short}") and repo.head() == first
