"""Recording a run: capture code, data, artifacts and environment, then write the run.

Write order (docs/architecture.md): every object → one filesystem sync → journal entry →
``refs/runs/<id>`` → HEAD, name and tag refs → an attempt to ingest into the index. A crash
at any point leaves either no run or a complete one; the index catches up on its next sync.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError
from .ids import ObjectId
from .objects import Env, Run
from .params import load_metrics_file, load_params_file, metric_value
from .project import load_project
from .refs import check_ref_name
from .trees import build_tree, safe_relpath, write_object

JUNK_IN_DATA = {".mlvc", ".git", "__pycache__", ".ipynb_checkpoints", ".DS_Store"}


@dataclass
class RunSpec:
    """Everything a caller can say about a run; the rest is captured."""

    message: str = ""
    name: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    params_files: Iterable[str] = ()
    metrics_files: Iterable[str] = ()
    data: Iterable[str] = ()
    artifacts: Iterable[str] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    command: tuple[str, ...] = ()
    exit_code: int | None = None
    status: str = "finished"
    started: int | None = None
    ended: int | None = None
    series: ObjectId | None = None
    parents: tuple[ObjectId, ...] | None = None
    reproduces: ObjectId | None = None
    models: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    capture_code: bool = True
    capture_env: bool = True


def now_us() -> int:
    return time.time_ns() // 1000


def project_path(root: Path, path: str | os.PathLike, cwd: Path | None = None) -> str:
    """A user-given path (relative to cwd, or absolute) as a project-relative POSIX path."""
    full = (Path(cwd or os.getcwd()) / path).absolute()
    try:
        rel = Path(os.path.normpath(full)).relative_to(root)
    except ValueError:
        raise UsageError(f"path {path} is outside the project {root}; move it inside") from None
    if not os.path.lexists(root / rel):
        raise UsageError(f"path {path} does not exist; check the spelling or create it first")
    if str(rel) == ".":
        raise UsageError(f"path {path} is the whole project; name a file or folder inside it")
    return safe_relpath(rel.as_posix())


def expand(root: Path, rels: Iterable[str]) -> list[str]:
    """Every file at or below each project-relative path (symlinks kept, not followed)."""
    out: set[str] = set()
    for rel in rels:
        full = root / rel
        if full.is_symlink() or not full.is_dir():
            out.add(rel)
            continue
        for folder, dirs, files in os.walk(full):
            dirs[:] = [d for d in dirs if d not in JUNK_IN_DATA]
            base = Path(folder).relative_to(root).as_posix()
            out.update(f"{base}/{f}" for f in files if f not in JUNK_IN_DATA)
            out.update(f"{base}/{d}" for d in dirs if os.path.islink(os.path.join(folder, d)))
    return sorted(out)


def author() -> str:
    if os.environ.get("MLVC_AUTHOR"):
        return os.environ["MLVC_AUTHOR"]
    name = _git_config("user.name")
    email = _git_config("user.email")
    if name:
        return f"{name} <{email}>" if email else name
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except Exception:
        return "unknown"


def _git_config(key: str) -> str:
    try:
        r = subprocess.run(
            ["git", "config", "--get", key], capture_output=True, text=True, timeout=5
        )
        return r.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def record_run(repo, spec: RunSpec, cwd: Path | None = None) -> ObjectId:
    """Capture and store one run; returns its id. The library behind ``mlvc commit``."""
    from .capture import capture_env, code_files, git_facts

    started = spec.started or now_us()
    root, store = repo.root, repo.store
    cfg = load_project(root)
    data = sorted({project_path(root, p, cwd) for p in (*cfg.data, *spec.data)})
    artifacts = sorted({project_path(root, p, cwd) for p in (*cfg.artifacts, *spec.artifacts)})
    overlap = set(data) & set(artifacts)
    if overlap:
        raise UsageError(f"{sorted(overlap)[0]} is given as both data and artifacts; pick one")

    params: dict[str, Any] = {}
    for f in (*cfg.params, *spec.params_files):
        params.update(load_params_file(Path(cwd or os.getcwd()) / f))
    params.update(spec.params)
    metrics: dict[str, float] = {}
    for f in (*cfg.metrics, *spec.metrics_files):
        metrics.update(load_metrics_file(Path(cwd or os.getcwd()) / f))
    metrics.update({k: metric_value(k, v, k) for k, v in spec.metrics.items()})

    name = check_ref_name(spec.name, "name") if spec.name else ""
    for tag in spec.tags:
        check_ref_name(tag, "tag")

    code_tree = None
    git: dict[str, Any] = {}
    if spec.capture_code:
        code_tree = build_tree(store, root, code_files(root, exclude=[*data, *artifacts]))
        git = dict(git_facts(root))
        if git.get("patch"):
            git["patch"] = store.add_bytes(git["patch"].encode()).hex
    env_id = None
    if spec.capture_env:
        env_id = write_object(store, Env(capture_env(root, cfg.env_variables)))

    head = repo.refs.read("HEAD")
    parents = spec.parents if spec.parents is not None else ((head,) if head else ())
    run = Run(
        parents=tuple(parents),
        name=name,
        message=spec.message,
        author=author(),
        started=started,
        ended=spec.ended or now_us(),
        status=spec.status,
        command=tuple(spec.command),
        cwd=_cwd_in_project(root, cwd),
        exit_code=spec.exit_code,
        code=code_tree,
        git=git,
        data=build_tree(store, root, expand(root, data)),
        artifacts=build_tree(store, root, expand(root, artifacts)),
        params=params,
        metrics=metrics,
        series=spec.series,
        env=env_id,
        tags=dict(spec.tags),
        models=dict(spec.models),
        reproduces=spec.reproduces,
        extra={**spec.extra, "paths": {"data": data, "artifacts": artifacts}},
    )
    oid = write_object(store, run)
    store.sync()
    publish_run(repo, oid, run)
    return oid


def _cwd_in_project(root: Path, cwd: Path | None) -> str:
    try:
        rel = Path(cwd or os.getcwd()).resolve().relative_to(root).as_posix()
    except ValueError:
        return ""
    return "" if rel == "." else rel


def publish_run(repo, oid: ObjectId, run: Run, move_head: bool = True) -> None:
    """Make a stored run visible: journal, run ref, HEAD, name and tags, then the index."""
    repo.index.journal(oid)
    repo.refs.add_run(oid)
    who = run.author
    if move_head:
        repo.refs.write("HEAD", oid, f"commit: {run.message or run.name}", who)
    if run.name:
        repo.refs.write(f"refs/names/{run.name}", oid, "commit", who)
    for tag, value in run.tags.items():
        if value == "":
            repo.refs.write(f"refs/tags/{tag}", oid, "commit -t", who)
    repo.index.try_ingest()
