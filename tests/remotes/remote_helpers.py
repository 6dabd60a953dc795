"""Shared by the remotes tests: the CLI in any folder, and a look at a remote's files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from mlvc import Repo
from mlvc.cli import main


def mlvc(where, *args, code: int = 0) -> str:
    """Run ``mlvc -C where ARGS``; assert the exit code; return stdout."""
    here = os.getcwd()
    try:
        result = CliRunner().invoke(main, ["-C", str(where), *map(str, args)])
    finally:
        os.chdir(here)
    assert result.exit_code == code, f"mlvc {' '.join(map(str, args))}: {result.output}"
    return result.output


def mlvc_json(where, *args, code: int = 0) -> dict:
    return json.loads(mlvc(where, *args, "--json", code=code))


def mlvc_proc(where, *args, env=None, **kw) -> subprocess.Popen:
    """``mlvc`` as a real process (for kill -9 and races)."""
    return subprocess.Popen(
        [sys.executable, "-m", "mlvc", "-C", str(where), *map(str, args)],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def commit(root: Path, message: str, files: dict[str, bytes | str], *extra: str) -> str:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            data = data.encode()
        path.write_bytes(data)
    return mlvc(root, "commit", "-q", "-m", message, *extra).strip()


def transport_for(url: str):
    from mlvc.remotes.config import Remote
    from mlvc.remotes.fs import open_transport

    return open_transport(Remote("origin", url))


def remote_files(url: str) -> dict[str, int]:
    return transport_for(url).listing("")


def check_remote_consistent(url: str) -> None:
    """Nothing on the remote names a missing object: every trusted index's pack is there,
    every run of a runs file and every ref target is in a trusted index."""
    from mlvc.remotes import format as fmt
    from mlvc.remotes.state import RemoteState

    t = transport_for(url)
    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        state = RemoteState.load(t, "origin", Path(cache))
        for idx in state.indexes:
            assert all(idx.usable), f"{idx.path.name} names a pack the remote lacks"
        for rid in state.runs:
            assert state.has(rid), f"run {rid.hex} is listed but its object is missing"
        data, _ = t.read_versioned(fmt.REFS)
        for key, value in fmt.decode_refs("origin", data).items():
            if not value.startswith("ref: "):
                assert state.has(bytes.fromhex(value)), f"{key} names a missing object"


def fresh_repo(path: Path) -> Path:
    Repo.init(path)
    return path
