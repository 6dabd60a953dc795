"""The CLI never escapes, never lies and never tracebacks (issue 9: items 12c, 13a, 17, 21-23).

Each test drives the real command (click's CliRunner, or a subprocess where a crash or a
signal must show as such) and checks the result through the library.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from mlvc import Repo
from mlvc.cli import main
from mlvc.core.ids import ObjectId
from mlvc.errors import EXIT_CODES, UsageError
from mlvc.render.text import clean

ROOT = Path(__file__).resolve().parents[2]


def mlvc_proc(*args, cwd, timeout=60, env=None, **kw) -> subprocess.CompletedProcess:
    """``mlvc ARGS`` in a process of its own: an abort or a signal shows as a negative code."""
    return subprocess.run(
        [sys.executable, "-m", "mlvc", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        **kw,
    )


def one_error_line(stderr: str) -> str:
    """The stderr of a failed command: exactly one line, ``mlvc: error: ...``."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlvc: error: "), stderr
    return lines[0]


@pytest.fixture
def tty(project):
    """Invoke the CLI as if on a terminal (click strips nothing); stdout and stderr apart."""
    runner = CliRunner()

    def invoke(*args, code=0):
        result = runner.invoke(main, list(args), catch_exceptions=False, color=True)
        assert result.exit_code == code, (result.exit_code, result.output)
        return result

    return invoke


# -- 12c: user SQL cannot take the process down or change settings -------------------------------


REFUSED_SQL = [
    "CALL enable_logging(storage='file', storage_path='{tmp}/duck.log')",
    "CALL enable_logging(storage='file', storage_config={{'path': '{tmp}/duck-dir'}})",
    "SELECT * FROM enable_logging(storage='file', storage_path='{tmp}/duck.log')",
    "SELECT 1; CALL enable_logging(storage='file', storage_path='{tmp}/duck.log')",
    "SET enable_external_access = true",
    "RESET lock_configuration",
    "PRAGMA enable_profiling",
    "CALL enable_profiling()",
    "COPY runs TO '{tmp}/out.csv'",
    "EXPORT DATABASE '{tmp}/export'",
    "ATTACH '{tmp}/other.duckdb' AS other",
    "INSTALL httpfs",
    "LOAD httpfs",
    "CHECKPOINT",
    "SELECT * FROM read_csv('{tmp}/secret.csv')",
    "SELECT * FROM glob('{tmp}/*')",
    "CREATE TEMP TABLE t AS SELECT 1",
]


def test_query_refuses_what_is_not_a_read_in_one_line(cli, repo, project, tmp_path):
    cli("commit", "-q", "-m", "one")
    (tmp_path / "secret.csv").write_text("a\n1\n")
    before = sorted(os.listdir(tmp_path))
    # in a process of its own: these aborted mlvc (SIGABRT inside DuckDB)
    for template in REFUSED_SQL[:4]:
        sql = template.format(tmp=tmp_path)
        r = mlvc_proc("query", sql, cwd=project)
        assert r.returncode == 7, (sql, r.returncode, r.stderr)  # not a signal (negative)
        one_error_line(r.stderr)
        assert r.stdout == ""
    for template in REFUSED_SQL[4:]:
        sql = template.format(tmp=tmp_path)
        r = cli("query", sql, ok=False)
        assert r.exit_code == 7, (sql, r.output)
        one_error_line(r.stderr)
    assert sorted(os.listdir(tmp_path)) == before  # no log file, no export, no copy
    ok = mlvc_proc("query", "SELECT count(*) AS n FROM runs", "-f", "json", cwd=project)
    assert ok.returncode == 0 and json.loads(ok.stdout) == [{"n": 1}]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT count(*) FROM runs",
        "WITH r AS (SELECT * FROM runs) SELECT count(*) FROM r",
        "FROM runs_wide",
        "SHOW TABLES",
        "DESCRIBE runs",
        "SUMMARIZE runs",
        "EXPLAIN SELECT * FROM runs",
        "PRAGMA show_tables",
        "PRAGMA table_info('runs')",
        "VALUES (1, 2)",
        "SELECT * FROM range(3)",
        "PIVOT (SELECT 'a' AS k, 1 AS v) ON k USING sum(v)",
        "SELECT 1 AS a; SELECT 2 AS b",
    ],
)
def test_query_still_answers_reads(cli, sql):
    cli("commit", "-q", "-m", "one")
    r = cli("query", sql, ok=False)
    assert r.exit_code == 0, r.output


