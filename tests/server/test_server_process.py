"""The server process itself: one per repository."""

from __future__ import annotations

import socket
import subprocess
import sys


def test_a_second_server_on_the_same_repository_is_refused(own_server):
    srv = own_server()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = subprocess.run(
        [sys.executable, "-m", "mlvc", "server", "--port", str(port)],
        cwd=srv.root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "already serves" in lines[0] and srv.url in lines[0]
    # the first one is untouched, and once it stops the repository can be served again
    assert srv.call("GET", "/health")[0] == 200
    srv.restart()
    assert srv.call("GET", "/health")[0] == 200
