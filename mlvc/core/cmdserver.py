"""Where a command server listens and what goes over its socket; shared by the launcher
(``mlvc.launch``, the ``mlvc`` command's entry point) and the server (``mlvc.cli.daemon``).
Standard library only, and light: the launcher imports it before anything else.

A command server (``mlvc daemon start``) is a Python process that has imported the CLI and
the library once. Each command a launcher hands it runs in a fork of it, in the launcher's
working directory, environment and umask, on the launcher's stdin, stdout and stderr
(passed over the socket), so a command costs no interpreter start-up and no imports.
Mercurial's chg works the same way.

One server serves one interpreter, one mlvc installation and one set of the environment
variables that take effect at start-up (``KEYED``): they name its socket, so a launcher
that differs in any of them finds no server and runs the command itself.

Wire format, on an AF_UNIX stream socket in a directory only its user can enter:

- launcher to server, one message: a 4-byte big-endian length, then that many bytes of
  NUL-separated fields, with the launcher's descriptors 0, 1 and 2 attached (SCM_RIGHTS)
  to its first bytes. Fields: ``RUN``, the working directory, the umask (decimal), the
  signals the launcher ignores (``2,3``: kept ignored in the command, as ``nohup`` or a
  shell's background job expect), the number of ``sys.path`` entries and the entries, the
  number of arguments and the arguments (``argv[0]`` first), then ``NAME=VALUE`` per
  environment variable. A control message is ``STATUS`` or ``STOP`` with no descriptors.
- server to launcher, lines: ``pid N`` from the command's process once it has its own
  process group and the launcher's signal dispositions (signals passed on from then reach
  it), then ``exit N`` from the server (its exit status, or ``-S`` if signal S ended it); or
  ``stale`` when the server's code changed on disk since it started (nothing ran: the
  launcher runs the command itself, and the server stops); or one ``status ...`` /
  ``stopping`` line for control messages. A launcher that got no ``pid`` line knows the
  command never started.
"""

from __future__ import annotations

import os
import stat
import sys

RUN, STATUS, STOP = b"RUN", b"STATUS", b"STOP"
MAX_REQUEST = 4 << 20  # bytes: arguments and environment of one command
IDLE = 3600.0  # seconds a server waits for a command before it stops, by default
# the signals a launcher passes on to its command (SIGTSTP: Ctrl-Z stops both); the ones it
# ignores travel with the request and stay ignored in the command
SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGTSTP")

# read by mlvc's modules when they are imported, so a server keeps the values it started
# with; tests/cli/test_daemon.py checks this list against the module-level reads
IMPORT_TIME_ENV = ("MLVC_PURE", "MLVC_BIG_PIPELINE", "MLVC_BIG_STATS", "MLVC_DEBUG_GC_LOCK")


def keyed(name: str) -> bool:
    """Whether a variable takes effect at start-up (interpreter, locale, imports)."""
    return name.startswith(("PYTHON", "LC_")) or name in ("LANG", *IMPORT_TIME_ENV)


SOCKET_NAME = 34  # len("/cmd-" + 24 hex digits + ".sock")
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the final NUL


def runtime_dir(environ=os.environ) -> str:
    """The user's directory of command-server sockets: ``$XDG_RUNTIME_DIR/mlvc``, else (or
    when that path is too long for a socket's address) ``/tmp/mlvc-UID``."""
    base = environ.get("XDG_RUNTIME_DIR", "")
    if base and os.path.isabs(base):
        folder = os.path.join(base, "mlvc")
        if len(os.fsencode(folder)) + SOCKET_NAME <= MAX_SOCKET_PATH:
            return folder
    return f"/tmp/mlvc-{os.getuid()}"