def test_query_connection_keeps_its_settings_locked(repo):
    repo.commit("one", capture_env=False)
    for sql in ("SELECT 1; SET threads = 1", "SELECT current_setting('lock_configuration')"):
        try:
            out = repo.query(sql).to_pylist()
        except Exception as e:  # refused is fine; changed is not
            assert type(e).__name__ == "QueryError"
        else:
            assert out == [{"current_setting('lock_configuration')": True}]


# -- 13a: what people see is escaped; what programs read is exact --------------------------------

ESC = "\x1b]0;pwned\x07\x1b[2J\x1b[31m"  # retitle the terminal, clear it, paint it red
C1 = "\x9b31m"  # the one-byte CSI


OUR_STYLES = ("\x1b[33m", "\x1b[2m", "\x1b[0m")  # mlvc's own colours (yellow, dim, reset)


def _visible(text: str) -> None:
    for style in OUR_STYLES:
        text = text.replace(style, "")
    for bad in ("\x1b", "\x07", "\x9b", "\r"):
        assert bad not in text, repr(text)


def test_human_output_escapes_control_characters(tty, repo, project, monkeypatch):
    monkeypatch.setenv("MLVC_AUTHOR", f"Eve {ESC}<eve@example.com>")
    evil = project / f"evil{ESC}.py"
    evil.write_text("x = 1\n")
    message = f"first line {ESC}\nsecond {C1} line"
    tty(
        "commit",
        "-m",
        message,
        "-n",
        "x1",
        "-p",
        f"note={ESC}",
        "-M",
        "acc=0.5",
        "-t",
        f"team={ESC}",
        "-q",
    )
    evil.write_text("x = 2\n")
    tty("commit", "-q", "-m", f"again {ESC}")
    outputs = [
        tty("log").stdout,
        tty("log", "-l").stdout,
        tty("show", "x1").stdout,
        tty("show").stdout,
        tty("diff", "x1", "HEAD").stdout,
        tty("query", "SELECT message, author FROM runs").stdout,
        tty("lineage").stdout,
    ]
    evil.write_text("x = 3\n")
    outputs.append(tty("status").stdout)
    for out in outputs:
        _visible(out)
    shown = tty("show", "x1").stdout
    assert "\\x1b]0;pwned\\x07" in shown  # escaped, still readable
    assert "    first line" in shown and "    second \\x9b31m line" in shown  # kept multi-line
    assert "evil\\x1b" in tty("show", "x1").stdout
    # programs get the exact bytes
    record = json.loads(tty("show", "x1", "--json").stdout)
    assert record["message"] == message and record["params"]["note"] == ESC
    assert record["author"].startswith(f"Eve {ESC}")
    assert any(e["path"] == f"evil{ESC}.py" for e in record["code"]["entries"])
    rows = json.loads(tty("query", "SELECT message FROM runs", "-f", "json").stdout)
    assert {r["message"] for r in rows} == {message, f"again {ESC}"}


def test_error_messages_escape_what_the_user_typed(tty):
    r = tty("show", f"nope{ESC}", code=4)
    _visible(r.stderr)
    assert r.stderr.count("\n") == 1 and "nope\\x1b" in r.stderr
    r = tty("commit", "-p", f"bad\nkey{ESC}=1", code=2)
    _visible(r.stderr)
    assert r.stderr.count("\n") == 1
    for args in (["show", f"--bogus{ESC}"], [f"nope{ESC}"], ["-C", f"/nope{ESC}", "log"]):
        r = tty(*args, code=2)  # click's own usage errors
        _visible(r.stderr)
        assert "\\x1b" in r.stderr
    r = tty("commit", "--params", f"missing{ESC}\n.json", code=2)  # named without repr()
    _visible(r.stderr)
    assert r.stderr.count("\n") == 1 and "missing\\x1b" in r.stderr


