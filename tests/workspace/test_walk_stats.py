"""The data walk lists and stats each file once (``runs.record.walk_data``) and
``build_tree(listing=...)`` places those files by folder: the trees must be exactly those of
``expand`` + per-path ``build_tree``, junk and hostile names are dropped the same way, a
file gone or changed since the walk is reported, and threads sharing a stat cache lose
nothing."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlvc.errors import MlvcError
from mlvc.runs.record import expand, walk_data
from mlvc.workspace.statcache import StatCache
from mlvc.workspace.trees import Packed, build_tree

pytestmark = pytest.mark.usefixtures("walker")  # every test on the C walk and the pure one


def entries_of(entries) -> list:
    """A folder of a listing as [(name, stat)], whichever walk made it."""
    if type(entries) is not Packed:
        return entries
    from mlvc.workspace.trees import _unpack

    node: dict = {}
    _unpack(node, "/", entries, "f")
    return [(name, f.st) for name, f in node.items()]


def same_stat(a, b) -> bool:
    fields = ("st_mode", "st_size", "st_mtime_ns", "st_ino", "st_ctime_ns", "st_dev")
    return all(getattr(a, f) == getattr(b, f) for f in fields)


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


def listed(loose: list[str], listing: dict) -> set[str]:
    return {
        *loose,
        *(
            f"{folder}/{name}"
            for folder, entries in listing.items()
            for name, _ in entries_of(entries)
        ),
        *(
            f"{folder}/{name}"
            for folder, entries in listing.items()
            if type(entries) is Packed
            for name in entries.links
        ),
    }


def test_walk_lists_and_builds_the_same(repo, project):
    make(project)
    plain = expand(project, ["data"])
    loose, listing = walk_data(project, ["data"])
    assert listed(loose, listing) == set(plain)
    assert loose == []
    assert "data/a/x.bin" in plain and "data/link" in plain and "data/folder-link" in plain
    assert not any(p.startswith(("data/__pycache__", "data/.git")) for p in plain)
    assert "data/GIT~1" not in plain and "data/.DS_Store" not in plain
    for folder, entries in listing.items():
        for name, stat_ in entries_of(entries):
            assert same_stat(os.lstat(project / folder / name), stat_)
        if type(entries) is Packed:
            assert all(os.path.islink(project / folder / n) for n in entries.links)
    store = repo.store
    walked = build_tree(store, project, loose, listing=listing)
    assert walked == build_tree(store, project, plain)
    # a folder given twice (and one inside it) is listed once
    loose2, listing2 = walk_data(project, ["data", "data/a"])
    assert build_tree(store, project, loose2, listing=listing2) == walked
    # a file and a link given alone as well as in their folder: placed once each
    loose3, listing3 = walk_data(project, ["data", "data/a/x.bin", "data/link"])
    assert loose3 == ["data/a/x.bin", "data/link"]
    assert build_tree(store, project, loose3, listing=listing3) == walked


def test_a_file_gone_since_the_walk_is_named(repo, project):
    make(project)
    loose, listing = walk_data(project, ["data"])
    (project / "data/a/x.bin").unlink()
    with pytest.raises(MlvcError, match="data/a/x.bin disappeared"):
        build_tree(repo.store, project, loose, listing=listing)


def test_a_file_rewritten_since_the_walk_is_refused_by_the_commit_hasher(repo, project):
    """The walk's stat is what the tree records the size from: bytes that changed after it
    must not be stored under it (FileHasher compares the stat after reading)."""
    make(project)
    loose, listing = walk_data(project, ["data"])
    (project / "data/a/x.bin").write_bytes(b"longer than before")
    hasher = repo.ctx.file_hasher()
    with pytest.raises(MlvcError, match="x.bin"):
        build_tree(repo.store, project, loose, hasher=hasher, listing=listing)


NAMES = st.sampled_from(["a", "b", "B", ".git", "__pycache__", "x.bin", "caf\u00e9", "GIT~1", "m"])


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    files=st.lists(st.tuples(st.lists(NAMES, min_size=1, max_size=3), st.booleans()), max_size=12),
    links=st.lists(st.tuples(st.lists(NAMES, min_size=1, max_size=2), NAMES), max_size=3),
)
def test_walk_and_paths_give_the_same_trees(tmp_path_factory, files, links):
    """Random trees of files, executables, links (inside and to folders), junk and reserved
    names: the listing and the per-path route record the same tree."""
    from mlvc.store.odb import MemoryStore

    root = tmp_path_factory.mktemp("walk")
    for parts, executable in files:
        path = root.joinpath("data", *parts)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes("/".join(parts).encode())
        except OSError:
            continue  # a file where a folder is wanted, or the reverse
        if executable:
            path.chmod(0o755)
    for parts, target in links:
        path = root.joinpath("data", *parts)
        if path.parent.is_dir() and not os.path.lexists(path):
            os.symlink(target, path)
    store = MemoryStore()
    plain = expand(root, ["data"]) if (root / "data").is_dir() else []
    loose, listing = walk_data(root, ["data"]) if plain else ([], {})
    assert listed(loose, listing) == set(plain)
    outcomes = []
    for route in (
        lambda: build_tree(store, root, plain),
        lambda: build_tree(store, root, loose, listing=listing),
    ):
        try:
            outcomes.append(route())
        except MlvcError as e:  # a link that leaves the project: refused alike
            outcomes.append(type(e))
    assert outcomes[0] == outcomes[1]


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
