"""A commit's waits for the disk (perf-smallfiles4): the run's intent is written with the
objects and renamed in between the store's two filesystem syncs, so a small commit waits
three times (objects and intent bytes, the renames, the refs) instead of five, and no file
of its own is fsynced. What each sync must find on disk is checked at the moment it runs:
nothing is named before the bytes it names were synced."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mlvc import Repo
from mlvc.core.ids import ObjectId
from mlvc.refs import store as refs_store
from mlvc.store.pack import store as pack_store
from mlvc.store.pack.store import PackedStore


def _state(root: Path) -> dict:
    mlvc = root / ".mlvc"
    publishing = sorted(os.listdir(mlvc / "publishing")) if (mlvc / "publishing").exists() else []
    pack_dir = mlvc / "objects" / "pack"
    return {
        "intent_tmp": [n for n in publishing if n.endswith(".tmp")],
        "intent": [n for n in publishing if not n.startswith(".")],
        "idx_tmp": [n for n in os.listdir(pack_dir) if n.endswith(".tmp")],
        "idx": sorted(n for n in os.listdir(pack_dir) if n.endswith(".idx")),
        "head": (mlvc / "HEAD").read_text().strip(),
    }


def _spy(monkeypatch, root: Path) -> tuple[list, list]:
    syncs, fsyncs = [], []
    real_sync, real_fsync = pack_store.sync_filesystem, os.fsync

    def sync(path):
        syncs.append(_state(root))
        real_sync(path)

    def fsync(fd):
        fsyncs.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(pack_store, "sync_filesystem", sync)
    monkeypatch.setattr(refs_store, "sync_filesystem", sync)
    monkeypatch.setattr(os, "fsync", fsync)
    return syncs, fsyncs


def test_a_small_commit_syncs_three_times_and_names_nothing_before_its_bytes(
    project, repo, monkeypatch
):
    first = repo.commit("first")
    syncs, fsyncs = _spy(monkeypatch, project)
    second = repo.commit("second")
    monkeypatch.undo()
    assert fsyncs == []
    assert len(syncs) == 3, syncs
    objects, renames, refs = syncs
    # 1: the pack, the index's temp file and the intent's temp file, none named yet
    assert len(objects["intent_tmp"]) == 1 and objects["intent"] == []
    assert len(objects["idx_tmp"]) == 1 and objects["head"] == first.oid.hex
    # 2: the index renamed in (the run readable by any process), then the intent
    assert renames["intent_tmp"] == [] and renames["intent"] == [second.oid.hex]
    assert renames["idx_tmp"] == [] and len(renames["idx"]) == len(objects["idx"]) + 1
    assert renames["head"] == first.oid.hex
    # 3: the refs, with the intent still there to finish them after a crash
    assert refs["head"] == second.oid.hex and refs["intent"] == [second.oid.hex]
    assert _state(project)["intent"] == []  # gone once the refs are durable
    fresh = PackedStore(project / ".mlvc" / "objects", project / ".mlvc" / "tmp")
    assert fresh.has(ObjectId.parse(second.oid.hex))


def test_when_the_objects_cannot_be_synced_nothing_is_named(project, repo, monkeypatch):
    first = repo.commit("first")
    real = pack_store.sync_filesystem

    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pack_store, "sync_filesystem", full)
    (project / "train.py").write_text("print('v2')\n")
    with pytest.raises(OSError):
        repo.commit("second")
    monkeypatch.setattr(pack_store, "sync_filesystem", real)
    state = _state(project)
    assert state["intent_tmp"] == state["intent"] == state["idx_tmp"] == []
    assert state["head"] == first.oid.hex and len(repo.log()) == 1
    third = repo.commit("third")  # and the next commit goes through
    assert repo.head() == third.oid and repo.run(third.oid).parents == (first.oid,)


@pytest.mark.parametrize("point", ["publish-intent-written", "publish-first-ref"])
def test_a_commit_killed_after_its_intent_is_finished_by_the_next(project, repo, point):
    first = repo.commit("first")
    (project / "train.py").write_text("print('v2')\n")
    done = subprocess.run(
        [sys.executable, "-m", "mlvc", "commit", "-q", "-m", "killed", "-n", "victim"],
        cwd=project,
        env={**os.environ, "MLVC_FAULT": point},
        capture_output=True,
    )
    assert done.returncode == -signal.SIGKILL
    state = _state(project)
    assert len(state["intent"]) == 1 and state["intent_tmp"] == state["idx_tmp"] == []
    killed = ObjectId.parse(state["intent"][0])
    assert repo.store.has(killed)  # the intent only ever names a stored run
    third = repo.commit("third")
    assert repo.refs.read("refs/names/victim") == killed
    assert repo.run(third.oid).parents == (killed,)
    assert repo.run(killed).parents == (first.oid,)
    assert _state(project)["intent"] == []
    assert Repo(project).fsck() == []
