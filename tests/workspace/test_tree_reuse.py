"""Folder tree reuse in commits (statcache folders): a folder whose files' stats all match
those its stored tree was made from reuses that tree; nothing the stat cache would see may
be hidden by it. Each test compares what a commit recorded with what is on disk."""

from __future__ import annotations

import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlvc import Repo
from mlvc.core.objects import EXEC, FILE
from mlvc.store.typed import walk
from mlvc.workspace.statcache import StatCache

pytestmark = pytest.mark.usefixtures("walker")  # every test on the C walk and the pure one


def age_all(folder: Path, seconds: int = 60) -> None:
    """Every file below looks older than the racy window, and the clock moves past every
    ctime (utime sets ctime to now: the next tick must begin before the commit does)."""
    t = time.time() - seconds
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            os.utime(path, (t, t))
    time.sleep(0.03)


def on_disk(root: Path, top: str = "data") -> dict[str, tuple[str, bytes]]:
    out = {}
    for path in sorted((root / top).rglob("*")):
        if path.is_file():
            kind = EXEC if path.stat().st_mode & 0o111 else FILE
            out[path.relative_to(root).as_posix()] = (kind, path.read_bytes())
    return out


def recorded(repo: Repo, rid) -> dict[str, tuple[str, bytes]]:
    run = repo.run(rid)
    return {p: (e.kind, repo.store.read_bytes(e.id)) for p, e in walk(repo.store, run.data)}


def folders(repo: Repo) -> dict[str, list]:
    cache = StatCache(repo.dir / "statcache", repo.root, repo.dir / "tmp")
    return cache._folders()


def commit(repo: Repo, root: Path):
    rid = repo.commit("data", data=["data"])
    assert recorded(repo, rid) == on_disk(root)
    return rid


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def small_tree(root: Path) -> None:
    for d in ("a", "b", "c/d"):
        for i in range(3):
            write(root / "data" / d / f"f{i}.bin", f"{d}:{i}".encode().ljust(16, b"."))


def start(repo: Repo, project: Path):
    """The small tree, old enough to be cached, committed once."""
    small_tree(project)
    age_all(project / "data")
    return commit(repo, project)


def test_unchanged_folders_reuse_their_trees(repo, project):
    first = start(repo, project)
    cached = folders(repo)
    assert {"data", "data/a", "data/b", "data/c", "data/c/d"} <= set(cached)
    second = commit(repo, project)
    assert repo.run(first).data == repo.run(second).data
    assert folders(repo) == cached  # nothing new learned, nothing rewritten


def test_a_folder_with_a_racy_file_is_not_recorded(repo, project):
    """A file not older than the commit's clock could change again in the same tick
    unseen: its folder (and every parent) must not be reused from its signature."""
    small_tree(project)
    age_all(project / "data")
    future = time.time() + 3600
    os.utime(project / "data" / "a" / "f0.bin", (future, future))
    commit(repo, project)
    cached = folders(repo)
    assert "data/a" not in cached and "data" not in cached
    assert len(cached[""]) == 1  # the code tree's root; the data tree's root is racy too
    assert "data/b" in cached
    # same size, same (future) mtime, other bytes: still recorded right
    path = project / "data" / "a" / "f0.bin"
    write(path, path.read_bytes().replace(b"a:0", b"X:0"))
    os.utime(path, (future, future))
    commit(repo, project)


