"""The command server (``mlvc daemon``; mlvc.launch, mlvc.launch.server): commands handed to
it behave as in their own process (output, exit codes, directory, environment, umask,
signals), the server is refused to other users and survives garbage, and it steps aside
when its code changes on disk. Every test drives the real ``mlvc`` script and a real
server process, in a runtime directory of its own."""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from daemon_helpers import MLVC, mlvc_run, processes_naming, start
from hypothesis import given
from hypothesis import strategies as st

import mlvc
from mlvc.core import cmdserver


def served(env) -> int:
    out = mlvc_run(env, "daemon", "status")
    assert out.returncode == 0, out.stdout + out.stderr
    return int(out.stdout.split(" commands served")[0].rsplit(" ", 1)[1])


def running(env) -> int:
    out = mlvc_run(env, "daemon", "status").stdout
    return int(out.split(" running")[0].rsplit(" ", 1)[1])


def test_commands_in_the_server_answer_as_in_their_own_process(project, env):
    own = {**env, "MLVC_DAEMON": "0"}
    assert mlvc_run(own, "commit", "-q", "-m", "first").returncode == 0
    assert "listening at" in start(env)
    before = served(env)
    cases = [
        ("log", "-n", "1"),
        ("status",),
        ("show", "HEAD", "--json"),
        ("show", "nosuchrun"),  # an error: exit 4, one line on stderr
        ("diff", "HEAD", "HEAD"),
        ("commit", "--no-such-option"),  # click's usage error
        ("query", "--format", "csv", "SELECT count(*) AS n FROM runs"),
        ("query", "SELECT * FROM nosuchtable"),
        ("-C", str(project / "src"), "log", "-n", "1"),
    ]
    for args in cases:
        mine, theirs = mlvc_run(env, *args), mlvc_run(own, *args)
        assert (mine.returncode, mine.stdout, mine.stderr) == (
            theirs.returncode,
            theirs.stdout,
            theirs.stderr,
        ), args
    assert served(env) - before == len(cases)
    # a commit through the server is a commit like any other
    out = mlvc_run(env, "commit", "-q", "-m", "second")
    assert out.returncode == 0 and len(out.stdout.strip()) == 64
    assert "second" in mlvc_run(own, "log", "-n", "1").stdout


def test_the_command_gets_this_directory_environment_umask_and_stdin(project, env, tmp_path):
    start(env)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    out = subprocess.run(
        f"umask 077 && {MLVC} init",
        shell=True,
        cwd=fresh,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert (fresh / ".mlvc" / "config").stat().st_mode & 0o077 == 0
    assert served(env) == 1  # init was served, not run here
    author = {**env, "MLVC_AUTHOR": "Ada <ada@example.com>"}
    out = mlvc_run(author, "commit", "-q", "-m", "by ada", cwd=fresh)
    assert out.returncode == 0, out.stderr
    shown = mlvc_run(env, "log", "-n", "1", "--json", cwd=fresh)
    assert '"author": "Ada <ada@example.com>"' in shown.stdout
    # the command gets this process's stdin (here /dev/null)
    out = mlvc_run(env, "log", "-n", "1", cwd=fresh, stdin=subprocess.DEVNULL)
    assert out.returncode == 0 and "by ada" in out.stdout


SLOW = "SELECT sum(a.range * b.range) FROM range(100000000) a, range(1000) b"


def slow_query(env, **kw) -> subprocess.Popen:
    """A `mlvc query` that runs for minutes, once the server runs it."""
    client = subprocess.Popen([MLVC, "query", SLOW], env=env, **kw)
    deadline = time.monotonic() + 60
    while running(env) == 0:
        assert time.monotonic() < deadline, "the query never started in the server"
        time.sleep(0.05)
    return client


def test_ctrl_c_reaches_the_command(project, env):
    start(env)
    client = slow_query(env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)  # into DuckDB's execution
    client.send_signal(signal.SIGINT)
    out, err = client.communicate(timeout=60)
    assert client.returncode == 130, err
    assert err.strip() == "mlvc: interrupted"
    assert running(env) == 0


def test_a_killed_launcher_hangs_up_its_command(project, env):
    start(env)
    client = slow_query(env, stdout=subprocess.DEVNULL)
    client.kill()
    client.wait(timeout=30)
    deadline = time.monotonic() + 60
    while running(env):  # the command got SIGHUP and ended
        assert time.monotonic() < deadline, "the command outlived its launcher"
        time.sleep(0.05)


def test_concurrent_commits_through_the_server(project, env):
    start(env)
    procs = [
        subprocess.Popen(
            [MLVC, "commit", "-q", "-m", f"c{i}"], env=env, stdout=subprocess.PIPE, text=True
        )
        for i in range(4)
    ]
    ids = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0] * 4
    assert len(set(ids)) == 4
    log = mlvc_run({**env, "MLVC_DAEMON": "0"}, "log").stdout
    assert all(f"c{i}" in log for i in range(4))


