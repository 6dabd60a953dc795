"""The index is a cache: damage to it is repaired, not reported as a query error (issue 9,
item 20); a repository config this mlvc cannot read is refused; keys differing only in case
each keep their column in runs_wide (item 13a)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlvc import Repo
from mlvc.errors import EXIT_CODES, UnsupportedRepository

ROOT = Path(__file__).resolve().parents[2]
REBUILT = "index was damaged; rebuilt from objects and refs"
HEADER = 3 * 4096  # DuckDB's file header before block 0


def mlvc_proc(*args, cwd, user=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlvc", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        user=user,
    )


def no_traceback(r: subprocess.CompletedProcess) -> None:
    assert r.returncode >= 0 and "Traceback" not in r.stderr, r.stderr


@pytest.fixture
def runs(project) -> list[str]:
    """Five runs with params, metrics and tags; their ids, oldest first."""
    repo = Repo(project)
    ids = []
    for i in range(5):
        (project / "train.py").write_text(f"print({i})\n")
        params, metrics = {"lr": i / 10}, {"acc": i / 10}
        tags = {f"t{i}": ""}
        ids.append(repo.commit(f"run {i}", params=params, metrics=metrics, tags=tags,
                               capture_env=False))  # fmt: skip
    return ids


def index_file(project) -> Path:
    return project / ".mlvc" / "index.duckdb"


def block_of(project, table: str) -> tuple[int, int]:
    """(file offset, block size) of the first data block of ``table``'s first column."""
    import duckdb

    con = duckdb.connect(str(index_file(project)), read_only=True)
    try:
        size = con.execute("SELECT block_size FROM pragma_database_size()").fetchone()[0]
        block, offset = con.execute(
            f"SELECT block_id, block_offset FROM pragma_storage_info('{table}') "
            "WHERE block_id >= 0 ORDER BY column_id, row_group_id LIMIT 1"
        ).fetchone()
    finally:
        con.close()
    return HEADER + block * size + 8 + offset, size


def damage(path: Path, offset: int, n: int = 64) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\xa5" * n)


RUN_IDS = ("query", "SELECT id FROM runs", "-f", "json")  # what the index says


def check_all_runs(project, ids: list[str]) -> subprocess.CompletedProcess:
    q = mlvc_proc(*RUN_IDS, cwd=project)
    no_traceback(q)
    assert q.returncode == 0, q.stderr
    assert sorted(r["id"] for r in json.loads(q.stdout)) == sorted(ids)
    return q


def test_damaged_data_block_is_rebuilt_for_the_runs_table(runs, project):
    offset, _ = block_of(project, "runs")
    damage(index_file(project), offset)
    log = mlvc_proc("log", cwd=project)  # reads refs and run objects, not the index
    no_traceback(log)
    assert log.returncode == 0 and log.stderr == "", log.stderr
    assert all(rid[:10] in log.stdout for rid in runs)
    q = check_all_runs(project, runs)
    assert q.stderr == f"mlvc: warning: {REBUILT}\n"
    again = check_all_runs(project, runs)
    assert again.stderr == ""


def test_damaged_data_block_is_rebuilt_for_query(runs, project):
    offset, _ = block_of(project, "wide_base")
    damage(index_file(project), offset)
    q = mlvc_proc("query", 'SELECT id, "params.lr" FROM runs_wide', "-f", "json", cwd=project)
    no_traceback(q)
    assert q.returncode == 0, q.stderr
    assert sorted(r["id"] for r in json.loads(q.stdout)) == sorted(runs)
    assert REBUILT in q.stderr and q.stderr.count("\n") == 1


def test_damaged_block_is_rebuilt_for_the_library(runs, project):
    offset, _ = block_of(project, "metric_summary")
    damage(index_file(project), offset)
    repo = Repo(project)
    got = repo.query("SELECT run_id, last FROM metric_summary ORDER BY last").to_pylist()
    assert [r["last"] for r in got] == [0.0, 0.1, 0.2, 0.3, 0.4]


def test_damage_met_while_ingesting_a_commit_is_rebuilt(runs, cli, project):
    offset, _ = block_of(project, "runs")
    damage(index_file(project), offset)
    (project / "train.py").write_text("print('new')\n")
    c = mlvc_proc("commit", "-q", "-m", "late", cwd=project)
    no_traceback(c)
    assert c.returncode == 0 and c.stderr == f"mlvc: warning: {REBUILT}\n"
    check_all_runs(project, [*runs, c.stdout.strip()])


