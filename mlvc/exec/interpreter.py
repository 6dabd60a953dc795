"""The environment a command runs in: its interpreter, the facts captured from it, and the
variables it gets (rebuilding a recorded environment is mlvc.exec.venv).

A command that starts with ``python`` (``python3``, ``python3.11``, a path to one) is
captured from *that* interpreter, found on the command's own PATH, so a run records the
packages the script really imported from, not those of the interpreter mlvc runs in. Other
commands (``bash train.sh``) record mlvc's own interpreter.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..errors import MlvcError

_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?$")
CAPTURE_TIMEOUT = 120.0

# Run by another interpreter: import mlvc.capture.env from mlvc's own folder without putting
# that folder (or mlvc's site-packages) on sys.path, so only the target's packages are seen.
_BOOT = r"""
import json, sys, types
pkg, version, root, args = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
for name, path in (("mlvc", pkg), ("mlvc.capture", pkg + "/capture")):
    mod = types.ModuleType(name)
    mod.__path__ = [path]
    mod.__version__ = version
    sys.modules[name] = mod
from mlvc.capture.env import capture_env
json.dump(capture_env(root, args["variables"], args["files"]), sys.stdout)
"""


def find_interpreter(argv: Iterable[str], environ: Mapping[str, str], cwd: Path) -> str | None:
    """The python a command line will run, as an absolute path; None if it runs none."""
    words = list(argv)
    if (
        len(words) >= 3
        and Path(words[0]).name in ("sh", "bash", "dash", "zsh")
        and words[1] == "-c"
    ):
        try:
            words = shlex.split(words[2])
        except ValueError:
            return None
    while words and re.match(r"^[A-Za-z_]\w*=", words[0]):
        words = words[1:]  # VAR=value prefixes
    if words and Path(words[0]).name == "env":
        words = [w for w in words[1:] if not re.match(r"^[A-Za-z_]\w*=", w)]
    if not words or not _PYTHON.match(Path(words[0]).name):
        return None
    exe = words[0]
    if "/" in exe:
        return str((cwd / exe).absolute())
    return shutil.which(exe, path=environ.get("PATH", os.defpath))


def same_interpreter(python: str | None) -> bool:
    """Whether ``python`` belongs to the environment mlvc itself runs in (same bin folder;
    venv interpreters are symlinks to the base one, so resolving links would mislead)."""
    if python is None:
        return True
    return Path(python).absolute().parent == Path(sys.executable).absolute().parent


def capture_for(
    python: str | None,
    root: Path,
    environ: Mapping[str, str],
    variables: Iterable[str] = (),
    files: Iterable[str] = (),
) -> dict:
    """capture_env as seen by ``python`` run with ``environ`` in ``root``."""
    from ..capture.env import capture_env

    if same_interpreter(python):
        return capture_env(root, variables, files, environ)
    from .._version import __version__

    pkg = str(Path(__file__).resolve().parent.parent)  # the mlvc package folder
    args = json.dumps({"variables": list(variables), "files": list(files)})
    try:
        done = subprocess.run(
            [python, "-c", _BOOT, pkg, __version__, str(root), args],
            cwd=root,
            env=dict(environ),
            capture_output=True,
            text=True,
            timeout=CAPTURE_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise MlvcError(f"cannot capture the environment of {python}: {e}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise MlvcError(f"cannot capture the environment of {python}: {last}")
    return json.loads(done.stdout)


def restore_variables(
    environ: Mapping[str, str], recorded: Mapping[str, str], extra: Iterable[str] = ()
) -> tuple[dict[str, str], list[str]]:
    """``environ`` with every captured variable set as recorded, and those the run did not
    have removed (secrets, never recorded, are left alone). Returns the environment and one
    line per change, e.g. ``$OMP_NUM_THREADS=4 (now unset)``."""
    from ..capture.env import is_captured_variable, is_secret_name

    env = dict(environ)
    changes = []
    for name in sorted(env):
        if name not in recorded and is_captured_variable(name, extra) and not is_secret_name(name):
            changes.append(f"unset ${name} (run had it unset; now {env[name]!r})")
            del env[name]
    for name, value in sorted(recorded.items()):
        if env.get(name) != value:
            now = "unset" if name not in env else repr(env[name])
            changes.append(f"${name}={value} (now {now})")
        env[name] = value
    return env, changes