def test_start_status_stop(project, env):
    out = mlvc_run(env, "daemon", "status")
    assert out.returncode == 1 and "no command server" in out.stdout
    first = start(env, "--idle", "120")
    assert start(env) == first  # already running: the same server
    assert "idle timeout 120 s" in mlvc_run(env, "daemon", "status").stdout
    out = mlvc_run(env, "daemon", "stop")
    assert out.returncode == 0 and "stopped" in out.stdout
    assert mlvc_run(env, "daemon", "status").returncode == 1
    # without a server every command runs in its own process
    assert mlvc_run(env, "log").returncode == 0
    bad = mlvc_run(env, "daemon", "start", "--idle", "-1")
    assert bad.returncode == 2 and bad.stderr.startswith("mlvc: error: --idle")


def test_the_server_stops_when_idle(project, env):
    start(env, "--idle", "0.5")
    deadline = time.monotonic() + 30
    while mlvc_run(env, "daemon", "status").returncode == 0:
        assert time.monotonic() < deadline, "the idle server did not stop"
        time.sleep(0.2)
    assert mlvc_run(env, "log").returncode == 0  # in its own process


def test_a_directory_others_may_enter_is_not_used(project, env):
    folder = Path(cmdserver.runtime_dir(env))
    folder.mkdir(mode=0o700)
    folder.chmod(0o777)  # another user could have put a socket here
    out = mlvc_run(env, "daemon", "start")
    assert out.returncode == 1 and out.stderr.startswith(f"mlvc: error: {folder} is not")
    assert len(out.stderr.strip().splitlines()) == 1
    assert mlvc_run(env, "log").returncode == 0  # runs here, talks to no socket


def test_garbage_on_the_socket_is_refused_and_the_server_goes_on(project, env):
    start(env)
    path = cmdserver.address(env)
    for junk in (
        b"",
        b"\x00\x00",
        b"\xff\xff\xff\xff" + b"x" * 100,  # claims 4 GiB
        cmdserver.encode([b"RUN", b"/", b"18", b"5", b"mlvc"]),  # no descriptors, bad count
        cmdserver.encode([b"HELLO"]),
        os.urandom(5000),
    ):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(path)
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            assert s.recv(100) in (b"", b"stale\n")
    assert mlvc_run(env, "log", "-n", "1").returncode == 0
    assert served(env) == 1


def test_a_server_whose_code_changed_steps_aside(project, env, tmp_path):
    """A copy of the package (its own server: the address names the package's folder);
    editing one of its files makes the server say ``stale``: the command runs in its own
    process, and the server stops."""
    copy = tmp_path / "site"
    shutil.copytree(Path(mlvc.__file__).parent, copy / "mlvc")
    cenv = {**env, "PYTHONPATH": str(copy)}
    launch = [
        sys.executable,
        "-c",
        "import sys; sys.argv[0] = 'mlvc'; import mlvc.launch as l; l.main()",
    ]

    def run(*args):
        return subprocess.run(
            [*launch, *args], env=cenv, capture_output=True, text=True, timeout=120
        )

    assert run("daemon", "start").returncode == 0
    assert run("daemon", "status").stdout.count("0 commands served") == 1
    assert run("log").returncode == 0
    assert "1 commands served" in run("daemon", "status").stdout
    edited = copy / "mlvc" / "render" / "text.py"
    edited.write_text(edited.read_text() + "\n# edited\n")
    out = run("log", "-n", "1")
    assert out.returncode == 0 and out.stderr == ""
    deadline = time.monotonic() + 30
    while run("daemon", "status").returncode == 0:
        assert time.monotonic() < deadline, "the stale server did not stop"
        time.sleep(0.1)


def test_the_address_depends_on_start_up_variables_only():
    base = {"HOME": "/h", "LANG": "C.UTF-8", "XDG_RUNTIME_DIR": "/run/user/1"}
    here = cmdserver.address(base)
    assert here.startswith("/run/user/1/mlvc/cmd-") and len(here) <= cmdserver.MAX_SOCKET_PATH
    assert cmdserver.address({**base, "MLVC_AUTHOR": "x", "TERM": "dumb"}) == here
    for name in ("LANG", "LC_ALL", "PYTHONPATH", "PYTHONHASHSEED", *cmdserver.IMPORT_TIME_ENV):
        assert cmdserver.address({**base, name: "other"}) != here, name
    long = {**base, "XDG_RUNTIME_DIR": "/" + "x" * 100}
    assert cmdserver.address(long).startswith(f"/tmp/mlvc-{os.getuid()}/")


