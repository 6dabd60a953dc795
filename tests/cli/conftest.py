"""The ``env`` fixture of the command-server tests: a runtime directory of their own."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile

import pytest
from daemon_helpers import MLVC, children_of, processes_naming

from mlvc.core import cmdserver


@pytest.fixture
def env(project):
    """An environment whose command server lives in a runtime directory of its own (short:
    a socket's path holds 107 bytes); the server is stopped afterwards."""
    run = tempfile.mkdtemp(prefix="mlvcd-", dir="/tmp")
    environ = {**os.environ, "XDG_RUNTIME_DIR": run}
    environ.pop("MLVC_DAEMON", None)
    yield environ
    # a test that failed may leave a server running a long command: end both
    for server in processes_naming(cmdserver.address(environ)):
        for pid in children_of(server):
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
    subprocess.run([MLVC, "daemon", "stop"], env=environ, capture_output=True, timeout=60)
    shutil.rmtree(run, ignore_errors=True)
