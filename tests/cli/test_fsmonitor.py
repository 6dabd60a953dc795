"""The command server's file-system monitor (mlvc.core.fsmonitor): a commit through a real
``mlvc daemon`` walks again only the data folders that changed, and records exactly what a
commit in its own process records after any change to the data (content, times, modes,
links, files and folders made, moved and removed, a hook's own edits, a hard link written
through its other name, the folder replaced). Real server, real inotify, real files."""

from __future__ import annotations

import json
import marshal
import os
import shutil
import socket
import time
from pathlib import Path

import pytest
from daemon_helpers import mlvc_run, start
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlvc.core import fsmonitor, speedups

_walk = speedups.built("mlvc._walk")
pytestmark = pytest.mark.skipif(
    _walk is None or not hasattr(_walk, "watch_open"), reason="mlvc._walk is not built"
)


def data_tree(env) -> str:
    out = mlvc_run(env, "show", "HEAD", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["data"]["tree"]


def commit(env) -> str:
    out = mlvc_run(env, "commit", "-q", "-m", "x", "--data", "data")
    assert out.returncode == 0, out.stderr
    return data_tree(env)


def monitor_status(env) -> dict[str, int]:
    line = mlvc_run(env, "daemon", "status").stdout.splitlines()[-1]
    assert "walks asked" in line, line
    watched = int(line.split("watched: ")[1].split(";")[0])
    walks = int(line.split("walks asked: ")[1].split(",")[0])
    reused = int(line.split("unchanged: ")[1])
    return {"watched": watched, "walks": walks, "reused": reused}


def both(env) -> tuple[str, str]:
    """The data tree a served commit records, then one in its own process (the truth)."""
    served = commit(env)
    own = commit({**env, "MLVC_DAEMON": "0"})
    return served, own


def make_data(project: Path) -> None:
    for d in range(4):
        for f in range(5):
            p = project / "data" / f"d{d}" / f"f{f}.txt"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(f"{d}-{f}\n")
    (project / "data" / "d1" / "deep").mkdir()
    (project / "data" / "d1" / "deep" / "x.txt").write_text("deep\n")


@pytest.fixture
def watched(project, env):
    """A project whose data folders the server watches and trusts (two walks made)."""
    make_data(project)
    start(env)
    for _ in range(2):  # the first walk makes the watches, the second a trusted listing
        served, own = both(env)
        assert served == own
    return project


def test_an_unchanged_commit_takes_every_folder_from_the_monitor(watched, env):
    before = monitor_status(env)
    assert before["watched"] == 1
    served, own = both(env)
    after = monitor_status(env)
    assert served == own
    assert after["walks"] == before["walks"] + 1
    # data, d0..d3 and d1/deep: six folders, none walked again
    assert after["reused"] - before["reused"] == 6


def test_a_changed_file_is_walked_again_alone(watched, env):
    before = monitor_status(env)
    old = data_tree(env)
    (watched / "data" / "d2" / "f3.txt").write_text("changed, same folder\n")
    served, own = both(env)
    assert served == own != old
    assert monitor_status(env)["reused"] - before["reused"] == 5  # d2 walked again


def test_a_pre_commit_hook_that_edits_data_is_seen(watched, env):
    """The command asks the server when it walks, not when it was forked: its own hook's
    change (made after the fork) is in what it records."""
    hook = watched / ".mlvc" / "hooks" / "pre-commit"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text("#!/bin/sh\necho from-the-hook > data/d0/f0.txt\n")
    hook.chmod(0o755)
    served = commit(env)
    assert (watched / "data" / "d0" / "f0.txt").read_text() == "from-the-hook\n"
    hook.unlink()
    assert served == commit({**env, "MLVC_DAEMON": "0"})


def test_a_file_written_through_another_hard_link_is_seen(watched, env, tmp_path):
    """A folder holding a file with other links is walked every time (a write through the
    other name is told to the other folder's watchers), once a walk has seen the link: a
    link made from outside is not an event of the folder (documented), so here the
    folder changes once after it."""
    outside = tmp_path / "elsewhere.txt"
    os.link(watched / "data" / "d3" / "f1.txt", outside)
    (watched / "data" / "d3" / "f4.txt").write_text("d3 walked again\n")
    for _ in range(3):
        served, own = both(env)
        assert served == own
    with open(outside, "r+") as f:
        f.write("9")
    assert (watched / "data" / "d3" / "f1.txt").read_text().startswith("9")
    served, own = both(env)
    assert served == own


def test_a_hard_link_made_inside_the_root_then_written_through_is_seen(watched, env):
    """Both the link and the write are told to the link's folder only: the folder of the
    file's first name must not be trusted from then on (review finding; failed before)."""
    os.link(watched / "data" / "d0" / "f0.txt", watched / "data" / "d1" / "alias.txt")
    served, own = both(env)
    assert served == own
    with open(watched / "data" / "d1" / "alias.txt", "r+") as f:
        f.write("CHANGED")
    assert (watched / "data" / "d0" / "f0.txt").read_text().startswith("CHANGED")
    for _ in range(2):
        served, own = both(env)
        assert served == own


def test_the_data_folder_replaced_is_walked_in_full(watched, env):
    shutil.move(watched / "data", watched / "old-data")
    (watched / "data" / "d0").mkdir(parents=True)
    (watched / "data" / "d0" / "f0.txt").write_text("0-0\n")  # the old d0/f0's content
    served, own = both(env)
    assert served == own
    assert monitor_status(env)["watched"] == 1  # watched anew


def test_a_moved_project_is_watched_at_its_new_path(watched, env):
    """The watches follow the folders' inodes: after the project moves, the old root's paths
    are stale, and a walk at the new path takes the watches over (same inodes)."""
    moved = watched.with_name("moved")
    watched.rename(moved)
    try:
        for _ in range(3):
            served = commit_in(env, moved)
            assert served == commit_in({**env, "MLVC_DAEMON": "0"}, moved)
        before = monitor_status(env)
        assert before["watched"] == 1
        (moved / "data" / "d0" / "f1.txt").write_text("after the move\n")
        served = commit_in(env, moved)
        assert served == commit_in({**env, "MLVC_DAEMON": "0"}, moved)
        assert monitor_status(env)["reused"] - before["reused"] == 5
    finally:
        moved.rename(watched)
        os.chdir(watched)


def commit_in(env, where: Path) -> str:
    out = mlvc_run(env, "-C", str(where), "commit", "-q", "-m", "x", "--data", "data")
    assert out.returncode == 0, out.stderr
    out = mlvc_run(env, "-C", str(where), "show", "HEAD", "--json")
    return json.loads(out.stdout)["data"]["tree"]


@pytest.mark.parametrize("link", ["copy", "hardlink", "symlink"])
def test_a_checkout_through_the_server_then_a_commit_records_the_checked_out_data(
    watched, env, link
):
    """``mlvc checkout`` writes the data folders (events the monitor marks); a commit after
    it records the run checked out, through the server as in its own process."""
    first = mlvc_run(env, "show", "HEAD", "--json")
    old_run, old_tree = json.loads(first.stdout)["id"], data_tree(env)
    (watched / "data" / "d1" / "f0.txt").write_text("newer\n")
    (watched / "data" / "d2" / "f4.txt").unlink()
    assert commit(env) != old_tree
    out = mlvc_run(env, "checkout", old_run, "--force", "--link", link)
    assert out.returncode == 0, out.stderr
    assert (watched / "data" / "d1" / "f0.txt").read_text() == "1-0\n"
    served, own = both(env)
    assert served == own == old_tree


def test_with_MLVC_FSMONITOR_0_a_command_walks_in_full(watched, env):
    before = monitor_status(env)
    out = mlvc_run({**env, "MLVC_FSMONITOR": "0"}, "commit", "-q", "-m", "x", "--data", "data")
    assert out.returncode == 0, out.stderr
    assert monitor_status(env)["walks"] == before["walks"]


OPS = st.sampled_from(
    ["rewrite", "append", "touch", "create", "delete", "rename", "move", "mkdir", "rmtree",
     "rename_dir", "chmod", "symlink", "replace_by_dir", "none"]
)  # fmt: skip


def apply(project: Path, op: str, k: int) -> None:
    """One change to the data, at a place picked by ``k``."""
    data = project / "data"
    files = sorted(p for p in data.rglob("*") if p.is_file() and not p.is_symlink())
    dirs = sorted(p for p in data.rglob("*") if p.is_dir() and not p.is_symlink())
    f = files[k % len(files)] if files else None
    d = dirs[k % len(dirs)] if dirs else data
    if op == "rewrite" and f:
        f.write_bytes(f.read_bytes()[::-1] or b"x")  # same size, same second
    elif op == "append" and f:
        with open(f, "ab") as out:
            out.write(b"+")
    elif op == "touch" and f:
        os.utime(f, ns=(1_000_000_000 * k, 1_000_000_000 * k))
    elif op == "create":
        (d / f"new{k}.txt").write_text(f"new {k}\n")
    elif op == "delete" and f and len(files) > 1:
        f.unlink()
    elif op == "rename" and f:
        f.rename(f.with_name(f"renamed{k}.txt"))
    elif op == "move" and f:
        f.rename(d / f"moved{k}-{f.name}")
    elif op == "mkdir":
        (d / f"sub{k}").mkdir(exist_ok=True)
        (d / f"sub{k}" / "in.txt").write_text(f"in {k}\n")
    elif op == "rmtree" and d != data:
        shutil.rmtree(d)
    elif op == "rename_dir" and d != data:
        d.rename(d.with_name(f"{d.name}-r{k}"))
    elif op == "chmod" and f:
        f.chmod(f.stat().st_mode ^ 0o100)
    elif op == "symlink" and f and not (d / f"link{k}").exists():
        os.symlink(os.path.relpath(f, d), d / f"link{k}")
    elif op == "replace_by_dir" and f and len(files) > 1:
        f.unlink()
        f.mkdir()
        (f / "now-a-folder.txt").write_text("folder\n")


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(st.tuples(OPS, st.integers(0, 50)), min_size=1, max_size=4))
def test_served_commits_record_what_an_own_process_records(watched, env, ops):
    for op, k in ops:
        apply(watched, op, k)
    served, own = both(env)
    assert served == own, ops


