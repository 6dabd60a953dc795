"""Rebuilding a recorded environment as a fresh virtualenv (``mlvc reproduce --env recorded``).

The run's environment object lists every distribution it had, with its version and, for
editable, VCS and local installs, its source; uv (when installed: the ``mlvc[uv]`` extra or
``uv`` on PATH) or else pip installs exactly those, without resolving dependencies (the
record is the full set). Built environments are cached by env id (``envcache``).
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


def find_uv() -> str | None:
    """The ``uv`` binary that installs environments, or None for pip.

    The ``uv`` package (``pip install 'mlvc[uv]'``) ships one; otherwise ``uv`` on PATH.
    ``MLVC_ENV_INSTALLER=pip`` forces pip (``=uv`` insists on uv: an error without it)."""
    choice = os.environ.get("MLVC_ENV_INSTALLER", "").strip().lower()
    if choice == "pip":
        return None
    try:
        import uv  # the mlvc[uv] extra

        found = uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
    if found is None and choice == "uv":
        raise EnvironmentBuildFailed(
            "MLVC_ENV_INSTALLER=uv, and uv is not installed: pip install 'mlvc[uv]', "
            "or unset MLVC_ENV_INSTALLER to use pip"
        )
    return found


def build_venv(
    facts: Mapping,
    dest: Path,
    run_label: str,
    log: Callable[[str], None] = print,
    log_file: Path | None = None,
) -> str:
    """Create a virtualenv at ``dest`` holding exactly the recorded distributions; returns
    its python. The installer (uv when available, else pip) runs with ``--no-deps`` (the
    record is the full set) and pip's own configuration (index, find-links, certificate),
    so it works offline wherever pip does. The installer's output goes to ``log_file``
    (default: ``dest/mlvc-pip.log``)."""
    py = facts.get("python", {})
    log_file = log_file or dest / "mlvc-pip.log"
    base = base_python(py.get("version", ""))
    lines = requirement_lines(facts, run_label)
    uv = find_uv()
    log(f"creating a virtualenv in {dest} (python {py.get('version', '?')})")
    if uv is not None:
        return _build_with_uv(uv, base, dest, lines, run_label, log, log_file)
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
    log_file.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise EnvironmentBuildFailed(_pip_failure(done.stdout + done.stderr, log_file, run_label))
    return python


def _build_with_uv(uv: str, base: str, dest: Path, lines, run_label, log, log_file) -> str:
    """``uv venv`` + ``uv pip install --no-deps``, with pip's index settings translated."""
    environ = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}
    options, cert = pip_settings()
    if cert and "SSL_CERT_FILE" not in environ:
        environ["SSL_CERT_FILE"] = cert  # uv trusts its bundled roots unless told otherwise
    cmd = [uv, "venv", "--no-config", "--quiet", "--python", base, str(dest)]
    _check(subprocess.run(cmd, capture_output=True, text=True, env=environ), "uv venv")
    python = str(dest / "bin" / "python")
    reqs = dest / "mlvc-requirements.txt"
    reqs.write_text("".join(line + "\n" for line in lines))
    log(f"installing {len(lines)} recorded packages with uv (pip's index settings)")
    done = subprocess.run(
        [uv, "pip", "install", "--no-config", "--python", python, "--no-deps"]
        + ["--index-strategy", "unsafe-best-match"]  # as pip: any index may have a version
        + options
        + ["-r", str(reqs)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=environ,
    )
    log_file.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise EnvironmentBuildFailed(_pip_failure(done.stdout + done.stderr, log_file, run_label))
    return python


_TRUE = ("1", "true", "yes", "on")


def pip_settings() -> tuple[list[str], str]:
    """pip's index settings as uv options, and pip's certificate file ("" if none).

    Read as pip reads them: config files (global, user, site, ``PIP_CONFIG_FILE``; the
    ``[install]`` section over ``[global]``), then ``PIP_*`` variables over the files."""
    import configparser

    values: dict[str, str] = {}
    files = [
        Path("/etc/xdg/pip/pip.conf"),
        Path("/etc/pip.conf"),
        Path.home() / ".pip" / "pip.conf",
        Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "pip" / "pip.conf",
        Path(sys.prefix) / "pip.conf",
    ]
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(Path(os.environ["PIP_CONFIG_FILE"]))
    for f in files:
        cfg = configparser.RawConfigParser()
        try:
            cfg.read(f)
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue
        for section in ("global", "install"):
            if cfg.has_section(section):
                values.update(cfg.items(section))
    for key, value in os.environ.items():
        if key.startswith("PIP_"):
            values[key[4:].lower().replace("_", "-")] = value
    options: list[str] = []
    if values.get("no-index", "").strip().lower() in _TRUE:
        options.append("--no-index")
    if values.get("index-url", "").strip():
        options += ["--index-url", values["index-url"].strip()]
    for key, flag in (
        ("extra-index-url", "--extra-index-url"),
        ("find-links", "--find-links"),
        ("constraint", "--constraint"),
    ):
        for item in values.get(key, "").split():
            options += [flag, item]
    return options, values.get("cert", "").strip()


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


def _pip_failure(output: str, log: Path, run_label: str) -> str:
    """One line naming the package that could not be installed, from the installer's
    own messages (pip's or uv's)."""
    for pattern in (
        r"No matching distribution found for (\S+)",
        r"Could not find a version that satisfies the requirement (\S+)",
        r"there is no version of (\S+?)(?:,| and |$)",  # uv
        r"Because (\S+) was not found in the ",  # uv, for a name no index has
    ):
        m = re.search(pattern, output)
        if m:
            return (
                f"cannot install {m.group(1)} (run {run_label}): no such version with "
                f"pip's index settings; see {log}"
            )
    errors = [ln for ln in output.splitlines() if ln.startswith(("ERROR", "error:", "  × "))]
    last = (errors or output.strip().splitlines() or ["no output"])[-1].strip()
    return f"the recorded packages could not be installed: {last}; details in {log}"