def test_every_variable_read_at_import_time_names_the_server():
    """A server keeps what its modules read from the environment when imported; such a
    variable must be keyed (cmdserver.IMPORT_TIME_ENV), or a launcher with another value
    would get the server's."""
    found: set[str] = set()

    def scan(node) -> None:  # what runs on import: not function bodies
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return
        if (
            isinstance(node, ast.Call)
            and ast.unparse(node.func) in ("os.environ.get", "os.getenv")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.add(node.args[0].value)
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
            found.add(ast.unparse(node.slice).strip("'\""))
        for child in ast.iter_child_nodes(node):
            scan(child)

    for path in Path(mlvc.__file__).parent.rglob("*.py"):
        scan(ast.parse(path.read_text()))
    assert found, "the scan found nothing: it no longer sees the reads"
    assert found <= {n for n in found if cmdserver.keyed(n)}, sorted(
        n for n in found if not cmdserver.keyed(n)
    )


names = st.text(st.characters(blacklist_characters="\0=", blacklist_categories=("Cs",)), min_size=1)
values = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)))


@given(
    argv=st.lists(
        st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",))),
        min_size=1,
        max_size=5,
    ),
    environ=st.dictionaries(names, values, max_size=5),
    path=st.lists(
        st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",))), max_size=4
    ),
    ignored=st.lists(st.integers(1, 64), max_size=3),
)
def test_run_requests_round_trip(argv, environ, path, ignored):
    env = {os.fsencode(k): os.fsencode(v) for k, v in environ.items()}
    body = cmdserver.run_request(argv, env, ignored=ignored, path=path)
    assert int.from_bytes(body[:4], "big") == len(body) - 4
    run = cmdserver.decode_run(body[4:].split(b"\0"))
    assert (run.cwd, run.argv, run.env, run.path, run.ignored) == (
        os.getcwd(),
        argv,
        environ,
        path,
        ignored,
    )
    assert 0 <= run.umask <= 0o777


def test_the_server_preloads_every_command_module_numpy_and_pyarrow_and_no_thread():
    """numpy and pyarrow too (a query's fork imported them: ~0.15 s of CPU), with the threads
    they start at import turned off while they load, and the user's settings left as set."""
    code = (
        "import os, sys\n"
        "before = dict(os.environ)\n"
        "from mlvc.launch.server import PRELOAD, load_modules\n"
        "load_modules()\n"
        "from mlvc.cli import COMMAND_MODULES\n"
        "print(sorted(set(COMMAND_MODULES.values()) - {m[9:] for m in PRELOAD if m.startswith('mlvc.cli.')}))\n"
        "print(sorted(m for m in ('pyarrow', 'numpy', 'pandas') if m in sys.modules))\n"
        "print(len(os.listdir('/proc/self/task')))\n"
        "print(dict(os.environ) == before)\n"
    )
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2"}  # a user's own: a pool of two threads
    env.pop("JE_ARROW_MALLOC_CONF", None)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.split("\n")[:4] == ["[]", "['numpy', 'pyarrow']", "1", "True"]


THREAD_AT_IMPORT = """
import threading, time
threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
"""