# -- 17: names and tags cannot take over addressing syntax ---------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["commit", "-n", "HEAD"],
        ["commit", "-t", "HEAD"],
        ["commit", "-n", "cafe"],
        ["commit", "-n", "0123456789abcdef"],
        ["commit", "-t", "beef"],
        ["commit", "-t", "BEEF"],
        ["commit", "-n", "a" * 64],
        ["commit", "-n", "best~1"],
        ["commit", "-n", "best^"],
        ["commit", "-n", "run:path"],
        ["commit", "-n", "@"],
    ],
)
def test_names_that_read_as_addresses_are_refused(cli, repo, args):
    r = cli(*args, ok=False)
    assert r.exit_code == 2, r.output
    line = one_error_line(r.stderr)
    assert "run" in line and args[-1] in line
    assert repo.head() is None  # refused before anything was recorded


def test_tag_command_refuses_address_like_tags(cli, repo):
    cli("commit", "-q")
    for bad in ("HEAD", "dead", "abc123"):
        r = cli("tag", "HEAD", bad, ok=False)
        assert r.exit_code == 2, r.output
        assert "id prefix" in r.stderr or "HEAD" in r.stderr
    assert repo.refs.list("tags") == {}


def test_names_that_only_look_like_words_are_fine(cli, repo):
    cli("commit", "-q", "-n", "cafe-1", "-t", "dead1x", "-t", "abc", "-t", "stage=beef")
    head = repo.resolve("HEAD")
    assert repo.resolve("cafe-1") == repo.resolve("dead1x") == repo.resolve("abc") == head
    assert repo.run("HEAD").tags == {"dead1x": "", "abc": "", "stage": "beef"}


def test_old_tag_spelled_like_a_run_prefix_is_reported_ambiguous(cli, repo):
    target = repo.commit("tagged", capture_env=False).oid
    other = repo.commit("other", capture_env=False).oid
    prefix = other.hex[:6]
    # a tag written before names were checked (or by another tool)
    repo.refs.write(f"refs/tags/{prefix}", target)
    r = cli("show", prefix, ok=False)
    assert r.exit_code == 4, r.output
    line = one_error_line(r.stderr)
    assert "ambiguous" in line and f"tag {prefix}" in line and other.short in line
    # a longer prefix and the full ids still work
    assert repo.resolve(other.hex[:12]) == other
    assert repo.resolve(target.hex) == target


def test_old_hex_tag_matching_no_run_still_resolves(repo):
    target = repo.resolve(repo.commit("tagged", capture_env=False))
    ids = {o.hex[:4] for o in repo.refs.run_ids()}
    free = next(p for p in ("0000", "1111", "2222", "3333") if p not in ids)
    repo.refs.write(f"refs/tags/{free}", target)
    assert repo.resolve(free) == target


def test_short_prefix_says_prefixes_need_four_digits(cli, repo):
    cli("commit", "-q")
    r = cli("show", repo.resolve("HEAD").hex[:3], ok=False)
    assert r.exit_code == 4
    assert "at least 4" in one_error_line(r.stderr)


# -- 21/22: a bad ref is skipped with a warning, not fatal ---------------------------------------