def test_damage_met_inside_this_threads_reader_is_reported_not_rebuilt(runs, project):
    """A rebuild needs the exclusive lock, which this thread's own reader keeps from it: the
    nested query says what to run instead of waiting for itself."""
    from mlvc.errors import IndexDamaged

    offset, _ = block_of(project, "wide_base")
    damage(index_file(project), offset)
    repo = Repo(project)
    with repo.index.connect_readonly():
        start = time.monotonic()
        with pytest.raises(IndexDamaged, match="mlvc index rebuild"):
            repo.query('SELECT "params.lr" FROM runs_wide')
        assert time.monotonic() - start < 5.0
    assert len(repo.query('SELECT "params.lr" FROM runs_wide')) == 5  # rebuilt now


def test_damage_met_while_another_thread_reads_is_rebuilt_when_it_ends(runs, project):
    """Another thread's reader is waited for, as another process's is: the query that met
    the damage rebuilds the index once that reader ends, and answers."""
    import threading

    offset, _ = block_of(project, "wide_base")
    damage(index_file(project), offset)
    repo = Repo(project)
    holding, release = threading.Event(), threading.Event()
    out: dict = {}

    def reader() -> None:
        with repo.index.connect_readonly():
            holding.set()
            release.wait(60)

    def query() -> None:
        try:
            out["rows"] = repo.query('SELECT "params.lr" FROM runs_wide').to_pylist()
        except Exception as e:  # the assertions below report it
            out["error"] = e

    a = threading.Thread(target=reader)
    a.start()
    assert holding.wait(30)
    b = threading.Thread(target=query)
    b.start()
    b.join(1.0)  # with per-process nesting, B gave up at once: "run mlvc index rebuild"
    release.set()
    a.join(30)
    b.join(60)
    assert "error" not in out, out.get("error")
    assert sorted(r["params.lr"] for r in out["rows"]) == [0.0, 0.1, 0.2, 0.3, 0.4]


@pytest.mark.parametrize("how", ["middle", "truncate", "garbage", "empty", "header"])
def test_damaged_index_file_is_rebuilt(runs, project, how):
    path = index_file(project)
    size = path.stat().st_size
    if how == "middle":
        damage(path, size // 2, 4096)
        damage(path, block_of(project, "runs")[0], 512)
    elif how == "truncate":
        with open(path, "r+b") as f:
            f.truncate(size // 3)
    elif how == "garbage":
        path.write_bytes(os.urandom(size))
    elif how == "empty":
        path.write_bytes(b"")
    else:
        damage(path, 0, 200)
    q = check_all_runs(project, runs)
    assert q.stderr == f"mlvc: warning: {REBUILT}\n"
    r = mlvc_proc("query", "SELECT count(*) AS n FROM runs_wide", "-f", "json", cwd=project)
    no_traceback(r)
    assert r.returncode == 0 and json.loads(r.stdout) == [{"n": 5}], r.stderr


def read_only(mlvc_dir: Path, *args) -> list[str]:
    """The command ``mlvc ARGS`` with ``mlvc_dir`` not writable for it.

    Root writes through file modes, so as root the folder is bind-mounted read-only in a
    mount namespace of the command's own (``unshare``); otherwise its modes say so.
    """
    cmd = [sys.executable, "-m", "mlvc", *args]
    if os.geteuid() != 0:
        subprocess.run(["chmod", "-R", "a-w", str(mlvc_dir)], check=True)
        return cmd
    script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
    return ["unshare", "--mount", "sh", "-c", script, str(mlvc_dir), *cmd]


def test_damaged_index_in_a_read_only_repository_is_one_clear_line(runs, project):
    """A current index still answers where .mlvc cannot be written; a damaged one is one
    clear line, not a traceback."""
    mlvc_dir = project / ".mlvc"
    if os.geteuid() == 0 and shutil.which("unshare") is None:
        pytest.skip("needs unshare to make a read-only folder for root")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    past = time.time() - 60  # refs changed just now are rechecked, which needs a write
    for folder in [mlvc_dir / "refs", *(mlvc_dir / "refs").rglob("*")]:
        if folder.is_dir():
            os.utime(folder, (past, past))
    assert mlvc_proc(*RUN_IDS, cwd=project).returncode == 0  # the index is current
    try:
        ok = subprocess.run(
            read_only(mlvc_dir, *RUN_IDS), cwd=project, capture_output=True, text=True, env=env
        )
        if os.geteuid() == 0 and "mount" in ok.stderr and ok.returncode:
            pytest.skip(f"cannot bind-mount here: {ok.stderr.strip()}")
        no_traceback(ok)
        assert ok.returncode == 0, ok.stderr
        assert all(rid[:10] in ok.stdout for rid in runs)
        subprocess.run(["chmod", "-R", "u+w", str(mlvc_dir)], check=True)
        damage(index_file(project), block_of(project, "runs")[0])
        log = subprocess.run(  # log needs no index
            read_only(mlvc_dir, "log"), cwd=project, capture_output=True, text=True, env=env
        )
        assert log.returncode == 0 and all(rid[:10] in log.stdout for rid in runs), log.stderr
        subprocess.run(["chmod", "-R", "u+w", str(mlvc_dir)], check=True)
        for args in (list(RUN_IDS), ["query", "SELECT * FROM runs"]):
            r = subprocess.run(
                read_only(mlvc_dir, *args), cwd=project, capture_output=True, text=True, env=env
            )
            no_traceback(r)
            assert r.returncode == 1, r.stderr
            lines = r.stderr.splitlines()
            assert len(lines) == 1 and lines[0].startswith("mlvc: error: "), r.stderr
            assert "cannot write the index" in lines[0] and "mlvc index rebuild" in lines[0]
            subprocess.run(["chmod", "-R", "u+w", str(mlvc_dir)], check=True)
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(mlvc_dir)], check=True)