def test_a_server_whose_preload_starts_a_thread_starts_again_without_it(project, env, tmp_path):
    """A build of numpy or pyarrow that starts a thread whatever its environment says: the
    server cannot fork safely, so it starts again (the same command line) without them, and
    serves."""
    (tmp_path / "starts_a_thread.py").write_text(THREAD_AT_IMPORT)
    path = cmdserver.address(env)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    code = (
        "import sys\n"
        "import mlvc.launch.server as server\n"
        "server.PRELOAD_THREADLESS += ('starts_a_thread',)\n"
        "sys.exit(server.main(sys.argv[1], '60'))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, path],
        env={**env, "PYTHONPATH": str(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while mlvc_run(env, "daemon", "status").returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        before = served(env)
        out = mlvc_run(env, "query", "--format", "csv", "SELECT 41 + 1 AS n")
        assert (out.returncode, out.stdout, out.stderr) == (0, '"n"\n42\n', "")
        assert served(env) == before + 1
        log = Path(cmdserver.log_path(path)).read_text()
        assert "started a thread; starting again without them" in log
        assert mlvc_run(env, "daemon", "stop").returncode == 0
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_launcher_whose_server_dies_waits_for_its_command(project, env):
    """kill -9 of the server: the command runs on (it is its own process group); the
    launcher still passes signals to it, waits for it to end, then says the status is
    lost (exit 1) rather than guessing."""
    start(env)
    client = slow_query(env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid = int(mlvc_run(env, "daemon", "status").stdout.split("server ")[1].split()[0])
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    assert client.poll() is None  # waiting for the command, not guessing
    client.send_signal(signal.SIGINT)  # reaches the command, which ends
    out, err = client.communicate(timeout=60)
    assert client.returncode == 1, err
    assert "mlvc: interrupted" in err and "the command server stopped" in err


def test_mlvc_daemon_1_starts_a_server_when_none_listens(project, env):
    auto = {**env, "MLVC_DAEMON": "1"}
    assert mlvc_run(auto, "log").returncode == 0  # ran here, and started a server
    deadline = time.monotonic() + 30
    while mlvc_run(env, "daemon", "status").returncode != 0:
        assert time.monotonic() < deadline, "MLVC_DAEMON=1 started no server"
        time.sleep(0.1)
    assert mlvc_run(auto, "log").returncode == 0
    assert served(env) == 1
    # many launchers at once, no server: every command answered, one server left
    assert mlvc_run(env, "daemon", "stop").returncode == 0
    procs = [
        subprocess.Popen([MLVC, "status"], env=auto, stdout=subprocess.DEVNULL) for _ in range(6)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * 6
    path = cmdserver.address(env)
    deadline = time.monotonic() + 30
    while True:
        found = processes_naming(path)
        if len(found) == 1 and mlvc_run(env, "daemon", "status").returncode == 0:
            break
        assert time.monotonic() < deadline, f"servers: {found}"
        time.sleep(0.1)


def test_a_stopped_command_of_a_killed_launcher_still_ends(project, env):
    """Ctrl-Z, then kill -9 of the launcher: the stopped command gets SIGHUP and SIGCONT
    (SIGHUP alone stays pending in a stopped process: it lingered, and the server with it)."""
    start(env)
    client = slow_query(env, stdout=subprocess.DEVNULL)
    client.send_signal(signal.SIGTSTP)  # what Ctrl-Z sends: the command stops, then this
    time.sleep(0.5)
    client.kill()
    client.wait(timeout=30)
    deadline = time.monotonic() + 60
    while running(env):
        assert time.monotonic() < deadline, "the stopped command outlived its launcher"
        time.sleep(0.05)


def test_signals_the_launcher_ignores_stay_ignored(project, env):
    """A launcher started with SIGINT ignored (a shell script's background job) passes its
    disposition on: Ctrl-C's signal does not stop the command, as in its own process."""
    start(env)

    def ignore_sigint():
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    client = subprocess.Popen(
        [MLVC, "query", SLOW], env=env, stdout=subprocess.DEVNULL, preexec_fn=ignore_sigint
    )
    deadline = time.monotonic() + 60
    while running(env) == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    client.send_signal(signal.SIGINT)
    time.sleep(1.0)
    assert client.poll() is None and running(env) == 1
    client.send_signal(signal.SIGTERM)  # not ignored: reaches the command, which ends by it
    assert client.wait(timeout=60) == -signal.SIGTERM
    assert running(env) == 0


def test_a_commit_through_the_server_records_the_same_environment(project, env):
    """The command sees the launcher's sys.path (the server's first entry differs): the
    environment a commit captures, which scans it, is the same object."""
    own = {**env, "MLVC_DAEMON": "0"}
    start(env)
    mine = mlvc_run(env, "commit", "-q", "-m", "served")
    theirs = mlvc_run(own, "commit", "-q", "-m", "own")
    assert mine.returncode == theirs.returncode == 0
    assert served(env) == 1
    shown = [
        json.loads(mlvc_run(own, "show", r.stdout.strip(), "--json").stdout) for r in (mine, theirs)
    ]
    assert shown[0]["env"] == shown[1]["env"]
    assert shown[0]["code"] == shown[1]["code"]


def test_clients_that_trickle_their_requests_hold_nobody_up(project, env):
    """Requests are read as their bytes come: five clients holding half-sent requests do
    not delay a command (the server read one request at a time, waiting up to 2 s on each:
    10 s here), a request sent a few bytes at a time is answered, and a half-sent one is
    dropped after REQUEST_TIME."""
    start(env)
    path = cmdserver.address(env)
    slow = [socket.socket(socket.AF_UNIX) for _ in range(5)]
    try:
        for s in slow:
            s.connect(path)
            s.sendall(b"\x00\x00\x10\x00RUN")  # a 4 KiB request that never comes
        t0 = time.monotonic()
        out = mlvc_run(env, "log", "-n", "1")
        took = time.monotonic() - t0
        assert out.returncode == 0 and served(env) == 1
        assert took < 6, took
        with socket.socket(socket.AF_UNIX) as trickle:  # a status, a few bytes at a time
            trickle.connect(path)
            request = cmdserver.encode([cmdserver.STATUS])
            for i in range(0, len(request), 3):
                trickle.sendall(request[i : i + 3])
                time.sleep(0.05)
            trickle.settimeout(30)
            assert trickle.recv(4096).startswith(b"status ")
        for s in slow:  # dropped: the server hangs up
            s.settimeout(30)
            assert s.recv(64) == b""
        assert "too slow to arrive" in Path(cmdserver.log_path(path)).read_text()
    finally:
        for s in slow:
            s.close()


def test_a_launcher_slow_after_sending_runs_the_command_once(project, env):
    """A launcher descheduled right after sending its request (a loaded machine) found the
    command done and the socket closed: an empty send then raised EPIPE, and the launcher
    ran the command a second time itself (its output twice; CI caught it under load)."""
    start(env)
    mlvc_run({**env, "MLVC_DAEMON": "0"}, "commit", "-q", "-m", "once")
    code = (
        "import _socket, sys, time\n"
        "class Slow(_socket.socket):\n"
        "    def sendmsg(self, *args):\n"
        "        sent = super().sendmsg(*args)\n"
        "        time.sleep(1.5)  # the command runs and ends meanwhile\n"
        "        return sent\n"
        "_socket.socket = Slow\n"
        "sys.argv = ['mlvc', 'log', '-n', '1']\n"
        "from mlvc.launch import main\n"
        "main()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("once") == 1, out.stdout
    assert served(env) == 1


def test_the_idle_clock_starts_when_the_server_serves():
    """A preload slower than --idle (a loaded machine) stopped the server before it had
    answered the `daemon start` waiting in its backlog (CI failure of 2026-12-02)."""
    import tempfile
    import threading

    from mlvc.launch.server import Server

    folder = tempfile.mkdtemp(prefix="mlvcd-", dir="/tmp")
    try:
        path = os.path.join(folder, "cmd-test.sock")
        server = Server(path, 0.3)
        assert server.bind()
        time.sleep(0.6)  # as a slow preload would
        answers = []
        asker = threading.Thread(
            target=lambda: answers.append(cmdserver.control(path, cmdserver.STATUS))
        )
        asker.start()
        time.sleep(0.1)  # its connection waits in the backlog, as `daemon start`'s does
        assert server.serve() is None  # and it stops once idle
        asker.join()
        assert answers[0] is not None and answers[0].startswith("status ")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_server_stopping_with_a_request_arriving_answers_it_and_ends():
    """An idle server that stops while a request is half-read goes on reading it (and the
    loop waits in select): the idle check ran again and again instead, a busy loop that
    never ended (found as a stray server at 77% CPU)."""
    import tempfile
    import threading

    from mlvc.launch.server import Server

    folder = tempfile.mkdtemp(prefix="mlvcd-", dir="/tmp")
    try:
        path = os.path.join(folder, "cmd-test.sock")
        server = Server(path, 0.2)
        assert server.bind()
        ended = []
        serving = threading.Thread(target=lambda: ended.append(server.serve()), daemon=True)
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
            request = cmdserver.encode([cmdserver.STATUS])
            client.sendall(request[:3])
            serving.start()
            time.sleep(0.6)  # idle: the server stops, the request still arriving
            client.sendall(request[3:])
            client.settimeout(30)
            assert client.recv(4096).startswith(b"status ")
        serving.join(30)
        assert ended == [None], "the server did not end"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_server_out_of_descriptors_waits_instead_of_spinning(project, env):
    """Connections that use up the server's descriptors (here a limit of 24): accept()
    fails with EMFILE and the listener stays readable, so the loop spun at full CPU until a
    descriptor was freed. It now stops accepting for a moment; commands run again after."""
    import resource

    def few_descriptors():
        resource.setrlimit(resource.RLIMIT_NOFILE, (24, 24))

    out = mlvc_run(env, "daemon", "start", preexec_fn=few_descriptors)
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.split("server ")[1].split()[0])
    path = cmdserver.address(env)
    clients = []
    try:
        for _ in range(30):  # more than it can hold: each waits as a request arriving
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            clients.append(s)
        time.sleep(0.3)

        def cpu() -> float:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        before = cpu()
        time.sleep(1.0)
        assert cpu() - before < 0.3  # spinning took the whole second
    finally:
        for s in clients:
            s.close()
    assert mlvc_run(env, "log").returncode == 0
    assert served(env) >= 1
