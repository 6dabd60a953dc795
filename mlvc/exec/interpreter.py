"""The environment a command runs in: its interpreter, the facts captured from it, the
variables it gets, and rebuilding a recorded environment as a fresh virtualenv.

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
from urllib.parse import unquote, urlsplit

from ..errors import EnvironmentBuildFailed, MlvcError

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


# -- rebuilding a recorded environment -------------------------------------------------------


def requirement_lines(facts: Mapping, run_label: str) -> list[str]:
    """pip requirement lines pinning every recorded distribution: ``name==version``, or
    the recorded source for editable, VCS and local installs."""
    sources = facts.get("package_sources", {})
    lines = []
    for name, version in sorted(facts.get("packages", {}).items()):
        src = sources.get(name) or {}
        url = src.get("url", "")
        if src.get("vcs") and url:
            lines.append(f"{name} @ {src['vcs']}+{url}@{src.get('commit', '')}".rstrip("@"))
        elif url.startswith("file://"):
            path = unquote(urlsplit(url).path)
            if not os.path.exists(path):
                if src.get("editable"):
                    raise EnvironmentBuildFailed(
                        f"run {run_label} used {name} {version} installed editable from "
                        f"{path}, which no longer exists; restore it or use --env current"
                    )
                lines.append(f"{name}=={version}")
            elif src.get("editable"):
                lines.append(f"-e {shlex.quote(path)}")
            else:
                lines.append(f"{name} @ {url}")
        elif url:
            lines.append(f"{name} @ {url}")
        else:
            lines.append(f"{name}=={version}")
    return lines


def base_python(version: str) -> str:
    """An interpreter of the recorded major.minor version: this one, or pythonX.Y on PATH."""
    want = tuple(int(x) for x in re.findall(r"\d+", version)[:2])
    if not want or want == sys.version_info[:2]:
        return sys.executable
    found = shutil.which(f"python{want[0]}.{want[1]}")
    if found is None:
        raise EnvironmentBuildFailed(
            f"the run used python {version}, and no python{want[0]}.{want[1]} is on PATH; "
            "install it, or reproduce with --env current"
        )
    return found


def build_venv(facts: Mapping, dest: Path, run_label: str, log=print) -> str:
    """Create a virtualenv at ``dest`` holding exactly the recorded distributions; returns
    its python. pip runs with ``--no-deps`` (the record is the full set) and its own
    configuration (index, find-links, cache), so it works offline wherever pip does."""
    py = facts.get("python", {})
    base = base_python(py.get("version", ""))
    lines = requirement_lines(facts, run_label)
    log(f"creating a virtualenv in {dest} (python {py.get('version', '?')})")
    outer = _pip_with_python_option()
    cmd = [base, "-m", "venv", *(["--without-pip"] if outer else []), str(dest)]
    _check(subprocess.run(cmd, capture_output=True, text=True), "python -m venv")
    python = str(dest / "bin" / "python")
    reqs = dest / "mlvc-requirements.txt"
    reqs.write_text("".join(line + "\n" for line in lines))
    log(f"installing {len(lines)} recorded packages with pip (its own index settings)")
    # pip from mlvc's environment installs into the new one (--python): much faster than
    # bootstrapping a pip into it first; the recorded pip is installed like any package
    pip = [sys.executable, "-m", "pip", "--python", python] if outer else [python, "-m", "pip"]
    done = subprocess.run(
        [
            *pip,
            "install",
            "--no-deps",
            "--no-input",
            "--disable-pip-version-check",
            "-r",
            str(reqs),
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    (dest / "mlvc-pip.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise EnvironmentBuildFailed(_pip_failure(done.stdout + done.stderr, dest, run_label))
    return python


def _pip_with_python_option() -> bool:
    """Whether this interpreter has a pip that can install into another (22.3+)."""
    import importlib.util

    if importlib.util.find_spec("pip") is None:
        return False
    from importlib.metadata import PackageNotFoundError, version

    try:
        numbers = tuple(int(x) for x in re.findall(r"\d+", version("pip"))[:2])
    except PackageNotFoundError:
        return False
    return numbers >= (22, 3)


def _check(done: subprocess.CompletedProcess, what: str) -> None:
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise EnvironmentBuildFailed(f"{what} failed: {last}")


def _pip_failure(output: str, dest: Path, run_label: str) -> str:
    """One line naming the package pip could not install, from pip's own messages."""
    log = dest / "mlvc-pip.log"
    for pattern in (
        r"No matching distribution found for (\S+)",
        r"Could not find a version that satisfies the requirement (\S+)",
    ):
        m = re.search(pattern, output)
        if m:
            return (
                f"cannot install {m.group(1)} (recorded by run {run_label}): pip finds no such "
                f"version with its current index settings; details in {log}"
            )
    errors = [ln for ln in output.splitlines() if ln.startswith("ERROR")]
    last = (errors or output.strip().splitlines() or ["no output"])[-1]
    return f"pip could not install the recorded packages: {last}; details in {log}"
