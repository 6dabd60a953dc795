"""Commits and reproductions killed half way (issue 9 item 24, found by bench_faults.py).

A commit writes its run ref, then HEAD, its name and its tags; killed between them, the run
was recorded without its name. A reproduction killed while its command ran was recorded by
the reaper as a plain run that moved HEAD and forgot what it reproduced.
"""

import json
import os
import signal
import subprocess
import sys
import time

from mlvc import Repo


def mlvc(root, *args, **env):
    return subprocess.run(
        [sys.executable, "-m", "mlvc", *args],
        cwd=root,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )


def test_a_commit_killed_between_its_refs_is_finished_by_the_next_commit(project, repo):
    first = repo.commit("first")
    (project / "train.py").write_text("print('v2')\n")
    done = mlvc(project, "commit", "-q", "-m", "second", "-n", "best", "-t", "good",
                MLVC_FAULT="publish-first-ref")  # fmt: skip
    assert done.returncode == -signal.SIGKILL
    second = repo.head()
    assert second != first  # HEAD moved (the first ref written)...
    assert repo.refs.read("refs/names/best") is None  # ...and the kill came before the name
    (project / "train.py").write_text("print('v3')\n")
    third = repo.commit("third")
    assert repo.refs.read("refs/names/best") == second
    assert repo.refs.read("refs/tags/good") == second
    assert repo.head() == third.oid
    assert repo.fsck() == []


def test_fsck_finishes_a_half_published_commit_and_says_so(project, repo):
    repo.commit("first")
    (project / "train.py").write_text("print('v2')\n")
    done = mlvc(project, "commit", "-q", "-n", "best", MLVC_FAULT="publish-first-ref")
    assert done.returncode == -signal.SIGKILL
    fsck = mlvc(project, "fsck")
    assert fsck.returncode == 0, fsck.stderr
    assert "repaired: finished publishing run" in fsck.stdout
    assert repo.refs.read("refs/names/best") == repo.head()
    assert "finished publishing" not in mlvc(project, "fsck").stdout  # once


def test_a_finished_publish_never_moves_a_ref_another_writer_moved(project, repo):
    repo.commit("first")
    (project / "train.py").write_text("print('v2')\n")
    done = mlvc(project, "commit", "-q", "-n", "best", MLVC_FAULT="publish-first-ref")
    assert done.returncode == -signal.SIGKILL
    killed = repo.head()
    other = repo.commit("meanwhile", name="best")  # the name moves on before recovery
    repo.fsck()
    assert repo.refs.read("refs/names/best") == other.oid
    assert repo.head() == other.oid
    assert killed in repo.refs.run_ids()


def test_a_killed_reproduction_is_recorded_as_a_reproduction_and_leaves_head(project, repo):
    (project / "mlvc.toml").write_text(
        '[entry_points.main]\ncommand = "python train.py"\nmetrics = ["metrics.json"]\n'
    )
    (project / "train.py").write_text(
        "import json, os, time\n"
        "if os.environ.get('SLOW'): time.sleep(60)\n"
        "json.dump({'acc': 1.0}, open('metrics.json', 'w'))\n"
    )
    assert mlvc(project, "run", "-q", "main").returncode == 0
    original = repo.head()
    p = subprocess.Popen(
        [sys.executable, "-m", "mlvc", "reproduce", "HEAD"],
        cwd=project,
        env={**os.environ, "SLOW": "1"},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    live = project / ".mlvc" / "live"
    deadline = time.monotonic() + 60
    while not (live.is_dir() and any(not n.startswith(".") for n in os.listdir(live))):
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.02)
    time.sleep(1)  # the command runs
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert mlvc(project, "runs").returncode == 0  # the reaper records it
    assert Repo(project).head() == original
    shown = json.loads(mlvc(project, "log", "--json").stdout)
    killed = [r for r in shown if r["status"] == "killed"]
    assert len(killed) == 1
    rerun = repo.run(killed[0]["id"])
    assert rerun.reproduces == original
    assert rerun.parents == (original,)
    assert repo.fsck() == []
