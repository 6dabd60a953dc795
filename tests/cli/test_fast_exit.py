"""The CLI ends its process with ``os._exit`` after flushing (no interpreter teardown) only
where nothing is lost: exit codes, output and atexit hooks are as before, and it falls back to
the ordinary exit when DuckDB is loaded or a thread that is not a daemon still runs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

# a module-level object whose __del__ prints: it runs in interpreter teardown, not after _exit
PROBE = textwrap.dedent(
    """
    import atexit, sys, threading
    class Probe:
        def __del__(self):
            sys.stderr.write("teardown\\n")
    probe = Probe()
    atexit.register(lambda: sys.stderr.write("atexit hook\\n"))
    if "{setup}" == "duckdb":
        import duckdb
    if "{setup}" == "thread":  # alive until the main thread has ended, however slow the command
        threading.Thread(target=threading.main_thread().join).start()
    from mlvc.cli import main
    sys.argv[0] = "mlvc"
    main()
    """
)


def probe(cwd, setup: str, *args: str, env=None) -> subprocess.CompletedProcess:
    code = PROBE.replace("{setup}", setup)
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.mark.parametrize(
    "args, code, out",
    [
        (["log", "-n", "1"], 0, "first"),
        (["status"], 0, ""),
        (["show", "nosuchrun"], None, ""),  # an MlvcError: its own exit code
        (["diff", "HEAD", "HEAD"], 0, "no differences"),
        (["commit", "--no-such-option"], 2, ""),  # click's usage error, nothing done
    ],
)
def test_output_exit_code_and_atexit_hooks_are_kept(project, args, code, out):
    subprocess.run([sys.executable, "-m", "mlvc", "commit", "-q", "-m", "first"], check=True)
    fast = probe(project, "", *args)
    slow = probe(project, "duckdb", *args)  # the ordinary exit, for comparison
    assert fast.returncode == slow.returncode
    if code is not None:
        assert fast.returncode == code
    else:
        assert fast.returncode not in (0, 1)
    assert out in fast.stdout and fast.stdout == slow.stdout
    assert fast.stderr.count("atexit hook") == 1 and "Traceback" not in fast.stderr
    assert "teardown" not in fast.stderr  # no interpreter teardown
    assert "teardown" in slow.stderr  # DuckDB loaded: the ordinary exit
    assert fast.stderr.replace("atexit hook\n", "") == slow.stderr.replace(
        "atexit hook\n", ""
    ).replace("teardown\n", "")


def test_a_running_thread_that_is_not_a_daemon_is_waited_for(project):
    subprocess.run([sys.executable, "-m", "mlvc", "commit", "-q", "-m", "first"], check=True)
    r = probe(project, "thread", "log")
    assert r.returncode == 0 and "first" in r.stdout
    assert "teardown" in r.stderr  # the ordinary exit: it joins the thread


@pytest.mark.parametrize("args", [["--version"], ["du"], ["no-such-command"]])
def test_other_commands_end_the_ordinary_way(project, args):
    r = probe(project, "", *args)
    assert "teardown" in r.stderr and r.stderr.count("atexit hook") == 1
    assert r.returncode == (2 if "no-such" in args[0] else 0)


def test_a_commit_ended_fast_is_complete(project):
    inline = probe(project, "", "commit", "-m", "inline")  # the tests' default: DuckDB loaded
    assert inline.returncode == 0 and "teardown" in inline.stderr
    background = {**os.environ, "MLVC_INDEX_SYNC": "background"}  # the default for users
    r = probe(project, "", "commit", "-m", "fast", "-p", "lr=0.1", env=background)
    assert r.returncode == 0 and "teardown" not in r.stderr
    run_id = r.stdout.split("]")[0].lstrip("[")
    shown = subprocess.run(
        [sys.executable, "-m", "mlvc", "show", run_id], capture_output=True, text=True
    )
    assert shown.returncode == 0 and "lr" in shown.stdout


def test_a_pipe_closed_early_still_behaves(project):
    for i in range(3):
        subprocess.run([sys.executable, "-m", "mlvc", "commit", "-q", "-m", f"r{i}"], check=True)
    # `mlvc log | head -1`: the reader goes away first
    for _ in range(3):
        r, w = os.pipe()
        os.close(r)
        done = subprocess.run(
            [sys.executable, "-m", "mlvc", "log"], stdout=w, stderr=subprocess.PIPE, timeout=60
        )
        os.close(w)
        assert done.returncode == 1, done.stderr
        assert b"Traceback" not in done.stderr and b"Exception ignored" not in done.stderr
    shell = subprocess.run(
        f"{sys.executable} -m mlvc log | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shell.returncode == 0 and len(shell.stdout.splitlines()) == 1
    assert "Traceback" not in shell.stderr
