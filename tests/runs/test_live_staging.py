"""The live-run staging format has one owner (mlvc.runs.staging), and reads never write:
a dead live run is recorded by the next command that writes, never by log, query, show or
lineage (issue 10, LAYOUT §5.2, §5.3, §5.5)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import mlvc
from mlvc.core.ids import ObjectId
from mlvc.runs.attached import AttachedRun
from mlvc.runs.live import LiveRun
from mlvc.runs.record import Inputs
from mlvc.runs.staging import StagedRun

ROOT = Path(__file__).resolve().parents[2]

DIES = textwrap.dedent("""
    import os, signal
    import mlvc
    run = mlvc.start_run(name="doomed", params={"lr": 0.1})
    for i in range(5):
        run.log_metric("loss", 1.0 / (i + 1))
    run.flush()
    print(run.key, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def _mlvc(project: Path, *args: str, cmd: list[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd or [sys.executable, "-m", "mlvc", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _dead_run(project: Path) -> str:
    """A live run killed with its points flushed; its key."""
    done = subprocess.run(
        [sys.executable, "-c", DIES],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    return done.stdout.strip()


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``folder``: (mtime ns, size)."""
    out = {}
    for dirpath, dirs, files in os.walk(folder):
        for n in [*dirs, *files]:
            st = os.lstat(os.path.join(dirpath, n))
            out[os.path.relpath(os.path.join(dirpath, n), folder)] = (st.st_mtime_ns, st.st_size)
    return out


def _settle(mlvc_dir: Path) -> None:
    """Make the index current and refs old enough to be trusted without a recheck."""
    past = time.time() - 60
    for folder in [mlvc_dir / "refs", *(mlvc_dir / "refs").rglob("*")]:
        if folder.is_dir():
            os.utime(folder, (past, past))


READS = (
    ("log",),
    ("log", "--json"),
    ("query", "SELECT id, status FROM runs"),
    ("show", "HEAD"),
    ("lineage",),
)


def test_reads_never_write_and_a_dead_run_waits_for_the_next_writer(project, repo):
    repo.commit("base", data=["data"])
    key = _dead_run(project)
    _settle(repo.dir)
    repo.index.query("SELECT 1")  # the index is current from here on
    before = _listing(repo.dir)
    for args in (*READS, ("show", key), ("show", "doomed")):
        r = _mlvc(project, *args)
        assert r.returncode == 0 and r.stderr == "", (args, r.stderr)
        assert _listing(repo.dir) == before, args  # nothing written, not even a claim
    shown = json.loads(_mlvc(project, "show", key, "--json").stdout)
    assert shown["status"] == "dead" and shown["metrics"] == {"loss": 0.2}
    assert "gone" in _mlvc(project, "show", "doomed").stdout
    assert [r["status"] for r in repo.log()] == ["finished"]  # the API reads alike
    assert repo.query("SELECT count(*) AS n FROM runs").to_pylist() == [{"n": 1}]
    assert repo.show(key)["status"] == "dead" and repo.lineage()
    assert _listing(repo.dir) == before
    # the next command that writes records it
    assert _mlvc(project, "runs").stdout.strip() == "no live runs"
    runs = repo.log()
    assert [(r["name"], r["status"]) for r in runs] == [("doomed", "killed"), ("", "finished")]
    assert repo.run(runs[0]["id"]).metrics == {"loss": 0.2}
    assert StagedRun.at(repo.layout, key).exists() is False
    assert repo.fsck() == []


def _read_only(mlvc_dir: Path, *args: str) -> list[str]:
    """``mlvc ARGS`` with ``mlvc_dir`` not writable (a read-only bind mount for root, who
    writes through file modes; file modes otherwise), as tests/test_index_repair.py does."""
    cmd = [sys.executable, "-m", "mlvc", *args]
    if os.geteuid() != 0:
        subprocess.run(["chmod", "-R", "a-w", str(mlvc_dir)], check=True)
        return cmd
    script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
    return ["unshare", "--mount", "sh", "-c", script, str(mlvc_dir), *cmd]


def test_reads_answer_in_a_read_only_repository_with_a_dead_live_run(project, repo):
    if os.geteuid() == 0 and shutil.which("unshare") is None:
        pytest.skip("needs unshare to make a read-only folder for root")
    repo.commit("base", data=["data"])
    key = _dead_run(project)
    _settle(repo.dir)
    repo.index.query("SELECT 1")
    before = _listing(repo.dir)
    try:
        for args in (*READS, ("show", key)):
            r = _mlvc(project, cmd=_read_only(repo.dir, *args))
            if os.geteuid() == 0 and "mount" in r.stderr and r.returncode:
                pytest.skip(f"cannot bind-mount here: {r.stderr.strip()}")
            assert r.returncode == 0 and r.stderr == "", (args, r.stderr)
            if args[0] == "query":
                assert "finished" in r.stdout and "killed" not in r.stdout
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(repo.dir)], check=True)
    assert _listing(repo.dir) == before
    # a commit records it first, so the new run follows it
    r = _mlvc(project, "commit", "-q", "-m", "after")
    assert r.returncode == 0, r.stderr
    runs = repo.log()
    assert [r["status"] for r in runs] == ["finished", "killed", "finished"]
    assert repo.run(runs[0]["id"]).parents == (ObjectId.parse(runs[1]["id"]),)
    assert repo.fsck() == []


def test_a_new_live_run_records_the_dead_ones_first(project, repo):
    _dead_run(project)
    assert repo.log() == []
    with mlvc.start_run(repo=repo, name="next") as run:
        run.log_metric("acc", 1.0)
    assert [(r["name"], r["status"]) for r in repo.log()] == [
        ("next", "finished"),
        ("doomed", "killed"),
    ]
    assert repo.fsck() == []


def test_an_attached_run_is_built_by_the_live_run_constructor(project, repo):
    """Every attribute a live run has, a run joined by a script under `mlvc run` has too
    (AttachedRun once set a dozen of them by hand)."""
    live = LiveRun.create(repo.ctx, name="own", capture=False)
    staged = StagedRun.create(
        repo.layout, started=1, argv=["python", "x.py"], cwd=str(project), mlvc_run=True
    )
    joined = AttachedRun.join(repo.ctx, staged)
    try:
        assert set(vars(joined)) == set(vars(live))
        joined.log_param("lr", 0.5)
        joined.log_metric("loss", 1.0)
        assert joined.end() is None  # handed back: `mlvc run` records it
        assert StagedRun.load(staged.path).params == {"lr": 0.5}
        assert StagedRun(staged.path).read_series().num_rows == 1
    finally:
        live.end()
        staged.unstage()


def test_inputs_round_trip_and_damage_reads_as_absent():
    oid = ObjectId.parse("ab" * 32)
    inputs = Inputs(oid, {"commit": "c0ffee"}, None, oid, ("data",), ("out",))
    assert Inputs.from_dict(json.loads(json.dumps(inputs.to_dict()))) == inputs
    empty = Inputs(None, {}, None, None, (), ())
    for junk in (None, [], "x", {"code": "zz", "git": [], "data_paths": "data"}):
        assert Inputs.from_dict(junk) == empty


def test_meta_json_is_written_whole_and_synced(project, repo, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real(fd))
    staged = StagedRun.create(repo.layout, started=1, argv=[], cwd=str(project))
    assert synced, "meta.json was not fsynced before its rename"
    assert [p.name for p in staged.path.iterdir() if p.name.startswith(".")] == []
    staged.remove()


# the names of the live-run folder, which only mlvc/runs/staging/ may spell
_FORMAT = re.compile(
    r"""["'](meta\.json|\.reaping-|\.pin-|\.unstaged-)|/ ["'](live|series|recorded|attached)["']"""
)


def test_only_staging_spells_the_live_run_format():
    spelled = []
    for path in sorted((ROOT / "mlvc").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("mlvc/runs/staging/") or rel == "mlvc/core/layout.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if _FORMAT.search(line):
                spelled.append(f"{rel}:{n}: {line.strip()}")
    assert spelled == []


def test_gc_removes_a_pin_whose_writer_died_before_its_meta(repo, project):
    # bisect's kill -9 test found one: a process killed between the pin's mkdir and the rename
    # of its meta.json left `.mlvc/live/.pin-<pid>-<random>/` with a temp file, kept forever
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pin = project / ".mlvc" / "live" / f".pin-{dead.pid}-0badc0de"
    pin.mkdir(parents=True)
    (pin / ".meta.json.1234abcd").write_bytes(b'{"pid": ')
    mine = project / ".mlvc" / "live" / f".pin-{os.getpid()}-0badc0df"
    mine.mkdir()
    repo.gc()
    assert not pin.exists()
    assert mine.exists()  # a live writer's pin, even one without its meta yet, stays
    shutil.rmtree(mine)
