"""Recording a run: capture code, data, artifacts and environment, then write the run.

Write order (docs/architecture.md): every object → one filesystem sync → journal entry →
``refs/runs/<id>`` → HEAD, name and tag refs → an attempt to ingest into the index. A crash
at any point leaves either no run or a complete one; the index catches up on its next sync.
"""

from __future__ import annotations

import functools
import getpass
import os
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError
from .ids import ObjectId
from .objects import Env, Run, TreeEntry
from .params import load_metrics_file, load_params_file, metric_value
from .project import ProjectConfig, load_project
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
    inputs: Inputs | None = None  # captured earlier (a live run captures at its start)
    artifact_entries: Mapping[str, TreeEntry] = field(default_factory=dict)  # logged by API
    series_metrics: Mapping[str, float] = field(default_factory=dict)  # last value per key
    move_head: bool = True
    project_files: bool = True  # read mlvc.toml's [track] params/metrics files


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
    """``MLVC_AUTHOR``, else git's user.name <user.email>, else user@host."""
    return os.environ.get("MLVC_AUTHOR") or _configured_author()


@functools.lru_cache(maxsize=1)
def _configured_author() -> str:
    try:
        out = subprocess.run(
            ["git", "config", "--get-regexp", r"^user\.(name|email)$"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    conf = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    name, email = conf.get("user.name", "").strip(), conf.get("user.email", "").strip()
    if name:
        return f"{name} <{email}>" if email else name
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except Exception:
        return "unknown"


@dataclass(frozen=True)
class Inputs:
    """What a run read, captured when it starts: code, git facts, environment, data."""

    code: ObjectId | None
    git: Mapping[str, Any]
    env: ObjectId | None
    data: ObjectId | None
    data_paths: tuple[str, ...]
    artifact_paths: tuple[str, ...]


def capture_inputs(
    repo, data=(), artifacts=(), cwd: Path | None = None, code: bool = True, env: bool = True
) -> Inputs:
    """Store the project's code, data and environment; paths are relative to ``cwd``."""
    with _writing(repo) as hasher:
        return _capture_inputs(repo, data, artifacts, cwd, code, env, hasher)


@contextmanager
def _writing(repo):
    """Hold gc off while objects are written, hash through the stat cache, then save it."""
    from .gc import gc_lock

    with gc_lock(repo.dir):
        hasher = repo.file_hasher() if hasattr(repo, "file_hasher") else None
        yield hasher
        if hasher is not None and hasher.cache is not None:
            hasher.cache.save()


def _capture_inputs(repo, data, artifacts, cwd, code, env, hasher) -> Inputs:
    from .capture import capture_env, code_files, git_facts

    root, store = repo.root, repo.store
    cfg = load_project(root)
    # configured paths are relative to the root; configured artifacts may not exist yet
    data_paths = sorted(
        {project_path(root, p, root) for p in cfg.data} | {project_path(root, p, cwd) for p in data}
    )
    configured = [p for p in cfg.artifacts if os.path.lexists(root / p)]
    art_paths = sorted(
        {project_path(root, p, root) for p in configured}
        | {project_path(root, p, cwd) for p in artifacts}
    )
    overlap = set(data_paths) & set(art_paths)
    if overlap:
        raise UsageError(f"{sorted(overlap)[0]} is given as both data and artifacts; pick one")
    code_tree, git = None, {}
    if code:
        code_files_ = code_files(root, exclude=[*data_paths, *art_paths])
        code_tree = build_tree(store, root, code_files_, hasher=hasher)
        git = dict(git_facts(root))
        if git.get("patch"):
            git["patch"] = store.add_bytes(git["patch"].encode()).hex
    env_id = None
    if env:
        env_id = write_object(store, Env(capture_env(root, cfg.env_variables, cfg.env_files)))
    return Inputs(
        code_tree,
        git,
        env_id,
        build_tree(store, root, expand(root, data_paths), hasher=hasher),
        tuple(data_paths),
        tuple(art_paths),
    )


def gather_params(repo, spec: RunSpec, cwd: Path | None) -> tuple[dict, dict]:
    """Params and metrics from mlvc.toml files, the spec's files, then the spec's values."""
    cfg = load_project(repo.root) if spec.project_files else ProjectConfig()
    base = Path(cwd or os.getcwd())
    params: dict[str, Any] = {}
    for f in cfg.params:
        params.update(load_params_file(repo.root / f))
    for f in spec.params_files:
        params.update(load_params_file(base / f))
    params.update(spec.params)
    metrics: dict[str, float] = {}
    for f in cfg.metrics:
        metrics.update(load_metrics_file(repo.root / f))
    for f in spec.metrics_files:
        metrics.update(load_metrics_file(base / f))
    metrics.update({k: metric_value(k, v, k) for k, v in spec.metrics.items()})
    return params, metrics


def record_run(repo, spec: RunSpec, cwd: Path | None = None) -> ObjectId:
    """Capture and store one run; returns its id. The library behind ``mlvc commit``."""
    with _writing(repo) as hasher:
        return _record_run(repo, spec, cwd, hasher)


def _record_run(repo, spec: RunSpec, cwd: Path | None, hasher) -> ObjectId:
    started = spec.started or now_us()
    name = check_ref_name(spec.name, "name") if spec.name else ""
    for tag in spec.tags:
        check_ref_name(tag, "tag")
    params, metrics = gather_params(repo, spec, cwd)
    inputs = spec.inputs or capture_inputs(
        repo, spec.data, spec.artifacts, cwd, spec.capture_code, spec.capture_env
    )
    art_files = expand(repo.root, inputs.artifact_paths)
    artifacts = build_tree(
        repo.store, repo.root, art_files, hasher=hasher, extra=dict(spec.artifact_entries)
    )
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
        cwd=_cwd_in_project(repo.root, cwd),
        exit_code=spec.exit_code,
        code=inputs.code,
        git=inputs.git,
        data=inputs.data,
        artifacts=artifacts,
        params=params,
        metrics={**spec.series_metrics, **metrics},
        series=spec.series,
        env=inputs.env,
        tags=dict(spec.tags),
        models=dict(spec.models),
        reproduces=spec.reproduces,
        extra={
            **spec.extra,
            "paths": {"data": list(inputs.data_paths), "artifacts": list(inputs.artifact_paths)},
        },
    )
    oid = write_object(repo.store, run)
    repo.store.sync()
    publish_run(repo, oid, run, move_head=spec.move_head)
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
