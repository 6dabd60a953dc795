"""The data walk stats each file once (``runs.record.expand`` with ``stats``) and
``build_tree`` reuses those stats: the trees must be exactly those of the walk without
stats, junk and hostile names are dropped the same way, a file gone or changed since the
walk is reported or re-read, and threads sharing a stat cache lose nothing."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from mlvc.errors import MlvcError
from mlvc.runs.record import expand
from mlvc.workspace.statcache import StatCache
from mlvc.workspace.trees import build_tree


def make(root: Path) -> None:
    for rel, data in {
        "data/a/x.bin": b"x" * 10,
        "data/a/b/y.bin": b"y",
        "data/run.sh": b"#!/bin/sh\n",
        "data/__pycache__/m.pyc": b"junk",
        "data/.git/config": b"junk",
        "data/.DS_Store": b"junk",
        "data/GIT~1": b"reserved",
        "data/caf\u00e9.txt": b"non-ascii name",
        "data/e/empty": b"",
    }.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    os.chmod(root / "data/run.sh", 0o755)
    os.symlink("a/x.bin", root / "data/link")
    os.symlink("a", root / "data/folder-link")  # a link to a folder: kept, not followed
    (root / "data/empty-folder").mkdir()


def test_walk_with_stats_lists_and_builds_the_same(repo, project):
    make(project)
    plain = expand(project, ["data"])
    stats: dict = {}
    walked = expand(project, ["data"], stats)
    assert walked == plain
    assert "data/a/x.bin" in walked and "data/link" in walked and "data/folder-link" in walked
    assert not any(p.startswith(("data/__pycache__", "data/.git")) for p in walked)
    assert "data/GIT~1" not in walked and "data/.DS_Store" not in walked
    assert set(stats) == set(walked)
    for path, st in stats.items():
        assert os.lstat(project / path) == st
    store = repo.store
    assert build_tree(store, project, walked, stats=stats) == build_tree(store, project, plain)


def test_a_file_gone_since_the_walk_is_named(repo, project):
    make(project)
    stats: dict = {}
    walked = expand(project, ["data"], stats)
    (project / "data/a/x.bin").unlink()
    with pytest.raises(MlvcError, match="data/a/x.bin disappeared"):
        build_tree(repo.store, project, walked, stats=stats)


def test_a_file_rewritten_since_the_walk_is_refused_by_the_commit_hasher(repo, project):
    """The walk's stat is what the tree records the size from: bytes that changed after it
    must not be stored under it (FileHasher compares the stat after reading)."""
    make(project)
    stats: dict = {}
    walked = expand(project, ["data"], stats)
    (project / "data/a/x.bin").write_bytes(b"longer than before")
    hasher = repo.ctx.file_hasher()
    with pytest.raises(MlvcError, match="x.bin"):
        build_tree(repo.store, project, walked, hasher=hasher, stats=stats)


def test_threads_sharing_a_stat_cache_lose_no_folder(tmp_path):
    """build_tree stores the data on a helper thread while the code's tree is built: both
    record folders in one StatCache, whose lazy first read must happen once."""
    root = tmp_path / "root"
    root.mkdir()
    seed = StatCache(tmp_path / "statcache", root, tmp_path / "tmp")
    for k in range(3000):  # a file that takes a while to read: the threads meet in it
        seed.tree_put(f"seed/{k}", k.to_bytes(32, "big"), _oid(), 1)
    seed.save()
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch as often as they can: races show
    try:
        _put_from_threads(tmp_path, root)
    finally:
        sys.setswitchinterval(old)


def _put_from_threads(tmp_path: Path, root: Path) -> None:
    for _ in range(10):
        cache = StatCache(tmp_path / "statcache", root, tmp_path / "tmp")
        barrier = threading.Barrier(8)

        def put(k: int, cache=cache, barrier=barrier) -> None:
            barrier.wait()
            if k % 2:  # a lookup (build_tree's _reusable) while another thread records
                cache.tree_get("seed/1", b"?" * 32)
            else:
                cache.tree_put(f"f{k}", bytes([k]) * 32, _oid(), k)

        threads = [threading.Thread(target=put, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert {f"f{k}" for k in range(0, 8, 2)} | {"seed/0"} <= set(cache._folders())


def _oid():
    from mlvc.core.ids import DIGEST_SIZE, ObjectId

    return ObjectId(bytes(DIGEST_SIZE))
