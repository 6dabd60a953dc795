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
  number of arguments, the arguments (``argv[0]`` first), then ``NAME=VALUE`` per
  environment variable. A control message is ``STATUS`` or ``STOP`` with no descriptors.
- server to launcher, lines: ``pid N`` once the command's process exists, then ``exit N``
  (its exit status, or ``-S`` if signal S ended it); or ``stale`` when the server's code
  changed on disk since it started (nothing ran: the launcher runs the command itself,
  and the server stops); or one ``status ...`` / ``stopping`` line for control messages.
"""

from __future__ import annotations

import os
import stat
import sys

RUN, STATUS, STOP = b"RUN", b"STATUS", b"STOP"
MAX_REQUEST = 4 << 20  # bytes: arguments and environment of one command
IDLE = 3600.0  # seconds a server waits for a command before it stops, by default

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
    for part in (sys.executable, sys.version, package):
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


def run_request(argv: list[str], environ: dict[bytes, bytes]) -> bytes:
    """The message that asks a server to run ``argv`` here, as this process would."""
    umask = os.umask(0o022)
    os.umask(umask)
    env = [k + b"=" + v for k, v in environ.items()]
    args = [os.fsencode(a) for a in argv]
    cwd = os.fsencode(os.getcwd())
    return encode([RUN, cwd, b"%d" % umask, b"%d" % len(args), *args, *env])


def decode_run(fields: list[bytes]) -> tuple[str, int, list[str], dict[str, str]]:
    """(cwd, umask, argv, environment) of a RUN message's fields; ValueError if malformed."""
    if len(fields) < 4 or fields[0] != RUN:
        raise ValueError("not a RUN message")
    cwd, umask, argc = os.fsdecode(fields[1]), int(fields[2]), int(fields[3])
    if not 0 < argc <= len(fields) - 4 or not 0 <= umask <= 0o777:
        raise ValueError("bad argument count or umask")
    argv = [os.fsdecode(a) for a in fields[4 : 4 + argc]]
    env = {}
    for entry in fields[4 + argc :]:
        name, eq, value = entry.partition(b"=")
        if not eq or not name:
            raise ValueError("bad environment entry")
        env[os.fsdecode(name)] = os.fsdecode(value)
    return cwd, umask, argv, env


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
