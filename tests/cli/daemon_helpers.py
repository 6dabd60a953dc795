"""Helpers of the command-server tests (test_daemon.py, test_fsmonitor.py): the real ``mlvc``
script run in an environment of its own, and the processes a test must end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MLVC = str(Path(sys.executable).parent / "mlvc")


def children_of(parent: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent:
            pids.append(int(entry.name))
    return pids


def mlvc_run(env, *args, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("timeout", 120)
    return subprocess.run([MLVC, *args], env=env, capture_output=True, text=True, **kw)


def start(env, *extra) -> str:
    out = mlvc_run(env, "daemon", "start", *extra)
    assert out.returncode == 0, out.stderr
    return out.stdout


def processes_naming(word: str) -> list[int]:
    """The pids whose command line has ``word`` as an argument."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if os.fsencode(word) in args:
            pids.append(int(entry.name))
    return pids