def test_changes_during_served_commits_are_never_lost(watched, env):
    """Files change while two served commits walk at once (a thread rewriting, creating
    and removing files and folders throughout): whatever those commits recorded, once the
    writing stops the next served commit records what a walk in its own process does."""
    import random
    import subprocess
    import threading

    from daemon_helpers import MLVC

    stop = threading.Event()
    rng = random.Random(7)

    def churn():
        k = 0
        while not stop.is_set():
            k += 1
            try:
                apply(watched, rng.choice(["rewrite", "append", "create", "touch", "mkdir"]), k)
            except OSError:  # a file another step removed meanwhile
                pass

    writer = threading.Thread(target=churn)
    writer.start()
    try:
        for _ in range(4):
            procs = [
                subprocess.Popen(
                    [MLVC, "commit", "-q", "-m", "busy", "--data", "data"], env=env,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
                for _ in range(2)
            ]  # fmt: skip
            for p in procs:
                p.wait(timeout=120)  # may fail: "disappeared while it was being recorded"
    finally:
        stop.set()
        writer.join()
    for _ in range(2):
        served, own = both(env)
        assert served == own


def test_the_watcher_marks_changed_folders_and_forgets_on_overflow_or_mounts(tmp_path):
    """The server's half in this process: a full walk's report makes watches; an event marks
    its folder; a question is answered with the folders changed since a token; an
    overflow, or a change of the mount table, drops every root."""
    base = str(tmp_path)
    (tmp_path / "data" / "a").mkdir(parents=True)
    (tmp_path / "data" / "a" / "f").write_text("1")
    (tmp_path / "data" / "b").mkdir()
    watcher = fsmonitor.start()
    try:
        st_ = os.lstat(tmp_path / "data")
        ident = (st_.st_dev, st_.st_ino)
        key = (base, "data")

        def ask(held: int):
            return marshal.loads(watcher.answer(marshal.dumps((key, ident, held))))

        def report(token: int) -> None:
            found = _walk.walk(base, "data", lambda n: False, 65536, fsmonitor.MODE_SHARED)
            watcher._report(key, ident, token, 0, found)

        for garbage in (b"", b"\x00garbage", marshal.dumps(("just", "two"))):
            with pytest.raises((ValueError, EOFError, TypeError)):
                watcher.answer(garbage)  # the server closes that command's line
        t1, changed = ask(0)
        assert changed is None  # nothing held
        report(t1)  # first walk: watches made, not trusted
        assert set(watcher.roots[key].wds) == {"data", "data/a", "data/b"}
        assert watcher.roots[key].listing is None
        t2, _ = ask(0)
        report(t2)
        assert watcher.roots[key].token == t2
        assert ask(t2)[1] == []
        (tmp_path / "data" / "a" / "f").write_text("2")
        assert ask(t2)[1] == ["data/a"]
        (tmp_path / "data" / "b" / "sub").mkdir()  # a folder made: the root is dropped
        assert ask(t2)[1] is None and key not in watcher.roots
        report(ask(0)[0])
        report(ask(0)[0])
        assert watcher.roots[key].listing is not None
        watcher._event(-1, fsmonitor.IN_Q_OVERFLOW)
        assert not watcher.roots and not watcher.by_wd
        report(ask(0)[0])
        watcher.mounts = b"another mount table"
        ask(0)  # read when a command asks (not at every event: storms cost the server)
        assert not watcher.roots
        watcher.budget = 2  # fewer watches left than the root has folders: never watched
        report(ask(0)[0])
        assert not watcher.roots and key in watcher.refused
        report(ask(0)[0])  # refused: not tried again for a while...
        assert not watcher.roots
        watcher.budget = 1000
        watcher.refused[key] -= fsmonitor.REFUSE_FOR  # ...then tried again
        report(ask(0)[0])
        assert key in watcher.roots
        # a file or folder mounted at or below the root: its events go elsewhere
        table = watcher.mounts + b"99 1 0:5 / " + os.fsencode(base) + b"/data/a/f rw - x y z\n"
        watcher.drop(watcher.roots[key])
        real = fsmonitor._mounts
        try:
            fsmonitor._mounts = lambda: table
            report(ask(0)[0])
        finally:
            fsmonitor._mounts = real
        assert key not in watcher.roots and key in watcher.refused
        # a dropped root's watches go a batch per drain (all at once overflowed the queue)
        del watcher.refused[key]
        watcher.mounts = fsmonitor._mounts()
        report(ask(0)[0])
        wds = set(watcher.roots[key].wds.values())
        watcher.drop(watcher.roots[key])
        assert watcher.retired == wds
        batch, fsmonitor.RETIRE_BATCH = fsmonitor.RETIRE_BATCH, 1
        try:
            watcher.drain()
            assert len(watcher.retired) == len(wds) - 1
        finally:
            fsmonitor.RETIRE_BATCH = batch
        report(ask(0)[0])  # the same folders again: their live watches are taken back
        assert not watcher.retired & set(watcher.roots[key].wds.values())
        # a root nested in a watched one (or holding it): the one walked last is watched
        inner = (base, "data/a")
        found = _walk.walk(base, "data/a", lambda n: False, 65536, fsmonitor.MODE_SHARED)
        watcher._report(inner, _ident(tmp_path / "data" / "a"), ask(0)[0], 0, found)
        assert list(watcher.roots) == [inner]
        report(ask(0)[0])
        assert list(watcher.roots) == [key]
    finally:
        watcher.close()


def test_a_new_roots_watches_are_added_a_batch_per_turn(tmp_path, monkeypatch):
    """A new root's watches go in batches between the server's other work (20k folders at
    once held its loop ~350 ms); until the last is added its listings are not trusted, and
    a folder made meanwhile drops it."""
    base = str(tmp_path)
    for i in range(7):
        (tmp_path / "data" / f"d{i}").mkdir(parents=True)
    monkeypatch.setattr(fsmonitor, "WATCH_BATCH", 3)
    watcher = fsmonitor.start()
    try:
        key, ident = (base, "data"), _ident(tmp_path / "data")

        def ask(held: int):
            return marshal.loads(watcher.answer(marshal.dumps((key, ident, held))))

        def report(token: int) -> None:
            found = _walk.walk(base, "data", lambda n: False, 65536, fsmonitor.MODE_SHARED)
            watcher._report(key, ident, token, 0, found)

        report(ask(0)[0])  # 8 folders: 3 watched now, parents first
        root = watcher.roots[key]
        assert len(root.wds) == 3 and next(iter(root.wds)) == "data"
        assert watcher.pending == [root]
        t, _ = ask(0)
        report(t)  # walked while watches are missing: never a listing
        assert root.listing is None and ask(t)[1] is None
        watcher.work()
        watcher.work()
        assert len(root.wds) == 8 and not watcher.pending
        t, _ = ask(0)
        report(t)
        assert root.listing is not None and ask(t)[1] == []
        (tmp_path / "data" / "d6" / "f").write_text("x")
        assert ask(t)[1] == ["data/d6"]
        # a folder made while the watches go in: the root is dropped, its batches stop
        watcher.drop(root)
        report(ask(0)[0])
        root = watcher.roots[key]
        (tmp_path / "data" / "new").mkdir()  # in a watched folder (parents go first)
        watcher.drain()
        assert key not in watcher.roots
        watcher.work()
        assert not watcher.pending and len(root.wds) == 0
    finally:
        watcher.close()


def _ident(path: Path) -> tuple[int, int]:
    st_ = os.lstat(path)
    return (st_.st_dev, st_.st_ino)


def test_mount_points_at_or_below_a_folder():
    table = (
        b"22 1 8:1 / / rw - ext4 /dev/vda rw\n"
        b"30 22 0:5 / /proj/data/my\\040files rw - tmpfs t rw\n"
        b"31 22 0:6 / /proj/database rw - tmpfs t rw\n"
    )
    assert fsmonitor._mounted_at_or_below(table, "/proj/data")
    assert fsmonitor._mounted_at_or_below(table, "/proj/data/my files")
    assert not fsmonitor._mounted_at_or_below(table, "/proj/data/my")
    assert not fsmonitor._mounted_at_or_below(table, "/proj/dat")
    assert not fsmonitor._mounted_at_or_below(table, "/elsewhere")


def test_a_command_without_its_server_walks_in_full(tmp_path):
    """A command whose server died (its socket closed) walks as without a monitor."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f").write_text("1")
    watcher = fsmonitor.start()
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    report = os.memfd_create("test")
    try:
        session = fsmonitor.Session(watcher, theirs, report)
        mine.close()
        t0 = time.monotonic()
        found = session.walk(_walk, str(tmp_path), "data", lambda n: False)
        assert time.monotonic() - t0 < fsmonitor.ASK_TIME
        assert found == _walk.walk(str(tmp_path), "data", lambda n: False)
        assert os.fstat(report).st_size == 0  # nothing reported
        assert session.ask is None  # not asked again (a late answer would be misread)
        assert session.walk(_walk, str(tmp_path), "data", lambda n: False) == found
    finally:
        watcher.close()
        os.close(report)
