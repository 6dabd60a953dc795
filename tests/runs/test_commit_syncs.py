"""A commit's waits for the disk (perf-smallfiles4): the run's intent is written with the
objects, and a small commit makes its pack, the index's temp file and the intent's temp file
durable together with fsyncs (no syncfs, which would wait for every other process's writes),
renames the index and then the intent in, fsyncs their two folders, and only then writes
its refs (one syncfs, as before). What each sync must find on disk is checked at the moment
it runs: nothing is named before the bytes it names were synced."""

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


def _spy(monkeypatch, root: Path) -> list:
    calls = []
    real_sync, real_fsync = pack_store.sync_filesystem, os.fsync

    def sync(path):
        calls.append(("syncfs", "", _state(root)))
        real_sync(path)

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        calls.append(("fsync", os.path.relpath(path, root / ".mlvc"), _state(root)))
        real_fsync(fd)

    monkeypatch.setattr(pack_store, "sync_filesystem", sync)
    monkeypatch.setattr(refs_store, "sync_filesystem", sync)
    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def test_a_small_commit_names_nothing_before_its_bytes_are_synced(project, repo, monkeypatch):
    first = repo.commit("first")
    calls = _spy(monkeypatch, project)
    second = repo.commit("second")
    monkeypatch.undo()
    what = [(kind, path.split("/")[-1][:5] if kind == "fsync" else "") for kind, path, _ in calls]
    # its pack, the index's and intent's temp files, then the first commit's pack and index
    # (the objects it shares with the first: see the next test)
    assert what == [("fsync", "pack-"), ("fsync", ".pack"), ("fsync", f".{second.oid.hex[:4]}"),
                    ("fsync", "pack-"), ("fsync", "pack-"),
                    ("fsync", "pack"), ("fsync", "publi"), ("syncfs", "")], calls  # fmt: skip
    files, folders, refs = calls[4][2], calls[5][2], calls[7][2]
    # the pack, the index's temp file and the intent's temp file, none named yet
    assert len(files["intent_tmp"]) == 1 and files["intent"] == []
    assert len(files["idx_tmp"]) == 1 and files["head"] == first.oid.hex
    # the index renamed in (the run readable by any process), then the intent
    assert folders["intent_tmp"] == [] and folders["intent"] == [second.oid.hex]
    assert folders["idx_tmp"] == [] and len(folders["idx"]) == len(files["idx"]) + 1
    assert folders["head"] == first.oid.hex
    # the refs, with the intent still there to finish them after a crash
    assert refs["head"] == second.oid.hex and refs["intent"] == [second.oid.hex]
    assert _state(project)["intent"] == []  # gone once the refs are durable
    fresh = PackedStore(project / ".mlvc" / "objects", project / ".mlvc" / "tmp")
    assert fresh.has(ObjectId.parse(second.oid.hex))


def test_a_commit_after_a_flush_syncs_the_filesystem(project, repo, monkeypatch):
    """Objects made visible earlier without their fsync (a live run's flush) are not in the
    pack being synced: the commit then syncs the whole filesystem before its refs."""
    repo.commit("first")
    repo.store.add_bytes(b"flushed, not synced")
    repo.store.flush()
    calls = _spy(monkeypatch, project)
    second = repo.commit("second")
    monkeypatch.undo()
    kinds = [kind for kind, _path, _state in calls]
    assert kinds.count("syncfs") == 2, calls
    first_syncfs = calls[kinds.index("syncfs")][2]
    assert first_syncfs["intent"] == [second.oid.hex] and first_syncfs["head"] != second.oid.hex


def test_when_the_objects_cannot_be_synced_nothing_is_named(project, repo, monkeypatch):
    first = repo.commit("first")
    real = pack_store.sync_files

    def full(paths, gone_ok=()):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pack_store, "sync_files", full)
    (project / "train.py").write_text("print('v2')\n")
    with pytest.raises(OSError):
        repo.commit("second")
    monkeypatch.setattr(pack_store, "sync_files", real)
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


def test_objects_found_in_another_process_s_flushed_pack_are_synced_before_the_intent(
    project, repo, monkeypatch
):
    """Another process (a live run) flushes its pack: its objects are visible, not durable.
    A commit whose files have the same bytes stores none of them; without a syncfs its run
    would be published (the intent made durable) naming objects a power cut could take. The
    flushed pack and its index are fsynced with the commit's own files, before the intent."""
    repo.commit("first")
    (project / "ckpt.bin").write_bytes(os.urandom(200_000))
    live = subprocess.run(
        [sys.executable, "-c", FLUSHER, str(project / ".mlvc" / "objects"), str(project / "ckpt.bin")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    flushed = set(live.stdout.split())  # the pack and index it published, not synced
    assert len(flushed) == 2
    calls = _spy(monkeypatch, project)
    # a store opened now sees the flushed index (one opened before looks again only after
    # LOOK_EVERY seconds: it would store its own copy, which needs no other pack synced)
    Repo(project).commit("with the checkpoint")
    monkeypatch.undo()
    synced = [path for kind, path, state in calls if kind == "fsync" and not state["intent"]]
    assert flushed <= {os.path.basename(p) for p in synced}, calls
    assert ("syncfs", "") not in [(k, "") for k, _p, st in calls if not st["intent"]]


FLUSHER = """
import os, sys
from pathlib import Path
from mlvc.store.pack.store import PackedStore
store = PackedStore(sys.argv[1], Path(sys.argv[1]).parent / "tmp")
before = set(os.listdir(store.pack_dir))
store.add_file(sys.argv[2])
store.flush()  # as a live run does for its artifacts: visible, not durable
print(*sorted(set(os.listdir(store.pack_dir)) - before))
"""