# -- the repository config -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "config, needle",
    [
        ('[core]\nformat_version = 2\nhash = "blake3"\n', "format_version = 2"),
        ('[core]\nformat_version = 1\nhash = "sha256"\n', "sha256"),
        ("[core\nformat_version = 1\n", "not valid TOML"),
        ('[core]\nformat_version = "one"\nhash = "blake3"\n', "format_version"),
    ],
)
@pytest.mark.damages_repo
def test_unsupported_config_is_refused_with_its_own_code(cli, project, config, needle):
    cli("commit", "-q")
    (project / ".mlvc" / "config").write_text(config)
    for args in (["log"], ["status"], ["commit", "-q"], ["query", "SELECT 1"]):
        r = cli(*args, ok=False)
        assert r.exit_code == 14, (args, r.output)
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and "Traceback" not in r.output
        assert ".mlvc/config" in lines[0] and needle in lines[0]
        assert "this mlvc" in lines[0]
    with pytest.raises(UnsupportedRepository):
        Repo(project)
    assert EXIT_CODES[UnsupportedRepository.exit_code].startswith("unsupported repository")


def test_config_written_by_init_is_accepted(tmp_path):
    repo = Repo.init(tmp_path / "p")
    assert Repo(repo.root).root == repo.root


# -- runs_wide with keys that differ only in case ------------------------------------------------


def test_case_colliding_keys_each_keep_a_column(repo):
    """Keys are exact; DuckDB column names ignore case: one column per exact key."""
    repo.commit("a", params={"lr": 0.1}, metrics={"acc": 0.5}, capture_env=False)
    repo.commit("b", params={"LR": 5}, metrics={"Acc": 0.7}, capture_env=False)
    repo.commit("c", params={"lr": 0.2}, metrics={"acc": 0.6}, capture_env=False)
    table = repo.query("SELECT * FROM runs_wide ORDER BY message")
    names = table.column_names
    lowered = [n.lower() for n in names]
    assert len(lowered) == len(set(lowered)), names  # DuckDB cannot tell them apart otherwise
    got = table.to_pylist()
    columns = {}
    for family, key in (("params", "lr"), ("params", "LR"), ("metrics", "acc"), ("metrics", "Acc")):
        found = [n for n in names if n.split("#")[0] == f"{family}.{key}"]
        assert len(found) == 1, (family, key, names)
        columns[f"{family}.{key}"] = [r[found[0]] for r in got]
    assert columns == {
        "params.lr": [0.1, None, 0.2],
        "params.LR": [None, 5, None],
        "metrics.acc": [0.5, None, 0.6],
        "metrics.Acc": [None, 0.7, None],
    }
    # the documented names: the first key in byte order keeps the plain name
    assert {"params.LR", "params.lr#2", "metrics.Acc", "metrics.acc#2"} <= set(names)
    # a rebuild names them the same way
    before = repo.query("SELECT * FROM runs_wide ORDER BY message")
    repo.rebuild_index()
    assert repo.query("SELECT * FROM runs_wide ORDER BY message").equals(before)
