"""What a remote may not do to a clone: damaged packs, hostile refs.json, torn pushes,
and races between pushers."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from remote_helpers import (
    check_remote_consistent,
    commit,
    fresh_repo,
    mlvc,
    mlvc_json,
    mlvc_proc,
    remote_files,
    transport_for,
)

from mlvc import Repo
from mlvc.errors import RemoteError
from mlvc.remotes import format as fmt


def _pushed(project, url) -> str:
    run = commit(project, "one", {"data/w.bin": os.urandom(200_000)}, "--name", "base")
    mlvc(project, "remote", "add", "origin", url)
    mlvc(project, "push", "-q")
    return run


def test_a_damaged_remote_pack_is_caught_before_anything_is_added(project, tmp_path, remote_url):
    _pushed(project, remote_url)
    t = transport_for(remote_url)
    (pack,) = [p for p in remote_files(remote_url) if fmt.is_pack(p)]
    data = bytearray(t.get(pack))
    data[len(data) // 2] ^= 0xFF  # one flipped bit, in the middle of the 200 kB file
    t.put(pack, bytes(data))
    fresh = fresh_repo(tmp_path / "other")
    mlvc(fresh, "remote", "add", "origin", remote_url)
    out = mlvc(fresh, "pull", code=1)
    assert "remote origin: object" in out and "is damaged" in out and pack in out
    assert Repo(fresh).log() == [] and Repo(fresh).refs.list("names") == {}
    assert Repo(fresh).fsck() == []


@pytest.mark.parametrize(
    "content, why",
    [
        (b"{not json", "not valid JSON"),
        (b'{"format": 1, "refs": {"names/../../HEAD": "' + b"a" * 64 + b'"}}', "names a ref"),
        (b'{"format": 1, "refs": {"/etc/passwd": "' + b"a" * 64 + b'"}}', "names a ref"),
        (b'{"format": 1, "refs": {"names/x": "../../etc"}}', "not a 64-hex id"),
        (b'{"format": 1, "refs": {"names/x": "' + b"A" * 64 + b'"}}', "not a 64-hex id"),
        (b'{"format": 1, "refs": {"models/m/aliases/a": "ref: ../../HEAD"}}', "alias"),
        (b'{"format": 1, "refs": {"models/m/versions/x1": "' + b"a" * 64 + b'"}}', "names a ref"),
        (b'{"format": 1, "refs": {"tags/a/b": "' + b"a" * 64 + b'"}}', "names a ref"),
        (b'{"format": 2, "refs": {}}', "format 2"),
        (b"[1, 2]", "is not"),
    ],
)
def test_hostile_refs_json_is_refused(project, tmp_path, content, why):
    url = "file://" + str(tmp_path / "remote")
    _pushed(project, url)
    (tmp_path / "remote" / "refs.json").write_bytes(content)
    fresh = fresh_repo(tmp_path / "other")
    mlvc(fresh, "remote", "add", "origin", url)
    out = mlvc(fresh, "pull", code=1)
    assert "remote origin: refs.json" in out and why in out
    assert len(out.strip().splitlines()) == 1
    assert Repo(fresh).log() == [] and not (fresh / ".mlvc" / "refs" / "HEAD").exists()


def test_hostile_runs_and_index_files_are_refused(tmp_path):
    t = transport_for("file://" + str(tmp_path / "r"))
    t.put(fmt.runs_path("0" * 32), b"../../etc/passwd\n")
    from mlvc.remotes.state import RemoteState

    with pytest.raises(RemoteError, match="runs-0+.runs is damaged"):
        RemoteState.load(t, "origin", tmp_path / "cache")
    t.delete(fmt.runs_path("0" * 32))
    t.put(fmt.idx_path("1" * 32), b"MLVCIDX1" + b"\0" * 100)
    with pytest.raises(RemoteError, match="checksum does not match"):
        RemoteState.load(t, "origin", tmp_path / "cache")


def _distinct_runs(project, tmp_path, url):
    """Two clones of one remote, each with a new run of its own."""
    _pushed(project, url)
    a, b = tmp_path / "a", tmp_path / "b"
    mlvc(tmp_path, "clone", "-q", url, a)
    mlvc(tmp_path, "clone", "-q", url, b)
    ra = commit(a, "from a", {"a.txt": os.urandom(50_000)}, "--name", "from-a")
    rb = commit(b, "from b", {"b.txt": os.urandom(50_000)}, "--name", "from-b")
    return a, b, ra, rb


def test_two_pushers_of_different_runs_both_land(project, tmp_path, remote_url):
    a, b, ra, rb = _distinct_runs(project, tmp_path, remote_url)
    procs = [mlvc_proc(a, "push", "-q"), mlvc_proc(b, "push", "-q")]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    refs = json.loads(transport_for(remote_url).get(fmt.REFS))["refs"]
    assert refs["names/from-a"] == ra and refs["names/from-b"] == rb
    check_remote_consistent(remote_url)
    c = tmp_path / "c"
    got = mlvc_json(tmp_path, "clone", remote_url, c)
    assert {ra, rb} <= set(got["fetch"]["runs"])
    for repo in (a, b, c):
        assert Repo(repo).fsck() == []


def test_two_pushers_moving_one_name_one_wins(project, tmp_path, remote_url):
    _pushed(project, remote_url)
    a, b = tmp_path / "a", tmp_path / "b"
    mlvc(tmp_path, "clone", "-q", remote_url, a)
    mlvc(tmp_path, "clone", "-q", remote_url, b)
    ra = commit(a, "from a", {"a.txt": "a"}, "--name", "base")
    rb = commit(b, "from b", {"b.txt": "b"}, "--name", "base")
    procs = [mlvc_proc(a, "push"), mlvc_proc(b, "push")]
    results = [(p.wait(120), p.communicate()[1]) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 6], results
    loser_err = [err for code, err in results if code == 6][0]
    assert "names/base moved on origin since your last fetch" in loser_err
    winner = ra if results[0][0] == 0 else rb
    assert json.loads(transport_for(remote_url).get(fmt.REFS))["refs"]["names/base"] == winner
    check_remote_consistent(remote_url)
    for repo in (a, b):
        assert Repo(repo).fsck() == []


@pytest.mark.parametrize("point", ["push-pack-sent", "push-idx-sent", "push-runs-sent"])
def test_kill_9_mid_push_leaves_nothing_dangling_and_the_next_push_resumes(
    project, remote_url, point
):
    run = commit(project, "one", {"data/w.bin": os.urandom(300_000)}, "--name", "base")
    mlvc(project, "remote", "add", "origin", remote_url)
    p = mlvc_proc(project, "push", "-q", env={"MLVC_FAULT": point})
    p.communicate(timeout=120)
    assert p.returncode == -signal.SIGKILL
    check_remote_consistent(remote_url)
    assert fmt.REFS not in remote_files(remote_url)  # refs come last
    sent = mlvc_json(project, "push")
    if point == "push-pack-sent":  # the pack is there whole: only its index follows
        assert sent["packs_resumed"] == 1 and sent["bytes_sent"] < 100_000
    assert sent["refs"] == {"names/base": run}
    check_remote_consistent(remote_url)


def test_kill_9_at_a_random_moment_of_a_push(project, remote_url):
    for i in range(4):
        commit(project, f"r{i}", {f"data/{i}.bin": os.urandom(2 << 20)}, "--name", f"r{i}")
    mlvc(project, "remote", "add", "origin", remote_url)
    for delay in (0.3, 0.6, 0.9):
        p = mlvc_proc(project, "push", "-q")
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=60)
        check_remote_consistent(remote_url)
    mlvc(project, "push", "-q")
    check_remote_consistent(remote_url)
    refs = json.loads(transport_for(remote_url).get(fmt.REFS))["refs"]
    assert set(refs) == {f"names/r{i}" for i in range(4)}


def test_kill_9_mid_fetch_then_repair_then_pull_completes(project, tmp_path, remote_url):
    """A killed fetch wrote a run record but not its trees; once fsck indexed that torn
    pack the record is visible, and the next pull must still bring what it references."""
    # levels: run, root tree, {top.bin, data/}, data/deep/, data/deep/w.bin: the kill
    # comes once top.bin is written (with the run and trees buffered before it)
    files = {"top.bin": os.urandom(100_000), "data/deep/w.bin": os.urandom(100_000)}
    run = commit(project, "one", files, "--name", "base")
    mlvc(project, "remote", "add", "origin", remote_url)
    mlvc(project, "push", "-q")
    other = fresh_repo(tmp_path / "other")
    mlvc(other, "remote", "add", "origin", remote_url)
    p = mlvc_proc(other, "pull", "-q", env={"MLVC_FAULT": "fetch-wrote-64k"})
    p.communicate(timeout=120)
    assert p.returncode == -signal.SIGKILL
    mlvc(other, "fsck")  # indexes the killed fetch's pack: the run record is now here
    from mlvc.core.ids import ObjectId

    assert Repo(other).store.present(ObjectId.parse(run))
    assert Repo(other).log() == []  # but no run was published
    got = mlvc_json(other, "pull")
    assert got["fetch"]["runs"] == [run] and got["fetch"]["objects"] > 0
    assert Repo(other).fsck() == []
    assert Repo(other).show("base")["name"] == "base"