def address(environ=os.environ) -> str:
    """The socket of the server for this interpreter, this mlvc and ``environ``."""
    try:
        from _blake2 import blake2b  # hashlib loads OpenSSL: ~3 ms of a ~25 ms launch
    except ImportError:  # pragma: no cover - CPython always has it
        from hashlib import blake2b
    h = blake2b(digest_size=12)
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    groups = ",".join(map(str, sorted(os.getgroups())))  # sg/newgrp: other permissions
    for part in (sys.executable, sys.version, package, f"{os.getgid()}:{groups}"):
        h.update(os.fsencode(part) + b"\0")
    for name in sorted(n for n in environ if keyed(n)):
        h.update(os.fsencode(f"{name}={environ[name]}") + b"\0")
    return os.path.join(runtime_dir(environ), f"cmd-{h.hexdigest()}.sock")


def private(folder: str) -> bool:
    """Whether ``folder`` is a real directory of this user that nobody else may enter (a
    socket elsewhere could be another user's, who would get our descriptors and
    environment)."""
    try:
        st = os.lstat(folder)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def encode(fields: list[bytes]) -> bytes:
    body = b"\0".join(fields)
    return len(body).to_bytes(4, "big") + body


class Run:
    """What a RUN message asks: run ``argv`` as the launcher would have."""

    def __init__(self, cwd, umask, ignored, path, argv, env):
        self.cwd: str = cwd
        self.umask: int = umask
        self.ignored: list[int] = ignored
        self.path: list[str] = path
        self.argv: list[str] = argv
        self.env: dict[str, str] = env


def run_request(argv: list[str], environ: dict[bytes, bytes], ignored=(), path=()) -> bytes:
    """The message that asks a server to run ``argv`` here, as this process would."""
    umask = os.umask(0o022)
    os.umask(umask)
    env = [k + b"=" + v for k, v in environ.items()]
    args = [os.fsencode(a) for a in argv]
    paths = [os.fsencode(p) for p in path]
    cwd = os.fsencode(os.getcwd())
    head = [RUN, cwd, b"%d" % umask, ",".join(map(str, ignored)).encode()]
    return encode([*head, b"%d" % len(paths), *paths, b"%d" % len(args), *args, *env])


def decode_run(fields: list[bytes]) -> Run:
    """The request of a RUN message's fields; ValueError if malformed."""
    if len(fields) < 6 or fields[0] != RUN:
        raise ValueError("not a RUN message")
    cwd, umask = os.fsdecode(fields[1]), int(fields[2])
    ignored = [int(s) for s in fields[3].split(b",") if s]
    if not 0 <= umask <= 0o777 or not all(0 < s < 65 for s in ignored):
        raise ValueError("bad umask or signal")
    npath = int(fields[4])
    if not 0 <= npath <= len(fields) - 6:
        raise ValueError("bad path count")
    path = [os.fsdecode(p) for p in fields[5 : 5 + npath]]
    at = 5 + npath
    argc = int(fields[at])
    if not 0 < argc <= len(fields) - at - 1:
        raise ValueError("bad argument count")
    argv = [os.fsdecode(a) for a in fields[at + 1 : at + 1 + argc]]
    env = {}
    for entry in fields[at + 1 + argc :]:
        name, eq, value = entry.partition(b"=")
        if not eq or not name:
            raise ValueError("bad environment entry")
        env[os.fsdecode(name)] = os.fsdecode(value)
    return Run(cwd, umask, ignored, path, argv, env)


def control(path: str, what: bytes, timeout: float = 5.0) -> str | None:
    """Send ``STATUS`` or ``STOP`` to the server at ``path``: its answer, or None when no
    server answers there."""
    import socket

    if not private(os.path.dirname(path)):
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            sock.sendall(encode([what]))
            with sock.makefile("rb") as answer:
                line = answer.readline().decode(errors="replace").strip()
        except OSError:
            return None
    return line or None


def lock_path(path: str) -> str:
    """The file a server holds locked while it lives (beside its socket)."""
    return path[: -len(".sock")] + ".lock"


def log_path(path: str) -> str:
    """Where a server writes what it did and what went wrong (it has no terminal)."""
    return path[: -len(".sock")] + ".log"
