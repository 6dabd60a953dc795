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
import mlvc.trees


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
    real = mlvc.trees.read_run

    def spy(store, oid):
        calls.append(oid)
        return real(store, oid)

    mlvc.trees.read_run = spy
    try:
        fn()
    finally:
        mlvc.trees.read_run = real
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
