"""Read commands start light: no duckdb, pyarrow, numpy or pandas, no index opened, no
command module but their own (issue 16, item 1), and ``log`` answers from the run list
(mlvc.refs.runlist) exactly as the index would."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mlvc import Repo

HEAVY = {"duckdb", "pyarrow", "numpy", "pandas"}
NOT_NEEDED = {
    "mlvc.index.index",  # the index is never opened, so never waited on
    "mlvc.cli.server",  # other commands' modules
    "mlvc.cli.models",
    "mlvc.api.export",
    "http.client",  # no server is named: api.remote does not load the HTTP stack
    "importlib.metadata",  # no entry-point or distribution scan at start
}
LOG_SQL = (
    "SELECT id, short_id, name, status, message, author, created, ended, parent "
    "FROM runs ORDER BY created DESC, id"
)


def _loaded_by(args: list[str], cwd) -> tuple[set[str], str]:
    """The modules a fresh interpreter holds after running ``mlvc ARGS``, and its output."""
    code = (
        "import sys\n"
        "from mlvc.cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "print('\\0' + '\\n'.join(sorted(sys.modules)))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLVC_TRACKING_URI"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    text, _, modules = out.stdout.rpartition("\0")
    return set(modules.split()), text


@pytest.fixture
def two_runs(cli, project):
    cli("commit", "-q", "-m", "first", "-p", "lr=0.1", "-M", "acc=0.5", "--data", "data")
    (project / "train.py").write_text("print('training more')\n")
    cli("commit", "-q", "-m", "second", "-p", "lr=0.2", "-M", "acc=0.6", "--data", "data")
    (project / "src" / "model.py").write_text("changed\n")  # something for status to show
    return project


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["log", "-n", "1"],
        ["log", "-l"],
        ["log", "--json"],
        ["show", "HEAD"],
        ["show", "HEAD~1", "--json"],
        ["status"],
        ["diff", "HEAD~1", "HEAD"],
        ["runs"],
    ],
)
def test_read_commands_load_no_heavy_module_and_open_no_index(two_runs, args):
    loaded, out = _loaded_by(args, two_runs)
    assert out.strip()  # it answered
    assert loaded.isdisjoint(HEAVY), sorted(loaded & HEAVY)
    not_needed = NOT_NEEDED - (
        {"mlvc.cli.server", "mlvc.cli.models"} if args == ["--help"] else set()
    )
    assert loaded.isdisjoint(not_needed), sorted(loaded & not_needed)
    if args != ["--help"]:  # it lists every command, so it loads every command module
        assert "mlvc.cli.runs" in loaded


def test_query_is_where_duckdb_loads(two_runs):
    """The check above can fail: the module list is real (query needs DuckDB)."""
    loaded, _ = _loaded_by(["query", "SELECT count(*) AS n FROM runs"], two_runs)
    assert "duckdb" in loaded


def test_log_answers_as_the_index_does(repo, cli, project):
    for i in range(6):
        (project / "train.py").write_text(f"print({i})\n")
        tags = ["-t", f"t{i}"] if i % 2 else []
        cli("commit", "-q", "-m", f"run {i}\nbody \x1b line", "-n", f"n{i % 3}", *tags)
    expected = repo.index.query(LOG_SQL).to_pylist()
    assert len(expected) == 6
    assert repo.log() == expected
    assert repo.log(2) == expected[:2]
    assert repo.log(0) == []
    texts = [json.dumps(r, default=str, sort_keys=True) for r in repo.log()]
    assert texts == [json.dumps(r, default=str, sort_keys=True) for r in expected]


def test_log_ties_and_unknown_times_sort_as_sql_does(repo):
    """Equal and missing start times: newest first, NULLs last, then by id."""
    from mlvc.core.objects import Run
    from mlvc.runs.record import publish_run
    from mlvc.store.typed import write_object

    for i, started in enumerate([5_000_000, 5_000_000, 0, 7_000_000, 0, 5_000_000]):
        run = Run(message=f"m{i}", started=started, ended=started + 1 if started else 0)
        oid = write_object(repo.store, run)
        repo.store.flush()
        publish_run(repo.ctx, oid, run, move_head=False)
    assert repo.log() == repo.index.query(LOG_SQL).to_pylist()
    assert [r["created"] is None for r in repo.log()] == [False] * 4 + [True] * 2


def test_run_list_is_a_cache_that_never_hides_or_invents_a_run(repo, cli, project):
    for i in range(3):
        (project / "train.py").write_text(f"print({i})\n")
        cli("commit", "-q", "-m", f"run {i}")
    full = repo.log()
    runlist = project / ".mlvc" / "runlist"
    lines = runlist.read_bytes().splitlines()
    assert len(lines) == 3  # each commit appended its run

    runlist.unlink()  # lost: every run is read from its object, and the list written again
    assert repo.log() == full
    assert len(runlist.read_bytes().splitlines()) == 3

    # a torn last line (a writer killed mid-line), garbage, a line of another shape
    runlist.write_bytes(b"\n".join(lines[:2]) + b"\n" + lines[2][:40] + b"\nnot json\n[1,2]\n")
    assert repo.log() == full

    # a line for a run that refs/runs no longer lists is not shown
    gone = full[0]["id"]
    os.replace(project / ".mlvc" / "refs" / "runs" / gone, project / "gone-ref")
    assert [r["id"] for r in repo.log()] == [r["id"] for r in full[1:]]
    os.replace(project / "gone-ref", project / ".mlvc" / "refs" / "runs" / gone)
    assert repo.log() == full


def test_run_list_is_rewritten_when_mostly_stale(repo, cli, monkeypatch):
    from mlvc.refs import runlist

    cli("commit", "-q", "-m", "one")
    path = repo.layout.runlist
    line = path.read_bytes()
    monkeypatch.setattr(runlist, "REWRITE_SLACK", 3)
    path.write_bytes(line * 10)  # ten copies of one run's line
    assert len(repo.log()) == 1
    assert path.read_bytes() == line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only modes")
def test_log_on_a_read_only_repository(repo, cli, project):
    cli("commit", "-q", "-m", "one")
    repo.layout.runlist.unlink()
    os.chmod(project / ".mlvc", 0o555)
    try:
        r = cli("log")
        assert "one" in r.output and r.stderr == ""
    finally:
        os.chmod(project / ".mlvc", 0o755)
    assert not repo.layout.runlist.exists()


def test_commits_from_two_processes_at_once_are_all_listed(project):
    env = {**os.environ, "MLVC_INDEX_SYNC": "background"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from mlvc import Repo\n"
                "r = Repo()\n"
                f"[r.commit(f'p{p} {{i}}', capture_env=False) for i in range(4)]\n",
            ],
            cwd=project,
            env=env,
        )
        for p in range(2)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    repo = Repo(project)
    cached = repo.layout.runlist.read_bytes().splitlines()
    assert len(cached) == 8  # every commit's line, none torn
    assert sorted(r["message"] for r in repo.log()) == sorted(
        f"p{p} {i}" for p in range(2) for i in range(4)
    )
    assert repo.log() == repo.index.query(LOG_SQL).to_pylist()


def test_every_command_is_found_in_the_module_the_lazy_group_names():
    import importlib

    from mlvc.cli import COMMAND_MODULES, main

    defined = {}
    for module in set(COMMAND_MODULES.values()):
        for command in importlib.import_module(f"mlvc.cli.{module}").COMMANDS:
            defined[command.name] = module
    assert defined == COMMAND_MODULES
    assert sorted(main.commands) == sorted(COMMAND_MODULES)
    assert all(main.commands[name].name == name for name in COMMAND_MODULES)
