"""Rebuilding a recorded environment as a fresh virtualenv (``mlvc reproduce --env recorded``).

The run's environment object lists every distribution it had, with its version and, for
editable, VCS and local installs, its source; pip installs exactly those, without
resolving dependencies (the record is the full set).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import EnvironmentBuildFailed


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


def build_venv(
    facts: Mapping, dest: Path, run_label: str, log: Callable[[str], None] = print
) -> str:
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