def _warnings(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [ln for ln in stderr.splitlines() if ln.strip()]


@pytest.mark.parametrize(
    "ref, content",
    [
        ("refs/tags/broken", b"\xff\xfe\x80 not utf-8\n"),
        ("refs/names/broken", b"\xc3\x28\n"),
        ("refs/tags/garbage", b"this is not a run id\n"),
    ],
)
@pytest.mark.damages_repo
def test_bad_tag_or_name_ref_is_skipped_with_one_warning(cli, repo, project, ref, content):
    cli("commit", "-q", "-m", "one", "-t", "good")
    (project / ".mlvc" / ref).write_bytes(content)
    for args in (
        ["log"],
        ["query", "SELECT name FROM refs ORDER BY name"],
        ["status"],
        ["commit", "-q", "-m", "two"],
        ["show", "good"],
    ):
        r = cli(*args, ok=False)
        assert r.exit_code == 0, (args, r.output)
        warned = _warnings(r.stderr)
        assert len(warned) <= 1, (args, warned)
        # log reads no tag or name ref (mlvc.refs.runlist); query is the first to read them
        # (later commands may use the index as is)
        if args[0] == "query":
            assert len(warned) == 1, (args, r.stderr)
            assert ref in warned[0] and "mlvc fsck" in warned[0]
    out = mlvc_proc("query", "SELECT name FROM refs", "-f", "json", cwd=project).stdout
    assert json.loads(out) == [{"name": "good"}]
    assert len(repo.log()) == 2


@given(st.text(alphabet=st.characters(blacklist_categories=())))
def test_clean_text_is_always_printable_utf8(text):
    shown = clean(text)
    shown.encode("utf-8")  # no lone surrogate left: printing it cannot fail or emit raw bytes
    assert not any(ch < " " or "\x7f" <= ch <= "\x9f" for ch in shown)
    if text.isprintable():  # plain text is shown as it is
        assert shown == text


def test_clean_shows_undecodable_bytes_as_git_does():
    assert clean(os.fsdecode(b"t\xffg\x80")) == "t\\xffg\\x80"
    assert clean("a\ud800b") == "a\\ud800b"  # a surrogate no file name makes


def fsck_proc(project) -> subprocess.CompletedProcess:
    """``mlvc fsck`` in a process of its own (its output as bytes, as a terminal gets it)."""
    return subprocess.run(
        [sys.executable, "-m", "mlvc", "fsck"],
        cwd=project,
        capture_output=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.damages_repo
def test_fsck_shows_a_name_that_is_not_utf8_as_escaped_bytes(cli, project):
    """A ref whose file name is not UTF-8: fsck names it with the byte as \\xNN, like git,
    not the raw byte (which a terminal may act on, and which is not text)."""
    cli("commit", "-q", "-m", "one")
    (project / ".mlvc" / "refs" / "tags").mkdir(parents=True, exist_ok=True)
    (project / os.fsdecode(b".mlvc/refs/tags/t\xffg")).write_bytes(b"zz\n")
    r = fsck_proc(project)
    assert r.returncode == 9, r
    assert b"\xff" not in r.stdout + r.stderr
    assert b"refs/tags/t\\xffg holds 'zz', not a run id" in r.stdout, r.stdout


@pytest.mark.damages_repo
def test_fsck_names_a_good_ref_whose_name_is_not_utf8(cli, project):
    """The index leaves such a name out with a warning that says to run fsck, and fsck found
    nothing wrong with it (the file holds a good run id)."""
    run_id = cli("commit", "-q", "-m", "one", "-n", "alpha").stdout.strip()
    (project / os.fsdecode(b".mlvc/refs/names/b\xffd")).write_text(run_id + "\n")
    r = fsck_proc(project)
    assert r.returncode == 9, r
    assert b"ref refs/names/b\\xffd has a name that is not UTF-8" in r.stdout, r.stdout
    assert b"\xff" not in r.stdout + r.stderr


@pytest.mark.damages_repo
def test_a_name_that_is_a_symlink_loop_is_named_by_fsck_and_queries_still_answer(cli, project):
    """DirEntry.is_file() raises ELOOP for it: every query failed (the index lists the
    names), and fsck ended in a traceback."""
    run_id = cli("commit", "-q", "-m", "one", "-n", "alpha").stdout.strip()
    os.symlink("loop", project / ".mlvc" / "refs" / "names" / "loop")
    r = cli("query", "SELECT name, run_id FROM refs", "-f", "json")
    assert json.loads(r.stdout) == [{"name": "alpha", "run_id": run_id}]
    r = fsck_proc(project)
    assert r.returncode == 9, r
    assert b"Traceback" not in r.stderr
    assert b"ref refs/names/loop cannot be read (Too many levels of symbolic links)" in r.stdout


@pytest.mark.damages_repo
def test_unknown_run_with_a_bad_ref_around_is_still_one_line(cli, project):
    cli("commit", "-q", "-t", "good")
    (project / ".mlvc/refs/tags/broken").write_bytes(b"\xff\n")
    r = mlvc_proc("show", "goo", cwd=project)
    assert r.returncode == 4
    lines = _warnings(r.stderr)
    assert lines[-1].startswith("mlvc: error: unknown run 'goo'") and len(lines) <= 2
    r = cli("show", "broken", ok=False)  # the damaged ref itself
    assert r.exit_code == 4
    warning, error = _warnings(r.stderr)
    assert "refs/tags/broken" in warning and "mlvc fsck" in warning
    assert error.startswith("mlvc: error: unknown run 'broken'")


@pytest.mark.parametrize("args", [["-p", "seed=18446744073709551616"], ["-M", "acc=" + "9" * 400]])
def test_huge_numbers_on_the_command_line_are_one_line(cli, repo, args):
    r = cli("commit", "-q", *args, ok=False)
    assert "Traceback" not in r.output
    if r.exit_code:
        assert r.exit_code == 2
        one_error_line(r.stderr)
    assert repo.fsck() == []


def test_query_output_into_a_missing_folder_is_one_line(cli, project):
    cli("commit", "-q")
    for fmt in ("table", "csv", "json", "parquet"):
        r = cli("query", "SELECT 1", "-f", fmt, "-o", "no/such/dir/x.out", ok=False)
        assert r.exit_code == 2, r.output
        assert "no/such/dir/x.out" in one_error_line(r.stderr)
    assert not (project / "no").exists()


# -- 23: smaller things --------------------------------------------------------------------------


def test_log_negative_limit_is_bad_input(cli):
    cli("commit", "-q")
    r = cli("log", "-n", "-1", ok=False)
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert cli("log", "-n", "0").exit_code == 0


def test_gc_negative_grace_is_refused(cli, repo):
    cli("commit", "-q")
    r = cli("gc", "--grace", "-5", ok=False)
    assert r.exit_code == 2 and "Traceback" not in r.output
    with pytest.raises(UsageError, match="grace"):
        repo.gc(grace=-5)


def test_query_output_format_follows_the_file_name(cli, repo, project, tmp_path):
    import pyarrow.parquet as pq

    cli("commit", "-q", "-p", "lr=0.5")
    sql = 'SELECT "params.lr" AS lr FROM runs_wide'
    cli("query", sql, "-o", str(tmp_path / "r.parquet"))
    assert pq.read_table(tmp_path / "r.parquet").to_pylist() == [{"lr": 0.5}]
    cli("query", sql, "-o", str(tmp_path / "r.csv"))
    assert (tmp_path / "r.csv").read_text().replace('"', "").splitlines() == ["lr", "0.5"]
    cli("query", sql, "-o", str(tmp_path / "r.json"))
    assert json.loads((tmp_path / "r.json").read_text()) == [{"lr": 0.5}]
    cli("query", sql, "-o", str(tmp_path / "r.txt"))
    assert "(1 row)" in (tmp_path / "r.txt").read_text()
    bad = cli("query", sql, "-f", "csv", "-o", str(tmp_path / "x.parquet"), ok=False)
    assert bad.exit_code == 2 and "x.parquet" in one_error_line(bad.stderr)
    assert not (tmp_path / "x.parquet").exists()


def test_query_writes_list_and_struct_columns_as_csv(cli, repo, tmp_path):
    """CSV has no nesting: a list, struct or map column is written as compact JSON text
    (pyarrow's CSV writer refused them, and `mlvc query -f csv` ended in a traceback)."""
    sql = "SELECT [1, 2] AS l, {'a': 'x', 'b': NULL} AS s, MAP {'k': 1.5::DOUBLE} AS m, 3 AS n"
    r = cli("query", "-f", "csv", sql)
    lines = r.output.splitlines()
    assert lines[0].replace('"', "") == "l,s,m,n"
    import csv
    import io

    row = next(csv.reader(io.StringIO(lines[1])))
    assert [json.loads(v) for v in row[:3]] == [[1, 2], {"a": "x", "b": None}, {"k": 1.5}]
    assert row[3] == "3"
    cli("query", sql, "-o", str(tmp_path / "q.csv"))
    assert (tmp_path / "q.csv").read_text() == r.output


def test_exit_codes_are_documented():
    assert EXIT_CODES[130].startswith("interrupted")
    assert EXIT_CODES[14].startswith("unsupported repository")
    doc = (ROOT / "docs" / "cli.md").read_text()
    for code in EXIT_CODES:
        assert f"| {code} |" in doc


def _threads(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("Threads:")))


def _interrupt(cmd: list[str], cwd, wait_for, delay: float = 0.5):
    """Start ``mlvc CMD``; once ``wait_for(pid)`` holds, press Ctrl-C (SIGINT to its process
    group, as a terminal does) and return (exit code, stdout, stderr)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlvc", *cmd],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while not wait_for(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"mlvc {cmd[0]} ignored Ctrl-C") from None
    return proc.returncode, out, err


def test_ctrl_c_during_a_long_query_exits_130_in_one_line(cli, project):
    cli("commit", "-q")
    code, _out, err = _interrupt(
        ["query", "SELECT sum(hash(a)) FROM range(100000000000) t(a)"],
        project,
        wait_for=lambda pid: _threads(pid) > 1,  # DuckDB's threads: the query is running
    )
    assert code == 130, err
    assert err == "mlvc: interrupted\n"


def test_ctrl_c_during_mlvc_run_exits_130_in_one_line(cli, project):
    (project / "slow.py").write_text(
        textwrap.dedent("""
        import pathlib, time
        pathlib.Path("started").write_text("1")
        time.sleep(60)
        """)
    )
    code, _out, err = _interrupt(
        ["run", "slow.py", "-q"], project, wait_for=lambda _pid: (project / "started").exists()
    )
    assert code == 130, err
    # the script's own KeyboardInterrupt is its business; mlvc's code shows no traceback
    assert f'File "{ROOT / "mlvc"}' not in err
    assert err.splitlines()[-1] == "mlvc: interrupted"


# -- 23: the public API's run ids are strings ------------------------------------------------------


def test_repo_commit_returns_a_string_id(repo, project):
    rid = repo.commit("api", params={"a": 1}, capture_env=False)
    assert isinstance(rid, str) and len(rid) == 64
    assert json.loads(json.dumps({"id": rid})) == {"id": rid}
    assert rid[:10] == rid.short and rid.hex == rid
    assert repo.show(rid)["id"] == rid and repo.run(rid).params == {"a": 1}
    assert repo.resolve(rid) == rid.oid and isinstance(rid.oid, ObjectId)
    assert repo.head() == rid and rid == repo.head()  # equal to its ObjectId either way
    assert repo.checkout(rid, to=project.parent / "out").run_id.hex == rid
    tagged = repo.tag(rid, "best")
    assert isinstance(tagged, str) and tagged == rid


def test_readme_python_example_runs(project):
    repo = Repo()
    run_id = repo.commit("baseline", params={"lr": 0.01}, metrics={"acc": 0.91}, data=["data"])
    print(json.dumps({"run": run_id}), run_id[:10])
    assert repo.fsck() == []


# -- 23: the show --help example works -----------------------------------------------------------


def test_show_help_example_reads_a_file_by_its_section(cli, project):
    help_text = cli("show", "--help").output
    assert "best:artifacts/model.pkl" in help_text
    (project / "model.pkl").write_bytes(b"\x80\x04weights")
    cli("commit", "-q", "--artifacts", "model.pkl", "--data", "data", "-t", "best")
    assert cli("show", "best:artifacts/model.pkl").stdout_bytes == b"\x80\x04weights"
    assert cli("show", "best:model.pkl").stdout_bytes == b"\x80\x04weights"
    assert cli("show", "best:data/train.csv").stdout_bytes == b"x,y\n1,2\n2,4\n"
    r = cli("show", "best:artifacts/nope.pkl", ok=False)
    assert r.exit_code == 4


# -- 23: type names people read are plain words, not Arrow's -------------------------------------


class _Echo:
    def predict(self, data):
        return list(data["name"])


def test_model_type_errors_name_types_in_plain_words(cli, project, monkeypatch):
    pd = pytest.importorskip("pandas")
    monkeypatch.setenv("MLVC_TRUST_PICKLE", "1")  # the model below is our own pickle
    import mlvc.models as mm
    from mlvc.models.errors import SignatureError

    example = pd.DataFrame({"name": ["a", "b"], "n": [1, 2], "w": [0.5, 1.5]})
    mm.save(_Echo(), project / "m", input_example=example)
    model = mm.load(project / "m")
    for data, needle in [
        (pd.DataFrame({"name": [1.5], "n": [1], "w": [1.0]}), "'name' has type float"),
        (pd.DataFrame({"name": ["a"], "n": ["x"], "w": [1.0]}), "the model expects integer"),
        (pd.DataFrame({"n": [1], "w": [1.0]}), "name: text, n: integer, w: float"),
    ]:
        with pytest.raises(SignatureError) as e:
            model.predict(data)
        assert needle in str(e.value)
        for arrow in ("large_string", "int64", "double", "string"):
            assert arrow not in str(e.value).replace("'name' has", ""), str(e.value)
    shown = cli("models", "show", str(project / "m")).output
    assert "name: text, n: integer, w: float" in shown and "large_string" not in shown


def test_init_where_it_cannot_write_is_one_line(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / ".mlvc").write_text("a file in the way\n")
    r = CliRunner().invoke(main, ["init", str(tmp_path / "p")])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "cannot create a repository" in one_error_line(r.stderr)
    r = CliRunner().invoke(main, ["init", str(tmp_path / "p" / ".mlvc" / "sub")])
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_live_run_names_and_bare_tags_are_checked_when_given(project):
    """In a process of its own: a run refused at its end would stay on this one's stack."""
    script = textwrap.dedent("""
        import sys, mlvc
        from mlvc.errors import UsageError
        for bad in ("HEAD", "cafe", "bad name"):
            try:
                with mlvc.start_run(name=bad):
                    sys.exit(f"the run {bad!r} started")
            except UsageError:
                pass
        with mlvc.start_run(name="ok-1") as run:
            try:
                run.set_tag("beef")
                sys.exit("the bare tag 'beef' was accepted")
            except UsageError:
                pass
            run.set_tag("stage", "beef")  # a tag with a value names nothing
        print(sorted(mlvc.Repo().run("ok-1").tags.items()))
    """)
    r = subprocess.run(
        [sys.executable, "-c", script],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[('stage', 'beef')]"
    assert not list((project / ".mlvc" / "live").glob("*"))


def test_an_unknown_run_named_with_a_byte_that_is_not_utf8_shows_it_as_xnn(project):
    """The message showed repr's ``\\udcff`` for the byte 0xff of the argument."""
    r = subprocess.run(
        [sys.executable, "-m", "mlvc", "show", os.fsdecode(b"bad\xffname")],
        cwd=project,
        capture_output=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 4
    assert r.stderr == b"mlvc: error: unknown run 'bad\\xffname'\n"


@given(st.text())
def test_quoted_is_repr_for_text_without_undecodable_bytes(text):
    from mlvc.errors import quoted

    assert quoted(text) == repr(text) or any(0xDC80 <= ord(c) <= 0xDCFF for c in text)
