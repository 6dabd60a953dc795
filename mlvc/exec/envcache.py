"""Rebuilt environments, cached by the id of the environment object they were built from.

``mlvc reproduce --env recorded`` asks for the environment a run recorded; the first time it
is built (``venv.build_venv``: uv when available, else pip), later reproductions of any run
with the same environment object reuse it. Layout under the cache folder (``.mlvc/cache/envs``
of the repository, or ``$MLVC_ENV_CACHE`` to share one between repositories)::

    <env id>/                 the virtualenv, with mlvc-env.json: what was built, and from what
    <env id>.lock             flock: one process builds (or checks) an environment at a time
    <env id>.log              the installer's output of the last build
    .build-<env id>-<token>/  an environment being built (left by a killed build: removed)

A build happens in a ``.build-`` folder and is renamed into place only when complete (script
headers naming the temporary folder are rewritten first), so a killed build never leaves a
folder that looks usable. Two reproductions at once take the lock in turn: the second one
waits, then finds the environment built. Before each reuse the entry is checked cheaply (no
subprocess): its record must name this environment, its interpreter must exist, and the
distributions installed (``*.dist-info`` folders) must be exactly those recorded when it was
built, so a package a re-run installed or removed, or a half-deleted folder, makes it be
rebuilt. File contents inside packages are not re-hashed.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from pathlib import Path

from ..core.durable import fsync_dir, replace_file
from ..core.ids import ObjectId
from .venv import build_venv, find_uv

MARKER = "mlvc-env.json"
BUILD_PREFIX = ".build-"
CACHE_VARIABLE = "MLVC_ENV_CACHE"


def cache_folder(default: Path) -> Path:
    """Where built environments live: ``$MLVC_ENV_CACHE`` if set, else ``default``."""
    return Path(os.environ.get(CACHE_VARIABLE) or default)


def installed(venv: Path) -> list[str]:
    """Every distribution folder (``.../site-packages/name-version.dist-info``), sorted."""
    out: list[str] = []
    for site in sorted(venv.glob("lib*/python*/site-packages")):
        try:
            names = os.listdir(site)
        except OSError:
            continue
        for n in sorted(names):
            if n.endswith(".dist-info"):
                out.append(f"{site.relative_to(venv)}/{n}")
    return out


def damage(venv: Path, env_id: ObjectId) -> str | None:
    """Why a cache entry cannot be reused ("absent" if there is none), or None if it can."""
    if not venv.is_dir():
        return "absent"
    try:
        record = json.loads((venv / MARKER).read_text())
    except (OSError, ValueError):
        return "it has no completion record (a build that did not finish?)"
    if not isinstance(record, dict) or record.get("env") != env_id.hex:
        return "its completion record names another environment"
    if not os.path.exists(venv / "bin" / "python"):  # follows the link to the interpreter
        return "its interpreter is missing"
    if installed(venv) != record.get("installed"):
        return "its installed distributions changed since it was built"
    return None


@contextmanager
def _locked(path: Path, log: Callable[[str], None]):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("waiting for another process building the same environment")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def recorded_env(
    folder: Path,
    env_id: ObjectId,
    facts: Mapping,
    run_label: str,
    log: Callable[[str], None] = print,
    rebuild: bool = False,
) -> Path:
    """The virtualenv of environment ``env_id`` under ``folder``: reused when a checked cache
    entry exists (unless ``rebuild``), else built and published atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    venv = folder / env_id.hex
    with _locked(folder / f"{env_id.hex}.lock", log):
        why = "rebuild asked for" if rebuild else damage(venv, env_id)
        if why is None:
            log(f"using the cached environment {venv}")
            return venv
        if why != "absent":
            log(f"the cached environment {venv} is not reused ({why}): rebuilding it")
        for old in folder.glob(f"{BUILD_PREFIX}{env_id.hex}-*"):  # killed builds: we hold
            shutil.rmtree(old, ignore_errors=True)  # the lock, so none is running
        staging = folder / f"{BUILD_PREFIX}{env_id.hex}-{secrets.token_hex(4)}"
        started = time.monotonic()
        try:
            build_venv(facts, staging, run_label, log, folder / f"{env_id.hex}.log")
            _relocate_scripts(staging, venv)
            record = {
                "env": env_id.hex,
                "run": run_label,
                "installer": "uv" if find_uv() else "pip",
                "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "installed": installed(staging),
            }
            replace_file(staging / MARKER, json.dumps(record, indent=1).encode())
            if venv.exists() or venv.is_symlink():
                _remove(venv)
            os.rename(staging, venv)
            fsync_dir(folder)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        log(f"built in {time.monotonic() - started:.1f} s; cached as {venv}")
    return venv


def _remove(path: Path) -> None:
    """Move a stale entry aside first (one rename), so no half-deleted folder keeps its name."""
    aside = path.with_name(f"{BUILD_PREFIX}{path.name}-{secrets.token_hex(4)}")
    os.rename(path, aside)
    shutil.rmtree(aside, ignore_errors=True)


def _relocate_scripts(staging: Path, final: Path) -> None:
    """Rewrite the temporary folder's path in ``bin/`` (script headers, activate files)."""
    old, new = str(staging).encode(), str(final).encode()
    bindir = staging / "bin"
    for entry in os.scandir(bindir):
        if not entry.is_file(follow_symlinks=False) or entry.stat().st_size > 1 << 20:
            continue
        data = Path(entry.path).read_bytes()
        if old in data:
            Path(entry.path).write_bytes(data.replace(old, new))