def test_same_size_same_mtime_rewrite_is_seen(repo, project):
    start(repo, project)
    path = project / "data" / "c" / "d" / "f1.bin"
    before = path.stat()
    write(path, path.read_bytes().replace(b"c/d:1", b"c/d:Z"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    time.sleep(0.03)
    commit(repo, project)


def test_file_replaced_by_one_of_same_size_and_mtime_from_another_folder(repo, project):
    start(repo, project)
    src, dest = project / "data" / "a" / "f1.bin", project / "data" / "b" / "f1.bin"
    mtime = dest.stat().st_mtime_ns
    os.utime(src, ns=(mtime, mtime))
    os.replace(src, dest)
    time.sleep(0.03)
    commit(repo, project)


def test_folders_renamed_and_swapped(repo, project):
    small_tree(project)
    for name in ("a", "b"):  # same names, sizes and mtimes in both folders
        for i in range(3):
            write(project / "data" / name / f"f{i}.bin", f"{name}{i}".encode() * 4)
    age_all(project / "data")
    commit(repo, project)
    os.rename(project / "data" / "a", project / "data" / "tmp")
    os.rename(project / "data" / "b", project / "data" / "a")
    os.rename(project / "data" / "tmp", project / "data" / "b")
    time.sleep(0.03)
    commit(repo, project)
    os.rename(project / "data" / "c", project / "data" / "e")
    time.sleep(0.03)
    commit(repo, project)


def test_file_turned_into_a_folder_and_back(repo, project):
    start(repo, project)
    path = project / "data" / "a" / "f2.bin"
    path.unlink()
    write(path / "inner.bin", b"inside")
    time.sleep(0.03)
    commit(repo, project)
    shutil.rmtree(path)
    write(path, b"a file again")
    time.sleep(0.03)
    commit(repo, project)


def test_permission_change_is_recorded(repo, project):
    start(repo, project)
    path = project / "data" / "c" / "d" / "f0.bin"
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    time.sleep(0.03)
    rid = commit(repo, project)
    assert recorded(repo, rid)["data/c/d/f0.bin"][0] == EXEC


def test_added_and_removed_files_are_seen(repo, project):
    start(repo, project)
    (project / "data" / "b" / "f0.bin").unlink()
    write(project / "data" / "b" / "new.bin", b"new")
    time.sleep(0.03)
    commit(repo, project)


def test_a_reused_tree_missing_from_the_store_is_built_again(repo, project):
    """The folder entries are a cache: one naming a tree the store lacks is not used."""
    import blake3

    from mlvc.workspace.statcache import encode, parse

    start(repo, project)
    cache = StatCache(repo.dir / "statcache", repo.root, repo.dir / "tmp")
    trees = cache._folders()
    for slots in trees.values():
        for slot in slots:
            slot[1] = b"\x07" * 32  # a tree nobody stored
    data = encode(parse((repo.dir / "statcache").read_bytes())[0], trees)
    (repo.dir / "statcache").write_bytes(data + blake3.blake3(data).digest())
    commit(repo, project)


# -- random edit sequences ------------------------------------------------------------------

NAMES = ["a", "b", "c.bin", "d"]
_path = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join)
_edit = st.one_of(
    st.tuples(st.just("write"), _path, st.binary(max_size=24)),
    st.tuples(st.just("same-size"), _path, st.integers(0, 255)),
    st.tuples(st.just("remove"), _path),
    st.tuples(st.just("chmod"), _path),
    st.tuples(st.just("rename"), _path, _path),
)


def _apply(data: Path, edit) -> None:
    kind, rel, *args = edit
    path = data / rel
    try:
        if kind == "write":
            if path.is_dir():
                shutil.rmtree(path)
            write(path, args[0])
        elif kind == "same-size" and path.is_file():
            raw = bytearray(path.read_bytes())
            mtime = path.stat().st_mtime_ns
            if raw:
                raw[0] = args[0]
            path.write_bytes(bytes(raw))
            os.utime(path, ns=(mtime, mtime))  # only ctime tells
        elif kind == "remove" and path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        elif kind == "chmod" and path.is_file():
            path.chmod(path.stat().st_mode ^ stat.S_IXUSR)
        elif kind == "rename" and path.exists():
            dest = data / args[0]
            if dest.exists() or str(dest).startswith(str(path) + "/"):
                return
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.rename(path, dest)
    except (NotADirectoryError, FileExistsError, IsADirectoryError):
        pass  # a parent is a file: an edit git would refuse too


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(st.lists(_edit, min_size=1, max_size=4), min_size=2, max_size=4))
def test_checkout_of_commit_is_the_tree_after_random_edits(tmp_path_factory, steps):
    root = tmp_path_factory.mktemp("proj")
    Repo.init(root)
    repo = Repo(root)
    small_tree(root)
    for i, edits in enumerate(steps):
        for edit in edits:
            _apply(root / "data", edit)
        if not any(p.is_file() for p in (root / "data").rglob("*")):
            write(root / "data" / "keep.bin", b"keep")
        if i % 2 == 0:
            age_all(root / "data")  # old enough to cache: reuse is what is tested next
        rid = repo.commit(f"step {i}", data=["data"], cwd=root)
        out = root.parent / f"{root.name}-out{i}"
        repo.checkout(rid, to=out)
        assert on_disk(out) == on_disk(root)
    assert repo.fsck() == []


# -- kill -9 ----------------------------------------------------------------------------------


def test_kill_9_mid_commit_leaves_fsck_clean_and_the_next_commit_right(repo, project):
    rng = random.Random(16)
    for i in range(300):
        write(project / "data" / f"d{i % 15}" / f"f{i}.bin", os.urandom(512))
    age_all(project / "data")
    mlvc = [sys.executable, "-m", "mlvc"]
    for trial in range(4):
        for i in rng.sample(range(300), 10):
            write(project / "data" / f"d{i % 15}" / f"f{i}.bin", os.urandom(512))
        if trial % 2:
            age_all(project / "data")
        p = subprocess.Popen(
            [*mlvc, "commit", "-q", "-m", f"t{trial}", "--data", "data"],
            cwd=project,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.05, 0.6))
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert Repo(project).fsck() == []
    commit(Repo(project), project)
    commit(Repo(project), project)
