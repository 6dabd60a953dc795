"""push, fetch, pull and clone end to end, against a folder and against moto S3 alike."""

from __future__ import annotations

import json
import os

import pytest
from remote_helpers import check_remote_consistent, commit, fresh_repo, mlvc, mlvc_json

from mlvc import Repo


def _two_runs(project) -> tuple[str, str]:
    a = commit(project, "one", {"big.bin": os.urandom(5 << 20)}, "--name", "base", "-p", "lr=0.1",
               "-M", "acc=0.5")  # fmt: skip
    b = commit(project, "two", {"data/train.csv": "x,y\n1,2\n9,9\n"}, "--name", "base",
               "-p", "lr=0.2", "-M", "acc=0.7")  # fmt: skip
    mlvc(project, "tag", a, "first")
    return a, b


def test_push_then_clone_reproduces_the_runs(project, tmp_path, remote_url):
    a, b = _two_runs(project)
    mlvc(project, "remote", "add", "origin", remote_url)
    sent = mlvc_json(project, "push")
    assert sent["runs"] == 2 and sent["objects"] > 0
    assert set(sent["refs"]) == {"names/base", "tags/first"}
    check_remote_consistent(remote_url)

    clone = tmp_path / "clone"
    got = mlvc_json(tmp_path, "clone", remote_url, clone)
    assert sorted(got["fetch"]["runs"]) == sorted([a, b])
    # the fetched runs are in the run list: the first `log` reads no run object
    listed = (clone / ".mlvc" / "runlist").read_text().splitlines()
    assert sorted(json.loads(line)[0] for line in listed) == sorted([a, b])
    assert got["updated"] == {"names/base": b, "tags/first": a}
    theirs = Repo(clone)
    assert [r["id"] for r in theirs.log()] == [r["id"] for r in Repo(project).log()]
    assert theirs.resolve("base").hex == b and theirs.resolve("first").hex == a
    shown = mlvc_json(clone, "show", "base")
    assert shown["params"] == {"lr": 0.2} and shown["metrics"] == {"acc": 0.7}
    assert "data/train.csv" in mlvc(clone, "diff", "first", "base")
    rows = theirs.query('SELECT count(*) AS n FROM runs_wide WHERE "params.lr" > 0.15')
    assert rows.to_pylist() == [{"n": 1}]
    out = tmp_path / "out"
    mlvc(clone, "checkout", "first", "--to", out)
    assert (out / "big.bin").read_bytes() == (project / "big.bin").read_bytes()
    assert theirs.fsck() == []


def test_no_op_push_and_pull_cost_few_requests(project, tmp_path, remote_url):
    _two_runs(project)
    mlvc(project, "remote", "add", "origin", remote_url)
    mlvc(project, "push", "-q")
    again = mlvc_json(project, "push")
    assert again["objects"] == 0 and again["refs"] == {} and again["requests"] <= 3
    clone = tmp_path / "clone"
    mlvc(tmp_path, "clone", "-q", remote_url, clone)
    pulled = mlvc_json(clone, "pull")
    assert pulled["fetch"]["objects"] == 0 and pulled["fetch"]["requests"] <= 3
    assert pulled["updated"] == {}
    assert Repo(clone).fsck() == []


def test_incremental_push_of_one_changed_file(project, remote_url):
    for i in range(30):
        (project / "data" / f"f{i}.txt").write_text(f"file {i}\n" * 100)
    commit(project, "many", {}, "--name", "exp")
    mlvc(project, "remote", "add", "origin", remote_url)
    mlvc(project, "push", "-q")
    commit(project, "one changed", {"data/f3.txt": "changed\n"}, "--name", "exp")
    sent = mlvc_json(project, "push")
    # listing, pack, its index, the runs file, refs.json (compare-and-swap)
    assert sent["requests"] <= 5, sent
    assert sent["runs"] == 1 and sent["packs"] == 1 and "names/exp" in sent["refs"]
    check_remote_consistent(remote_url)


def test_pull_fast_forwards_and_reports_conflicts(project, tmp_path, remote_url):
    a, b = _two_runs(project)
    mlvc(project, "remote", "add", "origin", remote_url)
    mlvc(project, "push", "-q")
    clone = tmp_path / "clone"
    mlvc(tmp_path, "clone", "-q", remote_url, clone)
    # moved there only: the clone follows; moved on both sides: reported, kept
    c = commit(project, "three", {"x.txt": "3"}, "--name", "base")
    mlvc(project, "tag", c, "first")
    mlvc(project, "push", "-q")
    mlvc(clone, "tag", b, "first")
    pulled = mlvc_json(clone, "pull")
    assert pulled["fetch"]["runs"] == [c]
    assert pulled["updated"] == {"names/base": c}
    assert len(pulled["conflicts"]) == 1 and "tags/first" in pulled["conflicts"][0]
    assert Repo(clone).resolve("first").hex == b  # kept
    assert Repo(clone).fsck() == []


