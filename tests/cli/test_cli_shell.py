"""The CLI shell prints what the library returns: ``--json`` is the result's own dict, and
what the shell used to decide alone (content types, repo choice, verdict errors, the gc
grace period) lives in the library, where a server finds it too."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

import mlvc
from mlvc.core.ids import ObjectId, short
from mlvc.errors import NothingToCompare, ReproductionDiffers, UnsupportedMediaType
from mlvc.maintenance.gc import GcReport
from mlvc.models import payload
from mlvc.reproduce.run import DIFFERENT, EXACT, NOTHING, Reproduction, Verdict


def test_json_of_each_command_is_the_librarys_result(cli, repo, project):
    committed = json.loads(cli("commit", "-q", "--json", "-m", "first").output)
    assert committed == json.loads(json.dumps(repo.show(committed["id"], files=False)))
    cli("commit", "-q", "-m", "second")
    assert json.loads(cli("runs", "--json").output) == []
    assert json.loads(cli("fsck", "--json").output) == {"problems": [], "repaired": []}
    gc = json.loads(cli("gc", "--dry-run", "--json").output)
    assert set(gc) == {f.name for f in fields(GcReport)} and gc["dry_run"] is True
    assert gc == repo.gc(dry_run=True).to_dict()
    lineage = json.loads(cli("lineage", "--json").output)
    nodes, _ = repo.lineage()
    assert lineage == [n.to_dict() for n in nodes.values()]
    assert sorted(n["message"] for n in lineage) == ["first", "second"]


def test_the_json_flag_belongs_to_one_invocation(cli, project):
    cli("commit", "-q", "-m", "one")
    assert json.loads(cli("log", "--json").output)[0]["message"] == "one"
    text = cli("log").output
    assert text.startswith("  run") and "one" in text  # a table, not the JSON of before


def test_quiet_commit_prints_the_id_and_json_wins_over_quiet(cli, repo, project):
    oid = cli("commit", "-q").output.strip()
    assert oid == repo.head().hex
    shown = json.loads(cli("commit", "-q", "--json").output)
    assert shown["id"] == repo.head().hex


@pytest.mark.damages_repo
def test_fsck_json_lists_problems_then_fails_with_its_code(cli, repo, project):
    cli("commit", "-q")
    victim = next(p for p in (project / ".mlvc" / "objects").rglob("*") if p.is_file())
    victim.chmod(0o644)
    victim.write_bytes(b"not what it was")
    r = cli("fsck", "--json", ok=False)
    assert r.exit_code == 9
    report = json.loads(r.stdout)
    assert report["problems"] and set(report) == {"problems", "repaired"}


def test_gc_grace_default_is_the_librarys():
    from mlvc.cli.storage import gc
    from mlvc.maintenance import GRACE_S
    from mlvc.maintenance import gc as gc_module

    grace = next(p for p in gc.params if p.name == "grace")
    assert grace.default == GRACE_S == gc_module.GRACE_S


def _reproduction(kind: str, kept: bool) -> Reproduction:
    a, b = ObjectId.of(b"original"), ObjectId.of(b"re-run")
    verdict = Verdict(kind, metrics={"acc": {"old": 1, "new": 2}}, env=["python 3.10 -> 3.11"])
    return Reproduction(a, b, verdict, Path("/tmp/work"), "current", kept=kept)


def test_a_reproduction_as_plain_data():
    rep = _reproduction(DIFFERENT, kept=False)
    d = rep.to_dict()
    assert d["verdict"] == DIFFERENT and d["workdir"] is None
    assert d["original"] == rep.original.hex and d["reproduction"] == rep.run_id.hex
    assert d["metrics"] == {"acc": {"old": 1, "new": 2}} and d["env"] == ["python 3.10 -> 3.11"]
    assert _reproduction(EXACT, kept=True).to_dict()["workdir"] == "/tmp/work"
    json.dumps(d)  # ready for the wire


def test_a_reproduction_raises_the_error_its_verdict_means():
    _reproduction(EXACT, kept=True).check()
    with pytest.raises(ReproductionDiffers, match="did not reproduce .DIFFERENT.") as err:
        _reproduction(DIFFERENT, kept=False).check()
    assert "`mlvc checkout" in str(err.value)
    with pytest.raises(NothingToCompare, match="its files are in /tmp/work"):
        _reproduction(NOTHING, kept=True).check()


@pytest.mark.parametrize(
    "path, given, expected",
    [
        ("batch.json", None, payload.JSON),
        ("batch.CSV", None, payload.CSV),
        ("batch.arrow", None, payload.ARROW),
        ("batch.arrows", None, payload.ARROW),
        ("batch.feather", None, payload.ARROW),
        ("-", None, payload.JSON),
        ("batch", None, payload.JSON),
        ("in.d/batch", None, payload.JSON),  # a dot in a folder's name is no extension
        ("batch.txt", "csv", payload.CSV),
        ("batch.csv", "arrow", payload.ARROW),
        ("batch.csv", "text/csv", "text/csv"),
        ("batch.txt", None, "txt"),
    ],
)
def test_the_content_type_of_a_scoring_file(path, given, expected):
    assert payload.content_type_of(path, given) == expected


def test_an_unknown_content_type_is_refused_by_name():
    with pytest.raises(UnsupportedMediaType, match="'txt'"):
        payload.parse(b"x\n1\n", payload.content_type_of("batch.txt"))


class _Plus:
    def predict(self, data):
        return [v + 1 for v in data["x"]]


def test_a_model_scores_a_payload_in_each_format(repo):
    with mlvc.start_run(repo=repo):
        info = mlvc.models.log_model(_Plus(), "plus", input_example={"x": [1.0, 2.0]})
    model = mlvc.models.load(info.uri, repo=repo)
    assert model.predict_payload(b'{"inputs": {"x": [1.0]}}', payload.JSON) == [2.0]
    assert model.predict_payload(b"x\n3\n", payload.CSV) == [4.0]


def test_models_predict_opens_the_repository_only_for_a_uri_that_needs_one(cli, tmp_path):
    """A model folder is scored outside any repository (the library decides, not the CLI)."""
    folder = tmp_path / "m"
    mlvc.models.save(_Plus(), folder, input_example={"x": [1.0]})
    (tmp_path / "in.csv").write_text("x\n1\n")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    batch = str(tmp_path / "in.csv")
    r = cli("-C", str(outside), "models", "predict", str(folder), "-i", batch, "--trust")
    assert json.loads(r.output) == {"predictions": [2.0]}
    r = cli("-C", str(outside), "models", "predict", "m/1", "-i", batch, ok=False)
    assert r.exit_code == 3 and "not an mlvc repository" in r.output


def test_short_is_the_display_form_of_a_hex_id():
    oid = ObjectId.of(b"x")
    assert short(oid.hex) == oid.short


def test_python_dash_m_mlvc_runs_the_cli():
    out = subprocess.run(
        [sys.executable, "-m", "mlvc", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("mlvc, version ")