def test_push_refuses_a_name_moved_since_the_last_fetch(project, tmp_path, remote_url):
    _two_runs(project)
    mlvc(project, "remote", "add", "origin", remote_url)
    mlvc(project, "push", "-q")
    clone = tmp_path / "clone"
    mlvc(tmp_path, "clone", "-q", remote_url, clone)
    theirs = commit(clone, "theirs", {"t.txt": "t"}, "--name", "base")
    mlvc(clone, "push", "-q")
    mine = commit(project, "mine", {"m.txt": "m"}, "--name", "base")
    out = mlvc(project, "push", code=6)
    assert "names/base moved on origin since your last fetch" in out and "mlvc fetch origin" in out
    assert json.loads(_refs(remote_url))["refs"]["names/base"] == theirs
    check_remote_consistent(remote_url)  # the objects landed, the ref did not move
    mlvc(project, "fetch", "-q")
    mlvc(project, "push", "-q")  # seen now: the push may move it
    assert json.loads(_refs(remote_url))["refs"]["names/base"] == mine
    assert Repo(clone).fsck() == []


def test_force_push_overrides(project, tmp_path, remote_url):
    _two_runs(project)
    mlvc(project, "remote", "add", "origin", remote_url)
    mlvc(project, "push", "-q")
    clone = tmp_path / "clone"
    mlvc(tmp_path, "clone", "-q", remote_url, clone)
    commit(clone, "theirs", {"t.txt": "t"}, "--name", "base")
    mlvc(clone, "push", "-q")
    mine = commit(project, "mine", {"m.txt": "m"}, "--name", "base")
    mlvc(project, "push", "--force", "-q")
    assert json.loads(_refs(remote_url))["refs"]["names/base"] == mine
    assert Repo(clone).fsck() == []


def test_push_named_runs_only(project, tmp_path, remote_url):
    a, b = _two_runs(project)
    mlvc(project, "remote", "add", "origin", remote_url)
    sent = mlvc_json(project, "push", "first")  # a run, not a remote: pushed to origin
    assert sent["runs"] == 1 and set(sent["refs"]) == {"tags/first"}
    assert "no remote named 'nowhere'" in mlvc(project, "push", "nowhere", code=2)
    fresh = fresh_repo(tmp_path / "other")
    mlvc(fresh, "remote", "add", "origin", remote_url)
    pulled = mlvc_json(fresh, "pull")
    assert pulled["fetch"]["runs"] == [a]
    assert Repo(fresh).fsck() == []


def _refs(url: str) -> bytes:
    from remote_helpers import transport_for

    return transport_for(url).get("refs.json")


@pytest.mark.parametrize("spec", ["base", "prefix"])
def test_pull_one_run_moves_little_more_than_it_lacks(project, tmp_path, remote_url, spec):
    runs = []
    for i in range(3):  # runs of many small files, interleaved in the remote's sorted pack
        files = {f"data/r{i}/f{j}.bin": os.urandom(20000 + j) for j in range(60)}
        runs.append(commit(project, f"run {i}", files, "--name", f"r{i}"))
    mlvc(project, "remote", "add", "origin", remote_url)
    mlvc(project, "push", "-q")
    fresh = fresh_repo(tmp_path / "other")
    mlvc(fresh, "remote", "add", "origin", remote_url)
    want = "r1" if spec == "base" else runs[1][:12]
    got = mlvc_json(fresh, "pull", "origin", want)["fetch"]
    assert got["runs"] == [runs[1], runs[0]] or runs[1] in got["runs"]
    assert got["pack_bytes"] <= 1.05 * got["object_bytes"], got
    # with the one-time download of the remote's index and refs
    assert got["bytes_received"] <= 1.05 * got["object_bytes"], got
    assert runs[2] not in got["runs"]
    assert Repo(fresh).fsck() == []


class Plus:
    def __init__(self, k):
        self.k = k

    def predict(self, data):
        return [v + self.k for v in data["x"]]


def test_model_versions_and_aliases_travel(project, tmp_path):
    import mlvc.models as mm
    from mlvc import start_run

    repo = Repo(project)
    with start_run(name="train", repo=repo):
        info = mm.log_model(Plus(1), "plus", input_example={"x": [1.0]})
    mm.register("adder", info.uri, repo=repo)
    mm.register("adder", info.uri, repo=repo)
    mm.set_alias("adder", "champion", 2, repo=repo)
    url = "file://" + str(tmp_path / "remote")
    mlvc(project, "remote", "add", "origin", url)
    sent = mlvc_json(project, "push")
    assert sent["refs"]["models/adder/aliases/champion"] == "ref: models/adder/versions/2"
    clone = tmp_path / "clone"
    mlvc(tmp_path, "clone", "-q", url, clone)
    theirs = Repo(clone)
    assert mm.get("adder", alias="champion", repo=theirs).model_id == info.model_id
    # a pickle that came from a remote is not trusted until you say so
    from mlvc.errors import UntrustedModel

    with pytest.raises(UntrustedModel):
        mm.load("models:/adder@champion", repo=theirs)
    model = mm.load("models:/adder@champion", repo=theirs, trust=True)
    assert model.predict({"x": [1.0]}) == [2.0]
    assert theirs.fsck() == []


def test_a_hostile_remote_name_or_url_is_refused_in_one_line(project):
    for name, url, says in (
        ("../evil", "/tmp/x", "invalid remote name '../evil'"),
        ("ok", "/tmp/x\nurl = 'elsewhere'", "invalid remote URL"),
    ):
        out = mlvc(project, "remote", "add", name, url, code=2)
        assert says in out and "Traceback" not in out
    listed = mlvc(project, "remote", "list")
    assert "evil" not in listed and "ok" not in listed  # nothing was configured
